//! Translation: Kubernetes Services and EndpointSlices → the dataplane's [`ServiceTable`],
//! with kube-proxy's semantics. Pure: no I/O, no clock; the same objects and settings give
//! the same table.
//!
//! One dataplane service (backend pool) is one Service port of one IP family
//! (`namespace/name:port/IPv4`). When a `Local` traffic policy gives the internal or the
//! external frontends a different backend set, a second pool named `…/local` carries the
//! endpoints on this node.
//!
//! Rules followed (kube-proxy's, see each test in this module):
//! - Services of type ExternalName, headless Services (`clusterIP: None`, or no cluster
//!   IP) and Services labelled `service.kubernetes.io/headless` are not proxied; nor are
//!   Services whose `service.kubernetes.io/service-proxy-name` names another proxy.
//! - Frontends: `spec.clusterIPs` (or `spec.clusterIP`) × ports; `spec.externalIPs`;
//!   `status.loadBalancer.ingress[].ip` (type LoadBalancer, except `ipMode: Proxy`); node
//!   addresses × `nodePort` (types NodePort and LoadBalancer). A family is served only
//!   when the Service has a cluster IP of that family.
//! - Endpoints: EndpointSlices joined by `kubernetes.io/service-name` in the same
//!   namespace and of the family's `addressType`; the slice port with the Service port's
//!   name and protocol gives the target port (so named `targetPort`s resolve); the first
//!   address of each endpoint; duplicates across slices merged, a ready copy preferred.
//! - Conditions as the EndpointConditions API documents them: `ready` unset → true,
//!   `serving` unset → the value of `ready`, `terminating` unset → false. (kube-proxy's
//!   code reads an unset `serving` as true; the two differ only for a not-ready
//!   terminating endpoint that leaves `serving` unset, which we do not use.)
//! - `sessionAffinity: ClientIP` with `timeoutSeconds` (default 10800).
//! - `externalTrafficPolicy: Local` (types NodePort and LoadBalancer) for node ports, load
//!   balancer IPs and external IPs, `internalTrafficPolicy: Local` for cluster IPs: only
//!   endpoints whose `nodeName` is this node; a service port with usable endpoints but
//!   none here drops, one with no usable endpoint at all rejects.
//! - `loadBalancerSourceRanges` restrict the load balancer frontends.
//! - Topology-aware routing (`trafficDistribution`, `topology-mode: Auto`, as the
//!   EndpointSlice controller expresses them in hints): when every ready endpoint of a
//!   Service port has node hints and one is hinted for this node, new flows through the
//!   cluster (not the `Local`) frontends use only the ready endpoints hinted for it; else
//!   the same with zone hints and this node's zone; else hints are ignored.

use std::borrow::Borrow;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubypass_dataplane::hash::{FastMap, FastSet};
use kubypass_dataplane::table::Service as TableService;
use kubypass_dataplane::table::{
    Backend, BuildThreadStart, Conditions, FrontendKey, FrontendKind, IpCidr, L4Protocol,
    NoBackendAction, Scheduler, ServiceId, ServiceSpec, ServiceTable, ServiceTableBuilder,
};

/// Label naming the proxy that should handle a Service.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the endpoint controllers put on headless Services' EndpointSlices.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label joining an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;
/// Largest affinity timeout the API accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_SECS: u32 = 86_400;

/// This appliance as translation sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Addresses node ports are captured on.
    pub node_addresses: Vec<IpAddr>,
    /// This node's name: endpoints with this `nodeName` are local for `Local` policies,
    /// and endpoints hinted for it (`hints.forNodes`) are preferred as kube-proxy prefers
    /// them.
    pub node_name: Option<String>,
    /// This node's zone (`topology.kubernetes.io/zone`), for topology-aware routing:
    /// endpoints hinted for it (`hints.forZones`) are preferred as kube-proxy prefers
    /// them. Unset: hints never match (as on a node without the label).
    pub zone: Option<String>,
    /// Our `service.kubernetes.io/service-proxy-name`: Services labelled with it are ours,
    /// as are unlabelled ones; Services labelled with any other name are not.
    pub proxy_name: Option<String>,
    /// Seed of every flow and backend hash in the table.
    pub seed: u64,
    pub scheduler: Scheduler,
    /// How many workers read the table: each gets its own slot in every Service and
    /// backend counter (0 counts as 1).
    pub workers: usize,
    /// Threads that fill Maglev tables when a table is built, the control thread
    /// included (0 counts as 1: no thread started). The table does not depend on it.
    pub build_threads: usize,
    /// Run first on each thread a build starts (e.g. to pin it to a spare CPU).
    pub build_thread_start: Option<BuildThreadStart>,
}

/// The outcome of [`translate`].
#[derive(Debug)]
pub struct Translation {
    pub table: ServiceTable,
    /// One entry per Service given, in namespace/name order; an unchanged Service's
    /// entry is shared with the previous translation.
    pub status: Vec<Arc<ServiceStatus>>,
    /// What was skipped and why; each names the object.
    pub warnings: Vec<Warning>,
}

/// What became of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    pub namespace: String,
    pub name: String,
    pub outcome: Outcome,
}

/// Whether a Service is proxied, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Proxied: one entry per backend pool built for it.
    Served(Vec<PoolStatus>),
    /// Not proxied, and why.
    Ignored(IgnoreReason),
}

/// Why a Service is not proxied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    ExternalName,
    /// `clusterIP: None`, no cluster IP, or the `service.kubernetes.io/headless` label.
    Headless,
    /// Labelled for another proxy.
    OtherProxy(String),
    /// The object is unusable; the message says why (also in the warnings).
    Invalid(String),
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::ExternalName => f.write_str("type ExternalName is not proxied"),
            IgnoreReason::Headless => f.write_str("headless Services are not proxied"),
            IgnoreReason::OtherProxy(p) => write!(f, "handled by proxy {p:?}"),
            IgnoreReason::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// One backend pool of a served Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool's name in the table, such as `default/web:http/IPv4/local`.
    pub name: String,
    pub id: ServiceId,
    pub frontends: Vec<(FrontendKey, FrontendKind)>,
    /// How many endpoints the pool lists (its `ServiceSpec` in the table has them all).
    pub backends: usize,
    /// How many of them new flows may use.
    pub usable: usize,
    pub no_backend: NoBackendAction,
}

/// Something translation skipped, naming the object it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Warning {
    /// `Service ns/name` or `EndpointSlice ns/name`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Translates `services` and `slices` into a table whose generation follows `previous`'s
/// (1 without one), reusing `previous`'s Maglev tables for unchanged pools. Never fails: a
/// bad object skips only its port or Service, with a warning. (The publication loop uses
/// [`Translator`], which also skips re-translating unchanged Services.)
pub fn translate<S, E>(
    services: &[S],
    slices: &[E],
    settings: &ProxySettings,
    previous: Option<&ServiceTable>,
) -> Translation
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
{
    let index = index_slices(slices);
    let mut builder = table_builder(settings, previous);
    let mut status = Vec::with_capacity(services.len());
    let mut warnings = Vec::new();
    for svc in sorted(services) {
        let joined: Vec<&EndpointSlice> = slices_of(&index, svc.borrow())
            .iter()
            .map(|e| (*e).borrow())
            .collect();
        let plan = plan_service(svc.borrow(), &joined, settings);
        let placed = place(&mut builder, &plan, &[], false);
        warnings.extend(plan.warnings.iter().cloned());
        warnings.extend(placed.warnings);
        status.push(Arc::new(placed.status));
    }
    Translation {
        table: builder.build_reusing(previous),
        status,
        warnings,
    }
}

/// Translation with memory, for the publication loop. Between calls it keeps the objects
/// it was given (by allocation, as reflector stores and the manifest source hand them
/// out), its index of EndpointSlices, each Service's plan, the table services built for
/// it and its status. When only a few objects are new allocations and the Services keep
/// their names, it re-plans only the Services they touch; when those keep their
/// frontends, the new table shares every other service with the previous table by `Arc`
/// and copies its frontend map, so one changed endpoint costs one Service's translation
/// plus pointer copies; so does an EndpointSlice added or removed. Anything else (Services
/// added, removed or renamed, frontends changed, many objects at once) re-sorts and
/// re-assembles everything, still sharing unchanged services.
#[derive(Debug)]
pub struct Translator {
    settings: ProxySettings,
    /// The Services of the last call, in the order given.
    last_services: Vec<Arc<Service>>,
    /// The EndpointSlices of the last call, in the order given.
    last_slices: Vec<Arc<EndpointSlice>>,
    /// EndpointSlices by `namespace/service-name`, each list in slice-name order.
    index: FastMap<String, Vec<Arc<EndpointSlice>>>,
    /// One per Service, in namespace/name order (the order frontends are claimed in).
    entries: Vec<CacheEntry>,
    /// `namespace/name` → position in `entries`.
    positions: FastMap<String, usize>,
    /// The services of the last table built, in id order.
    built: Vec<Arc<TableService>>,
    /// The status of the last translation, one per entry.
    status: Vec<Arc<ServiceStatus>>,
    /// The warnings of the last translation.
    warnings: Vec<Warning>,
    /// Generation of the last table built.
    last_generation: Option<u64>,
}

#[derive(Debug)]
struct CacheEntry {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    plan: ServicePlan,
    /// Where the plan's pools are in `Translator::built` (their ids in the last table).
    built: Range<usize>,
    /// Warnings of placing the plan in the table (frontends claimed twice).
    placed_warnings: Vec<Warning>,
}

/// What placing one plan in a builder gave.
struct Placed {
    status: ServiceStatus,
    warnings: Vec<Warning>,
}

/// Most changed objects (slices replaced in place, added or removed; Services replaced)
/// for which the index is patched rather than rebuilt.
const MAX_PATCHED_SLICES: usize = 64;

impl Translator {
    pub fn new(settings: ProxySettings) -> Self {
        Translator {
            settings,
            last_services: Vec::new(),
            last_slices: Vec::new(),
            index: FastMap::default(),
            entries: Vec::new(),
            positions: FastMap::default(),
            built: Vec::new(),
            status: Vec::new(),
            warnings: Vec::new(),
            last_generation: None,
        }
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// As [`translate`], reusing the previous call's work for unchanged Services.
    pub fn translate(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        previous: Option<&ServiceTable>,
    ) -> Translation {
        let Some((dirty, replaced)) = self.patch(services, slices) else {
            let changed = self.rebuild(services, slices);
            return self.assemble_all(previous, &changed);
        };
        let mut old_plans: Vec<(usize, ServicePlan)> = Vec::new();
        for i in dirty {
            let Some(e) = self.entries.get_mut(i) else {
                continue;
            };
            let svc = replaced
                .iter()
                .find(|(at, _)| *at == i)
                .map_or_else(|| e.service.clone(), |(_, s)| s.clone());
            let joined = self
                .index
                .get(&object_key(&svc.metadata))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if Arc::ptr_eq(&svc, &e.service) && same_allocations(&e.slices, joined) {
                continue;
            }
            let plan = plan_service(&svc, joined, &self.settings);
            e.service = svc;
            e.slices = joined.to_vec();
            old_plans.push((i, std::mem::replace(&mut e.plan, plan)));
        }
        let changed: Vec<usize> = old_plans.iter().map(|(i, _)| *i).collect();
        let fast = previous.is_some_and(|p| self.is_last_table(p))
            && old_plans.iter().all(|(i, old)| {
                self.entries
                    .get(*i)
                    .is_some_and(|e| same_frontends(&old.planned, &e.plan.planned))
            });
        match previous {
            Some(p) if fast => {
                let same_warnings = old_plans.iter().all(|(i, old)| {
                    self.entries
                        .get(*i)
                        .is_some_and(|e| e.plan.warnings == old.warnings)
                });
                self.assemble_changed(p, &changed, same_warnings)
            }
            _ => self.assemble_all(previous, &changed),
        }
    }

    /// Brings the slice index and the last inputs up to date with a few changes, and names
    /// the entries they touch: `(dirty entries, replaced Service objects by entry)`. The
    /// changes may be Service objects replaced under the same name at the same position,
    /// and EndpointSlices replaced, added or removed (at most [`MAX_PATCHED_SLICES`] of
    /// them). `None` for anything else (then everything is rebuilt); nothing has been
    /// changed then.
    #[allow(clippy::type_complexity)] // One private call site; a struct would only name the pair.
    fn patch(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Option<(Vec<usize>, Vec<(usize, Arc<Service>)>)> {
        if self.last_generation.is_none() || services.len() != self.last_services.len() {
            return None;
        }
        let mut dirty = Vec::new();
        let mut replaced = Vec::new();
        let mut changed_services = Vec::new();
        for (i, (new, old)) in services.iter().zip(&self.last_services).enumerate() {
            if Arc::ptr_eq(new, old) {
                continue;
            }
            let key = object_key(&new.metadata);
            if key != object_key(&old.metadata) || replaced.len() >= MAX_PATCHED_SLICES {
                return None;
            }
            let at = *self.positions.get(&key)?;
            dirty.push(at);
            replaced.push((at, new.clone()));
            changed_services.push(i);
        }
        // Slices replaced in place are found position by position; otherwise (slices
        // added or removed shift the positions) by allocation.
        let in_place: Option<Vec<usize>> = (slices.len() == self.last_slices.len())
            .then(|| {
                slices
                    .iter()
                    .zip(&self.last_slices)
                    .enumerate()
                    .filter(|(_, (new, old))| !Arc::ptr_eq(new, old))
                    .map(|(i, _)| i)
                    .take(MAX_PATCHED_SLICES + 1)
                    .collect::<Vec<usize>>()
            })
            .filter(|changed| changed.len() <= MAX_PATCHED_SLICES);
        let (removed, added): (Vec<Arc<EndpointSlice>>, Vec<Arc<EndpointSlice>>) = match &in_place {
            Some(changed) => changed
                .iter()
                .filter_map(|&i| Some((self.last_slices.get(i)?.clone(), slices.get(i)?.clone())))
                .unzip(),
            None => self.slices_added_and_removed(slices)?,
        };
        for i in changed_services {
            if let (Some(new), Some(last)) = (services.get(i), self.last_services.get_mut(i)) {
                *last = new.clone();
            }
        }
        match in_place {
            Some(changed) => {
                for i in changed {
                    if let (Some(new), Some(last)) = (slices.get(i), self.last_slices.get_mut(i)) {
                        *last = new.clone();
                    }
                }
            }
            None => self.last_slices = slices.to_vec(),
        }
        for old in &removed {
            if let Some(key) = slice_key(old) {
                if let Some(list) = self.index.get_mut(&key) {
                    list.retain(|s| !Arc::ptr_eq(s, old));
                }
                dirty.extend(self.positions.get(&key).copied());
            }
        }
        for new in added {
            if let Some(key) = slice_key(&new) {
                dirty.extend(self.positions.get(&key).copied());
                let list = self.index.entry(key).or_default();
                let at = list.partition_point(|s| s.metadata.name <= new.metadata.name);
                list.insert(at, new);
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        Some((dirty, replaced))
    }

    /// `(removed, added)`: the last call's slices missing from `slices`, and the slices
    /// new in it, compared by allocation. `None` when they are more than
    /// [`MAX_PATCHED_SLICES`] together, or when an allocation is listed twice.
    #[allow(clippy::type_complexity)] // A private pair of lists, named at its one use.
    fn slices_added_and_removed(
        &self,
        slices: &[Arc<EndpointSlice>],
    ) -> Option<(Vec<Arc<EndpointSlice>>, Vec<Arc<EndpointSlice>>)> {
        let addr = |s: &Arc<EndpointSlice>| Arc::as_ptr(s) as usize;
        let old: FastSet<usize> = self.last_slices.iter().map(addr).collect();
        let new: FastSet<usize> = slices.iter().map(addr).collect();
        if old.len() != self.last_slices.len() || new.len() != slices.len() {
            return None;
        }
        let removed: Vec<_> = self
            .last_slices
            .iter()
            .filter(|s| !new.contains(&addr(s)))
            .take(MAX_PATCHED_SLICES + 1)
            .cloned()
            .collect();
        let added: Vec<_> = slices
            .iter()
            .filter(|s| !old.contains(&addr(s)))
            .take(MAX_PATCHED_SLICES + 1)
            .cloned()
            .collect();
        (removed.len() + added.len() <= MAX_PATCHED_SLICES).then_some((removed, added))
    }

    /// Re-indexes every slice and re-sorts every Service, keeping the entries of
    /// Services whose object and slices are the same allocations as before. Returns the
    /// positions of the entries planned anew.
    fn rebuild(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<usize> {
        self.index = FastMap::default();
        for s in slices {
            if let Some(key) = slice_key(s) {
                self.index.entry(key).or_default().push(s.clone());
            }
        }
        for list in self.index.values_mut().filter(|l| l.len() > 1) {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        let mut old: FastMap<usize, CacheEntry> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| (Arc::as_ptr(&e.service) as usize, e))
            .collect();
        self.positions = FastMap::default();
        self.positions.reserve(services.len());
        let mut entries = Vec::with_capacity(services.len());
        let mut planned = Vec::new();
        for svc in sorted(services) {
            let key = object_key(&svc.metadata);
            let joined = self.index.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let reused = old
                .remove(&(Arc::as_ptr(svc) as usize))
                .filter(|e| Arc::ptr_eq(&e.service, svc) && same_allocations(&e.slices, joined));
            let entry = match reused {
                Some(e) => e,
                None => {
                    planned.push(entries.len());
                    CacheEntry {
                        service: svc.clone(),
                        slices: joined.to_vec(),
                        plan: plan_service(svc, joined, &self.settings),
                        built: 0..0,
                        placed_warnings: Vec::new(),
                    }
                }
            };
            self.positions.insert(key, entries.len());
            entries.push(entry);
        }
        self.entries = entries;
        self.last_services = services.to_vec();
        self.last_slices = slices.to_vec();
        planned
    }

    /// Whether `table` is the last table this translator built.
    fn is_last_table(&self, table: &ServiceTable) -> bool {
        self.last_generation == Some(table.generation())
            && table.services().len() == self.built.len()
            && table
                .services()
                .iter()
                .zip(&self.built)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Places every entry in a new table. `changed` lists the entries re-planned since
    /// the last table, in order; the others are shared from it as built.
    fn assemble_all(&mut self, previous: Option<&ServiceTable>, changed: &[usize]) -> Translation {
        let mut builder = table_builder(&self.settings, previous);
        let mut status = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter_mut().enumerate() {
            let unchanged = changed.binary_search(&i).is_err();
            let built = match previous {
                Some(_) => self.built.get(e.built.clone()).unwrap_or(&[]),
                None => &[],
            };
            let first = builder.service_count();
            let placed = place(&mut builder, &e.plan, built, unchanged);
            e.built = first..builder.service_count();
            e.placed_warnings = placed.warnings;
            status.push(Arc::new(placed.status));
        }
        let table = builder.build_reusing(previous);
        self.built = table.services().to_vec();
        self.status = status;
        self.warnings = self
            .entries
            .iter()
            .flat_map(|e| e.plan.warnings.iter().chain(&e.placed_warnings))
            .cloned()
            .collect();
        self.finish(table)
    }

    /// Places the entries in a new table whose frontends are `previous`'s (the last table
    /// built): only the `changed` entries' pools are built, and every changed entry's
    /// frontends and pool count are as before, so ids and frontend claims are too.
    /// `same_warnings`: the changed entries warn as before.
    fn assemble_changed(
        &mut self,
        previous: &ServiceTable,
        changed: &[usize],
        same_warnings: bool,
    ) -> Translation {
        let mut builder = table_builder(&self.settings, Some(previous));
        builder.copy_frontends(previous);
        let mut next = 0;
        for &i in changed {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            for b in self.built.get(next..e.built.start).unwrap_or(&[]) {
                builder.add_built_service(b.clone());
            }
            next = e.built.end;
            let pools: &[PoolPlan] = match &e.plan.planned {
                Planned::Served(pools) => pools,
                Planned::Ignored(_) => &[],
            };
            let old: &[PoolStatus] = match self.status.get(i).map(|s| &s.outcome) {
                Some(Outcome::Served(old)) => old,
                _ => &[],
            };
            let mut statuses = Vec::with_capacity(pools.len());
            for (p, pool) in pools.iter().enumerate() {
                let id = match self.built.get(e.built.start + p) {
                    Some(earlier) => {
                        builder.add_service_replacing(pool.spec.clone(), earlier.clone())
                    }
                    None => builder.add_service(pool.spec.clone()),
                };
                statuses.push(PoolStatus {
                    name: pool.spec.name.clone(),
                    id,
                    frontends: old.get(p).map(|w| w.frontends.clone()).unwrap_or_default(),
                    backends: pool.spec.backends.len(),
                    usable: pool.usable,
                    no_backend: pool.spec.no_backend,
                });
            }
            let outcome = match &e.plan.planned {
                Planned::Served(_) => Outcome::Served(statuses),
                Planned::Ignored(reason) => Outcome::Ignored(reason.clone()),
            };
            if let Some(s) = self.status.get_mut(i) {
                *s = Arc::new(ServiceStatus {
                    namespace: e.plan.namespace.clone(),
                    name: e.plan.name.clone(),
                    outcome,
                });
            }
        }
        for b in self.built.get(next..).unwrap_or(&[]) {
            builder.add_built_service(b.clone());
        }
        let table = builder.build_reusing(Some(previous));
        for &i in changed {
            if let Some(e) = self.entries.get(i) {
                for id in e.built.clone() {
                    if let (Some(slot), Some(s)) =
                        (self.built.get_mut(id), table.services().get(id))
                    {
                        *slot = s.clone();
                    }
                }
            }
        }
        if !same_warnings {
            self.warnings = self
                .entries
                .iter()
                .flat_map(|e| e.plan.warnings.iter().chain(&e.placed_warnings))
                .cloned()
                .collect();
        }
        self.finish(table)
    }

    /// Makes the translation of `table` from the recorded status and warnings.
    fn finish(&mut self, table: ServiceTable) -> Translation {
        self.last_generation = Some(table.generation());
        Translation {
            status: self.status.clone(),
            warnings: self.warnings.clone(),
            table,
        }
    }
}

/// A builder for the table after `previous` (generation 1 without one).
fn table_builder(settings: &ProxySettings, previous: Option<&ServiceTable>) -> ServiceTableBuilder {
    let generation = previous.map_or(1, |p| p.generation().wrapping_add(1));
    ServiceTable::builder()
        .generation(generation)
        .seed(settings.seed)
        .scheduler(settings.scheduler)
        .workers(settings.workers.max(1))
        .build_threads(settings.build_threads.max(1))
        .on_build_thread(settings.build_thread_start.clone())
}

/// Adds one Service's pools and frontends to `builder`. `built` are the table services
/// made for the same Service last time, pool by pool: shared as they are when `unchanged`,
/// otherwise named as what each new pool of the same name replaces.
fn place(
    builder: &mut ServiceTableBuilder,
    plan: &ServicePlan,
    built: &[Arc<TableService>],
    unchanged: bool,
) -> Placed {
    let mut warnings = Vec::new();
    let outcome = match &plan.planned {
        Planned::Ignored(reason) => Outcome::Ignored(reason.clone()),
        Planned::Served(pools) => Outcome::Served(
            pools
                .iter()
                .enumerate()
                .map(|(p, pool)| {
                    let earlier = built.get(p).filter(|b| b.name() == pool.spec.name);
                    let id = match earlier {
                        Some(b) if unchanged => builder.add_built_service(b.clone()),
                        Some(b) => builder.add_service_replacing(pool.spec.clone(), b.clone()),
                        None => builder.add_service(pool.spec.clone()),
                    };
                    let mut frontends = Vec::with_capacity(pool.frontends.len());
                    for (key, kind, ranges) in &pool.frontends {
                        match builder.add_frontend(*key, *kind, id, ranges.clone()) {
                            Ok(()) => frontends.push((*key, *kind)),
                            Err(e) => warnings.push(Warning {
                                object: format!("Service {}/{}", plan.namespace, plan.name),
                                message: format!("{e}; frontend skipped"),
                            }),
                        }
                    }
                    PoolStatus {
                        name: pool.spec.name.clone(),
                        id,
                        frontends,
                        backends: pool.spec.backends.len(),
                        usable: pool.usable,
                        no_backend: pool.spec.no_backend,
                    }
                })
                .collect(),
        ),
    };
    Placed {
        status: ServiceStatus {
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            outcome,
        },
        warnings,
    }
}

/// Whether two plans of one Service claim the same frontends through the same number of
/// pools (so placing either gives the same ids and frontend claims).
fn same_frontends(a: &Planned, b: &Planned) -> bool {
    match (a, b) {
        (Planned::Served(a), Planned::Served(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.frontends == b.frontends)
        }
        (Planned::Ignored(_), Planned::Ignored(_)) => true,
        _ => false,
    }
}

fn same_allocations(a: &[Arc<EndpointSlice>], b: &[Arc<EndpointSlice>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// `namespace/name` of an object.
fn object_key(meta: &ObjectMeta) -> String {
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    // `concat` allocates once; `format!` costs several times more, per Service.
    [namespace, "/", meta.name.as_deref().unwrap_or("")].concat()
}

/// `namespace/service-name` of the Service a slice belongs to; `None` for unlabelled
/// slices and headless Services' slices, which no Service uses.
fn slice_key(slice: &EndpointSlice) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.contains_key(LABEL_HEADLESS) {
        return None;
    }
    let svc = labels.get(LABEL_SERVICE_NAME)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some([namespace, "/", svc].concat())
}

/// EndpointSlices by (namespace, Service name), each list in slice-name order so merging
/// is deterministic. Headless Services' slices and unlabelled slices are left out.
fn index_slices<E: Borrow<EndpointSlice>>(slices: &[E]) -> FastMap<(&str, &str), Vec<&E>> {
    let mut by_service: FastMap<(&str, &str), Vec<&E>> = FastMap::default();
    by_service.reserve(slices.len());
    for e in slices {
        let slice = e.borrow();
        let labels = slice.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
            continue;
        }
        let Some(svc) = labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) else {
            continue;
        };
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service.entry((ns, svc.as_str())).or_default().push(e);
    }
    for list in by_service.values_mut().filter(|l| l.len() > 1) {
        list.sort_by(|a, b| {
            let (a, b): (&EndpointSlice, &EndpointSlice) = ((*a).borrow(), (*b).borrow());
            a.metadata.name.cmp(&b.metadata.name)
        });
    }
    by_service
}

fn slices_of<'i, 'k, 'a, E: Borrow<EndpointSlice>>(
    index: &'i FastMap<(&'k str, &'k str), Vec<&'a E>>,
    svc: &'k Service,
) -> &'i [&'a E] {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    index.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[])
}

/// Services in namespace/name order: the order frontends are claimed in.
fn sorted<S: Borrow<Service>>(services: &[S]) -> Vec<&S> {
    let mut ordered: Vec<&S> = services.iter().collect();
    ordered.sort_by(|a, b| {
        let (a, b): (&Service, &Service) = ((*a).borrow(), (*b).borrow());
        let (a, b) = (&a.metadata, &b.metadata);
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
    ordered
}

/// What translating one Service gives, before it is placed in a table.
#[derive(Clone, Debug)]
struct ServicePlan {
    namespace: String,
    name: String,
    planned: Planned,
    warnings: Vec<Warning>,
}

#[derive(Clone, Debug)]
enum Planned {
    Served(Vec<PoolPlan>),
    Ignored(IgnoreReason),
}

/// One backend pool of a Service, with the frontends that lead to it.
#[derive(Clone, Debug)]
struct PoolPlan {
    /// Shared with the table service built from it.
    spec: Arc<ServiceSpec>,
    frontends: Vec<(FrontendKey, FrontendKind, Vec<IpCidr>)>,
    usable: usize,
}

fn plan_service<E: Borrow<EndpointSlice>>(
    svc: &Service,
    slices: &[E],
    settings: &ProxySettings,
) -> ServicePlan {
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut ctx = ServiceContext {
        namespace: &namespace,
        name: &name,
        settings,
        warnings: Vec::new(),
    };
    let planned = ctx.plan(svc, slices);
    let warnings = ctx.warnings;
    ServicePlan {
        namespace,
        name,
        planned,
        warnings,
    }
}

/// The IP families a table distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The first cluster IP of each family (IPv4, IPv6): the families a Service is served in.
#[derive(Default)]
struct ClusterIps([Option<IpAddr>; 2]);

impl ClusterIps {
    fn slot(&mut self, family: Family) -> Option<&mut Option<IpAddr>> {
        self.0.get_mut(family as usize)
    }

    /// Records `ip` unless its family has one already.
    fn add(&mut self, ip: IpAddr) {
        if let Some(slot @ None) = self.slot(Family::of(ip)) {
            *slot = Some(ip);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    fn serves(&self, family: Family) -> bool {
        self.0.get(family as usize).is_some_and(Option::is_some)
    }

    /// (family, cluster IP) in family order.
    fn served(&self) -> impl Iterator<Item = (Family, IpAddr)> + '_ {
        [Family::V4, Family::V6]
            .into_iter()
            .zip(&self.0)
            .filter_map(|(f, ip)| Some((f, (*ip)?)))
    }
}

/// Translation state for one Service.
struct ServiceContext<'a> {
    namespace: &'a str,
    name: &'a str,
    settings: &'a ProxySettings,
    warnings: Vec<Warning>,
}

/// The backends a Service port of one family reaches, before pools are made.
struct PortEndpoints {
    all: Vec<Backend>,
    local: Vec<Backend>,
}

impl ServiceContext<'_> {
    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(Warning {
            object: format!("Service {}/{}", self.namespace, self.name),
            message: message.into(),
        });
    }

    fn warn_slice(&mut self, slice: &EndpointSlice, message: impl Into<String>) {
        self.warnings.push(Warning {
            object: format!(
                "EndpointSlice {}/{}",
                self.namespace,
                slice.metadata.name.as_deref().unwrap_or("")
            ),
            message: message.into(),
        });
    }

    fn plan<E: Borrow<EndpointSlice>>(&mut self, svc: &Service, slices: &[E]) -> Planned {
        let labels = svc.metadata.labels.as_ref();
        if let Some(owner) = labels.and_then(|l| l.get(LABEL_SERVICE_PROXY_NAME)) {
            if self.settings.proxy_name.as_deref() != Some(owner.as_str()) {
                return Planned::Ignored(IgnoreReason::OtherProxy(owner.clone()));
            }
        }
        if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
            return Planned::Ignored(IgnoreReason::Headless);
        }
        let Some(spec) = svc.spec.as_ref() else {
            return self.invalid("no spec");
        };
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        match svc_type {
            "ExternalName" => return Planned::Ignored(IgnoreReason::ExternalName),
            "ClusterIP" | "NodePort" | "LoadBalancer" => {}
            other => return self.invalid(format!("unknown type {other:?}")),
        }

        // Cluster IPs: their families are the families this Service is served in.
        let cluster_ip_strings: &[String] = match spec.cluster_ips.as_deref() {
            Some(ips) if !ips.is_empty() => ips,
            _ => spec.cluster_ip.as_slice(),
        };
        if cluster_ip_strings.is_empty()
            || cluster_ip_strings
                .iter()
                .any(|s| s.is_empty() || s.eq_ignore_ascii_case("None"))
        {
            return Planned::Ignored(IgnoreReason::Headless);
        }
        let mut cluster_ips = ClusterIps::default();
        for s in cluster_ip_strings {
            match parse_ip(s) {
                Ok(ip) => cluster_ips.add(ip),
                Err(_) => self.warn(format!("cluster IP {s:?} is not an IP address; skipped")),
            }
        }
        if cluster_ips.is_empty() {
            return self.invalid("no valid cluster IP");
        }

        let affinity = match spec.session_affinity.as_deref() {
            Some("ClientIP") => {
                let t = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds);
                match t {
                    None => Some(DEFAULT_AFFINITY_TIMEOUT_SECS),
                    Some(t) if (1..=MAX_AFFINITY_TIMEOUT_SECS as i32).contains(&t) => {
                        Some(t as u32)
                    }
                    Some(t) => {
                        return self.invalid(format!(
                            "affinity timeoutSeconds {t} out of range 1..=86400"
                        ))
                    }
                }
            }
            None | Some("None") => None,
            Some(other) => return self.invalid(format!("unknown sessionAffinity {other:?}")),
        };

        let external_ips =
            self.parse_addrs(spec.external_ips.as_deref().unwrap_or(&[]), "external IP");
        let lb_ips: Vec<IpAddr> = if svc_type == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_deref())
                .unwrap_or(&[]);
            let ips: Vec<String> = ingress
                .iter()
                // ipMode Proxy: the load balancer proxies, traffic does not arrive for this IP.
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.clone())
                .collect();
            self.parse_addrs(&ips, "load balancer IP")
        } else {
            Vec::new()
        };
        let source_ranges: Option<Vec<IpCidr>> = if svc_type == "LoadBalancer" {
            let mut ranges = Vec::new();
            let mut ok = true;
            for r in spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]) {
                match r.parse::<IpCidr>() {
                    Ok(c) => ranges.push(c),
                    Err(e) => {
                        self.warn(format!("{e}; load balancer frontends skipped"));
                        ok = false;
                    }
                }
            }
            // A bad range must not widen access: without all ranges, no LB frontend.
            ok.then_some(ranges)
        } else {
            Some(Vec::new())
        };
        let node_ports_apply = svc_type == "NodePort" || svc_type == "LoadBalancer";
        let external_local =
            node_ports_apply && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        for addr in external_ips.iter().chain(&lb_ips) {
            if !cluster_ips.serves(Family::of(*addr)) {
                self.warn(format!(
                    "{addr} is not of a family in clusterIPs; not captured"
                ));
            }
        }

        let mut pools = Vec::new();
        // (address, port, kind, local, source ranges) of one port and family; reused.
        let mut frontends: Vec<(IpAddr, u16, FrontendKind, bool, Vec<IpCidr>)> = Vec::new();
        for port in spec.ports.as_deref().unwrap_or(&[]) {
            let Some((protocol, port_num, node_port)) = self.check_port(port) else {
                continue;
            };
            let port_name = port.name.as_deref().unwrap_or("");
            for (family, cluster_ip) in cluster_ips.served() {
                frontends.clear();
                frontends.push((
                    cluster_ip,
                    port_num,
                    FrontendKind::ClusterIp,
                    internal_local,
                    Vec::new(),
                ));
                for &ip in external_ips.iter().filter(|a| Family::of(**a) == family) {
                    frontends.push((
                        ip,
                        port_num,
                        FrontendKind::ExternalIp,
                        external_local,
                        Vec::new(),
                    ));
                }
                if let Some(ranges) = &source_ranges {
                    for &ip in lb_ips.iter().filter(|a| Family::of(**a) == family) {
                        frontends.push((
                            ip,
                            port_num,
                            FrontendKind::LoadBalancer,
                            external_local,
                            ranges.clone(),
                        ));
                    }
                }
                if let Some(np) = node_port.filter(|_| node_ports_apply) {
                    for &ip in self
                        .settings
                        .node_addresses
                        .iter()
                        .filter(|a| Family::of(**a) == family)
                    {
                        frontends.push((
                            ip,
                            np,
                            FrontendKind::NodePort,
                            external_local,
                            Vec::new(),
                        ));
                    }
                }
                let needs_local = frontends.iter().any(|f| f.3);

                let mut endpoints = self.endpoints(slices, family, port_name, protocol);
                let any_usable = usable_count(&endpoints.all) > 0;
                let (ns, name, family_name) = (self.namespace, self.name, family.address_type());
                let mut base = if port_name.is_empty() {
                    format!("{ns}/{name}:{port_num}/{family_name}")
                } else {
                    [ns, "/", name, ":", port_name, "/", family_name].concat()
                };
                let mut cluster_pool: Option<usize> = None;
                let mut local_pool: Option<usize> = None;
                let mut pool_for = |local: bool, pools: &mut Vec<PoolPlan>| -> usize {
                    let slot = if local {
                        &mut local_pool
                    } else {
                        &mut cluster_pool
                    };
                    if let Some(i) = *slot {
                        return i;
                    }
                    // Each pool is made once: its backends (and the name, when no local
                    // pool needs it after) move into it.
                    let (name, backends, no_backend) = if local {
                        // Endpoints exist elsewhere but none here: drop (kube-proxy's
                        // "has no local endpoints"); none anywhere: reject.
                        let action = if any_usable {
                            NoBackendAction::Drop
                        } else {
                            NoBackendAction::Reject
                        };
                        let local = std::mem::take(&mut endpoints.local);
                        ([&base, "/local"].concat(), local, action)
                    } else {
                        let all = std::mem::take(&mut endpoints.all);
                        let name = if needs_local {
                            base.clone()
                        } else {
                            std::mem::take(&mut base)
                        };
                        (name, all, NoBackendAction::Reject)
                    };
                    let usable = usable_count(&backends);
                    pools.push(PoolPlan {
                        spec: Arc::new(ServiceSpec {
                            name,
                            protocol,
                            backends,
                            affinity_timeout_secs: affinity,
                            no_backend,
                        }),
                        frontends: Vec::new(),
                        usable,
                    });
                    *slot = Some(pools.len() - 1);
                    pools.len() - 1
                };
                for (addr, fport, kind, local, ranges) in frontends.drain(..) {
                    let i = pool_for(local, &mut pools);
                    let key = FrontendKey {
                        addr,
                        port: fport,
                        protocol,
                    };
                    if let Some(pool) = pools.get_mut(i) {
                        pool.frontends.push((key, kind, ranges));
                    }
                }
            }
        }
        Planned::Served(pools)
    }

    fn invalid(&mut self, why: impl Into<String>) -> Planned {
        let why = why.into();
        self.warn(format!("{why}; Service skipped"));
        Planned::Ignored(IgnoreReason::Invalid(why))
    }

    fn parse_addrs(&mut self, addrs: &[String], what: &str) -> Vec<IpAddr> {
        let mut out = Vec::with_capacity(addrs.len());
        for s in addrs {
            match parse_ip(s) {
                Ok(ip) => out.push(ip),
                Err(_) => self.warn(format!("{what} {s:?} is not an IP address; skipped")),
            }
        }
        out
    }

    /// Protocol, port and node port of a Service port, or `None` (with a warning) when
    /// the port is unusable.
    fn check_port(&mut self, port: &ServicePort) -> Option<(L4Protocol, u16, Option<u16>)> {
        // Named only in warnings, so made only for them.
        let label = || {
            port.name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| port.port.to_string())
        };
        let Some(protocol) = parse_protocol(port.protocol.as_deref()) else {
            self.warn(format!(
                "port {}: unknown protocol {:?}; port skipped",
                label(),
                port.protocol.as_deref().unwrap_or("")
            ));
            return None;
        };
        let Some(num) = valid_port(port.port) else {
            self.warn(format!(
                "port {}: port {} out of range; port skipped",
                label(),
                port.port
            ));
            return None;
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(n) => match valid_port(n) {
                Some(n) => Some(n),
                None => {
                    self.warn(format!(
                        "port {}: nodePort {n} out of range; port skipped",
                        label()
                    ));
                    return None;
                }
            },
        };
        Some((protocol, num, node_port))
    }

    /// Endpoints of the family for a Service port, merged across slices.
    fn endpoints<E: Borrow<EndpointSlice>>(
        &mut self,
        slices: &[E],
        family: Family,
        port_name: &str,
        protocol: L4Protocol,
    ) -> PortEndpoints {
        // (backend, local, zone hint) in slice order; sorted by (address, port) below,
        // where a ready copy of a duplicate wins over the first one seen.
        let node = self.settings.node_name.as_deref().unwrap_or("");
        let zone = self.settings.zone.as_deref().unwrap_or("");
        let mut found: Vec<(Backend, bool, Hints)> = Vec::new();
        for slice in slices {
            let slice: &EndpointSlice = slice.borrow();
            if slice.address_type != family.address_type() {
                continue;
            }
            let Some(target) = self.slice_port(slice, port_name, protocol) else {
                continue;
            };
            found.reserve(slice.endpoints.len());
            for ep in &slice.endpoints {
                let Some(addr) = self.endpoint_addr(slice, ep, family) else {
                    continue;
                };
                let backend = Backend {
                    addr,
                    port: target,
                    weight: 1,
                    conditions: resolve_conditions(ep),
                };
                let local = self.settings.node_name.is_some()
                    && ep.node_name.as_deref() == self.settings.node_name.as_deref();
                found.push((backend, local, Hints::of(ep, node, zone)));
            }
        }
        // Stable: among duplicates the first seen comes first; then one copy of each is
        // kept, the first ready one if any is ready, else the first.
        found.sort_by_key(|(b, _, _)| (b.addr, b.port));
        found.dedup_by(|later, kept| {
            let same = later.0.addr == kept.0.addr && later.0.port == kept.0.port;
            if same && later.0.conditions.ready && !kept.0.conditions.ready {
                *kept = *later;
            }
            same
        });
        // Topology-aware routing, as kube-proxy decides it from the hints alone: when every
        // ready endpoint has node hints and one is hinted for this node, the cluster
        // pool's new flows use only the ready endpoints hinted for it; else likewise with
        // zone hints and this node's zone; else hints are ignored. The endpoints left out
        // stay listed, so their tracked flows go on, but are not usable. Local pools
        // ignore hints.
        let prefers = |kind: fn(&Hints) -> Hint| {
            let (mut any, mut all_hinted, mut ours) = (false, true, false);
            for (_, _, hints) in found.iter().filter(|(b, _, _)| b.conditions.ready) {
                any = true;
                all_hinted &= kind(hints) != Hint::None;
                ours |= kind(hints) == Hint::Ours;
            }
            any && all_hinted && ours
        };
        let by_node: fn(&Hints) -> Hint = |h| h.node;
        let by_zone: fn(&Hints) -> Hint = |h| h.zone;
        let topology = [by_node, by_zone].into_iter().find(|&kind| prefers(kind));
        let all = found
            .iter()
            .map(|&(b, _, hints)| match topology {
                Some(kind) if b.conditions.ready && kind(&hints) != Hint::Ours => Backend {
                    conditions: ELSEWHERE,
                    ..b
                },
                _ => b,
            })
            .collect();
        let local = found
            .iter()
            .filter(|(_, l, _)| *l)
            .map(|(b, _, _)| *b)
            .collect();
        PortEndpoints { all, local }
    }

    /// The target port a slice gives for a Service port (matched by name and protocol).
    fn slice_port(
        &mut self,
        slice: &EndpointSlice,
        port_name: &str,
        protocol: L4Protocol,
    ) -> Option<u16> {
        let port = slice.ports.as_deref().unwrap_or(&[]).iter().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && parse_protocol(p.protocol.as_deref()) == Some(protocol)
        })?;
        match port.port.and_then(valid_port) {
            Some(n) => Some(n),
            None => {
                self.warn_slice(
                    slice,
                    format!("port {port_name:?} has no valid number; its endpoints skipped"),
                );
                None
            }
        }
    }

    fn endpoint_addr(
        &mut self,
        slice: &EndpointSlice,
        ep: &Endpoint,
        family: Family,
    ) -> Option<IpAddr> {
        // kube-proxy uses the first address: the others are interchangeable.
        let first = ep.addresses.first()?;
        match parse_ip(first) {
            Ok(a) if Family::of(a) == family => Some(a),
            Ok(a) => {
                self.warn_slice(
                    slice,
                    format!("endpoint {a} is not {}; skipped", family.address_type()),
                );
                None
            }
            Err(_) => {
                self.warn_slice(
                    slice,
                    format!("endpoint address {first:?} is not an IP address; skipped"),
                );
                None
            }
        }
    }
}

/// What one kind of an endpoint's hints (`forNodes` or `forZones`) says of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hint {
    /// No hints of the kind.
    None,
    /// Hinted for this node (or its zone), among others perhaps.
    Ours,
    /// Hinted for others only.
    Other,
}

impl Hint {
    fn of<'a>(mut names: impl Iterator<Item = &'a str>, ours: &str) -> Hint {
        match names.next() {
            None => Hint::None,
            Some(first) if first == ours || names.any(|n| n == ours) => Hint::Ours,
            Some(_) => Hint::Other,
        }
    }
}

/// An endpoint's node and zone hints, as they concern this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hints {
    node: Hint,
    zone: Hint,
}

impl Hints {
    fn of(ep: &Endpoint, node: &str, zone: &str) -> Hints {
        let hints = ep.hints.as_ref();
        let nodes = hints.and_then(|h| h.for_nodes.as_deref()).unwrap_or(&[]);
        let zones = hints.and_then(|h| h.for_zones.as_deref()).unwrap_or(&[]);
        Hints {
            node: Hint::of(nodes.iter().map(|n| n.name.as_str()), node),
            zone: Hint::of(zones.iter().map(|z| z.name.as_str()), zone),
        }
    }
}

/// The conditions a ready endpoint is listed with when topology-aware routing leaves it
/// out: known to the table (its tracked flows continue), never picked.
const ELSEWHERE: Conditions = Conditions {
    ready: false,
    serving: false,
    terminating: false,
};

/// How many of `backends` (already de-duplicated) new flows may use: the ready ones, or
/// when none is ready the serving and terminating ones (the table's rule).
fn usable_count(backends: &[Backend]) -> usize {
    let ready = backends.iter().filter(|b| b.conditions.ready).count();
    if ready > 0 {
        return ready;
    }
    backends
        .iter()
        .filter(|b| b.conditions.serving && b.conditions.terminating)
        .count()
}

/// An IP address as `str::parse::<IpAddr>` reads it. Dotted-quad IPv4 (the common
/// case: every endpoint address) is read by a shortcut that accepts only what the
/// standard parser accepts, with the same value; anything else goes to that parser.
fn parse_ip(s: &str) -> Result<IpAddr, std::net::AddrParseError> {
    match parse_dotted_quad(s.as_bytes()) {
        Some(v4) => Ok(IpAddr::V4(v4)),
        None => s.parse(),
    }
}

/// `a.b.c.d` with four decimal octets of one to three digits, no leading zero, each at
/// most 255; `None` for anything else (which may still be an address).
fn parse_dotted_quad(s: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut at, mut value, mut digits) = (0usize, 0u32, 0u32);
    for &c in s {
        if c == b'.' {
            *octets.get_mut(at)? = u8::try_from(value).ok().filter(|_| digits > 0)?;
            (at, value, digits) = (at + 1, 0, 0);
        } else if c.is_ascii_digit() && digits < 3 && !(digits == 1 && value == 0) {
            (value, digits) = (value * 10 + u32::from(c - b'0'), digits + 1);
        } else {
            return None;
        }
    }
    *octets.get_mut(at).filter(|_| at == 3)? = u8::try_from(value).ok().filter(|_| digits > 0)?;
    Some(std::net::Ipv4Addr::from(octets))
}

/// A Service or EndpointSlice port protocol; unset means TCP.
fn parse_protocol(p: Option<&str>) -> Option<L4Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(L4Protocol::Tcp),
        "UDP" => Some(L4Protocol::Udp),
        "SCTP" => Some(L4Protocol::Sctp),
        _ => None,
    }
}

fn valid_port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// An endpoint's conditions with unset ones resolved as the API documents:
/// `ready` → true, `serving` → `ready`, `terminating` → false.
pub fn resolve_conditions(ep: &Endpoint) -> Conditions {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    Conditions {
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    //! One table-driven test per kube-proxy rule; objects built from `..Default::default()`.

    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServiceSpec as K8sServiceSpec,
        ServiceStatus as K8sServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        EndpointConditions, EndpointHints, EndpointPort, ForNode, ForZone,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::net::SocketAddr;

    const NODE_V4: &str = "198.18.1.1";
    const NODE_V6: &str = "2001:db8:1::1";

    fn settings() -> ProxySettings {
        ProxySettings {
            node_addresses: vec![NODE_V4.parse().unwrap(), NODE_V6.parse().unwrap()],
            node_name: Some("node-a".into()),
            ..Default::default()
        }
    }

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn port(name: &str, protocol: &str, port: i32) -> ServicePort {
        ServicePort {
            name: (!name.is_empty()).then(|| name.into()),
            protocol: Some(protocol.into()),
            port,
            ..Default::default()
        }
    }

    /// A ClusterIP Service `default/<name>` with one cluster IP and one TCP port 80 "http".
    fn svc(name: &str, cluster_ip: &str) -> Service {
        Service {
            metadata: meta("default", name, &[]),
            spec: Some(K8sServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(vec![port("http", "TCP", 80)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with(mut s: Service, f: impl FnOnce(&mut K8sServiceSpec)) -> Service {
        f(s.spec.as_mut().unwrap());
        s
    }

    fn lb(s: Service, ingress: &[(&str, Option<&str>)]) -> Service {
        let mut s = with(s, |sp| sp.type_ = Some("LoadBalancer".into()));
        s.status = Some(K8sServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ingress
                        .iter()
                        .map(|(ip, mode)| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ip_mode: mode.map(str::to_string),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        s
    }

    fn ep(addr: &str) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            ..Default::default()
        }
    }

    fn ep_on(addr: &str, node: &str) -> Endpoint {
        Endpoint {
            node_name: Some(node.into()),
            ..ep(addr)
        }
    }

    fn ep_cond(
        addr: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            ..ep(addr)
        }
    }

    /// A slice of Service `default/<svc>` with ports (name, number) over TCP.
    fn slice(
        name: &str,
        svc: &str,
        family: &str,
        ports: &[(&str, i32)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta("default", name, &[(LABEL_SERVICE_NAME, svc)]),
            address_type: family.into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints,
        }
    }

    fn http_slice(svc: &str, addrs: &[&str]) -> EndpointSlice {
        slice(
            &format!("{svc}-1"),
            svc,
            "IPv4",
            &[("http", 8080)],
            addrs.iter().map(|a| ep(a)).collect(),
        )
    }

    /// What a frontend must lead to: its kind, the usable backends (`addr:port`), the
    /// no-backend action.
    type Leads = Option<(FrontendKind, Vec<&'static str>, NoBackendAction)>;

    struct Case {
        rule: &'static str,
        services: Vec<Service>,
        slices: Vec<EndpointSlice>,
        settings: ProxySettings,
        /// `addr:port/PROTO` → what it leads to (`None`: not captured).
        frontends: Vec<(&'static str, Leads)>,
        /// Service name → why it is ignored.
        ignored: Vec<(&'static str, IgnoreReason)>,
        /// Substrings each of which some warning must contain.
        warnings: Vec<&'static str>,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                rule: "",
                services: vec![],
                slices: vec![],
                settings: settings(),
                frontends: vec![],
                ignored: vec![],
                warnings: vec![],
            }
        }
    }

    fn key(s: &str) -> FrontendKey {
        let (sock, proto) = s.split_once('/').unwrap();
        let sock: SocketAddr = sock.parse().unwrap();
        FrontendKey {
            addr: sock.ip(),
            port: sock.port(),
            protocol: parse_protocol(Some(proto)).unwrap(),
        }
    }

    fn check(cases: Vec<Case>) {
        for case in cases {
            let t = translate(&case.services, &case.slices, &case.settings, None);
            for (fe, leads) in &case.frontends {
                let got = t.table.frontend(&key(fe)).map(|f| {
                    let s = t.table.service(f.service).unwrap();
                    let mut b: Vec<String> = s
                        .usable_backends()
                        .iter()
                        .map(|b| SocketAddr::new(b.addr, b.port).to_string())
                        .collect();
                    b.sort();
                    (f.kind, b, s.no_backend())
                });
                let want = leads.as_ref().map(|(k, b, a)| {
                    let mut b: Vec<String> = b.iter().map(|s| s.to_string()).collect();
                    b.sort();
                    (*k, b, *a)
                });
                assert_eq!(got, want, "{}: frontend {fe}", case.rule);
            }
            for st in &t.status {
                if let Outcome::Served(pools) = &st.outcome {
                    for p in pools {
                        let svc = t.table.service(p.id).unwrap();
                        assert_eq!(svc.name(), p.name);
                        assert_eq!(
                            p.usable,
                            svc.usable_backends().len(),
                            "{}: {}",
                            case.rule,
                            p.name
                        );
                        assert_eq!(p.backends, svc.spec().backends.len());
                    }
                }
            }
            for (name, reason) in &case.ignored {
                let st = t.status.iter().find(|s| s.name == *name).unwrap();
                assert_eq!(
                    st.outcome,
                    Outcome::Ignored(reason.clone()),
                    "{}: {name}",
                    case.rule
                );
            }
            for w in &case.warnings {
                assert!(
                    t.warnings.iter().any(|x| x.to_string().contains(w)),
                    "{}: no warning containing {w:?} in {:?}",
                    case.rule,
                    t.warnings
                );
            }
            if case.warnings.is_empty() {
                assert!(
                    t.warnings.is_empty(),
                    "{}: unexpected {:?}",
                    case.rule,
                    t.warnings
                );
            }
        }
    }

    use FrontendKind::*;
    use NoBackendAction::*;

    #[test]
    fn cluster_ips_times_ports_for_each_protocol() {
        let multi = with(svc("multi", "198.18.0.10"), |s| {
            s.ports = Some(vec![
                port("dns", "UDP", 53),
                port("dns-tcp", "TCP", 53),
                port("sig", "SCTP", 3868),
            ]);
        });
        let slices = vec![EndpointSlice {
            ports: Some(vec![
                EndpointPort {
                    name: Some("dns".into()),
                    port: Some(5353),
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("dns-tcp".into()),
                    port: Some(5353),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("sig".into()),
                    port: Some(3868),
                    protocol: Some("SCTP".into()),
                    ..Default::default()
                },
            ]),
            ..slice("multi-1", "multi", "IPv4", &[], vec![ep("10.0.0.1")])
        }];
        check(vec![Case {
            rule: "clusterIPs x ports, TCP/UDP/SCTP",
            services: vec![multi],
            slices,
            frontends: vec![
                (
                    "198.18.0.10:53/UDP",
                    Some((ClusterIp, vec!["10.0.0.1:5353"], Reject)),
                ),
                (
                    "198.18.0.10:53/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:5353"], Reject)),
                ),
                (
                    "198.18.0.10:3868/SCTP",
                    Some((ClusterIp, vec!["10.0.0.1:3868"], Reject)),
                ),
                ("198.18.0.10:80/TCP", None),
                ("198.18.1.1:53/UDP", None),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn external_ips_are_captured_for_every_type() {
        let s = with(svc("web", "198.18.0.10"), |s| {
            s.external_ips = Some(vec!["203.0.113.7".into()])
        });
        check(vec![Case {
            rule: "externalIPs",
            services: vec![s],
            slices: vec![http_slice("web", &["10.0.0.1"])],
            frontends: vec![
                (
                    "203.0.113.7:80/TCP",
                    Some((ExternalIp, vec!["10.0.0.1:8080"], Reject)),
                ),
                (
                    "198.18.0.10:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                ),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn load_balancer_ingress_ips() {
        let cluster_type_with_status = {
            let mut s = lb(svc("b", "198.18.0.11"), &[("203.0.113.11", None)]);
            s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
            s
        };
        check(vec![Case {
            rule: "status.loadBalancer.ingress[].ip, type LoadBalancer only, not ipMode Proxy",
            services: vec![
                lb(
                    svc("a", "198.18.0.10"),
                    &[
                        ("203.0.113.10", Some("VIP")),
                        ("203.0.113.20", Some("Proxy")),
                    ],
                ),
                cluster_type_with_status,
            ],
            slices: vec![
                http_slice("a", &["10.0.0.1"]),
                http_slice("b", &["10.0.0.2"]),
            ],
            frontends: vec![
                (
                    "203.0.113.10:80/TCP",
                    Some((LoadBalancer, vec!["10.0.0.1:8080"], Reject)),
                ),
                ("203.0.113.20:80/TCP", None),
                ("203.0.113.11:80/TCP", None),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn node_ports_on_node_addresses_of_the_family() {
        let np = |name, ip, ty: &str| {
            with(svc(name, ip), |s| {
                s.type_ = Some(ty.into());
                s.ports.as_mut().unwrap()[0].node_port = Some(30080 + (ty.len() as i32));
            })
        };
        check(vec![Case {
            rule: "node addresses x nodePort for NodePort and LoadBalancer",
            services: vec![
                np("n", "198.18.0.10", "NodePort"),
                np("c", "198.18.0.11", "ClusterIP"),
                np("l", "198.18.0.12", "LoadBalancer"),
            ],
            slices: vec![
                http_slice("n", &["10.0.0.1"]),
                http_slice("c", &["10.0.0.2"]),
                http_slice("l", &["10.0.0.3"]),
            ],
            frontends: vec![
                (
                    "198.18.1.1:30088/TCP",
                    Some((NodePort, vec!["10.0.0.1:8080"], Reject)),
                ),
                // A v4-only Service is not captured on the node's IPv6 address.
                ("[2001:db8:1::1]:30088/TCP", None),
                // A ClusterIP Service's stray nodePort is not captured.
                ("198.18.1.1:30089/TCP", None),
                (
                    "198.18.1.1:30092/TCP",
                    Some((NodePort, vec!["10.0.0.3:8080"], Reject)),
                ),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn external_name_and_headless_services_are_not_proxied() {
        let ext = with(svc("ext", ""), |s| {
            s.type_ = Some("ExternalName".into());
            s.external_name = Some("example.com".into());
        });
        let none = svc("none", "None");
        let empty = with(svc("empty", ""), |s| s.cluster_ips = None);
        let mut labelled = svc("labelled", "198.18.0.13");
        labelled.metadata.labels = Some([(LABEL_HEADLESS.to_string(), String::new())].into());
        check(vec![Case {
            rule: "ExternalName and headless",
            services: vec![ext, none, empty, labelled],
            slices: vec![http_slice("labelled", &["10.0.0.1"])],
            frontends: vec![("198.18.0.13:80/TCP", None)],
            ignored: vec![
                ("ext", IgnoreReason::ExternalName),
                ("none", IgnoreReason::Headless),
                ("empty", IgnoreReason::Headless),
                ("labelled", IgnoreReason::Headless),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn service_proxy_name_selects_the_services_we_serve() {
        let labelled = |name, ip, proxy: &str| {
            let mut s = svc(name, ip);
            s.metadata.labels =
                Some([(LABEL_SERVICE_PROXY_NAME.to_string(), proxy.to_string())].into());
            s
        };
        let services = vec![
            svc("plain", "198.18.0.10"),
            labelled("ours", "198.18.0.11", "kubypass"),
            labelled("theirs", "198.18.0.12", "cilium"),
        ];
        let slices = vec![
            http_slice("plain", &["10.0.0.1"]),
            http_slice("ours", &["10.0.0.2"]),
            http_slice("theirs", &["10.0.0.3"]),
        ];
        check(vec![
            Case {
                rule: "named proxy: unlabelled and ours are served, others ignored",
                services: services.clone(),
                slices: slices.clone(),
                settings: ProxySettings {
                    proxy_name: Some("kubypass".into()),
                    ..settings()
                },
                frontends: vec![
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                    ),
                    (
                        "198.18.0.11:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.2:8080"], Reject)),
                    ),
                    ("198.18.0.12:80/TCP", None),
                ],
                ignored: vec![("theirs", IgnoreReason::OtherProxy("cilium".into()))],
                ..Default::default()
            },
            Case {
                rule: "unnamed proxy: only unlabelled Services",
                services,
                slices,
                frontends: vec![
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                    ),
                    ("198.18.0.11:80/TCP", None),
                ],
                ignored: vec![("ours", IgnoreReason::OtherProxy("kubypass".into()))],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn target_port_resolves_through_the_slice_port_of_the_same_name() {
        let s = with(svc("web", "198.18.0.10"), |s| {
            let mut http = port("http", "TCP", 80);
            http.target_port = Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("web".into()),
            );
            let mut metrics = port("metrics", "TCP", 9090);
            metrics.target_port =
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9100));
            s.ports = Some(vec![http, metrics]);
        });
        let unnamed = with(svc("one", "198.18.0.11"), |s| {
            s.ports = Some(vec![port("", "TCP", 80)])
        });
        check(vec![Case {
            rule: "targetPort by name or number: the slice's number wins",
            services: vec![s, unnamed],
            slices: vec![
                // Pods disagree on the named port's number: each slice carries its own.
                slice(
                    "web-1",
                    "web",
                    "IPv4",
                    &[("http", 8080), ("metrics", 9100)],
                    vec![ep("10.0.0.1")],
                ),
                slice(
                    "web-2",
                    "web",
                    "IPv4",
                    &[("http", 8081)],
                    vec![ep("10.0.0.2")],
                ),
                slice("one-1", "one", "IPv4", &[("", 8000)], vec![ep("10.0.0.3")]),
            ],
            frontends: vec![
                (
                    "198.18.0.10:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:8080", "10.0.0.2:8081"], Reject)),
                ),
                (
                    "198.18.0.10:9090/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:9100"], Reject)),
                ),
                (
                    "198.18.0.11:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.3:8000"], Reject)),
                ),
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn endpoint_conditions_ready_else_serving_and_terminating() {
        let t = Some(true);
        let f = Some(false);
        let case = |name: &'static str, eps: Vec<Endpoint>, usable: Vec<&'static str>| Case {
            rule: name,
            services: vec![svc("web", "198.18.0.10")],
            slices: vec![slice("web-1", "web", "IPv4", &[("http", 8080)], eps)],
            frontends: vec![("198.18.0.10:80/TCP", Some((ClusterIp, usable, Reject)))],
            ..Default::default()
        };
        check(vec![
            case(
                "ready ones only",
                vec![
                    ep_cond("10.0.0.1", t, t, f),
                    ep_cond("10.0.0.2", f, t, t),
                    ep_cond("10.0.0.3", f, f, f),
                ],
                vec!["10.0.0.1:8080"],
            ),
            case(
                "none ready: serving+terminating",
                vec![
                    ep_cond("10.0.0.2", f, t, t),
                    ep_cond("10.0.0.3", f, f, t),
                    ep_cond("10.0.0.4", f, t, f),
                ],
                vec!["10.0.0.2:8080"],
            ),
            case(
                "unset conditions: ready",
                vec![ep("10.0.0.1"), ep_cond("10.0.0.2", None, None, None)],
                vec!["10.0.0.1:8080", "10.0.0.2:8080"],
            ),
            // serving unset follows ready (false), so a terminating not-ready endpoint
            // with serving unset is not used.
            case(
                "serving unset follows ready",
                vec![ep_cond("10.0.0.2", f, None, t)],
                vec![],
            ),
            // terminating unset means not terminating: a not-ready serving one is unused.
            case(
                "terminating unset is false",
                vec![ep_cond("10.0.0.2", f, t, None)],
                vec![],
            ),
        ]);
        let c = resolve_conditions(&ep_cond("10.0.0.1", None, None, None));
        assert_eq!(
            c,
            Conditions {
                ready: true,
                serving: true,
                terminating: false
            }
        );
    }

    #[test]
    fn slices_join_by_label_and_namespace_and_merge() {
        let mut other_ns = http_slice("web", &["10.0.9.9"]);
        other_ns.metadata.namespace = Some("other".into());
        other_ns.metadata.name = Some("web-other".into());
        let mut headless = http_slice("web", &["10.0.8.8"]);
        headless.metadata.name = Some("web-headless".into());
        headless
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_HEADLESS.into(), String::new());
        let mut unlabelled = http_slice("web", &["10.0.7.7"]);
        unlabelled.metadata.labels = None;
        unlabelled.metadata.name = Some("web-unlabelled".into());
        check(vec![Case {
            rule:
                "kubernetes.io/service-name, same namespace, de-duplicated, headless slices ignored",
            services: vec![svc("web", "198.18.0.10")],
            slices: vec![
                slice(
                    "web-a",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.1"), ep_cond("10.0.0.2", Some(false), None, None)],
                ),
                // The same endpoint again, ready here: the ready copy wins.
                slice(
                    "web-b",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.2"), ep("10.0.0.1")],
                ),
                other_ns,
                headless,
                unlabelled,
            ],
            frontends: vec![(
                "198.18.0.10:80/TCP",
                Some((ClusterIp, vec!["10.0.0.1:8080", "10.0.0.2:8080"], Reject)),
            )],
            ..Default::default()
        }]);
        let t = translate(
            &[svc("web", "198.18.0.10")],
            &[
                slice(
                    "web-a",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.1")],
                ),
                slice(
                    "web-b",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.1")],
                ),
            ],
            &settings(),
            None,
        );
        let Outcome::Served(pools) = &t.status[0].outcome else {
            panic!()
        };
        assert_eq!(pools[0].backends, 1, "duplicates merged");
        assert_eq!(
            t.table.service(pools[0].id).unwrap().spec().backends.len(),
            1
        );
    }

    #[test]
    fn session_affinity_client_ip() {
        let aff = |name, ip, timeout: Option<i32>| {
            with(svc(name, ip), |s| {
                s.session_affinity = Some("ClientIP".into());
                s.session_affinity_config = timeout.map(|t| SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(t),
                    }),
                });
            })
        };
        let services = vec![
            aff("dflt", "198.18.0.10", None),
            aff("short", "198.18.0.11", Some(60)),
            svc("none", "198.18.0.12"),
            aff("bad", "198.18.0.13", Some(0)),
        ];
        let t = translate(&services, &Vec::<EndpointSlice>::new(), &settings(), None);
        let affinity = |fe: &str| {
            t.table
                .frontend(&key(fe))
                .map(|f| t.table.service(f.service).unwrap().affinity_timeout_secs())
        };
        let table = [
            ("198.18.0.10:80/TCP", Some(Some(10_800))),
            ("198.18.0.11:80/TCP", Some(Some(60))),
            ("198.18.0.12:80/TCP", Some(None)),
            ("198.18.0.13:80/TCP", None),
        ];
        for (fe, want) in table {
            assert_eq!(affinity(fe), want, "{fe}");
        }
        assert!(t.warnings.iter().any(|w| w.object == "Service default/bad"));
    }

    #[test]
    fn internal_traffic_policy_local() {
        let s = with(svc("web", "198.18.0.10"), |s| {
            s.internal_traffic_policy = Some("Local".into());
            s.external_ips = Some(vec!["203.0.113.7".into()]);
        });
        let eps = |list| vec![slice("web-1", "web", "IPv4", &[("http", 8080)], list)];
        check(vec![
            Case {
                rule: "iTP Local: cluster IP uses this node's endpoints; external IPs all",
                services: vec![s.clone()],
                slices: eps(vec![
                    ep_on("10.0.0.1", "node-a"),
                    ep_on("10.0.0.2", "node-b"),
                ]),
                frontends: vec![
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.1:8080"], Drop)),
                    ),
                    (
                        "203.0.113.7:80/TCP",
                        Some((ExternalIp, vec!["10.0.0.1:8080", "10.0.0.2:8080"], Reject)),
                    ),
                ],
                ..Default::default()
            },
            Case {
                rule: "iTP Local, no local endpoint: drop",
                services: vec![s.clone()],
                slices: eps(vec![ep_on("10.0.0.2", "node-b")]),
                frontends: vec![("198.18.0.10:80/TCP", Some((ClusterIp, vec![], Drop)))],
                ..Default::default()
            },
            Case {
                rule: "iTP Local, no endpoint at all: reject",
                services: vec![s],
                frontends: vec![("198.18.0.10:80/TCP", Some((ClusterIp, vec![], Reject)))],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn external_traffic_policy_local() {
        let s = with(
            lb(svc("web", "198.18.0.10"), &[("203.0.113.10", None)]),
            |s| {
                s.external_traffic_policy = Some("Local".into());
                s.external_ips = Some(vec!["203.0.113.7".into()]);
                s.ports.as_mut().unwrap()[0].node_port = Some(30080);
            },
        );
        let cluster_type = with(svc("plain", "198.18.0.11"), |s| {
            s.external_traffic_policy = Some("Local".into());
            s.external_ips = Some(vec!["203.0.113.8".into()]);
        });
        let eps =
            |svc: &str, list| slice(&format!("{svc}-1"), svc, "IPv4", &[("http", 8080)], list);
        let local = Some((NodePort, vec!["10.0.0.1:8080"], Drop));
        check(vec![
            Case {
                rule:
                    "eTP Local: node ports, LB and external IPs use local endpoints; cluster IP all",
                services: vec![s.clone(), cluster_type],
                slices: vec![
                    eps(
                        "web",
                        vec![ep_on("10.0.0.1", "node-a"), ep_on("10.0.0.2", "node-b")],
                    ),
                    eps(
                        "plain",
                        vec![ep_on("10.0.1.1", "node-a"), ep_on("10.0.1.2", "node-b")],
                    ),
                ],
                frontends: vec![
                    ("198.18.1.1:30080/TCP", local),
                    (
                        "203.0.113.10:80/TCP",
                        Some((LoadBalancer, vec!["10.0.0.1:8080"], Drop)),
                    ),
                    (
                        "203.0.113.7:80/TCP",
                        Some((ExternalIp, vec!["10.0.0.1:8080"], Drop)),
                    ),
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.1:8080", "10.0.0.2:8080"], Reject)),
                    ),
                    // Type ClusterIP: external policy does not apply.
                    (
                        "203.0.113.8:80/TCP",
                        Some((ExternalIp, vec!["10.0.1.1:8080", "10.0.1.2:8080"], Reject)),
                    ),
                ],
                ..Default::default()
            },
            Case {
                rule: "eTP Local without a local endpoint drops; cluster IP still served",
                services: vec![s.clone()],
                slices: vec![eps("web", vec![ep_on("10.0.0.2", "node-b")])],
                frontends: vec![
                    ("198.18.1.1:30080/TCP", Some((NodePort, vec![], Drop))),
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.2:8080"], Reject)),
                    ),
                ],
                ..Default::default()
            },
            Case {
                rule: "eTP Local, local endpoint terminating only: used as the fallback",
                services: vec![s],
                slices: vec![eps(
                    "web",
                    vec![
                        Endpoint {
                            node_name: Some("node-a".into()),
                            ..ep_cond("10.0.0.1", Some(false), Some(true), Some(true))
                        },
                        ep_on("10.0.0.2", "node-b"),
                    ],
                )],
                frontends: vec![(
                    "198.18.1.1:30080/TCP",
                    Some((NodePort, vec!["10.0.0.1:8080"], Drop)),
                )],
                ..Default::default()
            },
        ]);
    }

    /// Hints for `nodes` and `zones`; none when both are empty. (A kind with no names
    /// is left unset.)
    pub(super) fn hints(nodes: &[&str], zones: &[&str]) -> Option<EndpointHints> {
        fn names(v: &[&str]) -> Option<Vec<String>> {
            (!v.is_empty()).then(|| v.iter().map(|n| n.to_string()).collect())
        }
        (!(nodes.is_empty() && zones.is_empty())).then(|| EndpointHints {
            for_nodes: names(nodes).map(|v| v.into_iter().map(|name| ForNode { name }).collect()),
            for_zones: names(zones).map(|v| v.into_iter().map(|name| ForZone { name }).collect()),
        })
    }

    /// An endpoint on `node` hinted for `zones` (none: no hints).
    fn ep_zoned(addr: &str, node: &str, zones: &[&str]) -> Endpoint {
        Endpoint {
            hints: hints(&[], zones),
            ..ep_on(addr, node)
        }
    }

    /// `ep` also hinted for `nodes`.
    fn node_hinted(mut ep: Endpoint, nodes: &[&str]) -> Endpoint {
        let zones = ep
            .hints
            .take()
            .and_then(|h| h.for_zones)
            .unwrap_or_default();
        let zones: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        ep.hints = hints(nodes, &zones);
        ep
    }

    #[test]
    fn node_hints_come_before_zone_hints() {
        let zoned = ProxySettings {
            zone: Some("zone-a".into()),
            ..settings()
        };
        let s = svc("web", "198.18.0.10");
        let eps = |list| vec![slice("web-1", "web", "IPv4", &[("http", 8080)], list)];
        let cluster = |backends: Vec<&'static str>| {
            vec![("198.18.0.10:80/TCP", Some((ClusterIp, backends, Reject)))]
        };
        check(vec![
            Case {
                rule: "every ready endpoint node-hinted, one for this node: only it",
                services: vec![s.clone()],
                slices: eps(vec![
                    node_hinted(ep_zoned("10.0.0.1", "node-b", &["zone-a"]), &["node-b"]),
                    node_hinted(ep_zoned("10.0.0.2", "node-a", &["zone-b"]), &["node-a"]),
                ]),
                settings: zoned.clone(),
                frontends: cluster(vec!["10.0.0.2:8080"]),
                ..Default::default()
            },
            Case {
                rule: "node hints, none for this node: zone hints decide",
                services: vec![s.clone()],
                slices: eps(vec![
                    node_hinted(ep_zoned("10.0.0.1", "node-b", &["zone-a"]), &["node-b"]),
                    node_hinted(ep_zoned("10.0.0.2", "node-c", &["zone-b"]), &["node-c"]),
                ]),
                settings: zoned.clone(),
                frontends: cluster(vec!["10.0.0.1:8080"]),
                ..Default::default()
            },
            Case {
                rule: "a ready endpoint without node hints: zone hints decide",
                services: vec![s.clone()],
                slices: eps(vec![
                    ep_zoned("10.0.0.1", "node-b", &["zone-a"]),
                    node_hinted(ep_zoned("10.0.0.2", "node-a", &["zone-b"]), &["node-a"]),
                ]),
                settings: zoned,
                frontends: cluster(vec!["10.0.0.1:8080"]),
                ..Default::default()
            },
            Case {
                rule: "node hints without a node name: hints ignored",
                services: vec![s],
                slices: eps(vec![
                    node_hinted(ep("10.0.0.1"), &["node-b"]),
                    node_hinted(ep("10.0.0.2"), &["node-a"]),
                ]),
                settings: ProxySettings {
                    node_name: None,
                    ..settings()
                },
                frontends: cluster(vec!["10.0.0.1:8080", "10.0.0.2:8080"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn topology_aware_routing() {
        let zoned = ProxySettings {
            zone: Some("zone-a".into()),
            ..settings()
        };
        let s = with(svc("web", "198.18.0.10"), |s| {
            s.type_ = Some("NodePort".into());
            s.external_traffic_policy = Some("Local".into());
            s.ports.as_mut().unwrap()[0].node_port = Some(30080);
        });
        let eps = |list| vec![slice("web-1", "web", "IPv4", &[("http", 8080)], list)];
        let cluster = |backends: Vec<&'static str>| {
            vec![("198.18.0.10:80/TCP", Some((ClusterIp, backends, Reject)))]
        };
        let all = vec!["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"];
        let hinted = || {
            eps(vec![
                ep_zoned("10.0.0.1", "node-b", &["zone-a"]),
                ep_zoned("10.0.0.2", "node-c", &["zone-b"]),
                ep_zoned("10.0.0.3", "node-a", &["zone-b", "zone-c"]),
            ])
        };
        check(vec![
            Case {
                rule: "every ready endpoint hinted, one for our zone: only those",
                services: vec![s.clone()],
                slices: hinted(),
                settings: zoned.clone(),
                frontends: vec![
                    (
                        "198.18.0.10:80/TCP",
                        Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                    ),
                    // The Local pool ignores hints: this node's endpoint, another zone's.
                    (
                        "198.18.1.1:30080/TCP",
                        Some((NodePort, vec!["10.0.0.3:8080"], Drop)),
                    ),
                ],
                ..Default::default()
            },
            Case {
                rule: "hints naming two zones count for each",
                services: vec![s.clone()],
                slices: hinted(),
                settings: ProxySettings {
                    zone: Some("zone-b".into()),
                    ..settings()
                },
                frontends: cluster(vec!["10.0.0.2:8080", "10.0.0.3:8080"]),
                ..Default::default()
            },
            Case {
                rule: "no endpoint hinted for our zone: hints ignored",
                services: vec![s.clone()],
                slices: hinted(),
                settings: ProxySettings {
                    zone: Some("zone-z".into()),
                    ..settings()
                },
                frontends: cluster(all.clone()),
                ..Default::default()
            },
            Case {
                rule: "zone not configured: hints ignored",
                services: vec![s.clone()],
                slices: hinted(),
                frontends: cluster(all.clone()),
                ..Default::default()
            },
            Case {
                rule: "a ready endpoint without hints: hints ignored",
                services: vec![s.clone()],
                slices: eps(vec![
                    ep_zoned("10.0.0.1", "node-b", &["zone-a"]),
                    ep_zoned("10.0.0.2", "node-c", &["zone-b"]),
                    ep_zoned("10.0.0.3", "node-a", &[]),
                ]),
                settings: zoned.clone(),
                frontends: cluster(all),
                ..Default::default()
            },
            Case {
                rule: "an unhinted endpoint that is not ready does not count",
                services: vec![s.clone()],
                slices: eps(vec![
                    ep_zoned("10.0.0.1", "node-b", &["zone-a"]),
                    ep_zoned("10.0.0.2", "node-c", &["zone-b"]),
                    ep_cond("10.0.0.4", Some(false), Some(false), Some(false)),
                ]),
                settings: zoned.clone(),
                frontends: cluster(vec!["10.0.0.1:8080"]),
                ..Default::default()
            },
            Case {
                rule: "our zone's endpoint not ready: hints ignored",
                services: vec![s.clone()],
                slices: eps(vec![
                    Endpoint {
                        conditions: Some(EndpointConditions {
                            ready: Some(false),
                            serving: Some(true),
                            terminating: Some(true),
                        }),
                        ..ep_zoned("10.0.0.1", "node-b", &["zone-a"])
                    },
                    ep_zoned("10.0.0.2", "node-c", &["zone-b"]),
                ]),
                settings: zoned.clone(),
                frontends: cluster(vec!["10.0.0.2:8080"]),
                ..Default::default()
            },
            Case {
                rule: "no ready endpoint: serving and terminating ones, hints ignored",
                services: vec![s],
                slices: eps(vec![
                    ep_cond("10.0.0.1", Some(false), Some(true), Some(true)),
                    Endpoint {
                        conditions: Some(EndpointConditions {
                            ready: Some(false),
                            serving: Some(true),
                            terminating: Some(true),
                        }),
                        ..ep_zoned("10.0.0.2", "node-c", &["zone-b"])
                    },
                ]),
                settings: zoned,
                frontends: cluster(vec!["10.0.0.1:8080", "10.0.0.2:8080"]),
                ..Default::default()
            },
        ]);
    }

    /// Endpoints of another zone stay listed while topology keeps new flows off them, so
    /// their tracked flows are not forgotten.
    #[test]
    fn endpoints_of_another_zone_stay_listed() {
        let settings = ProxySettings {
            zone: Some("zone-a".into()),
            ..settings()
        };
        let slices = vec![slice(
            "web-1",
            "web",
            "IPv4",
            &[("http", 8080)],
            vec![
                ep_zoned("10.0.0.1", "node-b", &["zone-a"]),
                ep_zoned("10.0.0.2", "node-c", &["zone-b"]),
            ],
        )];
        let t = translate(&[svc("web", "198.18.0.10")], &slices, &settings, None);
        let f = t.table.frontend(&key("198.18.0.10:80/TCP")).unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(t.table.has_backend(f.service, other, 8080));
        let svc = t.table.service(f.service).unwrap();
        assert_eq!(svc.usable_backends().len(), 1);
        assert_eq!(svc.spec().backends.len(), 2);
    }

    #[test]
    fn no_endpoints_rejects() {
        check(vec![Case {
            rule: "no endpoints: reject",
            services: vec![svc("web", "198.18.0.10")],
            slices: vec![slice("web-1", "web", "IPv4", &[("http", 8080)], vec![])],
            frontends: vec![("198.18.0.10:80/TCP", Some((ClusterIp, vec![], Reject)))],
            ..Default::default()
        }]);
    }

    #[test]
    fn load_balancer_source_ranges() {
        let s = with(
            lb(svc("web", "198.18.0.10"), &[("203.0.113.10", None)]),
            |s| {
                s.load_balancer_source_ranges = Some(vec!["192.0.2.0/24".into()]);
                s.external_ips = Some(vec!["203.0.113.7".into()]);
            },
        );
        let t = translate(
            std::slice::from_ref(&s),
            &[http_slice("web", &["10.0.0.1"])],
            &settings(),
            None,
        );
        let lbf = t.table.frontend(&key("203.0.113.10:80/TCP")).unwrap();
        let table = [("192.0.2.9", true), ("192.0.3.9", false)];
        for (client, admitted) in table {
            assert_eq!(lbf.admits(client.parse().unwrap()), admitted, "{client}");
        }
        // Source ranges restrict the load balancer IPs only.
        assert!(t
            .table
            .frontend(&key("203.0.113.7:80/TCP"))
            .unwrap()
            .admits("192.0.3.9".parse().unwrap()));
        let bad = with(s, |s| {
            s.load_balancer_source_ranges = Some(vec!["192.0.2.0/24".into(), "nonsense".into()])
        });
        check(vec![Case {
            rule: "a bad source range removes the LB frontends rather than opening them",
            services: vec![bad],
            slices: vec![http_slice("web", &["10.0.0.1"])],
            frontends: vec![
                ("203.0.113.10:80/TCP", None),
                (
                    "198.18.0.10:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                ),
            ],
            warnings: vec!["Service default/web: not an IP address in CIDR \"nonsense\""],
            ..Default::default()
        }]);
    }

    #[test]
    fn dual_stack_families_and_per_family_slices() {
        let s = with(svc("web", "198.18.0.10"), |s| {
            s.cluster_ips = Some(vec!["198.18.0.10".into(), "fd00::10".into()]);
            s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
            s.type_ = Some("NodePort".into());
            s.ports.as_mut().unwrap()[0].node_port = Some(30080);
            s.external_ips = Some(vec!["2001:db8:9::7".into()]);
        });
        let v4only = with(svc("v4", "198.18.0.11"), |s| {
            s.external_ips = Some(vec!["2001:db8:9::8".into()])
        });
        check(vec![Case {
            rule: "each family of clusterIPs gets its own frontends and same-family endpoints",
            services: vec![s, v4only],
            slices: vec![
                slice(
                    "web-4",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.1")],
                ),
                slice(
                    "web-6",
                    "web",
                    "IPv6",
                    &[("http", 8080)],
                    vec![ep("fd00:1::1")],
                ),
                slice(
                    "web-f",
                    "web",
                    "FQDN",
                    &[("http", 8080)],
                    vec![ep("example.com")],
                ),
            ],
            frontends: vec![
                (
                    "198.18.0.10:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                ),
                (
                    "[fd00::10]:80/TCP",
                    Some((ClusterIp, vec!["[fd00:1::1]:8080"], Reject)),
                ),
                (
                    "198.18.1.1:30080/TCP",
                    Some((NodePort, vec!["10.0.0.1:8080"], Reject)),
                ),
                (
                    "[2001:db8:1::1]:30080/TCP",
                    Some((NodePort, vec!["[fd00:1::1]:8080"], Reject)),
                ),
                (
                    "[2001:db8:9::7]:80/TCP",
                    Some((ExternalIp, vec!["[fd00:1::1]:8080"], Reject)),
                ),
                ("[2001:db8:9::8]:80/TCP", None),
            ],
            warnings: vec!["Service default/v4: 2001:db8:9::8 is not of a family in clusterIPs"],
            ..Default::default()
        }]);
    }

    #[test]
    fn bad_objects_skip_only_their_port_or_service() {
        let bad_ports = with(svc("web", "198.18.0.10"), |s| {
            s.ports = Some(vec![
                port("http", "TCP", 80),
                port("quic", "QUIC", 443),
                port("zero", "TCP", 0),
                port("big", "TCP", 70_000),
                {
                    let mut p = port("np", "TCP", 81);
                    p.node_port = Some(-1);
                    p
                },
            ]);
        });
        let bad_ip = with(svc("half", "198.18.0.11"), |s| {
            s.cluster_ips = Some(vec!["198.18.0.11".into(), "fd00::zz".into()])
        });
        let all_bad = svc("worse", "not-an-ip");
        check(vec![Case {
            rule: "bad port, protocol, address: skipped with a warning, the rest served",
            services: vec![bad_ports, bad_ip, all_bad, svc("fine", "198.18.0.12")],
            slices: vec![
                slice(
                    "web-1",
                    "web",
                    "IPv4",
                    &[("http", 8080)],
                    vec![ep("10.0.0.1"), ep("10.0.0.x"), ep("fd00::1")],
                ),
                slice("web-2", "web", "IPv4", &[("http", 0)], vec![ep("10.0.0.2")]),
                http_slice("fine", &["10.0.0.3"]),
            ],
            frontends: vec![
                (
                    "198.18.0.10:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.1:8080"], Reject)),
                ),
                ("198.18.0.10:81/TCP", None),
                ("198.18.0.11:80/TCP", Some((ClusterIp, vec![], Reject))),
                (
                    "198.18.0.12:80/TCP",
                    Some((ClusterIp, vec!["10.0.0.3:8080"], Reject)),
                ),
            ],
            ignored: vec![("worse", IgnoreReason::Invalid("no valid cluster IP".into()))],
            warnings: vec![
                "Service default/web: port quic: unknown protocol \"QUIC\"",
                "Service default/web: port zero: port 0 out of range",
                "Service default/web: port big: port 70000 out of range",
                "Service default/web: port np: nodePort -1 out of range",
                "Service default/half: cluster IP \"fd00::zz\"",
                "EndpointSlice default/web-1: endpoint address \"10.0.0.x\"",
                "EndpointSlice default/web-1: endpoint fd00::1 is not IPv4",
                "EndpointSlice default/web-2: port \"http\" has no valid number",
            ],
            ..Default::default()
        }]);
    }

    #[test]
    fn a_frontend_claimed_twice_goes_to_the_first_service() {
        let a = with(svc("a", "198.18.0.10"), |s| {
            s.external_ips = Some(vec!["203.0.113.7".into()])
        });
        let b = with(svc("b", "198.18.0.11"), |s| {
            s.external_ips = Some(vec!["203.0.113.7".into()])
        });
        check(vec![Case {
            rule: "duplicate frontend: first in namespace/name order wins",
            services: vec![b, a],
            slices: vec![
                http_slice("a", &["10.0.0.1"]),
                http_slice("b", &["10.0.0.2"]),
            ],
            frontends: vec![(
                "203.0.113.7:80/TCP",
                Some((ExternalIp, vec!["10.0.0.1:8080"], Reject)),
            )],
            warnings: vec!["Service default/b: frontend 203.0.113.7:80/TCP is claimed twice"],
            ..Default::default()
        }]);
    }

    #[test]
    fn generations_follow_and_unchanged_pools_reuse_maglev() {
        let services = vec![svc("a", "198.18.0.10"), svc("b", "198.18.0.11")];
        let one = translate(
            &services,
            &[
                http_slice("a", &["10.0.0.1"]),
                http_slice("b", &["10.0.0.2"]),
            ],
            &settings(),
            None,
        );
        assert_eq!(one.table.generation(), 1);
        let two = translate(
            &services,
            &[
                http_slice("a", &["10.0.0.1"]),
                http_slice("b", &["10.0.0.3"]),
            ],
            &settings(),
            Some(&one.table),
        );
        assert_eq!(two.table.generation(), 2);
        let maglev = |t: &ServiceTable, fe: &str| {
            let f = t.frontend(&key(fe)).unwrap();
            t.service(f.service).unwrap().maglev().clone()
        };
        assert!(maglev(&one.table, "198.18.0.10:80/TCP")
            .shares_slots(&maglev(&two.table, "198.18.0.10:80/TCP")));
        assert!(!maglev(&one.table, "198.18.0.11:80/TCP")
            .shares_slots(&maglev(&two.table, "198.18.0.11:80/TCP")));
    }

    #[test]
    fn ip_parse_shortcut_agrees_with_the_standard_parser() {
        let fixed = [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.5",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1..3.4",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.-4",
            "+1.2.3.4",
            "1.2.3.1000",
            "::1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "",
            "None",
            "1.2.3.4/32",
            "١.2.3.4",
        ];
        for s in fixed {
            assert_eq!(parse_ip(s), s.parse::<IpAddr>(), "{s:?}");
        }
        // Every string of up to 8 characters over digits and dots, sampled by a stride.
        let alphabet = b"0123456789.";
        let mut n: u64 = 0;
        while n < 11u64.pow(8) {
            let (mut k, mut text) = (n, String::new());
            while k > 0 {
                text.push(char::from(alphabet[(k % 11) as usize]));
                k /= 11;
            }
            assert_eq!(parse_ip(&text), text.parse::<IpAddr>(), "{text:?}");
            n += 997;
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod translator_tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec as K8sServiceSpec;
    use k8s_openapi::api::discovery::v1::EndpointPort;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(K8sServiceSpec {
                cluster_ips: Some(vec![ip.into()]),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn slice(svc: &str, addr: &str) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{svc}-1")),
                labels: Some([(LABEL_SERVICE_NAME.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                ..Default::default()
            }]),
            endpoints: vec![Endpoint {
                addresses: vec![addr.into()],
                ..Default::default()
            }],
        })
    }

    /// Everything a translation says, independent of allocation: status, warnings, each
    /// service's spec, and each frontend with the name of the service it leads to.
    #[allow(clippy::type_complexity)] // A test's flattened view of a table.
    pub(super) fn contents(
        t: &Translation,
    ) -> (
        Vec<ServiceStatus>,
        Vec<Warning>,
        Vec<ServiceSpec>,
        Vec<(FrontendKey, FrontendKind, String, Vec<IpCidr>)>,
    ) {
        let specs = t
            .table
            .services()
            .iter()
            .map(|s| s.spec().clone())
            .collect();
        let mut frontends: Vec<_> = t
            .table
            .frontends()
            .map(|f| {
                let name = t.table.service(f.service).unwrap().name().to_string();
                (f.key, f.kind, name, f.source_ranges.to_vec())
            })
            .collect();
        frontends.sort_by_key(|f| f.0);
        let status = t.status.iter().map(|s| (**s).clone()).collect();
        (status, t.warnings.clone(), specs, frontends)
    }

    /// Runs the translator from `previous` and checks it says what `translate` says.
    pub(super) fn step(
        tr: &mut Translator,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        previous: Option<&ServiceTable>,
    ) -> Translation {
        let got = tr.translate(services, slices, previous);
        let want = translate(services, slices, tr.settings(), previous);
        assert_eq!(contents(&got), contents(&want));
        assert_eq!(got.table.generation(), want.table.generation());
        got
    }

    fn shared(a: &ServiceTable, b: &ServiceTable, i: usize) -> bool {
        Arc::ptr_eq(&a.services()[i], &b.services()[i])
    }

    #[test]
    fn build_threads_fill_the_same_maglev_tables_on_the_threads_placed_by_the_hook() {
        // 220 Services of 10 endpoints: 220 tables of 1,021 slots, enough for the builder
        // to start its threads.
        let services: Vec<_> = (0..220)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    &format!("198.18.{}.{}", i / 200, i % 200 + 1),
                )
            })
            .collect();
        let slices: Vec<_> = (0..220)
            .map(|i| {
                let mut s = (*slice(&format!("s{i}"), "10.0.0.1")).clone();
                s.endpoints = (0..10)
                    .map(|j| Endpoint {
                        addresses: vec![format!("10.1.{i}.{}", j + 1)],
                        ..Default::default()
                    })
                    .collect();
                Arc::new(s)
            })
            .collect();
        let one = Translator::new(ProxySettings::default())
            .translate(&services, &slices, None)
            .table;
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let settings = ProxySettings {
            build_threads: 2,
            build_thread_start: Some(BuildThreadStart(Arc::new({
                let started = Arc::clone(&started);
                move |_| {
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }))),
            ..ProxySettings::default()
        };
        let two = Translator::new(settings)
            .translate(&services, &slices, None)
            .table;
        assert_eq!(started.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(one.services().len(), 220);
        for (a, b) in one.services().iter().zip(two.services()) {
            assert_eq!(a.usable_backends().len(), 10);
            assert_eq!(a.maglev(), b.maglev());
        }
    }

    #[test]
    fn translator_matches_translate_and_replans_only_changed_services() {
        let settings = ProxySettings::default();
        let mut services = vec![svc("a", "198.18.0.10"), svc("b", "198.18.0.11")];
        let mut slices = vec![slice("a", "10.0.0.1"), slice("b", "10.0.0.2")];
        let mut tr = Translator::new(settings.clone());
        let one = step(&mut tr, &services, &slices, None);

        // Same allocations: every table service and status entry is shared.
        let again = step(&mut tr, &services, &slices, Some(&one.table));
        assert!(shared(&one.table, &again.table, 0) && shared(&one.table, &again.table, 1));
        assert!(Arc::ptr_eq(&one.status[1], &again.status[1]));

        // One slice replaced: only its Service changes; counters follow it.
        again.table.services()[1].counters().count(0, 100, true);
        slices[1] = slice("b", "10.0.0.3");
        let two = step(&mut tr, &services, &slices, Some(&again.table));
        assert_eq!(two.table.generation(), 3);
        assert!(shared(&again.table, &two.table, 0));
        assert!(!shared(&again.table, &two.table, 1));
        assert!(Arc::ptr_eq(&again.status[0], &two.status[0]));
        assert_eq!(two.table.services()[1].counters().totals().bytes, 100);
        let b_addr = "10.0.0.3".parse().unwrap();
        assert!(two.table.has_backend(ServiceId(1), b_addr, 8080));

        // A Service object replaced under the same name, with a new frontend.
        services[0] = svc("a", "198.18.0.20");
        let three = step(&mut tr, &services, &slices, Some(&two.table));
        assert!(shared(&two.table, &three.table, 1));

        // A Service removed: re-sorted and re-assembled.
        let four = step(&mut tr, &services[1..], &slices, Some(&three.table));
        assert_eq!(four.table.services().len(), 1);
        assert_eq!(tr.entries.len(), 1);
        assert!(Arc::ptr_eq(
            &three.table.services()[1],
            &four.table.services()[0]
        ));

        // A slice added, and a table that is not the translator's last one.
        slices.push(slice("a", "10.0.0.9"));
        let five = step(&mut tr, &services, &slices, Some(&two.table));
        assert_eq!(five.table.services().len(), 2);
        let six = step(&mut tr, &services, &slices, Some(&two.table));
        assert_eq!(six.table.generation(), 4);
    }

    #[test]
    fn a_change_that_moves_claims_is_assembled_again() {
        // b loses its cluster IP's frontend to a, then gets it back.
        let settings = ProxySettings::default();
        let with_ext = |name: &str, ip: &str, ext: &str| {
            let mut s = (*svc(name, ip)).clone();
            s.spec.as_mut().unwrap().external_ips = Some(vec![ext.into()]);
            Arc::new(s)
        };
        let mut services = vec![
            with_ext("a", "198.18.0.10", "203.0.113.1"),
            with_ext("b", "198.18.0.11", "203.0.113.2"),
        ];
        let slices = vec![slice("a", "10.0.0.1"), slice("b", "10.0.0.2")];
        let mut tr = Translator::new(settings);
        let mut t = step(&mut tr, &services, &slices, None);
        for ext in ["203.0.113.2", "203.0.113.3", "203.0.113.2"] {
            services[0] = with_ext("a", "198.18.0.10", ext);
            t = step(&mut tr, &services, &slices, Some(&t.table));
        }
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    }

    #[test]
    fn slices_added_and_removed_take_the_incremental_path() {
        let settings = ProxySettings::default();
        let services: Vec<_> = (0..20)
            .map(|i| svc(&format!("s{i:02}"), &format!("198.18.0.{i}")))
            .collect();
        let mut slices: Vec<_> = (0..20)
            .map(|i| slice(&format!("s{i:02}"), &format!("10.0.0.{i}")))
            .collect();
        let mut tr = Translator::new(settings);
        let mut t = step(&mut tr, &services, &slices, None);
        let second = |svc: &str, addr: &str| {
            let mut s = (*slice(svc, addr)).clone();
            s.metadata.name = Some(format!("{svc}-2"));
            Arc::new(s)
        };
        let backends = |t: &Translation, i: u32| {
            t.table
                .service(ServiceId(i))
                .unwrap()
                .usable_backends()
                .len()
        };
        // Each step touches the Services in `touched` only. Status entries are shared
        // only on the incremental path (a re-assembly makes every one anew).
        let mut check = |slices: &[Arc<EndpointSlice>], touched: &[usize]| {
            let next = step(&mut tr, &services, slices, Some(&t.table));
            for j in (0..20).filter(|j| !touched.contains(j)) {
                assert!(shared(&t.table, &next.table, j), "service {j}");
                assert!(Arc::ptr_eq(&t.status[j], &next.status[j]), "status {j}");
            }
            for &j in touched {
                assert!(!shared(&t.table, &next.table, j), "service {j}");
            }
            t = next;
            [5, 7, 12].map(|i| backends(&t, i))
        };
        // A second slice for s07, inserted mid-list (later positions shift).
        slices.insert(3, second("s07", "10.0.1.7"));
        assert_eq!(check(&slices, &[7]), [1, 2, 1]);
        // Removed again.
        slices.remove(3);
        assert_eq!(check(&slices, &[7]), [1, 1, 1]);
        // s05's only slice removed and a slice for s12 added at the end, at once.
        slices.remove(5);
        slices.push(second("s12", "10.0.1.12"));
        assert_eq!(check(&slices, &[5, 12]), [0, 1, 2]);
        // Two slices swap places: nothing changes but the order.
        slices.swap(0, 1);
        assert_eq!(check(&slices, &[]), [0, 1, 2]);
        // A slice for no known Service: indexed, nothing rebuilt.
        slices.push(second("nobody", "10.0.1.99"));
        assert_eq!(check(&slices, &[]), [0, 1, 2]);
    }

    #[test]
    fn one_changed_endpoint_among_many() {
        let settings = ProxySettings::default();
        let services: Vec<_> = (0..50)
            .map(|i| svc(&format!("s{i:02}"), &format!("198.18.0.{i}")))
            .collect();
        let mut slices: Vec<_> = (0..50)
            .map(|i| slice(&format!("s{i:02}"), &format!("10.0.0.{i}")))
            .collect();
        let mut tr = Translator::new(settings);
        let mut t = step(&mut tr, &services, &slices, None);
        for round in 0..6 {
            let i = (round * 17) % 50;
            slices[i] = slice(&format!("s{i:02}"), &format!("10.0.1.{round}"));
            let next = step(&mut tr, &services, &slices, Some(&t.table));
            for j in (0..50).filter(|j| *j != i) {
                assert!(
                    shared(&t.table, &next.table, j),
                    "round {round}, service {j}"
                );
            }
            assert_eq!(next.table.frontend_count(), 50);
            t = next;
        }
    }
}
