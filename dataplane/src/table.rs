//! The `ServiceTable`: an immutable snapshot of every Service frontend this appliance
//! translates and the backends behind it. The control plane builds one with
//! [`ServiceTableBuilder`] off the hot path and publishes it; workers only read it.
//!
//! A dataplane "service" is one backend pool: what kube-proxy calls a service port
//! (`namespace/name:port`), possibly split in two when a traffic policy gives the
//! internal and external frontends different backend sets. Every lookup a worker makes
//! is a hash-map probe or a Maglev slot read: O(1) whatever the number of Services.
//! Frontends are in an index of their own (`table/frontend_index.rs`) whose lines a
//! worker can prefetch.

mod frontend_index;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::affinity::service_key;
use crate::hash::{addr_word, hash_words, FastMap, FastSet};
use crate::maglev::{Maglev, MaglevBackend};
pub use crate::traffic::{CounterBank, TrafficCounters, TrafficSlots, TrafficTotals};
use frontend_index::FrontendIndex;
pub use frontend_index::FrontendRef;

/// Transport protocols a Service port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl L4Protocol {
    /// The IP protocol number (IPv4 `protocol`, IPv6 `next header`).
    pub const fn ip_number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
            L4Protocol::Sctp => 132,
        }
    }

    /// The protocol for an IP protocol number, if a Service can carry it.
    pub const fn from_ip_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(L4Protocol::Tcp),
            17 => Some(L4Protocol::Udp),
            132 => Some(L4Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
            L4Protocol::Sctp => "SCTP",
        })
    }
}

/// What a frontend is looked up by: destination address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
}

/// Where a frontend address came from in the Service object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// `spec.clusterIPs` × port.
    ClusterIp,
    /// A node address × `nodePort`.
    NodePort,
    /// `status.loadBalancer.ingress[].ip` × port.
    LoadBalancer,
    /// `spec.externalIPs` × port.
    ExternalIp,
}

/// An IPv4 or IPv6 prefix, such as an entry of `loadBalancerSourceRanges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR string or value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    BadAddress(String),
    BadPrefix(String),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress(s) => write!(f, "not an IP address in CIDR {s:?}"),
            CidrError::BadPrefix(s) => write!(f, "prefix length out of range in CIDR {s:?}"),
        }
    }
}

impl std::error::Error for CidrError {}

impl IpCidr {
    /// A prefix; host bits of `addr` are cleared. Fails when `prefix_len` exceeds the
    /// family's width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > width {
            return Err(CidrError::BadPrefix(format!("{addr}/{prefix_len}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & v4_mask(prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & v6_mask(prefix_len)).into()),
        };
        Ok(IpCidr { addr, prefix_len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies inside the prefix (never across families).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn v6_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl std::str::FromStr for IpCidr {
    type Err = CidrError;
    /// `a.b.c.d/len`, `x::y/len`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| CidrError::BadPrefix(s.to_string()))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpCidr::new(addr, len).map_err(|_| CidrError::BadPrefix(s.to_string()))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Index of a service (backend pool) in its table. Only meaningful with the table that
/// issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

/// A frontend: a captured Service address, and the service it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub key: FrontendKey,
    pub kind: FrontendKind,
    pub service: ServiceId,
    /// Client prefixes allowed to use this frontend (`loadBalancerSourceRanges`); empty
    /// allows every client.
    pub source_ranges: Arc<[IpCidr]>,
}

impl Frontend {
    /// Whether `client` may use this frontend.
    #[inline]
    pub fn admits(&self, client: IpAddr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|c| c.contains(client))
    }
}

/// EndpointSlice conditions of one endpoint. Kubernetes treats an unset condition as true;
/// the control plane resolves that before building the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Conditions {
    /// A ready, serving, not terminating endpoint.
    pub const READY: Conditions = Conditions {
        ready: true,
        serving: true,
        terminating: false,
    };
}

/// One endpoint of a service: where translated traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: IpAddr,
    /// The resolved target port.
    pub port: u16,
    /// Relative weight for Maglev (Kubernetes endpoints all weigh 1).
    pub weight: u32,
    pub conditions: Conditions,
}

/// What a frontend does with a new flow when its service has no usable backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoBackendAction {
    /// TCP RST, or ICMP port unreachable for UDP and SCTP (kube-proxy's REJECT).
    Reject,
    /// Silently drop (counted); kube-proxy drops when a Local traffic policy leaves no
    /// local endpoint.
    Drop,
}

/// How a new flow picks its backend. Chosen per table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scheduler {
    /// Maglev consistent hashing over the flow's 5-tuple: every worker and every
    /// appliance with the same seed picks the same backend for the same flow.
    #[default]
    Maglev,
    /// Per-worker round robin (kube-proxy's userspace mode).
    RoundRobin,
    /// Per-worker pseudo-random choice (kube-proxy's iptables mode).
    Random,
}

/// What the control plane says about one service (backend pool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// A human name for counters and status, such as `default/web:http`.
    pub name: String,
    pub protocol: L4Protocol,
    /// Every endpoint with its conditions; the table chooses the usable ones.
    pub backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP`: the timeout in seconds; `None` for no affinity.
    pub affinity_timeout_secs: Option<u32>,
    pub no_backend: NoBackendAction,
}

/// A built service: its spec, the backends new flows may use, their Maglev table, and
/// every listed backend with its counters. Independent of its position in a table, so
/// tables share an unchanged service by `Arc` from one generation to the next.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Service {
    // What a new flow reads, first and in one cache line (the struct is line-aligned):
    // its backends, their Maglev table and counters, and the affinity timeout.
    /// The usable backends: ready ones; when none is ready, serving and terminating ones
    /// (kube-proxy's rule). Maglev indexes into this slice.
    usable: Box<[Backend]>,
    maglev: Maglev,
    /// The counters of `usable[i]`, at `i`: a backend the scheduler picks is counted
    /// without looking its address up in `listed`.
    usable_counters: Box<[TrafficSlots]>,
    /// `spec.affinity_timeout_secs`, here because every new flow reads it and the spec
    /// is another cache line.
    affinity_timeout_secs: Option<u32>,
    // The next line: its own counters and affinity key, then the rest.
    counters: TrafficSlots,
    /// [`service_key`] of the name: what affinity entries are keyed by.
    key: u64,
    /// The seed the Maglev table was filled with.
    seed: u64,
    /// Shared with the control plane's plan it came from (no copy of the backend list).
    spec: Arc<ServiceSpec>,
    /// (backend address, backend port) for every backend listed (usable or not), so a
    /// tracked flow can tell whether its backend still exists, and its counters.
    listed: FastMap<(IpAddr, u16), BackendEntry>,
}

impl Service {
    /// A key for this service that is stable across table generations (a hash of its
    /// name), for per-worker tables that outlive one table (ClientIP affinity).
    #[inline]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The service's packet, byte and new-flow counters, one row per worker; the same
    /// slot in every table built with `build_reusing` from one holding this service.
    #[inline]
    pub fn counters(&self) -> &TrafficSlots {
        &self.counters
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    pub fn protocol(&self) -> L4Protocol {
        self.spec.protocol
    }

    /// The backends new flows may be sent to.
    #[inline]
    pub fn usable_backends(&self) -> &[Backend] {
        &self.usable
    }

    /// The per-worker counters of `usable_backends()[i]`.
    #[inline]
    pub fn usable_backend_counters(&self, i: usize) -> Option<&TrafficSlots> {
        self.usable_counters.get(i)
    }

    #[inline]
    pub fn affinity_timeout_secs(&self) -> Option<u32> {
        self.affinity_timeout_secs
    }

    pub fn no_backend(&self) -> NoBackendAction {
        self.spec.no_backend
    }

    /// The Maglev choice for a flow hash: an index into [`Service::usable_backends`].
    #[inline]
    pub fn maglev_pick(&self, hash: u64) -> Option<usize> {
        self.maglev.lookup(hash).map(|i| i as usize)
    }

    pub fn maglev(&self) -> &Maglev {
        &self.maglev
    }

    /// The seed this service's Maglev table was filled with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether the service lists this backend (in any condition).
    #[inline]
    pub fn has_backend(&self, addr: IpAddr, port: u16) -> bool {
        self.listed.contains_key(&(addr, port))
    }

    /// Whether new flows may be sent to this backend (it is in the usable set).
    #[inline]
    pub fn is_usable_backend(&self, addr: IpAddr, port: u16) -> bool {
        self.listed.get(&(addr, port)).is_some_and(|b| b.usable)
    }

    /// The per-worker counters of a listed backend.
    #[inline]
    pub fn backend_counters(&self, addr: IpAddr, port: u16) -> Option<&TrafficSlots> {
        self.listed.get(&(addr, port)).map(|b| &b.counters)
    }

    /// Builds a service from its spec. From `earlier` (the same-named service of an
    /// earlier table, if any) it keeps the Maglev table when the seed and usable backends
    /// are the same, and the service's and same-addressed backends' counters when they
    /// are in `bank` (same worker count); new counters get slots of `bank`.
    /// When no Maglev table can be kept, the service gets `unfilled` and the second value
    /// is true: the caller fills its table (see [`fill_maglevs`]) and puts it in.
    fn build(
        spec: Arc<ServiceSpec>,
        seed: u64,
        bank: &Arc<CounterBank>,
        earlier: Option<&Service>,
        unfilled: &Maglev,
    ) -> (Service, bool) {
        let earlier = earlier.filter(|e| e.spec.name == spec.name);
        let counted = earlier.filter(|e| e.counters.is_in(bank));
        let usable = usable_backends(&spec.backends);
        let mut listed = FastMap::default();
        listed.reserve(spec.backends.len());
        for b in &spec.backends {
            let std::collections::hash_map::Entry::Vacant(slot) = listed.entry((b.addr, b.port))
            else {
                continue;
            };
            let counters = counted
                .and_then(|e| e.listed.get(&(b.addr, b.port)))
                .map(|e| e.counters.clone())
                .unwrap_or_else(|| bank.issue());
            slot.insert(BackendEntry {
                usable: false,
                counters,
            });
        }
        // Every usable backend is one of `spec.backends`, so listed; the fallback keeps
        // the two lists aligned regardless.
        let mut usable_counters = Vec::with_capacity(usable.len());
        for u in &usable {
            let counters = match listed.get_mut(&(u.addr, u.port)) {
                Some(entry) => {
                    entry.usable = true;
                    entry.counters.clone()
                }
                None => bank.issue(),
            };
            usable_counters.push(counters);
        }
        let counters = counted
            .map(|e| e.counters.clone())
            .unwrap_or_else(|| bank.issue());
        let (maglev, to_fill) = match earlier {
            Some(e) if e.seed == seed && *e.usable == usable[..] => (e.maglev.clone(), false),
            _ => (unfilled.clone(), true),
        };
        let service = Service {
            key: service_key(&spec.name),
            affinity_timeout_secs: spec.affinity_timeout_secs,
            spec,
            usable: usable.into_boxed_slice(),
            usable_counters: usable_counters.into_boxed_slice(),
            maglev,
            seed,
            counters,
            listed,
        };
        (service, to_fill)
    }
}

/// Runs first on every thread a table build starts, given the thread's number (1 up to
/// the build thread count, the building thread being 0): where the caller places build
/// threads. Equal when it is the same function (pointer equality).
#[derive(Clone)]
pub struct BuildThreadStart(pub Arc<dyn Fn(usize) + Send + Sync>);

impl fmt::Debug for BuildThreadStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuildThreadStart(..)")
    }
}

impl PartialEq for BuildThreadStart {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BuildThreadStart {}

/// Total slots below which [`fill_maglevs`] fills on the calling thread whatever the
/// thread count: about a millisecond of fills (~18 ns a slot, measured), where starting
/// a thread (tens of microseconds) would be a visible share. A one-endpoint change
/// fills a single table, always on the calling thread.
const PARALLEL_MIN_SLOTS: u64 = 65_536;

/// The Maglev tables of `pools` (each a usable-backend list, placed by [`backend_id`]
/// under `seed`), in order, filled on up to `threads` threads: the calling thread and
/// `threads - 1` scoped ones (none for 1, or when the tables total fewer than
/// `min_slots` slots), and the number of threads started. Threads take pools largest
/// table first, one at a time, so their loads even out by slot count. Every table is
/// [`Maglev::new`]'s, so the result does not depend on the thread count; a thread the
/// OS refuses leaves its share to the others. A started thread runs `start` first.
fn fill_maglevs(
    seed: u64,
    pools: &[&[Backend]],
    threads: usize,
    min_slots: u64,
    start: Option<&BuildThreadStart>,
) -> (Vec<Maglev>, usize) {
    let fill = |pool: &[Backend], scratch: &mut Vec<MaglevBackend>| {
        scratch.clear();
        scratch.extend(pool.iter().map(|b| MaglevBackend {
            id: backend_id(seed, b),
            weight: b.weight,
        }));
        Maglev::new(scratch)
    };
    let slots = |pool: &[Backend]| {
        u64::from(crate::maglev::table_size(
            pool.iter().filter(|b| b.weight > 0).count(),
        ))
    };
    let threads = threads.clamp(1, pools.len().max(1));
    if threads == 1 || pools.iter().map(|p| slots(p)).sum::<u64>() < min_slots {
        let mut scratch = Vec::new();
        return (pools.iter().map(|p| fill(p, &mut scratch)).collect(), 0);
    }
    // Largest first (ties in pool order): the last pools taken are the smallest, so no
    // thread is left with a big table while the others are done.
    let mut order: Vec<(u64, usize)> = pools.iter().map(|p| slots(p)).zip(0..).collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done: Vec<(usize, Maglev)> = Vec::new();
        let mut scratch = Vec::new();
        loop {
            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(_, i)) = order.get(at) else {
                return done;
            };
            if let Some(pool) = pools.get(i) {
                done.push((i, fill(pool, &mut scratch)));
            }
        }
    };
    let (mut done, started) = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|n| {
                std::thread::Builder::new()
                    .name(format!("maglev-fill-{n}"))
                    .spawn_scoped(scope, move || {
                        if let Some(start) = start {
                            (start.0)(n);
                        }
                        work()
                    })
                    .ok()
            })
            .collect();
        let started = helpers.len();
        let mut done = work();
        for h in helpers {
            // A fill does not panic; if one did, its panic is this one.
            match h.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        (done, started)
    });
    done.sort_unstable_by_key(|&(i, _)| i);
    (done.into_iter().map(|(_, m)| m).collect(), started)
}

/// What the table knows of one listed backend besides its address.
#[derive(Debug)]
struct BackendEntry {
    /// Whether new flows may use it (it is in the service's usable set).
    usable: bool,
    counters: TrafficSlots,
}

/// The usable subset of `backends`: ready ones, or when none is ready the serving and
/// terminating ones, in a canonical order (so equal sets build equal Maglev tables).
pub fn usable_backends(backends: &[Backend]) -> Vec<Backend> {
    // Sized for all (usually all are ready), so the list is allocated once and not shrunk.
    let mut usable: Vec<Backend> = Vec::with_capacity(backends.len());
    usable.extend(backends.iter().filter(|b| b.conditions.ready));
    if usable.is_empty() {
        usable.extend(
            backends
                .iter()
                .filter(|b| b.conditions.serving && b.conditions.terminating),
        );
    }
    // The control plane hands backends over sorted and without duplicates: checking that
    // costs one pass, sorting several.
    let canonical = usable
        .windows(2)
        .all(|w| matches!(w, [a, b] if (a.addr, a.port) < (b.addr, b.port)));
    if !canonical {
        usable.sort_by_key(|b| (b.addr, b.port));
        usable.dedup_by(|a, b| a.addr == b.addr && a.port == b.port);
    }
    usable
}

/// Why the builder refused an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Two frontends claim the same (address, port, protocol).
    DuplicateFrontend(FrontendKey),
    /// A frontend names a service the builder does not have.
    UnknownService(ServiceId),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::DuplicateFrontend(k) => {
                write!(
                    f,
                    "frontend {}:{}/{} is claimed twice",
                    k.addr, k.port, k.protocol
                )
            }
            TableError::UnknownService(id) => write!(f, "no service with id {}", id.0),
        }
    }
}

impl std::error::Error for TableError {}

/// The immutable snapshot workers read.
#[derive(Debug)]
pub struct ServiceTable {
    generation: u64,
    seed: u64,
    scheduler: Scheduler,
    /// Shared by `Arc` with earlier and later tables while unchanged.
    services: Vec<Arc<Service>>,
    /// Where every service's and backend's counters are (see [`crate::traffic`]).
    bank: Arc<CounterBank>,
    /// Shared with the table it was copied from while unchanged.
    frontends: Arc<FrontendIndex>,
    /// Every frontend address: what ARP/ND answers for, and what an unknown port is
    /// dropped on.
    service_addrs: FastSet<IpAddr>,
    /// Addresses that were frontend addresses in earlier tables and are not in this one
    /// (at most [`MAX_FORMER_ADDRS`]): see [`ServiceTable::is_former_service_addr`].
    former_addrs: Arc<FastSet<IpAddr>>,
    workers: usize,
}

/// The most former frontend addresses a table remembers; beyond, it forgets them all.
pub const MAX_FORMER_ADDRS: usize = 65_536;

impl ServiceTable {
    /// A builder with seed 0, Maglev scheduling and generation 0.
    pub fn builder() -> ServiceTableBuilder {
        ServiceTableBuilder::default()
    }

    /// An empty table (translates nothing).
    pub fn empty() -> Self {
        ServiceTableBuilder::default().build()
    }

    /// Increases by one per published table; a worker compares it to notice a change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The seed of every flow and backend hash in this table.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    /// The frontend for a destination, if it is a captured Service address and port.
    #[inline]
    pub fn frontend(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.frontends.find(key).and_then(|r| self.frontends.at(r))
    }

    /// Where the frontend for a destination is, if it is a captured Service address and
    /// port: [`ServiceTable::frontend_at`] then reads it without a second lookup.
    #[inline]
    pub fn find_frontend(&self, key: &FrontendKey) -> Option<FrontendRef> {
        self.frontends.find(key)
    }

    /// The frontend [`ServiceTable::find_frontend`] found.
    #[inline]
    pub fn frontend_at(&self, r: FrontendRef) -> Option<&Frontend> {
        self.frontends.at(r)
    }

    /// The line a lookup of `key` reads first, for a caller that prefetches it.
    #[inline]
    pub fn frontend_line(&self, key: &FrontendKey) -> Option<&impl Sized> {
        self.frontends.home_line(key)
    }

    /// Whether `addr` is the address of any frontend.
    #[inline]
    pub fn is_service_addr(&self, addr: IpAddr) -> bool {
        self.service_addrs.contains(&addr)
    }

    /// Whether `addr` was a frontend address in an earlier table (built from this one's
    /// predecessors with `build_reusing`) and is none now. A frame to such an address is
    /// a client's packet to a deleted frontend, whose TCP flows still drain: the flow's
    /// owner is named by the frame's source, as for any frame to a Service.
    #[inline]
    pub fn is_former_service_addr(&self, addr: IpAddr) -> bool {
        !self.former_addrs.is_empty() && self.former_addrs.contains(&addr)
    }

    /// The service with this id. Ids come from this table's frontends.
    #[inline]
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        self.services.get(id.0 as usize).map(|s| &**s)
    }

    /// Whether the service still lists this backend (in any condition).
    #[inline]
    pub fn has_backend(&self, id: ServiceId, addr: IpAddr, port: u16) -> bool {
        self.service(id).is_some_and(|s| s.has_backend(addr, port))
    }

    /// Whether new flows may still be sent to this backend (it is in the usable set).
    #[inline]
    pub fn is_usable_backend(&self, id: ServiceId, addr: IpAddr, port: u16) -> bool {
        self.service(id)
            .is_some_and(|s| s.is_usable_backend(addr, port))
    }

    /// The per-worker counters of a listed backend.
    #[inline]
    pub fn backend_counters(
        &self,
        id: ServiceId,
        addr: IpAddr,
        port: u16,
    ) -> Option<&TrafficSlots> {
        self.service(id)?.backend_counters(addr, port)
    }

    /// Every listed backend of every service with its counters (for metrics).
    pub fn backend_counters_iter(
        &self,
    ) -> impl Iterator<Item = (ServiceId, IpAddr, u16, &TrafficSlots)> {
        self.services.iter().enumerate().flat_map(|(i, s)| {
            s.listed
                .iter()
                .map(move |(&(addr, port), b)| (ServiceId(i as u32), addr, port, &b.counters))
        })
    }

    /// The number of workers the counters have slots for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The bank every counter of this table is in: a worker counts into it by slot
    /// ([`TrafficSlots::slot`]) without a lookup.
    #[inline]
    pub fn bank(&self) -> &CounterBank {
        &self.bank
    }

    /// Every service, indexed by [`ServiceId`]; each may be handed to a later table's
    /// builder ([`ServiceTableBuilder::add_built_service`]) while unchanged.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn frontends(&self) -> impl Iterator<Item = &Frontend> {
        self.frontends.iter()
    }

    /// Whether `other` holds this very frontend index (a table built after
    /// [`ServiceTableBuilder::copy_frontends`] shares it while its frontends are unchanged).
    pub fn shares_frontends(&self, other: &ServiceTable) -> bool {
        Arc::ptr_eq(&self.frontends, &other.frontends)
    }

    /// How many frontends the table has.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    pub fn service_addrs(&self) -> impl Iterator<Item = &IpAddr> {
        self.service_addrs.iter()
    }
}

/// A service waiting in a builder (two pointers wide, so a builder of shared services
/// moves little).
enum PendingService {
    /// To build, with the service it replaces if the caller named one.
    Spec(Arc<ServiceSpec>, Option<Arc<Service>>),
    /// Built already; kept as is when its seed and worker count match the table's.
    Built(Arc<Service>),
}

/// Builds a [`ServiceTable`]. Not for the hot path: it allocates freely.
#[derive(Default)]
pub struct ServiceTableBuilder {
    generation: u64,
    seed: u64,
    scheduler: Scheduler,
    services: Vec<PendingService>,
    frontends: FastMap<FrontendKey, Frontend>,
    /// The index of the table `copy_frontends` copied, while no frontend was added since
    /// (`frontends` is then empty): shared by the built table when its ids still hold.
    copied_index: Option<Arc<FrontendIndex>>,
    service_addrs: FastSet<IpAddr>,
    /// Frontends were copied from another table: their ids are checked at build.
    copied_frontends: bool,
    /// The generation of the table the frontends were copied from, while no frontend
    /// has been added since (the frontend addresses are then that table's).
    frontends_of: Option<u64>,
    /// The one empty source-range list every unrestricted frontend shares.
    no_ranges: Option<Arc<[IpCidr]>>,
    workers: usize,
    build_threads: usize,
    on_build_thread: Option<BuildThreadStart>,
    /// [`PARALLEL_MIN_SLOTS`] unless a test lowers it.
    parallel_min_slots: Option<u64>,
}

impl ServiceTableBuilder {
    /// How many threads fill Maglev tables at build, the calling one included (default
    /// and 0: 1, no thread started). The table is the same whatever the count.
    pub fn build_threads(mut self, threads: usize) -> Self {
        self.build_threads = threads;
        self
    }

    /// What every thread the build starts runs first (none by default): where the caller
    /// places them, e.g. on CPUs no worker is pinned to. Threads inherit the CPU affinity
    /// of the thread that builds, which on an appliance is a single CPU.
    pub fn on_build_thread(mut self, start: Option<BuildThreadStart>) -> Self {
        self.on_build_thread = start;
        self
    }

    /// How many workers count into the per-service and per-backend counters (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Adds a service; the id is what its frontends name. A spec passed as an
    /// `Arc<ServiceSpec>` is shared by the built service, not copied.
    pub fn add_service(&mut self, spec: impl Into<Arc<ServiceSpec>>) -> ServiceId {
        self.services.push(PendingService::Spec(spec.into(), None));
        ServiceId(self.services.len() as u32 - 1)
    }

    /// Adds a service that replaces `earlier`, a service of an earlier table with the
    /// same name: its Maglev table and counters are carried over as `build_reusing` would,
    /// without looking the name up in the previous table.
    pub fn add_service_replacing(
        &mut self,
        spec: impl Into<Arc<ServiceSpec>>,
        earlier: Arc<Service>,
    ) -> ServiceId {
        self.services
            .push(PendingService::Spec(spec.into(), Some(earlier)));
        ServiceId(self.services.len() as u32 - 1)
    }

    /// Adds a service of an earlier table, unchanged: the new table shares it (and so its
    /// Maglev table and counters) when the seed and worker count are the same; otherwise
    /// it is rebuilt from its spec, keeping what still fits.
    pub fn add_built_service(&mut self, service: Arc<Service>) -> ServiceId {
        self.services.push(PendingService::Built(service));
        ServiceId(self.services.len() as u32 - 1)
    }

    /// The number of services added so far.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Replaces the frontends added so far with a copy of `table`'s, service ids included:
    /// for a caller that adds the same services in the same order, so the ids name the
    /// same services. Frontends naming an id this builder never gets are left out at build.
    pub fn copy_frontends(&mut self, table: &ServiceTable) {
        self.frontends.clear();
        self.copied_index = Some(Arc::clone(&table.frontends));
        self.service_addrs = table.service_addrs.clone();
        self.copied_frontends = true;
        self.frontends_of = Some(table.generation);
    }

    /// Adds a frontend for a service added before.
    pub fn add_frontend(
        &mut self,
        key: FrontendKey,
        kind: FrontendKind,
        service: ServiceId,
        source_ranges: Vec<IpCidr>,
    ) -> Result<(), TableError> {
        if service.0 as usize >= self.services.len() {
            return Err(TableError::UnknownService(service));
        }
        if let Some(copied) = self.copied_index.take() {
            self.frontends = copied.iter().map(|f| (f.key, f.clone())).collect();
        }
        match self.frontends.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => {
                Err(TableError::DuplicateFrontend(key))
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                self.frontends_of = None;
                let source_ranges = if source_ranges.is_empty() {
                    self.no_ranges
                        .get_or_insert_with(|| Arc::from(Vec::new()))
                        .clone()
                } else {
                    source_ranges.into()
                };
                v.insert(Frontend {
                    key,
                    kind,
                    service,
                    source_ranges,
                });
                self.service_addrs.insert(key.addr);
                Ok(())
            }
        }
    }

    /// Builds the table, computing every Maglev table.
    pub fn build(self) -> ServiceTable {
        self.build_reusing(None)
    }

    /// Builds the table, reusing the Maglev table of any service of `previous` with the
    /// same name and the same usable backends (a one-endpoint change rebuilds one table),
    /// and carrying over the counters of same-named services and of their backends with
    /// the same address and port (when the worker count is unchanged), so counts survive
    /// table changes. Services added with [`Self::add_built_service`] are shared as they
    /// are; ones added with [`Self::add_service_replacing`] reuse what they name instead
    /// of a lookup in `previous`.
    pub fn build_reusing(self, previous: Option<&ServiceTable>) -> ServiceTable {
        let seed = self.seed;
        let workers = self.workers.max(1);
        // Counters stay in the bank of the previous table (or of the services handed over)
        // while the worker count is the same, so that shared and carried-over counters and
        // new ones are in one bank.
        let handed_over = self.services.iter().find_map(|p| match p {
            PendingService::Built(s) => Some(s.counters.bank()),
            PendingService::Spec(_, earlier) => earlier.as_ref().map(|s| s.counters.bank()),
        });
        let bank = previous
            .map(|p| &p.bank)
            .or(handed_over)
            .filter(|b| b.workers() == workers)
            .map(Arc::clone)
            .unwrap_or_else(|| CounterBank::new(workers));
        // The name index of `previous`, made the first time a service needs it.
        let mut by_name: Option<FastMap<&str, &Service>> = None;
        let mut earlier_named = |name: &str| -> Option<&Service> {
            let p = previous?;
            by_name
                .get_or_insert_with(|| p.services.iter().map(|s| (s.name(), &**s)).collect())
                .get(name)
                .copied()
        };
        // Services are made first, with the Maglev tables they keep; the tables to fill
        // are filled together afterwards, on `build_threads` threads.
        enum Made {
            Shared(Arc<Service>),
            /// A new service, and whether its Maglev table is still to fill.
            New(Service, bool),
        }
        let unfilled = Maglev::new(&[]);
        let mut made = Vec::with_capacity(self.services.len());
        for pending in self.services {
            made.push(match pending {
                PendingService::Built(s) if s.seed == seed && s.counters.is_in(&bank) => {
                    Made::Shared(s)
                }
                PendingService::Built(s) => {
                    let earlier = earlier_named(s.name()).unwrap_or(&*s);
                    let spec = Arc::clone(&s.spec);
                    let (s, fill) = Service::build(spec, seed, &bank, Some(earlier), &unfilled);
                    Made::New(s, fill)
                }
                PendingService::Spec(spec, earlier) => {
                    let earlier = match earlier.as_deref() {
                        Some(e) => Some(e),
                        None => earlier_named(&spec.name),
                    };
                    let (s, fill) = Service::build(spec, seed, &bank, earlier, &unfilled);
                    Made::New(s, fill)
                }
            });
        }
        let pools: Vec<&[Backend]> = made
            .iter()
            .filter_map(|m| match m {
                Made::New(s, true) => Some(&*s.usable),
                _ => None,
            })
            .collect();
        let min_slots = self.parallel_min_slots.unwrap_or(PARALLEL_MIN_SLOTS);
        let (filled, _) = fill_maglevs(
            seed,
            &pools,
            self.build_threads.max(1),
            min_slots,
            self.on_build_thread.as_ref(),
        );
        let unfilled_services = made.iter_mut().filter_map(|m| match m {
            Made::New(s, true) => Some(s),
            _ => None,
        });
        for (s, maglev) in unfilled_services.zip(filled) {
            s.maglev = maglev;
        }
        let services: Vec<Arc<Service>> = made
            .into_iter()
            .map(|m| match m {
                Made::Shared(s) => s,
                Made::New(s, _) => Arc::new(s),
            })
            .collect();
        let mut frontends = self.frontends;
        let mut service_addrs = self.service_addrs;
        let mut same_addrs =
            self.frontends_of.is_some() && self.frontends_of == previous.map(|p| p.generation);
        let frontends = match self.copied_index {
            // Copied and still naming only services this table has: shared.
            Some(index) if index.names_only_below(services.len()) => index,
            copied => {
                if let Some(index) = copied {
                    frontends = index.iter().map(|f| (f.key, f.clone())).collect();
                }
                if self.copied_frontends {
                    let before = frontends.len();
                    frontends.retain(|_, f| (f.service.0 as usize) < services.len());
                    if frontends.len() != before {
                        service_addrs = frontends.keys().map(|k| k.addr).collect();
                        same_addrs = false;
                    }
                }
                Arc::new(FrontendIndex::new(frontends.into_values()))
            }
        };
        let former_addrs = match previous {
            None => Arc::default(),
            Some(p) if same_addrs => Arc::clone(&p.former_addrs),
            Some(p) => {
                let gone = p.service_addrs.iter().chain(p.former_addrs.iter());
                let former: FastSet<IpAddr> = gone
                    .filter(|a| !service_addrs.contains(a))
                    .copied()
                    .collect();
                if former.len() > MAX_FORMER_ADDRS {
                    Arc::default()
                } else {
                    Arc::new(former)
                }
            }
        };
        ServiceTable {
            generation: self.generation,
            seed,
            scheduler: self.scheduler,
            services,
            bank,
            frontends,
            service_addrs,
            former_addrs,
            workers,
        }
    }
}

/// The identity hash Maglev places a backend by: a function of the seed, its address and
/// port only, so every appliance fills the same slots.
pub fn backend_id(seed: u64, backend: &Backend) -> u64 {
    hash_words(seed, &[addr_word(backend.addr), u64::from(backend.port)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(addr: &str, port: u16, conditions: Conditions) -> Backend {
        Backend {
            addr: addr.parse().unwrap(),
            port,
            weight: 1,
            conditions,
        }
    }

    fn spec(name: &str, backends: Vec<Backend>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            protocol: L4Protocol::Tcp,
            backends,
            affinity_timeout_secs: None,
            no_backend: NoBackendAction::Reject,
        }
    }

    fn key(addr: &str, port: u16) -> FrontendKey {
        FrontendKey {
            addr: addr.parse().unwrap(),
            port,
            protocol: L4Protocol::Tcp,
        }
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let terminating = Conditions {
            ready: false,
            serving: true,
            terminating: true,
        };
        let got = usable_backends(&[
            backend("10.0.0.2", 80, terminating),
            backend("10.0.0.1", 80, Conditions::READY),
        ]);
        assert_eq!(got, vec![backend("10.0.0.1", 80, Conditions::READY)]);
        let got = usable_backends(&[
            backend("10.0.0.2", 80, terminating),
            backend(
                "10.0.0.3",
                80,
                Conditions {
                    ready: false,
                    serving: false,
                    terminating: true,
                },
            ),
        ]);
        assert_eq!(got, vec![backend("10.0.0.2", 80, terminating)]);
    }

    #[test]
    fn lookup_and_addresses() {
        let mut b = ServiceTable::builder().generation(7);
        let id = b.add_service(spec(
            "default/web:http",
            vec![backend("10.0.0.1", 8080, Conditions::READY)],
        ));
        b.add_frontend(key("198.18.0.10", 80), FrontendKind::ClusterIp, id, vec![])
            .unwrap();
        assert_eq!(
            b.add_frontend(key("198.18.0.10", 80), FrontendKind::ClusterIp, id, vec![]),
            Err(TableError::DuplicateFrontend(key("198.18.0.10", 80)))
        );
        assert_eq!(
            b.add_frontend(
                key("198.18.0.11", 80),
                FrontendKind::ClusterIp,
                ServiceId(9),
                vec![]
            ),
            Err(TableError::UnknownService(ServiceId(9)))
        );
        let t = b.build();
        assert_eq!(t.generation(), 7);
        let f = t.frontend(&key("198.18.0.10", 80)).unwrap();
        assert_eq!(t.service(f.service).unwrap().usable_backends().len(), 1);
        assert!(t.frontend(&key("198.18.0.10", 81)).is_none());
        assert!(t.is_service_addr("198.18.0.10".parse().unwrap()));
        assert!(!t.is_service_addr("198.18.0.11".parse().unwrap()));
        assert!(t.has_backend(id, "10.0.0.1".parse().unwrap(), 8080));
        assert!(!t.has_backend(id, "10.0.0.1".parse().unwrap(), 8081));
    }

    #[test]
    fn unchanged_services_share_their_maglev_table() {
        let build = |second: &str, prev: Option<&ServiceTable>| {
            let mut b = ServiceTable::builder();
            b.add_service(spec("a", vec![backend("10.0.0.1", 80, Conditions::READY)]));
            b.add_service(spec("b", vec![backend(second, 80, Conditions::READY)]));
            b.build_reusing(prev)
        };
        let one = build("10.0.1.1", None);
        let two = build("10.0.1.2", Some(&one));
        assert!(one.services[0].maglev.shares_slots(&two.services[0].maglev));
        assert!(!one.services[1].maglev.shares_slots(&two.services[1].maglev));
    }

    /// Pools of 0 to 60 backends, one of weight 3 in every third pool; `round` changes
    /// the last backend of every other pool from one round to the next.
    fn pools(round: u8) -> Vec<ServiceSpec> {
        (0..14u8)
            .map(|i| {
                let n = usize::from(i) * 13 % 61;
                let backends = (0..n)
                    .map(|j| {
                        let last = j + 1 == n && i % 2 == 1;
                        let addr = format!("10.{i}.{}.{}", if last { round } else { 0 }, j + 1);
                        let mut b = backend(&addr, 80, Conditions::READY);
                        if i % 3 == 0 && j == 0 {
                            b.weight = 3;
                        }
                        b
                    })
                    .collect();
                spec(&format!("pool{i}"), backends)
            })
            .collect()
    }

    fn build_pools(round: u8, threads: usize, previous: Option<&ServiceTable>) -> ServiceTable {
        let mut b = ServiceTable::builder().seed(9).build_threads(threads);
        // Every fill set crosses the threshold, so 2 and 3 threads start threads.
        b.parallel_min_slots = Some(0);
        for s in pools(round) {
            b.add_service(s);
        }
        b.build_reusing(previous)
    }

    #[test]
    fn maglev_tables_are_the_same_on_any_number_of_build_threads() {
        let first = build_pools(0, 1, None);
        for threads in [0, 1, 2, 3] {
            let fresh = build_pools(0, threads, None);
            let next = build_pools(1, threads, Some(&first));
            for (i, s) in fresh.services.iter().enumerate() {
                assert_eq!(
                    s.maglev, first.services[i].maglev,
                    "{threads} threads, pool {i}"
                );
                let direct: Vec<MaglevBackend> = s
                    .usable
                    .iter()
                    .map(|b| MaglevBackend {
                        id: backend_id(9, b),
                        weight: b.weight,
                    })
                    .collect();
                assert_eq!(s.maglev, Maglev::new(&direct));
            }
            let again = build_pools(1, 1, Some(&first));
            for (i, s) in next.services.iter().enumerate() {
                assert_eq!(
                    s.maglev, again.services[i].maglev,
                    "{threads} threads, pool {i}"
                );
                // Even pools are unchanged: their tables are the first build's, shared.
                let kept = s.maglev.shares_slots(&first.services[i].maglev);
                assert_eq!(kept, i % 2 == 0, "{threads} threads, pool {i}");
            }
        }
    }

    #[test]
    fn fills_start_threads_only_when_asked_and_worth_it() {
        let specs = pools(0);
        let usable: Vec<Vec<Backend>> =
            specs.iter().map(|s| usable_backends(&s.backends)).collect();
        let pools: Vec<&[Backend]> = usable.iter().map(|u| &u[..]).collect();
        let (one, started) = fill_maglevs(5, &pools, 1, 0, None);
        assert_eq!(started, 0);
        for threads in [2, 3, 4] {
            let (many, started) = fill_maglevs(5, &pools, threads, 0, None);
            assert_eq!(started, threads - 1);
            assert_eq!(many, one);
        }
        // More threads than pools: one per pool.
        let (two, started) = fill_maglevs(5, &pools[..2], 8, 0, None);
        assert_eq!((started, &two[..]), (1, &one[..2]));
        // Under the slot threshold: all on the calling thread.
        let (small, started) = fill_maglevs(5, &pools, 4, u64::MAX, None);
        assert_eq!((started, small), (0, one));
    }

    #[test]
    fn started_build_threads_run_the_start_hook_first() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook = BuildThreadStart(Arc::new({
            let seen = Arc::clone(&seen);
            move |n| seen.lock().unwrap().push((n, std::thread::current().id()))
        }));
        assert_eq!(hook, hook.clone());
        let t = build_pools(0, 3, None);
        assert!(seen.lock().unwrap().is_empty());
        let mut b = ServiceTable::builder()
            .seed(9)
            .build_threads(3)
            .on_build_thread(Some(hook));
        b.parallel_min_slots = Some(0);
        for s in pools(0) {
            b.add_service(s);
        }
        let hooked = b.build();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable_by_key(|&(n, _)| n);
        assert_eq!(seen.iter().map(|&(n, _)| n).collect::<Vec<_>>(), [1, 2]);
        assert!(seen
            .iter()
            .all(|&(_, id)| id != std::thread::current().id()));
        assert_ne!(seen[0].1, seen[1].1);
        for (a, b) in t.services.iter().zip(&hooked.services) {
            assert_eq!(a.maglev, b.maglev);
        }
    }

    #[test]
    fn counters_have_a_slot_per_worker_and_follow_names_across_builds() {
        let not_ready = Conditions {
            ready: false,
            serving: false,
            terminating: true,
        };
        let build = |prev: Option<&ServiceTable>, workers: usize| {
            let mut b = ServiceTable::builder().workers(workers);
            b.add_service(spec("other", vec![]));
            b.add_service(spec(
                "web",
                vec![
                    backend("10.0.0.1", 80, Conditions::READY),
                    backend("10.0.0.2", 80, not_ready),
                ],
            ));
            b.build_reusing(prev)
        };
        let one = build(None, 3);
        let web = ServiceId(1);
        assert_eq!(one.workers(), 3);
        assert!(one.is_usable_backend(web, "10.0.0.1".parse().unwrap(), 80));
        assert!(!one.is_usable_backend(web, "10.0.0.2".parse().unwrap(), 80));
        assert!(one.has_backend(web, "10.0.0.2".parse().unwrap(), 80));
        let s = &one.services()[1];
        s.counters().count(0, 100, true);
        s.counters().count(2, 50, false);
        s.counters().count(7, 1, false); // no such worker: ignored
        assert_eq!(
            s.counters().totals(),
            TrafficTotals {
                packets: 2,
                bytes: 150,
                new_flows: 1
            }
        );
        let b1 = one
            .backend_counters(web, "10.0.0.1".parse().unwrap(), 80)
            .unwrap();
        b1.count(1, 10, true);
        let two = build(Some(&one), 3);
        assert_eq!(two.services()[1].counters().totals().bytes, 150);
        assert_eq!(
            two.backend_counters(web, "10.0.0.1".parse().unwrap(), 80)
                .unwrap()
                .totals()
                .bytes,
            10
        );
        assert_eq!(two.services()[0].counters().totals().packets, 0);
        // A different worker count starts fresh slots.
        let three = build(Some(&two), 4);
        assert_eq!(three.services()[1].counters().totals().packets, 0);
        assert_eq!(three.services()[1].counters().workers(), 4);
    }

    #[test]
    fn former_frontend_addresses_are_remembered_until_reused() {
        let table = |generation: u64, addrs: &[&str], prev: Option<&ServiceTable>| {
            let mut b = ServiceTable::builder().generation(generation);
            let a = b.add_service(spec("a", vec![backend("10.0.0.1", 80, Conditions::READY)]));
            for addr in addrs {
                b.add_frontend(key(addr, 80), FrontendKind::ClusterIp, a, vec![])
                    .unwrap();
            }
            b.build_reusing(prev)
        };
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let one = table(1, &["198.18.0.1", "198.18.0.2"], None);
        assert!(!one.is_former_service_addr(ip("198.18.0.2")));
        let two = table(2, &["198.18.0.1"], Some(&one));
        assert!(two.is_former_service_addr(ip("198.18.0.2")));
        assert!(!two.is_former_service_addr(ip("198.18.0.1")));
        // Carried through tables whose frontends were copied unchanged...
        let mut b = ServiceTable::builder().generation(3);
        b.copy_frontends(&two);
        b.add_built_service(two.services()[0].clone());
        let three = b.build_reusing(Some(&two));
        assert!(three.is_former_service_addr(ip("198.18.0.2")));
        // ... and forgotten once the address is a frontend's again.
        let four = table(4, &["198.18.0.1", "198.18.0.2"], Some(&three));
        assert!(!four.is_former_service_addr(ip("198.18.0.2")));
        assert!(four.is_service_addr(ip("198.18.0.2")));
    }

    #[test]
    fn usable_backends_counters_are_found_by_index_as_by_address() {
        let not_ready = Conditions {
            ready: false,
            serving: false,
            terminating: false,
        };
        let mut b = ServiceTable::builder();
        let id = b.add_service(spec(
            "web",
            vec![
                backend("10.0.0.9", 80, Conditions::READY),
                backend("10.0.0.2", 80, not_ready),
                backend("10.0.0.5", 8080, Conditions::READY),
                backend("10.0.0.1", 80, Conditions::READY),
            ],
        ));
        let t = b.build();
        let svc = t.service(id).unwrap();
        let usable = svc.usable_backends();
        assert_eq!(usable.len(), 3);
        for (i, u) in usable.iter().enumerate() {
            let by_index = svc.usable_backend_counters(i).unwrap().slot();
            let by_addr = svc.backend_counters(u.addr, u.port).unwrap().slot();
            assert_eq!(by_index, by_addr, "{i}: {}:{}", u.addr, u.port);
        }
        assert!(svc.usable_backend_counters(3).is_none());
    }

    #[test]
    fn built_services_are_shared_replaced_ones_keep_counters_and_frontends_copy() {
        let first = {
            let mut b = ServiceTable::builder().workers(2);
            let a = b.add_service(spec("a", vec![backend("10.0.0.1", 80, Conditions::READY)]));
            let c = b.add_service(spec("c", vec![backend("10.0.0.3", 80, Conditions::READY)]));
            b.add_frontend(key("198.18.0.1", 80), FrontendKind::ClusterIp, a, vec![])
                .unwrap();
            b.add_frontend(key("198.18.0.3", 80), FrontendKind::ClusterIp, c, vec![])
                .unwrap();
            b.build()
        };
        first
            .backend_counters(ServiceId(1), "10.0.0.3".parse().unwrap(), 80)
            .unwrap()
            .count(1, 7, true);
        first.services()[1].counters().count(0, 9, false);

        // Same seed and workers: `a` is shared; `c` is rebuilt with one more backend and
        // keeps its counters through the hint; frontends come from `first`.
        let mut b = ServiceTable::builder().workers(2).generation(2);
        b.copy_frontends(&first);
        b.add_built_service(first.services()[0].clone());
        b.add_service_replacing(
            spec(
                "c",
                vec![
                    backend("10.0.0.3", 80, Conditions::READY),
                    backend("10.0.0.4", 80, Conditions::READY),
                ],
            ),
            first.services()[1].clone(),
        );
        let second = b.build_reusing(None);
        assert!(Arc::ptr_eq(&first.services()[0], &second.services()[0]));
        let c = &second.services()[1];
        assert_eq!(c.usable_backends().len(), 2);
        assert_eq!(c.counters().totals().bytes, 9);
        let c3 = second.backend_counters(ServiceId(1), "10.0.0.3".parse().unwrap(), 80);
        assert_eq!(c3.unwrap().totals().bytes, 7);
        assert!(second.is_usable_backend(ServiceId(1), "10.0.0.4".parse().unwrap(), 80));
        assert_eq!(second.frontend_count(), 2);
        let f = second.frontend(&key("198.18.0.3", 80)).unwrap();
        assert_eq!(second.service(f.service).unwrap().name(), "c");
        // The frontends did not change: the index is shared, not rebuilt.
        assert!(second.shares_frontends(&first));
        assert_eq!(second.backend_counters_iter().count(), 3);

        // Another worker count: a built service is rebuilt, not shared; a copied frontend
        // naming a service the builder never got is left out, with its address.
        let mut b = ServiceTable::builder().workers(3);
        b.copy_frontends(&second);
        b.add_built_service(second.services()[0].clone());
        let third = b.build_reusing(Some(&second));
        assert!(!Arc::ptr_eq(&second.services()[0], &third.services()[0]));
        assert_eq!(third.services()[0].counters().workers(), 3);
        assert_eq!(third.services()[0].name(), "a");
        assert!(third.frontend(&key("198.18.0.3", 80)).is_none());
        assert!(!third.shares_frontends(&second));
        assert_eq!(third.frontend_count(), 1);

        // A frontend added after the copy: the copied ones and it, in a new index.
        let mut b = ServiceTable::builder().workers(2).generation(4);
        b.copy_frontends(&second);
        let a = b.add_built_service(second.services()[0].clone());
        b.add_built_service(second.services()[1].clone());
        b.add_frontend(key("198.18.0.9", 80), FrontendKind::ClusterIp, a, vec![])
            .unwrap();
        assert!(matches!(
            b.add_frontend(key("198.18.0.1", 80), FrontendKind::ClusterIp, a, vec![]),
            Err(TableError::DuplicateFrontend(_))
        ));
        let fourth = b.build_reusing(Some(&second));
        assert!(!fourth.shares_frontends(&second));
        assert_eq!(fourth.frontend_count(), 3);
        for (addr, name) in [
            ("198.18.0.1", "a"),
            ("198.18.0.3", "c"),
            ("198.18.0.9", "a"),
        ] {
            let f = fourth.frontend(&key(addr, 80)).unwrap();
            assert_eq!(fourth.service(f.service).unwrap().name(), name, "{addr}");
        }
        assert!(!third.is_service_addr("198.18.0.3".parse().unwrap()));
        assert!(third.is_service_addr("198.18.0.1".parse().unwrap()));
        assert!(!third.has_backend(ServiceId(1), "10.0.0.3".parse().unwrap(), 80));
    }

    /// What a new flow reads of its Service is in its first line, its counters and
    /// affinity key in the second: the two lines the worker's look-ahead prefetches.
    #[test]
    fn a_new_flows_service_fields_are_in_the_first_two_lines() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Service>(), 64);
        let end = |at: usize, size: usize| at + size;
        for e in [
            end(offset_of!(Service, usable), size_of::<Box<[Backend]>>()),
            end(offset_of!(Service, maglev), size_of::<Maglev>()),
            end(
                offset_of!(Service, usable_counters),
                size_of::<Box<[TrafficSlots]>>(),
            ),
            end(
                offset_of!(Service, affinity_timeout_secs),
                size_of::<Option<u32>>(),
            ),
        ] {
            assert!(e <= 64, "ends at {e}");
        }
        for e in [
            end(offset_of!(Service, counters), size_of::<TrafficSlots>()),
            end(offset_of!(Service, key), size_of::<u64>()),
        ] {
            assert!((64..=128).contains(&e), "ends at {e}");
        }
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: IpCidr = "198.18.0.0/15".parse().unwrap();
        assert!(c.contains("198.19.255.255".parse().unwrap()));
        assert!(!c.contains("198.20.0.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: IpCidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("nope/8".parse::<IpCidr>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<IpCidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
