//! The service appliance: the dataplane pipeline as the workers' frame processor, and the
//! control thread beside them (control plane, neighbour learning, admin server).
//!
//! Workers read two snapshots, both published with one lock-free pointer swap and both
//! loaded once per burst: the `ServiceTable` (from the control plane) and the
//! `NeighbourTable`. Workers never write shared state: what they learn from ARP and ND
//! goes through a bounded lock-free queue to the control thread, which merges it and
//! publishes the next neighbour snapshot. The control thread also keeps each snapshot it
//! replaces until the workers have let go of it, and frees it itself ([`Retired`]), so
//! that freeing a large table never stalls a worker.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use kubypass_control::{Publisher, SourceHealth};
use kubypass_dataplane::pipeline::{
    Context, MacAddr, NeighbourTable, PipelineCounters, Verdict, Worker, WorkerConfig,
};
use kubypass_dataplane::table::{BuildThreadStart, Service, ServiceTable};

use crate::config::{Config, ConfigError, SchedulerKind};
use crate::runtime::{Action, ChecksumCaps, FrameProcessor, L4Checksum, TxOffload, WorkerCounters};
use kubypass_control::{ControlConfig, ProxySettings, SourceConfig};
use kubypass_dataplane::hash::{FastMap, FastSet};
use kubypass_dataplane::pipeline::{
    ChecksumOffload, PortConfig as PipelinePort, Route, Routes, TxChecksumOffloads,
};
use kubypass_dataplane::table::{IpCidr, L4Protocol, Scheduler};
use std::net::SocketAddr;
use std::path::Path;

/// Most neighbours the control thread keeps. When a new one would not fit, the oldest
/// learned neighbour that nothing needs is forgotten to make room (see
/// [`NeighbourBook`]); when every one is needed, the new one is ignored (and counted).
pub const MAX_NEIGHBOURS: usize = 65_536;
/// Least time between two merges that forget neighbours to make room: a snapshot that
/// forgets or changes an entry sends every flow's next packet through the full pipeline
/// once (the fast path's next hop is cached per snapshot version, which additions keep),
/// so a flood of new senders must not make the table forget every merge once it is full.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(1);
/// Capacity of the queue from workers to the control thread.
pub const LEARNED_QUEUE: usize = 4096;

/// Longest a new table waits for its new backends' next hops to resolve before workers
/// see it anyway.
pub const GATE_MAX_WAIT: Duration = Duration::from_millis(200);

/// Most replaced snapshots a [`Retired`] list keeps waiting for their last worker.
pub const RETIRED_MAX: usize = 8;

/// Snapshots the control thread has replaced (Service or neighbour tables), kept until it
/// holds the last reference, so that they are freed on the control thread instead of on
/// the worker that lets go last (freeing a table of 10,000 Services is a latency spike on
/// the packet path).
///
/// A snapshot's reference count is exact once it has been swapped out: arc-swap's `swap`
/// (and `store`) pays every outstanding `Guard`'s debt, turning it into a counted
/// reference, before it returns; and a swapped-out snapshot cannot be reached from the
/// shared handles again. So a count of 1 means no worker holds it or can take it.
///
/// Bounded: with more than [`RETIRED_MAX`] waiting (a worker stalled for many
/// publications), the oldest is let go, and whoever holds it last frees it, perhaps a
/// worker.
pub struct Retired<T> {
    held: VecDeque<Arc<T>>,
}

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Retired {
            held: VecDeque::with_capacity(RETIRED_MAX + 1),
        }
    }
}

impl<T> Retired<T> {
    /// Keeps `old`, just swapped out of a shared handle, until [`Retired::release`] finds
    /// it held by nobody else.
    pub fn retire(&mut self, old: Arc<T>) {
        self.held.push_back(old);
        if self.held.len() > RETIRED_MAX {
            self.held.pop_front();
        }
    }

    /// Frees the snapshots nobody else holds any longer. Returns how many.
    pub fn release(&mut self) -> usize {
        let before = self.held.len();
        self.held.retain(|t| Arc::strong_count(t) > 1);
        before - self.held.len()
    }

    /// Snapshots still held by a worker (or another holder).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The lock-free handles shared by workers and the control thread.
#[derive(Clone)]
pub struct Shared {
    /// Where the control plane publishes each table it builds.
    pub publisher: Publisher,
    /// The table workers read: the control plane's latest, once the next hops of the
    /// backends it adds are resolved (see [`Gate`]).
    pub visible: Arc<ArcSwap<ServiceTable>>,
    /// A table held at the gate: worker 0 probes its backends' next hops.
    pub pending: Arc<ArcSwapOption<ServiceTable>>,
    /// How long the last table waited at the gate, in nanoseconds.
    pub gate_wait_ns: Arc<AtomicU64>,
    pub neighbours: Arc<ArcSwap<NeighbourTable>>,
    pub learned: Arc<ArrayQueue<(IpAddr, MacAddr)>>,
    /// Neighbours ignored because the table was full of needed ones.
    pub neighbours_ignored: Arc<AtomicU64>,
    /// Learned neighbours forgotten to make room for new ones.
    pub neighbours_evicted: Arc<AtomicU64>,
    pub health: SourceHealth,
}

impl Shared {
    pub fn new(static_neighbours: NeighbourTable) -> Self {
        let publisher = Publisher::new();
        Shared {
            visible: Arc::new(ArcSwap::new(publisher.current())),
            pending: Arc::new(ArcSwapOption::empty()),
            gate_wait_ns: Arc::new(AtomicU64::new(0)),
            publisher,
            neighbours: Arc::new(ArcSwap::from_pointee(static_neighbours)),
            learned: Arc::new(ArrayQueue::new(LEARNED_QUEUE)),
            neighbours_ignored: Arc::new(AtomicU64::new(0)),
            neighbours_evicted: Arc::new(AtomicU64::new(0)),
            health: SourceHealth::new(),
        }
    }

    /// Merges what workers learned into the neighbour snapshot; publishes only when
    /// something changed, keeping the snapshot it replaces in the book's retired list (and
    /// freeing the retired ones workers have let go of). A new neighbour that would take
    /// the table past the book's capacity takes the place of the oldest learned one
    /// nothing needs ([`NeighbourBook`]), or is ignored when all are needed. Returns how
    /// many entries were added or changed.
    pub fn merge_learned(&self, book: &mut NeighbourBook) -> usize {
        book.retired.release();
        let current = self.neighbours.load_full();
        if current.len() >= book.capacity && !book.may_evict() {
            // Full, and made room lately: what workers learned waits in the queue (what
            // does not fit is lost, and learned again from the next ARP/ND frame).
            return 0;
        }
        // What changes, in the order first reported (an address reported twice keeps its
        // place and takes its last MAC).
        let mut fresh: Vec<(IpAddr, MacAddr)> = Vec::new();
        let mut at: FastMap<IpAddr, usize> = FastMap::default();
        while let Some((addr, mac)) = self.learned.pop() {
            match at.get(&addr) {
                Some(&i) => {
                    if let Some(entry) = fresh.get_mut(i) {
                        entry.1 = mac;
                    }
                }
                None => {
                    at.insert(addr, fresh.len());
                    fresh.push((addr, mac));
                }
            }
        }
        fresh.retain(|&(addr, mac)| current.get(addr) != Some(mac));
        if fresh.is_empty() {
            return 0;
        }
        let added = fresh
            .iter()
            .filter(|(a, _)| current.get(*a).is_none())
            .count();
        let over = (current.len() + added).saturating_sub(book.capacity);
        let forgotten = if over > 0 {
            book.make_room(over, &current, self)
        } else {
            Vec::new()
        };
        if forgotten.len() < over {
            // No room for all: the last-reported new addresses go without.
            let refused: FastSet<IpAddr> = fresh
                .iter()
                .rev()
                .filter(|(a, _)| current.get(*a).is_none())
                .take(over - forgotten.len())
                .map(|(a, _)| *a)
                .collect();
            self.neighbours_ignored
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
            fresh.retain(|(a, _)| !refused.contains(a));
        }
        if !forgotten.is_empty() {
            book.last_eviction = Some(std::time::Instant::now());
        }
        self.neighbours_evicted
            .fetch_add(forgotten.len() as u64, Ordering::Relaxed);
        if fresh.is_empty() && forgotten.is_empty() {
            return 0;
        }
        for &(addr, _) in &fresh {
            book.learned(addr);
        }
        let next = current.with_changes(fresh.iter().copied(), &forgotten);
        book.retired.retire(self.neighbours.swap(Arc::new(next)));
        fresh.len()
    }
}

/// The control thread's side of the neighbour table: which entries were learned and
/// when, which must never be forgotten, and the snapshots it replaced.
///
/// A table that never forgets fills up: every on-link client is learned (its MAC is in
/// its first frame), and on a busy or hostile link (an ARP or ND flood from spoofed
/// senders, a /64 of temporary IPv6 addresses) it would reach [`MAX_NEIGHBOURS`] and then
/// refuse the next hop of a new backend for good. So when a new neighbour would not
/// fit, the oldest learned entries make room, except those something needs:
/// - configured neighbours (static);
/// - route gateways (every off-link client's replies and off-link backends go through
///   them);
/// - the next hops of the backends of the table workers use and of the one waiting at
///   the [`Gate`].
///
/// A forgotten client is learned again from its next frame, or resolved by ARP/ND when
/// a reply needs it. Oldest means first learned (or last changed): workers report a
/// neighbour only when the snapshot does not already have it, so use does not refresh.
/// A full table makes room at most once per eviction interval ([`EVICT_INTERVAL`]);
/// in between, what workers learn waits (a MAC change too).
pub struct NeighbourBook {
    retired: Retired<NeighbourTable>,
    capacity: usize,
    evict_interval: Duration,
    last_eviction: Option<std::time::Instant>,
    routes: Routes,
    /// Configured neighbours and route gateways.
    pinned: FastSet<IpAddr>,
    /// Learned addresses in the order learned, with the number each was learned under;
    /// an entry whose number is no longer the address's in `numbers` is stale.
    order: VecDeque<(IpAddr, u64)>,
    numbers: FastMap<IpAddr, u64>,
    next_number: u64,
    /// The backends' next hops, and the generations (visible, pending) they are for.
    needed: FastSet<IpAddr>,
    needed_for: Option<(u64, Option<u64>)>,
}

impl NeighbourBook {
    /// The book for `plan`'s configured neighbours and routes, holding at most
    /// [`MAX_NEIGHBOURS`].
    pub fn new(plan: &Plan) -> Self {
        let pinned = plan.neighbours.iter().map(|(a, _)| *a);
        Self::with_capacity(
            plan_routes(plan),
            pinned,
            &plan.routes,
            MAX_NEIGHBOURS,
            EVICT_INTERVAL,
        )
    }

    /// A book over `routes` that never forgets `pinned` nor the gateways of `statics`,
    /// holding at most `capacity` neighbours and making room at most once per
    /// `evict_interval`.
    pub fn with_capacity(
        routes: Routes,
        pinned: impl IntoIterator<Item = IpAddr>,
        statics: &[Route],
        capacity: usize,
        evict_interval: Duration,
    ) -> Self {
        let pinned = pinned
            .into_iter()
            .chain(statics.iter().filter_map(|r| r.via))
            .collect();
        NeighbourBook {
            retired: Retired::default(),
            capacity,
            evict_interval,
            last_eviction: None,
            routes,
            pinned,
            order: VecDeque::new(),
            numbers: FastMap::default(),
            next_number: 0,
            needed: FastSet::default(),
            needed_for: None,
        }
    }

    /// Whether the eviction interval has passed since room was last made.
    fn may_evict(&self) -> bool {
        self.last_eviction
            .map_or(true, |t| t.elapsed() >= self.evict_interval)
    }

    /// Notes that `addr` was learned (or changed) now.
    fn learned(&mut self, addr: IpAddr) {
        let n = self.next_number;
        self.next_number += 1;
        self.numbers.insert(addr, n);
        self.order.push_back((addr, n));
        // Stale queue entries are dropped as they reach the front; bound them too.
        if self.order.len() > 2 * self.numbers.len() + 1024 {
            let numbers = &self.numbers;
            self.order.retain(|(a, n)| numbers.get(a) == Some(n));
        }
    }

    /// Picks up to `count` learned entries of `current` to forget, oldest first, none
    /// that is pinned or needed. Needed entries met on the way go to the back of the
    /// queue, so each is passed over once per round of the queue.
    fn make_room(
        &mut self,
        count: usize,
        current: &NeighbourTable,
        shared: &Shared,
    ) -> Vec<IpAddr> {
        self.refresh_needed(shared);
        let mut forgotten = Vec::new();
        let mut passed = 0;
        let live = self.order.len();
        while forgotten.len() < count && passed < live {
            let Some((addr, n)) = self.order.pop_front() else {
                break;
            };
            passed += 1;
            if self.numbers.get(&addr) != Some(&n) || current.get(addr).is_none() {
                continue;
            }
            if self.pinned.contains(&addr) || self.needed.contains(&addr) {
                self.order.push_back((addr, n));
                continue;
            }
            self.numbers.remove(&addr);
            forgotten.push(addr);
        }
        forgotten
    }

    /// Recomputes the backends' next hops when the visible or pending table changed.
    fn refresh_needed(&mut self, shared: &Shared) {
        let visible = shared.visible.load_full();
        let pending = shared.pending.load_full();
        let key = (
            visible.generation(),
            pending.as_ref().map(|t| t.generation()),
        );
        if self.needed_for == Some(key) {
            return;
        }
        self.needed.clear();
        for table in std::iter::once(&visible).chain(pending.as_ref()) {
            for s in table.services() {
                for b in s.usable_backends() {
                    if let Some(hop) = self.routes.lookup(b.addr) {
                        self.needed.insert(hop.addr);
                    }
                }
            }
        }
        self.needed_for = Some(key);
    }
}

/// The routing table of `plan`'s ports and static routes (port MACs do not matter to a
/// lookup).
fn plan_routes(plan: &Plan) -> Routes {
    let ports: Vec<PipelinePort> = plan
        .port_addrs
        .iter()
        .map(|addrs| PipelinePort {
            mac: [0; 6],
            addrs: addrs.clone(),
            tx_offloads: Default::default(),
        })
        .collect();
    Routes::new(&ports, &plan.routes)
}

/// Everything the Service appliance derives from the configuration, checked before DPDK
/// is touched.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Per port, in configuration order: the appliance's addresses and prefixes.
    pub port_addrs: Vec<Vec<(IpAddr, u8)>>,
    pub routes: Vec<Route>,
    pub neighbours: NeighbourTable,
    pub control: ControlConfig,
    pub admin: Option<SocketAddr>,
    pub max_out_of_sync: Duration,
    pub conntrack_capacity: usize,
    pub affinity_capacity: usize,
    pub fragment_capacity: usize,
    pub promiscuous: bool,
    /// `services.build_threads`: the Maglev build threads asked for, if any (see
    /// [`build_pool`] for the default).
    pub build_threads: Option<usize>,
}

/// The most build threads chosen by default.
pub const MAX_DEFAULT_BUILD_THREADS: usize = 4;

/// How many threads fill Maglev tables, and where each thread a build starts runs:
/// `configured`, or by default one per CPU of `cpus` (those the process could use at
/// start) that no worker is pinned to, between 1 and [`MAX_DEFAULT_BUILD_THREADS`]. The
/// control thread stays on `main_cpu`; build thread `n` (from 1) is pinned to the `n`-th
/// spare CPU other than `main_cpu` (cycling, and ending on `main_cpu` itself), so builds
/// never run on a worker's core. No spare CPU known: no pinning.
pub fn build_pool(
    configured: Option<usize>,
    cpus: &[usize],
    worker_cpus: &[usize],
    main_cpu: usize,
) -> (usize, Option<BuildThreadStart>) {
    let mut spare: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !worker_cpus.contains(c) && *c != main_cpu)
        .collect();
    if cpus.contains(&main_cpu) && !worker_cpus.contains(&main_cpu) {
        spare.push(main_cpu);
    }
    let threads = match configured {
        Some(n) => n.max(1),
        None => spare.len().clamp(1, MAX_DEFAULT_BUILD_THREADS),
    };
    if threads == 1 || spare.is_empty() {
        return (threads, None);
    }
    let start = BuildThreadStart(Arc::new(move |n: usize| {
        if let Some(&cpu) = spare.get(n.saturating_sub(1) % spare.len()) {
            // A refusal leaves the thread where it was started (the main CPU).
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        }
    }));
    (threads, Some(start))
}

/// Parses `02:00:c6:12:01:02`.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split([':', '-']);
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_prefixed(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    IpCidr::new(addr, len).ok()?;
    Some((addr, len))
}

impl Plan {
    /// Checks the Service-related sections of `config`; relative manifest paths are taken
    /// from `config_dir`.
    pub fn new(config: &Config, config_dir: &Path) -> Result<Plan, ConfigError> {
        let bad = |m: String| ConfigError::Value(m);
        let services = config.services.clone().ok_or_else(|| {
            bad("workers.processor is service but there is no `services:` section: add one (manifests or kubernetes), or set workers.processor: paired".into())
        })?;
        let mut port_addrs = Vec::with_capacity(config.ports.len());
        for p in &config.ports {
            let addrs = p
                .addresses
                .iter()
                .map(|a| {
                    parse_prefixed(a).ok_or_else(|| {
                        bad(format!(
                            "port {:?}: address {a:?} is not ADDRESS/PREFIX: write it like 198.18.1.1/24",
                            p.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            port_addrs.push(addrs);
        }
        if port_addrs.iter().all(Vec::is_empty) {
            return Err(bad("no port has an address: give each port its own address under `addresses:` (e.g. 198.18.1.1/24) so ARP, routes and NodePorts work".into()));
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let prefix: IpCidr = r.prefix.parse().map_err(|e| {
                bad(format!(
                    "route {:?}: {e}: write the prefix like 198.18.0.0/15",
                    r.prefix
                ))
            })?;
            let port = config
                .ports
                .iter()
                .position(|p| p.name == r.port)
                .ok_or_else(|| {
                    bad(format!(
                        "route {:?}: no port named {:?}: use one of the names under `ports:`",
                        r.prefix, r.port
                    ))
                })?;
            routes.push(Route {
                prefix,
                port: port as u16,
                via: r.via,
            });
        }
        let mut neighbours = Vec::with_capacity(config.neighbours.len());
        for n in &config.neighbours {
            let mac = parse_mac(&n.mac).ok_or_else(|| {
                bad(format!(
                    "neighbour {}: MAC {:?} is not six hex bytes: write it like 02:00:c6:12:01:02",
                    n.address, n.mac
                ))
            })?;
            neighbours.push((n.address, mac));
        }
        let source = match (&services.kubernetes, services.manifests.is_empty()) {
            (Some(_), false) => {
                return Err(bad(
                    "services: give either `manifests` or `kubernetes`, not both".into(),
                ))
            }
            (None, true) => return Err(bad(
                "services: give `manifests:` (files or directories of YAML) or `kubernetes: {}`"
                    .into(),
            )),
            (Some(_), true) => SourceConfig::Kubernetes {
                config: None,
                options: Default::default(),
            },
            (None, false) => SourceConfig::Manifests {
                paths: services
                    .manifests
                    .iter()
                    .map(|p| {
                        if p.is_absolute() {
                            p.clone()
                        } else {
                            config_dir.join(p)
                        }
                    })
                    .collect(),
                poll_interval: Duration::from_millis(services.poll_interval_ms.max(10)),
            },
        };
        let node_addresses = if services.node_addresses.is_empty() {
            port_addrs.iter().flatten().map(|(a, _)| *a).collect()
        } else {
            services.node_addresses.clone()
        };
        let settings = ProxySettings {
            node_addresses,
            node_name: services.node_name.clone(),
            zone: services.zone.clone(),
            proxy_name: services.proxy_name.clone(),
            seed: services.seed,
            scheduler: match services.scheduler {
                SchedulerKind::Maglev => Scheduler::Maglev,
                SchedulerKind::RoundRobin => Scheduler::RoundRobin,
                SchedulerKind::Random => Scheduler::Random,
            },
            // Known once EAL has the lcores: set by `run` before the control thread starts.
            workers: 1,
            // Likewise (see `build_pool`).
            build_threads: 1,
            build_thread_start: None,
        };
        if services.build_threads == Some(0) {
            return Err(bad(
                "services.build_threads is 0: use at least 1, or leave it out for one per spare CPU".into(),
            ));
        }
        let d = &config.dataplane;
        if d.conntrack_capacity == 0 {
            return Err(bad(
                "dataplane.conntrack_capacity is 0: use at least 1024".into()
            ));
        }
        Ok(Plan {
            port_addrs,
            routes,
            neighbours: NeighbourTable::new(neighbours),
            control: ControlConfig {
                source,
                settings,
                debounce: Duration::from_millis(services.debounce_ms),
            },
            admin: config.admin.listen,
            max_out_of_sync: Duration::from_secs(config.admin.max_out_of_sync_secs),
            conntrack_capacity: d.conntrack_capacity,
            affinity_capacity: d.affinity_capacity,
            fragment_capacity: d.fragment_capacity,
            promiscuous: d.promiscuous,
            build_threads: services.build_threads,
        })
    }

    /// The pipeline configuration of worker `index` of `workers`, given the ports' MACs
    /// and the tx checksum offloads they enabled (both in port order).
    pub fn worker_config(
        &self,
        index: usize,
        workers: usize,
        macs: &[MacAddr],
        tx_checksum: &[ChecksumCaps],
    ) -> WorkerConfig {
        WorkerConfig {
            index,
            workers,
            ports: self
                .port_addrs
                .iter()
                .enumerate()
                .map(|(i, addrs)| PipelinePort {
                    mac: macs.get(i).copied().unwrap_or([0; 6]),
                    addrs: addrs.clone(),
                    tx_offloads: tx_checksum.get(i).map_or_else(Default::default, |c| {
                        TxChecksumOffloads {
                            ipv4: c.ipv4,
                            tcp: c.tcp,
                            udp: c.udp,
                            sctp: c.sctp,
                        }
                    }),
                })
                .collect(),
            routes: self.routes.clone(),
            conntrack_capacity: self.conntrack_capacity,
            // Each worker draws its own random key.
            conntrack_hash_key: None,
            affinity_capacity: self.affinity_capacity,
            fragment_capacity: self.fragment_capacity,
            promiscuous: self.promiscuous,
            assume_resolved: None,
            fast_path: true,
        }
    }
}

/// Holds each new table back from the workers until the next hops of the backends it
/// adds are resolved (worker 0 probes them meanwhile), at most [`GATE_MAX_WAIT`]: a
/// flow sent to a new backend then never loses its first packet to neighbour
/// resolution, and flows keep going to the current backends meanwhile. Tables that add
/// no backend pass at once.
///
/// The table a new one replaces stays in the gate's [`Retired`] list until every worker
/// has moved on; the gate then frees it on its next step, on the control thread.
pub struct Gate {
    routes: Routes,
    waiting: Option<Waiting>,
    retired: Retired<ServiceTable>,
}

struct Waiting {
    table: Arc<ServiceTable>,
    since: std::time::Instant,
    hops: Vec<IpAddr>,
}

impl Gate {
    pub fn new(plan: &Plan) -> Self {
        Gate {
            routes: plan_routes(plan),
            waiting: None,
            retired: Retired::default(),
        }
    }

    /// One look at the control plane's latest table; run every few milliseconds. Also
    /// frees the replaced tables no worker holds any longer.
    pub fn step(&mut self, shared: &Shared) {
        self.retired.release();
        let latest = shared.publisher.current();
        let visible = shared.visible.load_full();
        if Arc::ptr_eq(&latest, &visible) {
            return;
        }
        let neighbours = shared.neighbours.load();
        let fresh = !self
            .waiting
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(&w.table, &latest));
        if fresh {
            // Services the new table shares with the visible one add nothing; a changed
            // one adds the backends its same-named predecessor did not list. The cost is
            // O(services + changed endpoints), not O(endpoints).
            let shared_services: FastSet<*const Service> =
                visible.services().iter().map(Arc::as_ptr).collect();
            let by_name: FastMap<&str, &Service> = visible
                .services()
                .iter()
                .map(|s| (s.name(), &**s))
                .collect();
            let mut hops: Vec<IpAddr> = latest
                .services()
                .iter()
                .filter(|s| !shared_services.contains(&Arc::as_ptr(s)))
                .flat_map(|s| {
                    let old = by_name.get(s.name()).copied();
                    s.usable_backends()
                        .iter()
                        .filter(move |b| !old.is_some_and(|o| o.has_backend(b.addr, b.port)))
                        .map(|b| b.addr)
                })
                .filter_map(|a| self.routes.lookup(a).map(|h| h.addr))
                .filter(|h| neighbours.get(*h).is_none())
                .collect();
            hops.sort_unstable();
            hops.dedup();
            if !hops.is_empty() {
                shared.pending.store(Some(Arc::clone(&latest)));
            }
            self.waiting = Some(Waiting {
                table: latest,
                since: std::time::Instant::now(),
                hops,
            });
        }
        let Some(w) = self.waiting.as_mut() else {
            return;
        };
        w.hops.retain(|h| neighbours.get(*h).is_none());
        if w.hops.is_empty() || w.since.elapsed() >= GATE_MAX_WAIT {
            let replaced = shared.visible.swap(Arc::clone(&w.table));
            self.retired.retire(replaced);
            shared.pending.store(None);
            let waited = u64::try_from(w.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.gate_wait_ns.store(waited, Ordering::Relaxed);
            self.waiting = None;
        }
    }
}

/// The per-worker frame processor that runs the Service pipeline.
pub struct ServiceProcessor {
    worker: Worker,
    tables: Arc<ArcSwap<ServiceTable>>,
    pending: Arc<ArcSwapOption<ServiceTable>>,
    table: Arc<ServiceTable>,
    neighbour_source: Arc<ArcSwap<NeighbourTable>>,
    neighbours: Arc<NeighbourTable>,
    learned: Arc<ArrayQueue<(IpAddr, MacAddr)>>,
    last_probe_ns: u64,
}

/// How often a worker walks the backends for next hops to resolve (it keeps going while
/// it finds some).
pub const PROBE_INTERVAL_NS: u64 = 50_000_000;

impl ServiceProcessor {
    pub fn new(config: WorkerConfig, shared: &Shared) -> Self {
        let mut worker = Worker::new(config);
        worker.set_prefetcher(crate::dpdk::prefetch);
        ServiceProcessor {
            worker,
            table: shared.visible.load_full(),
            tables: Arc::clone(&shared.visible),
            pending: Arc::clone(&shared.pending),
            neighbours: shared.neighbours.load_full(),
            neighbour_source: Arc::clone(&shared.neighbours),
            learned: Arc::clone(&shared.learned),
            last_probe_ns: 0,
        }
    }

    /// Takes the latest published tables. Our reference is swapped only when a new one
    /// was published, so the shared reference count is not touched on every burst.
    fn refresh(&mut self) {
        let table = self.tables.load();
        if !Arc::ptr_eq(&table, &self.table) {
            self.table = arc_swap::Guard::into_inner(table);
        }
        let neighbours = self.neighbour_source.load();
        if !Arc::ptr_eq(&neighbours, &self.neighbours) {
            self.neighbours = arc_swap::Guard::into_inner(neighbours);
        }
    }

    /// The pipeline's counters, for the metrics endpoint.
    pub fn counters(&self) -> Arc<PipelineCounters> {
        self.worker.counters()
    }
}

/// The runtime's form of the pipeline's offload intent.
fn tx_offload(o: ChecksumOffload) -> TxOffload {
    TxOffload {
        ipv4_header: false,
        l4: Some(match o.l4 {
            L4Protocol::Tcp => L4Checksum::Tcp,
            L4Protocol::Udp => L4Checksum::Udp,
            L4Protocol::Sctp => L4Checksum::Sctp,
        }),
        ipv6: o.ipv6,
        l2_len: o.l2_len,
        l3_len: o.l3_len,
    }
}

impl FrameProcessor for ServiceProcessor {
    fn drop_reason_names() -> &'static [&'static str] {
        // One runtime-visible reason; the pipeline counts the detail per DropReason.
        &["pipeline"]
    }

    fn begin_burst(&mut self, _now_ns: u64) {
        self.worker.begin_burst();
        self.refresh();
        for entry in self.worker.learned().drain() {
            // A full queue loses the entry; the next ARP/ND frame teaches it again.
            let _ = self.learned.push(entry);
        }
    }

    #[inline]
    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, now_ns: u64) -> Action {
        let ctx = Context {
            table: &self.table,
            neighbours: &self.neighbours,
        };
        match self.worker.process(buf, len, rx_port, now_ns, &ctx) {
            Verdict::Forward(port) => Action::Forward {
                port,
                offload: self.worker.offload().map_or(TxOffload::NONE, tx_offload),
            },
            Verdict::Reply => Action::Forward {
                port: rx_port,
                offload: TxOffload::NONE,
            },
            Verdict::Steer(worker) => Action::Steer { worker },
            Verdict::Drop(_) | Verdict::ToHost => Action::Drop { reason: 0 },
        }
    }

    #[inline]
    fn wants_prefetch(&self) -> bool {
        self.worker.wants_lookahead()
    }

    #[inline]
    fn prefetch(&mut self, frame: &[u8]) {
        let ctx = Context {
            table: &self.table,
            neighbours: &self.neighbours,
        };
        self.worker.prefetch(frame, &ctx);
    }

    fn slow_job(&mut self, now_ns: u64) {
        let ctx = Context {
            table: &self.table,
            neighbours: &self.neighbours,
        };
        self.worker.slow_job(now_ns, &ctx);
    }

    fn originate(&mut self, buf: &mut [u8], len: &mut usize, now_ns: u64) -> Option<u16> {
        // A table waiting at the gate is probed at once; otherwise walking the backend
        // list a few times a second is plenty.
        let pending = self.pending.load_full();
        if pending.is_none() && now_ns.saturating_sub(self.last_probe_ns) < PROBE_INTERVAL_NS {
            return None;
        }
        // An idle worker sees no bursts: probing is what keeps its tables current then.
        self.refresh();
        let ctx = Context {
            table: pending.as_deref().unwrap_or(&self.table),
            neighbours: &self.neighbours,
        };
        let port = self.worker.originate(buf, len, now_ns, &ctx);
        if port.is_none() {
            self.last_probe_ns = now_ns;
        }
        port
    }
}

/// What the admin server and the stats reader see of the workers.
#[derive(Clone)]
pub struct WorkerViews {
    pub runtime: Arc<Vec<WorkerCounters>>,
    pub pipeline: Vec<Arc<PipelineCounters>>,
}

/// Starts the control thread: one tokio runtime running the control plane, the
/// neighbour merge job and the admin server, until `stop` is set. Call it from the main
/// lcore's thread once EAL has pinned it, so the thread inherits that CPU.
pub fn start_control(
    plan: &Plan,
    shared: Shared,
    workers: WorkerViews,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let control = plan.control.clone();
    let mut gate = Gate::new(plan);
    let mut book = NeighbourBook::new(plan);
    let admin = plan.admin;
    let max_out_of_sync = plan.max_out_of_sync;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("kubypass-control")
        .build()?;
    std::thread::Builder::new()
        .name("kubypass-control".into())
        .spawn(move || {
            runtime.block_on(async move {
                let stopped = {
                    let stop = Arc::clone(&stop);
                    move || {
                        let stop = Arc::clone(&stop);
                        async move {
                            every(Duration::from_millis(50), stop, || {}).await;
                        }
                    }
                };
                let neighbours = {
                    let shared = shared.clone();
                    every(Duration::from_millis(10), Arc::clone(&stop), move || {
                        shared.merge_learned(&mut book);
                    })
                };
                let gate = {
                    let shared = shared.clone();
                    every(Duration::from_millis(2), Arc::clone(&stop), move || {
                        gate.step(&shared);
                    })
                };
                let admin = async {
                    let Some(addr) = admin else { return };
                    let state = crate::admin::AdminState {
                        shared: shared.clone(),
                        workers,
                        max_out_of_sync,
                    };
                    if let Err(e) = crate::admin::serve(addr, state, stopped()).await {
                        eprintln!("kubypass: admin server on {addr}: {e}: set admin.listen to a free address");
                    }
                };
                let plane = async {
                    let result = kubypass_control::run(
                        control,
                        shared.publisher.clone(),
                        shared.health.clone(),
                        stopped(),
                    )
                    .await;
                    if let Err(e) = result {
                        // The last good table keeps serving; /healthz reports the source.
                        shared.health.failed(error_chain(&e));
                        eprintln!("kubypass: control plane stopped: {}", error_chain(&e));
                    }
                };
                tokio::join!(neighbours, gate, admin, plane);
            });
        })
}

/// An error and its sources on one line: the control crate's, so that every message
/// reads alike.
pub use kubypass_control::error_chain;

/// Runs `f` every `period` until `stop` is set: the control thread's periodic jobs.
pub async fn every(period: Duration, stop: Arc<AtomicBool>, mut f: impl FnMut()) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_config() -> Config {
        Config::parse(include_str!("../deploy/examples/lab.yaml")).unwrap()
    }

    fn plan_error(config: &Config) -> String {
        Plan::new(config, Path::new("/etc/kubypass"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_lab_config_plans_ports_nodes_and_manifests() {
        let config = lab_config();
        assert_eq!(
            crate::config::ProcessorKind::Auto.resolve(&config),
            crate::config::ProcessorKind::Service
        );
        let plan = Plan::new(&config, Path::new("/etc/kubypass")).unwrap();
        let a1: IpAddr = "198.18.1.1".parse().unwrap();
        let a2: IpAddr = "198.18.2.1".parse().unwrap();
        assert_eq!(plan.port_addrs, vec![vec![(a1, 24)], vec![(a2, 24)]]);
        // Node addresses default to every port address.
        assert_eq!(plan.control.settings.node_addresses, vec![a1, a2]);
        match &plan.control.source {
            SourceConfig::Manifests { paths, .. } => {
                assert_eq!(paths, &[Path::new("/etc/kubypass/manifests").to_path_buf()]);
            }
            other => panic!("want manifests, got {other:?}"),
        }
        assert_eq!(plan.admin, Some("127.0.0.1:10256".parse().unwrap()));
        let w = plan.worker_config(
            1,
            2,
            &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            &[ChecksumCaps::NONE, ChecksumCaps::ALL],
        );
        assert_eq!((w.index, w.workers), (1, 2));
        assert_eq!(w.ports[1].mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(w.ports[1].addrs, vec![(a2, 24)]);
    }

    #[test]
    fn build_threads_come_from_the_config_and_zero_is_refused() {
        let mut c = lab_config();
        assert_eq!(Plan::new(&c, Path::new("/")).unwrap().build_threads, None);
        let services: crate::config::ServicesConfig =
            serde_yaml_ng::from_str("build_threads: 3").unwrap();
        assert_eq!(services.build_threads, Some(3));
        c.services.as_mut().unwrap().build_threads = Some(3);
        assert_eq!(
            Plan::new(&c, Path::new("/")).unwrap().build_threads,
            Some(3)
        );
        c.services.as_mut().unwrap().build_threads = Some(0);
        assert!(plan_error(&c).contains("services.build_threads is 0"));
    }

    #[test]
    fn build_pool_defaults_to_spare_cpus_and_pins_threads_off_the_workers() {
        let eight: Vec<usize> = (0..8).collect();
        // 8 CPUs, 3 workers, main on 0: 5 spare, capped at 4.
        let (n, start) = build_pool(None, &eight, &[1, 2, 3], 0);
        assert_eq!((n, start.is_some()), (4, true));
        // 2 CPUs, 1 worker: the main CPU alone, so one thread and nothing to pin.
        assert_eq!(build_pool(None, &[0, 1], &[1], 0), (1, None));
        // CPUs unknown: one thread, unless asked; asked for, no pinning without a CPU.
        assert_eq!(build_pool(None, &[], &[1], 0), (1, None));
        assert_eq!(build_pool(Some(2), &[], &[1], 0), (2, None));
        // Asked for more than the spare CPUs: as asked.
        let (n, start) = build_pool(Some(3), &[0, 1], &[1], 0);
        assert_eq!((n, start.is_some()), (3, true));
        // Build thread 1 goes to the first spare CPU that is not the main one.
        let here = core_affinity::get_core_ids().unwrap_or_default();
        if let [main, other, ..] = here[..] {
            let (_, start) = build_pool(None, &[main.id, other.id], &[], main.id);
            let start = start.unwrap();
            let pinned = std::thread::spawn(move || {
                (start.0)(1);
                core_affinity::get_core_ids()
            })
            .join()
            .unwrap();
            assert_eq!(pinned, Some(vec![other]));
        }
    }

    #[test]
    fn the_kubernetes_example_plans_a_watch_with_routes() {
        let c = Config::parse(include_str!("../deploy/examples/kubernetes.yaml")).unwrap();
        c.validate().unwrap();
        let plan = Plan::new(&c, Path::new("/etc/kubypass")).unwrap();
        assert!(matches!(
            plan.control.source,
            SourceConfig::Kubernetes { .. }
        ));
        assert_eq!(plan.control.settings.seed, 7);
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.routes[0].port, 1);
        assert_eq!(plan.conntrack_capacity, 1 << 20);
    }

    #[test]
    fn service_config_mistakes_are_named_with_their_fix() {
        let mut c = lab_config();
        c.services = None;
        assert!(plan_error(&c).contains("no `services:` section"));

        let mut c = lab_config();
        c.ports[0].addresses = vec!["198.18.1.1".into()];
        assert!(plan_error(&c).contains("not ADDRESS/PREFIX"));

        let mut c = lab_config();
        c.routes = vec![crate::config::RouteConfig {
            prefix: "198.18.0.0/15".into(),
            port: "nope".into(),
            via: None,
        }];
        assert!(plan_error(&c).contains("no port named \"nope\""));

        let mut c = lab_config();
        c.neighbours = vec![crate::config::NeighbourConfig {
            address: "198.18.2.11".parse().unwrap(),
            mac: "02:00".into(),
        }];
        assert!(plan_error(&c).contains("not six hex bytes"));

        let mut c = lab_config();
        if let Some(s) = c.services.as_mut() {
            s.kubernetes = Some(Default::default());
        }
        assert!(plan_error(&c).contains("not both"));

        let mut c = lab_config();
        for p in &mut c.ports {
            p.addresses.clear();
        }
        assert!(plan_error(&c).contains("no port has an address"));
    }

    fn table_with(generation: u64, backends: &[&str]) -> ServiceTable {
        use kubypass_dataplane::table::{
            Backend, Conditions, FrontendKey, FrontendKind, L4Protocol, NoBackendAction,
            ServiceSpec,
        };
        let mut b = ServiceTable::builder().generation(generation);
        let id = b.add_service(ServiceSpec {
            name: "default/web:http".into(),
            protocol: L4Protocol::Tcp,
            backends: backends
                .iter()
                .map(|a| Backend {
                    addr: a.parse().unwrap(),
                    port: 8080,
                    weight: 1,
                    conditions: Conditions::READY,
                })
                .collect(),
            affinity_timeout_secs: None,
            no_backend: NoBackendAction::Reject,
        });
        let key = FrontendKey {
            addr: "198.18.100.10".parse().unwrap(),
            port: 80,
            protocol: L4Protocol::Tcp,
        };
        b.add_frontend(key, FrontendKind::ClusterIp, id, vec![])
            .unwrap();
        b.build()
    }

    /// The pipeline's offload intent reaches the runtime: an SCTP packet to a backend
    /// behind a port that finishes SCTP CRCs leaves with its CRC stale and an offload
    /// that makes it right; behind a port that does not, it leaves finished.
    #[test]
    fn the_processor_hands_the_pipelines_offload_intent_to_the_runtime() {
        use kubypass_dataplane::packet_builder::PacketBuilder;
        use kubypass_dataplane::table::{
            Backend, Conditions, FrontendKey, FrontendKind, NoBackendAction, ServiceSpec,
        };
        use kubypass_dataplane::wire::{EthernetAddress, SctpPacket};
        let plan = Plan::new(&lab_config(), Path::new("/etc/kubypass")).unwrap();
        let backend: IpAddr = "198.18.2.11".parse().unwrap();
        let client: IpAddr = "198.18.1.50".parse().unwrap();
        let vip: IpAddr = "198.18.100.20".parse().unwrap();
        let mut b = ServiceTable::builder().generation(1);
        let id = b.add_service(ServiceSpec {
            name: "telco/m3ua".into(),
            protocol: L4Protocol::Sctp,
            backends: vec![Backend {
                addr: backend,
                port: 2905,
                weight: 1,
                conditions: Conditions::READY,
            }],
            affinity_timeout_secs: None,
            no_backend: NoBackendAction::Reject,
        });
        let key = FrontendKey {
            addr: vip,
            port: 3868,
            protocol: L4Protocol::Sctp,
        };
        b.add_frontend(key, FrontendKind::ClusterIp, id, vec![])
            .unwrap();
        let shared = Shared::new(NeighbourTable::new([(backend, [2, 0, 0, 0, 2, 11])]));
        shared
            .publisher
            .publish(b.build(), None, Duration::ZERO)
            .unwrap();
        shared.visible.store(shared.publisher.current());
        let macs = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
        let frame = PacketBuilder::new()
            .eth(
                EthernetAddress([2, 0, 0, 0, 1, 50]),
                EthernetAddress(macs[0]),
            )
            .ip(client, vip)
            .sctp(40000, 3868)
            .payload(b"m3ua")
            .build();
        let run = |caps: ChecksumCaps| {
            let config = plan.worker_config(0, 1, &macs, &[ChecksumCaps::NONE, caps]);
            let mut p = ServiceProcessor::new(config, &shared);
            p.begin_burst(0);
            let mut buf = frame.clone();
            buf.resize(frame.len() + 128, 0);
            let mut len = frame.len();
            let action = p.process(&mut buf, &mut len, 0, 1);
            buf.truncate(len);
            (action, buf)
        };
        let sctp_ok = |f: &[u8]| SctpPacket::new_checked(&f[34..]).unwrap().verify_checksum();

        let (action, finished) = run(ChecksumCaps::NONE);
        assert_eq!(
            action,
            Action::Forward {
                port: 1,
                offload: TxOffload::NONE
            }
        );
        assert!(sctp_ok(&finished));

        let (action, mut left) = run(ChecksumCaps::ALL);
        let want = TxOffload {
            ipv4_header: false,
            l4: Some(L4Checksum::Sctp),
            ipv6: false,
            l2_len: 14,
            l3_len: 20,
        };
        assert_eq!(
            action,
            Action::Forward {
                port: 1,
                offload: want
            }
        );
        assert!(!sctp_ok(&left), "the CRC is the NIC's to finish");
        crate::runtime::finish_checksums(&mut left, &want).unwrap();
        assert_eq!(left, finished);
    }

    #[test]
    fn the_gate_holds_tables_until_new_backends_resolve() {
        let plan = Plan::new(&lab_config(), Path::new("/etc/kubypass")).unwrap();
        let shared = Shared::new(NeighbourTable::default());
        let mut gate = Gate::new(&plan);
        let mut book = NeighbourBook::new(&plan);
        let publish = |t: ServiceTable| {
            shared.publisher.publish(t, None, Duration::ZERO).unwrap();
        };
        let visible = || shared.visible.load().generation();

        publish(table_with(1, &["198.18.2.11", "198.18.2.12"]));
        gate.step(&shared);
        assert_eq!(visible(), 0, "held while 198.18.2.11/.12 are unknown");
        let pending = shared
            .pending
            .load_full()
            .expect("worker 0 is asked to probe");
        assert_eq!(pending.generation(), 1);
        shared
            .learned
            .push(("198.18.2.11".parse().unwrap(), [1; 6]))
            .unwrap();
        shared.merge_learned(&mut book);
        gate.step(&shared);
        assert_eq!(visible(), 0, "198.18.2.12 still unknown");
        shared
            .learned
            .push(("198.18.2.12".parse().unwrap(), [2; 6]))
            .unwrap();
        shared.merge_learned(&mut book);
        gate.step(&shared);
        assert_eq!(visible(), 1);
        assert!(shared.pending.load().is_none());

        // Removing a backend adds none: no wait.
        publish(table_with(2, &["198.18.2.11"]));
        gate.step(&shared);
        assert_eq!(visible(), 2);

        // A backend that never answers holds the table for GATE_MAX_WAIT at most.
        publish(table_with(3, &["198.18.2.11", "198.18.2.99"]));
        gate.step(&shared);
        assert_eq!(visible(), 2);
        std::thread::sleep(GATE_MAX_WAIT);
        gate.step(&shared);
        assert_eq!(visible(), 3);
        assert!(shared.gate_wait_ns.load(Ordering::Relaxed) >= GATE_MAX_WAIT.as_nanos() as u64);
    }

    #[test]
    fn the_gate_frees_replaced_tables_once_workers_let_go() {
        let plan = Plan::new(&lab_config(), Path::new("/etc/kubypass")).unwrap();
        let shared = Shared::new(NeighbourTable::default());
        let mut gate = Gate::new(&plan);
        let publish = |t: ServiceTable| {
            shared.publisher.publish(t, None, Duration::ZERO).unwrap();
        };
        // Tables without backends add no next hop: the gate passes them at once.
        publish(table_with(1, &[]));
        gate.step(&shared);
        let a = shared.visible.load_full();
        assert_eq!(a.generation(), 1);
        let a_alive = Arc::downgrade(&a);
        drop(a);
        let config = plan.worker_config(0, 1, &[[2, 0, 0, 0, 0, 1]], &[]);
        let mut worker = ServiceProcessor::new(config, &shared);
        worker.refresh();
        assert!(Arc::ptr_eq(&worker.table, &a_alive.upgrade().unwrap()));

        publish(table_with(2, &[]));
        gate.step(&shared);
        assert_eq!(shared.visible.load().generation(), 2);
        // The worker moves to B and lets go of A: A's memory is not freed on its core ...
        worker.refresh();
        assert_eq!(worker.table.generation(), 2);
        assert!(a_alive.upgrade().is_some(), "A is held by the gate");
        assert_eq!(gate.retired.len(), 1);
        // ... but by the gate's next step, with nothing new to publish.
        gate.step(&shared);
        assert!(a_alive.upgrade().is_none(), "A is freed by the gate");
        assert!(gate.retired.is_empty());

        // A table a worker still holds stays retired, step after step.
        publish(table_with(3, &[]));
        gate.step(&shared);
        gate.step(&shared);
        assert_eq!(gate.retired.len(), 1, "B is still the worker's");
        worker.refresh();
        gate.step(&shared);
        assert!(gate.retired.is_empty());
    }

    #[test]
    fn the_retired_list_is_bounded_and_lets_the_oldest_go() {
        let mut retired = Retired::default();
        // Each table also held by a stalled "worker".
        let held: Vec<Arc<u64>> = (0..RETIRED_MAX as u64 + 3).map(Arc::new).collect();
        for t in &held {
            retired.retire(Arc::clone(t));
        }
        assert_eq!(retired.len(), RETIRED_MAX);
        assert_eq!(retired.release(), 0);
        // The three oldest were let go: the worker holds the only reference.
        for t in &held[..3] {
            assert_eq!(Arc::strong_count(t), 1);
        }
        for t in &held[3..] {
            assert_eq!(Arc::strong_count(t), 2);
        }
        drop(held);
        assert_eq!(retired.release(), RETIRED_MAX);
        assert!(retired.is_empty());
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:00:c6:12:01:02"),
            Some([2, 0, 0xc6, 0x12, 1, 2])
        );
        assert_eq!(
            parse_mac("02-00-c6-12-01-02"),
            Some([2, 0, 0xc6, 0x12, 1, 2])
        );
        assert_eq!(parse_mac("02:00:c6:12:01"), None);
        assert_eq!(parse_mac("02:00:c6:12:01:02:03"), None);
        assert_eq!(parse_mac("2:0:c6:12:1:2"), None);
        assert_eq!(parse_mac("zz:00:c6:12:01:02"), None);
    }

    #[test]
    fn learned_neighbours_are_merged_and_published_once() {
        let a: IpAddr = "198.18.1.2".parse().unwrap();
        let shared = Shared::new(NeighbourTable::default());
        let mut book = NeighbourBook::with_capacity(
            Routes::default(),
            [],
            &[],
            MAX_NEIGHBOURS,
            EVICT_INTERVAL,
        );
        let before = shared.neighbours.load_full();
        assert_eq!(shared.merge_learned(&mut book), 0);
        assert!(Arc::ptr_eq(&before, &shared.neighbours.load_full()));
        shared.learned.push((a, [1; 6])).unwrap();
        shared.learned.push((a, [1; 6])).unwrap();
        assert_eq!(shared.merge_learned(&mut book), 1);
        assert_eq!(shared.neighbours.load().get(a), Some([1; 6]));
        // The same fact again publishes nothing new.
        let published = shared.neighbours.load_full();
        shared.learned.push((a, [1; 6])).unwrap();
        assert_eq!(shared.merge_learned(&mut book), 0);
        assert!(Arc::ptr_eq(&published, &shared.neighbours.load_full()));
        // Two MACs for one address in one merge: the last one reported.
        shared.learned.push((a, [2; 6])).unwrap();
        shared.learned.push((a, [3; 6])).unwrap();
        assert_eq!(shared.merge_learned(&mut book), 1);
        assert_eq!(shared.neighbours.load().get(a), Some([3; 6]));
        // The snapshot a merge replaced is freed by the next merge once no worker holds
        // it (here, the first one: only `before` held it).
        let first = Arc::downgrade(&before);
        drop(before);
        assert!(first.upgrade().is_some(), "held by the retired list");
        drop(published);
        shared.merge_learned(&mut book);
        assert!(first.upgrade().is_none());
        assert!(book.retired.is_empty());
    }

    /// Port 0 on 198.18.1.0/24, a default route via 198.18.1.1, the static neighbour
    /// 198.18.1.2, and a visible table whose one backend is 198.18.1.20 (on link, so its
    /// own next hop).
    fn full_book_setup(capacity: usize, evict_interval: Duration) -> (Shared, NeighbourBook) {
        let port = PipelinePort {
            mac: [0; 6],
            addrs: vec![("198.18.1.254".parse().unwrap(), 24)],
            tx_offloads: Default::default(),
        };
        let default_route = Route {
            prefix: IpCidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
            port: 0,
            via: Some("198.18.1.1".parse().unwrap()),
        };
        let statics = [default_route];
        let routes = Routes::new(std::slice::from_ref(&port), &statics);
        let fixed: IpAddr = "198.18.1.2".parse().unwrap();
        let shared = Shared::new(NeighbourTable::new([(fixed, [2; 6])]));
        shared
            .visible
            .store(Arc::new(table_with(1, &["198.18.1.20"])));
        let book =
            NeighbourBook::with_capacity(routes, [fixed], &statics, capacity, evict_interval);
        (shared, book)
    }

    fn learn(shared: &Shared, book: &mut NeighbourBook, last_octets: &[u8]) -> usize {
        for &o in last_octets {
            shared
                .learned
                .push((IpAddr::from([198, 18, 1, o]), [o; 6]))
                .unwrap();
        }
        shared.merge_learned(book)
    }

    fn known(shared: &Shared) -> Vec<u8> {
        let mut v: Vec<u8> = shared
            .neighbours
            .load()
            .iter()
            .map(|(a, _)| match a {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_full_neighbour_table_forgets_the_oldest_entry_nothing_needs() {
        let (shared, mut book) = full_book_setup(5, Duration::ZERO);
        // The gateway, the backend, then two clients: full (with the static one).
        assert_eq!(learn(&shared, &mut book, &[1, 20, 31, 32]), 4);
        assert_eq!(known(&shared), [1, 2, 20, 31, 32]);
        // A new client takes the oldest client's place; the gateway and the backend,
        // learned before it, stay.
        assert_eq!(learn(&shared, &mut book, &[33]), 1);
        assert_eq!(known(&shared), [1, 2, 20, 32, 33]);
        // A client whose MAC changed counts as learned anew: .33 is now older.
        shared
            .learned
            .push(("198.18.1.32".parse().unwrap(), [9; 6]))
            .unwrap();
        assert_eq!(shared.merge_learned(&mut book), 1);
        assert_eq!(known(&shared), [1, 2, 20, 32, 33], "a change needs no room");
        assert_eq!(learn(&shared, &mut book, &[34]), 1);
        assert_eq!(known(&shared), [1, 2, 20, 32, 34]);
        assert_eq!(
            shared.neighbours.load().get("198.18.1.32".parse().unwrap()),
            Some([9; 6])
        );
        // Two at once: both clients go.
        assert_eq!(learn(&shared, &mut book, &[35, 36]), 2);
        assert_eq!(known(&shared), [1, 2, 20, 35, 36]);
        assert_eq!(shared.neighbours_evicted.load(Ordering::Relaxed), 4);
        assert_eq!(shared.neighbours_ignored.load(Ordering::Relaxed), 0);
        // A new backend's next hop is needed once a table lists it: the client learned
        // before it goes, not the backend.
        shared
            .visible
            .store(Arc::new(table_with(2, &["198.18.1.20", "198.18.1.36"])));
        assert_eq!(learn(&shared, &mut book, &[37]), 1);
        assert_eq!(known(&shared), [1, 2, 20, 36, 37]);
    }

    #[test]
    fn a_table_full_of_needed_neighbours_ignores_new_ones() {
        let (shared, mut book) = full_book_setup(3, Duration::ZERO);
        assert_eq!(learn(&shared, &mut book, &[1, 20]), 2);
        let full = shared.neighbours.load_full();
        // Static, gateway and backend: nothing can go; the client is ignored, and no
        // snapshot is published.
        assert_eq!(learn(&shared, &mut book, &[40, 41]), 0);
        assert!(Arc::ptr_eq(&full, &shared.neighbours.load_full()));
        assert_eq!(known(&shared), [1, 2, 20]);
        assert_eq!(shared.neighbours_ignored.load(Ordering::Relaxed), 2);
        assert_eq!(shared.neighbours_evicted.load(Ordering::Relaxed), 0);
        // With room for one more, the first of two new ones gets it.
        let (shared, mut book) = full_book_setup(4, Duration::ZERO);
        assert_eq!(learn(&shared, &mut book, &[1, 20]), 2);
        assert_eq!(learn(&shared, &mut book, &[40, 41]), 1);
        assert_eq!(known(&shared), [1, 2, 20, 40]);
        assert_eq!(shared.neighbours_ignored.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_table_makes_room_at_most_once_per_interval() {
        let (shared, mut book) = full_book_setup(4, Duration::from_secs(3600));
        assert_eq!(learn(&shared, &mut book, &[1, 20, 31]), 3);
        assert_eq!(learn(&shared, &mut book, &[32]), 1, "the first eviction");
        assert_eq!(known(&shared), [1, 2, 20, 32]);
        let full = shared.neighbours.load_full();
        // Within the interval a full table does not change: what was learned waits in
        // the queue, a MAC change included.
        shared
            .learned
            .push(("198.18.1.32".parse().unwrap(), [9; 6]))
            .unwrap();
        assert_eq!(learn(&shared, &mut book, &[33]), 0);
        assert!(Arc::ptr_eq(&full, &shared.neighbours.load_full()));
        assert_eq!(shared.learned.len(), 2, "kept for later");
        assert_eq!(shared.neighbours_evicted.load(Ordering::Relaxed), 1);
    }
}
