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

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kubypass_dataplane::table::{
    usable_backends, Backend, Conditions, FrontendKey, FrontendKind, IpCidr, L4Protocol,
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
    /// This node's name: endpoints with this `nodeName` are local for `Local` policies.
    pub node_name: Option<String>,
    /// This node's zone (kept for topology-aware routing; not used by the rules yet).
    pub zone: Option<String>,
    /// Our `service.kubernetes.io/service-proxy-name`: Services labelled with it are ours,
    /// as are unlabelled ones; Services labelled with any other name are not.
    pub proxy_name: Option<String>,
    /// Seed of every flow and backend hash in the table.
    pub seed: u64,
    pub scheduler: Scheduler,
}

/// The outcome of [`translate`].
#[derive(Debug)]
pub struct Translation {
    pub table: ServiceTable,
    /// One entry per Service given, in namespace/name order.
    pub status: Vec<ServiceStatus>,
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
    /// Every endpoint given to the pool, with its conditions.
    pub backends: Vec<Backend>,
    /// How many of them new flows may use.
    pub usable: usize,
    pub no_backend: NoBackendAction,
}

/// Something translation skipped, naming the object it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// bad object skips only its port or Service, with a warning.
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
    let generation = previous.map_or(1, |p| p.generation().wrapping_add(1));
    let mut builder = ServiceTable::builder()
        .generation(generation)
        .seed(settings.seed)
        .scheduler(settings.scheduler);
    let mut warnings = Vec::new();

    // Slices by (namespace, service name), in slice-name order so merging is deterministic.
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let slice = slice.borrow();
        let labels = slice.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
            continue;
        }
        let Some(svc) = labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) else {
            continue;
        };
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }
    for list in by_service.values_mut() {
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }

    let mut ordered: Vec<&Service> = services.iter().map(Borrow::borrow).collect();
    ordered.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });

    let mut status = Vec::with_capacity(ordered.len());
    for svc in ordered {
        let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let slices = by_service
            .get(&(namespace.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut ctx = ServiceContext {
            object: format!("Service {namespace}/{name}"),
            namespace: &namespace,
            name: &name,
            settings,
            warnings: &mut warnings,
        };
        let outcome = ctx.translate(svc, slices, &mut builder);
        status.push(ServiceStatus {
            namespace,
            name,
            outcome,
        });
    }

    Translation {
        table: builder.build_reusing(previous),
        status,
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

/// Translation state for one Service.
struct ServiceContext<'a> {
    object: String,
    namespace: &'a str,
    name: &'a str,
    settings: &'a ProxySettings,
    warnings: &'a mut Vec<Warning>,
}

/// The backends a Service port of one family reaches, before pools are made.
struct PortEndpoints {
    all: Vec<Backend>,
    local: Vec<Backend>,
}

impl ServiceContext<'_> {
    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(Warning {
            object: self.object.clone(),
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

    fn translate(
        &mut self,
        svc: &Service,
        slices: &[&EndpointSlice],
        builder: &mut ServiceTableBuilder,
    ) -> Outcome {
        let labels = svc.metadata.labels.as_ref();
        if let Some(owner) = labels.and_then(|l| l.get(LABEL_SERVICE_PROXY_NAME)) {
            if self.settings.proxy_name.as_deref() != Some(owner.as_str()) {
                return Outcome::Ignored(IgnoreReason::OtherProxy(owner.clone()));
            }
        }
        if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
            return Outcome::Ignored(IgnoreReason::Headless);
        }
        let Some(spec) = svc.spec.as_ref() else {
            return self.invalid("no spec");
        };
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        match svc_type {
            "ExternalName" => return Outcome::Ignored(IgnoreReason::ExternalName),
            "ClusterIP" | "NodePort" | "LoadBalancer" => {}
            other => return self.invalid(format!("unknown type {other:?}")),
        }

        // Cluster IPs: their families are the families this Service is served in.
        let cluster_ip_strings: Vec<&str> = match spec.cluster_ips.as_deref() {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        if cluster_ip_strings.is_empty()
            || cluster_ip_strings
                .iter()
                .any(|s| s.is_empty() || s.eq_ignore_ascii_case("None"))
        {
            return Outcome::Ignored(IgnoreReason::Headless);
        }
        let mut cluster_ips: BTreeMap<Family, IpAddr> = BTreeMap::new();
        for s in cluster_ip_strings {
            match s.parse::<IpAddr>() {
                Ok(ip) => {
                    cluster_ips.entry(Family::of(ip)).or_insert(ip);
                }
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
                    Some(t) => return self.invalid(format!("affinity timeoutSeconds {t} out of range 1..=86400")),
                }
            }
            None | Some("None") => None,
            Some(other) => return self.invalid(format!("unknown sessionAffinity {other:?}")),
        };

        let external_ips = self.parse_addrs(spec.external_ips.as_deref().unwrap_or(&[]), "external IP");
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
        let external_local = node_ports_apply
            && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        for addr in external_ips.iter().chain(&lb_ips) {
            if !cluster_ips.contains_key(&Family::of(*addr)) {
                self.warn(format!(
                    "{addr} is not of a family in clusterIPs; not captured"
                ));
            }
        }

        let mut pools = Vec::new();
        for port in spec.ports.as_deref().unwrap_or(&[]) {
            let Some((protocol, port_num, node_port)) = self.check_port(port) else {
                continue;
            };
            let port_name = port.name.as_deref().unwrap_or("");
            for (&family, &cluster_ip) in &cluster_ips {
                let endpoints = self.endpoints(slices, family, port_name, protocol);
                let any_usable = !usable_backends(&endpoints.all).is_empty();
                let base = format!(
                    "{}/{}:{}/{}",
                    self.namespace,
                    self.name,
                    if port_name.is_empty() { port_num.to_string() } else { port_name.to_string() },
                    family.address_type()
                );
                let mut cluster_pool: Option<usize> = None;
                let mut local_pool: Option<usize> = None;
                let mut pool_for = |local: bool, pools: &mut Vec<PoolStatus>, builder: &mut ServiceTableBuilder| -> usize {
                    let slot = if local { &mut local_pool } else { &mut cluster_pool };
                    if let Some(i) = *slot {
                        return i;
                    }
                    let (name, backends, no_backend) = if local {
                        // Endpoints exist elsewhere but none here: drop (kube-proxy's
                        // "has no local endpoints"); none anywhere: reject.
                        let action = if any_usable {
                            NoBackendAction::Drop
                        } else {
                            NoBackendAction::Reject
                        };
                        (format!("{base}/local"), endpoints.local.clone(), action)
                    } else {
                        (base.clone(), endpoints.all.clone(), NoBackendAction::Reject)
                    };
                    let usable = usable_backends(&backends).len();
                    let id = builder.add_service(ServiceSpec {
                        name: name.clone(),
                        protocol,
                        backends: backends.clone(),
                        affinity_timeout_secs: affinity,
                        no_backend,
                    });
                    pools.push(PoolStatus {
                        name,
                        id,
                        frontends: Vec::new(),
                        backends,
                        usable,
                        no_backend,
                    });
                    *slot = Some(pools.len() - 1);
                    pools.len() - 1
                };

                let mut frontends: Vec<(IpAddr, u16, FrontendKind, bool, Vec<IpCidr>)> =
                    vec![(cluster_ip, port_num, FrontendKind::ClusterIp, internal_local, Vec::new())];
                for &ip in external_ips.iter().filter(|a| Family::of(**a) == family) {
                    frontends.push((ip, port_num, FrontendKind::ExternalIp, external_local, Vec::new()));
                }
                if let Some(ranges) = &source_ranges {
                    for &ip in lb_ips.iter().filter(|a| Family::of(**a) == family) {
                        frontends.push((ip, port_num, FrontendKind::LoadBalancer, external_local, ranges.clone()));
                    }
                }
                if let Some(np) = node_port.filter(|_| node_ports_apply) {
                    for &ip in self.settings.node_addresses.iter().filter(|a| Family::of(**a) == family) {
                        frontends.push((ip, np, FrontendKind::NodePort, external_local, Vec::new()));
                    }
                }
                for (addr, fport, kind, local, ranges) in frontends {
                    let i = pool_for(local, &mut pools, builder);
                    let key = FrontendKey {
                        addr,
                        port: fport,
                        protocol,
                    };
                    match builder.add_frontend(key, kind, pools[i].id, ranges) {
                        Ok(()) => pools[i].frontends.push((key, kind)),
                        Err(e) => self.warn(format!("{e}; frontend skipped")),
                    }
                }
            }
        }
        Outcome::Served(pools)
    }

    fn invalid(&mut self, why: impl Into<String>) -> Outcome {
        let why = why.into();
        self.warn(format!("{why}; Service skipped"));
        Outcome::Ignored(IgnoreReason::Invalid(why))
    }

    fn parse_addrs(&mut self, addrs: &[String], what: &str) -> Vec<IpAddr> {
        let mut out = Vec::with_capacity(addrs.len());
        for s in addrs {
            match s.parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(_) => self.warn(format!("{what} {s:?} is not an IP address; skipped")),
            }
        }
        out
    }

    /// Protocol, port and node port of a Service port, or `None` (with a warning) when
    /// the port is unusable.
    fn check_port(&mut self, port: &ServicePort) -> Option<(L4Protocol, u16, Option<u16>)> {
        let label = port
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| port.port.to_string());
        let Some(protocol) = parse_protocol(port.protocol.as_deref()) else {
            self.warn(format!(
                "port {label}: unknown protocol {:?}; port skipped",
                port.protocol.as_deref().unwrap_or("")
            ));
            return None;
        };
        let Some(num) = valid_port(port.port) else {
            self.warn(format!("port {label}: port {} out of range; port skipped", port.port));
            return None;
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(n) => match valid_port(n) {
                Some(n) => Some(n),
                None => {
                    self.warn(format!("port {label}: nodePort {n} out of range; port skipped"));
                    return None;
                }
            },
        };
        Some((protocol, num, node_port))
    }

    /// Endpoints of the family for a Service port, merged across slices.
    fn endpoints(
        &mut self,
        slices: &[&EndpointSlice],
        family: Family,
        port_name: &str,
        protocol: L4Protocol,
    ) -> PortEndpoints {
        // Keyed by (address, port): a ready copy of a duplicate wins.
        let mut merged: BTreeMap<(IpAddr, u16), (Backend, bool)> = BTreeMap::new();
        for slice in slices {
            if slice.address_type != family.address_type() {
                continue;
            }
            let Some(target) = self.slice_port(slice, port_name, protocol) else {
                continue;
            };
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
                let entry = merged.entry((addr, target)).or_insert((backend, local));
                if backend.conditions.ready && !entry.0.conditions.ready {
                    *entry = (backend, local);
                }
            }
        }
        let mut all = Vec::with_capacity(merged.len());
        let mut local = Vec::new();
        for (backend, is_local) in merged.into_values() {
            all.push(backend);
            if is_local {
                local.push(backend);
            }
        }
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

    fn endpoint_addr(&mut self, slice: &EndpointSlice, ep: &Endpoint, family: Family) -> Option<IpAddr> {
        // kube-proxy uses the first address: the others are interchangeable.
        let first = ep.addresses.first()?;
        match first.parse::<IpAddr>() {
            Ok(a) if Family::of(a) == family => Some(a),
            Ok(a) => {
                self.warn_slice(slice, format!("endpoint {a} is not {}; skipped", family.address_type()));
                None
            }
            Err(_) => {
                self.warn_slice(slice, format!("endpoint address {first:?} is not an IP address; skipped"));
                None
            }
        }
    }
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
