//! Connection tracking for one worker: a bounded table of translated flows, found by the
//! key of either direction, with protocol-state-aware timeouts and eviction when full.
//!
//! Layout. Flows live in a slab allocated once at [`ConnTrack::new`]. An index of
//! set-associative buckets (8 ways, one 64-byte cache line each: a 32-bit tag and a
//! 32-bit flow reference per way) holds two entries per flow: its forward key
//! (client→frontend) and its reverse key (backend→client). Each key has a primary and a
//! secondary bucket (two-choice hashing with one-step cuckoo moves), and is put in its
//! primary whenever there is room, so a lookup almost always reads one bucket line and
//! one flow. The bucket count is a power of two sized for ≤ 50 % way occupancy when
//! the slab is full. A key's buckets and tag come from [`FlowKey::table_hash`] under the
//! table's own random [`TableHashKey`], so clients cannot aim their flows at one bucket
//! pair without learning it ([`ConnTrack::with_key`] fixes it for benches and tests).
//! Nothing allocates after `new`; the table owns no clock (every call takes `now` in
//! nanoseconds from the caller).
//!
//! Full table. `insert` makes room instead of refusing: when the new flow's buckets or the
//! slab are full it evicts the candidate closest to its deadline (expired first, then
//! closing states with their short timeouts, then the least recently seen), chosen among
//! the flows of the two buckets and a few slab entries at a rotating hand, like Katran's
//! per-CPU LRU. When nothing can be evicted it returns [`InsertError::NoRoom`] and the
//! caller serves the flow statelessly (Maglev gives it the same backend anyway).
//!
//! Expiry is a slow job: [`ConnTrack::expire`] examines a bounded number of slab slots per
//! call from a cursor. A lookup that finds an expired flow removes it and misses.

use std::net::IpAddr;
use std::time::Duration;

use crate::flow::{FlowAddr, FlowKey, TableHashKey};
use crate::table::ServiceId;

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → frontend (translated to client → backend).
    Forward,
    /// Backend → client (translated back to frontend → client).
    Reverse,
}

impl Direction {
    #[inline]
    fn bit(self) -> u32 {
        match self {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        }
    }
}

/// The TCP flags the state machine reads (bit positions as in the TCP header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    #[inline]
    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// The state of a tracked flow; each has its own timeout in [`Timeouts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// TCP, inserted, no packet accounted yet.
    TcpNew = 0,
    /// TCP, client SYN seen.
    TcpSynSent,
    /// TCP, backend SYN-ACK seen.
    TcpSynRecv,
    /// TCP, handshake completed (or a flow picked up mid-stream).
    TcpEstablished,
    /// TCP, one side sent FIN.
    TcpFinWait,
    /// TCP, both sides sent FIN.
    TcpTimeWait,
    /// TCP, RST seen.
    TcpClose,
    /// UDP, only client→backend packets seen.
    UdpUnreplied,
    /// UDP, the backend replied.
    UdpReplied,
    /// ICMP echo (identifier as both ports).
    IcmpEcho,
    /// Any other protocol (SCTP is tracked as this, without its own states).
    Other,
}

const STATES: usize = 11;

/// How long a flow in each state lives after its last packet. Defaults follow Linux
/// nf_conntrack, shortened where a proxy needs less, and kube-proxy's 24 h for
/// ESTABLISHED:
///
/// | state | default | kernel default |
/// |---|---|---|
/// | TCP new / SYN sent | 30 s | SYN_SENT 120 s |
/// | TCP SYN received | 30 s | SYN_RECV 60 s |
/// | TCP established | 24 h | 5 days (kube-proxy sets 24 h) |
/// | TCP FIN from one side | 120 s | FIN_WAIT 120 s |
/// | TCP FIN from both sides | 60 s | TIME_WAIT 120 s |
/// | TCP RST | 10 s | CLOSE 10 s |
/// | UDP unreplied | 30 s | udp_timeout 30 s |
/// | UDP replied | 120 s | udp_timeout_stream 120 s |
/// | ICMP echo | 30 s | icmp_timeout 30 s |
/// | other (SCTP…) | 600 s | generic_timeout 600 s |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    pub udp_unreplied: Duration,
    pub udp_replied: Duration,
    pub icmp_echo: Duration,
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: Duration::from_secs(30),
            tcp_syn_recv: Duration::from_secs(30),
            tcp_established: Duration::from_secs(24 * 3600),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_time_wait: Duration::from_secs(60),
            tcp_close: Duration::from_secs(10),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(120),
            icmp_echo: Duration::from_secs(30),
            other: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    fn table_ns(&self) -> [u64; STATES] {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        [
            ns(self.tcp_syn_sent),
            ns(self.tcp_syn_sent),
            ns(self.tcp_syn_recv),
            ns(self.tcp_established),
            ns(self.tcp_fin_wait),
            ns(self.tcp_time_wait),
            ns(self.tcp_close),
            ns(self.udp_unreplied),
            ns(self.udp_replied),
            ns(self.icmp_echo),
            ns(self.other),
        ]
    }
}

/// Where a new flow was sent: what DNAT writes and what reverse NAT undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTarget {
    pub backend: IpAddr,
    pub backend_port: u16,
    /// The service the backend was chosen from, under `generation`.
    pub service: ServiceId,
    /// The `ServiceTable` generation the choice was made under.
    pub generation: u64,
}

/// A reference to a tracked flow. Stale handles (the flow was removed or its slot reused)
/// are detected: every method taking one returns `None`/`false` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowHandle {
    index: u32,
    epoch: u32,
}

/// The next hop one direction of a flow leaves by, as the full pipeline resolved it:
/// the transmit port and the next hop's MAC. Cached in the flow so that later packets
/// skip the route and neighbour lookups (see [`ConnTrack::fast_hit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub port: u16,
    pub mac: [u8; 6],
}

impl Egress {
    /// No cached next hop: the packet takes the full pipeline.
    pub const UNSET: Egress = Egress {
        port: u16::MAX,
        mac: [0; 6],
    };
}

/// What the fast path needs of a tracked flow, returned by [`ConnTrack::fast_hit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastHit {
    pub dir: Direction,
    /// The counter slots (in the table's [`crate::traffic::CounterBank`]) of the flow's
    /// service and backend.
    pub service_slot: u32,
    pub backend_slot: u32,
    /// Where the packet goes next.
    pub egress: Egress,
    /// The address and port the packet is rewritten to: the backend's (destination) for
    /// a forward packet, the frontend's (source) for a reverse one.
    pub nat_addr: FlowAddr,
    pub nat_port: u16,
    /// The flow's uncounted packets, handed over when they reached [`COUNT_EVERY`]: the
    /// caller adds them to the counter rows named in them.
    pub counts: Option<Pending>,
}

/// How many fast-path packets a flow holds before handing them to its Service's and
/// backend's counter rows ([`FastHit::counts`]). Counting in the flow, which the packet
/// has in cache anyway, spares two counter-row writes (and, with many Services, two
/// cache misses) per packet; the rest reach the rows when the flow is next checked
/// against a new table, swept by [`ConnTrack::expire`], or flushed.
pub const COUNT_EVERY: u16 = 64;

/// Packets a flow counted but has not yet added to counter rows, with the counter slots
/// (of the table that cached them) they belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub service_slot: u32,
    pub backend_slot: u32,
    pub packets: u32,
    pub bytes: u64,
}

/// A flow's uncounted packets with what deciding their rows needs: the table generation
/// that cached the slots, and the flow's frontend and backend (to find its Service and
/// backend in a later table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldCounts {
    pub generation: u64,
    pub frontend: IpAddr,
    pub frontend_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    pub backend: IpAddr,
    pub backend_port: u16,
    pub pending: Pending,
}

/// Removed flows whose uncounted packets wait for [`ConnTrack::drain_retired`]; beyond
/// this many (between two drains) they are dropped and counted in
/// [`ConnTrackStats::counts_dropped`].
const RETIRED_MAX: usize = 64;

/// One tracked flow: 128 bytes, two cache lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(64))]
pub struct Flow {
    client: FlowAddr,
    frontend: FlowAddr,
    backend: FlowAddr,
    client_port: u16,
    frontend_port: u16,
    backend_port: u16,
    protocol: u8,
    v6: bool,
    state: FlowState,
    /// Bit 0: forward FIN seen, bit 1: reverse FIN seen. Bit 7: slot in use.
    flags: u8,
    service: ServiceId,
    /// Bumped on every removal, so old handles to the slot go stale.
    epoch: u32,
    generation: u64,
    last_seen: u64,
    packets: [u32; 2],
    /// The fast path's cache, per direction; valid while `generation` is the table's and
    /// `egress_neighbours` the neighbour snapshot's version. Cleared whenever the flow
    /// is revalidated or rebound.
    egress: [Egress; 2],
    egress_neighbours: u64,
    service_slot: u32,
    backend_slot: u32,
    /// Fast-path packets (and their IP bytes) not yet in the counter rows; fewer than
    /// [`COUNT_EVERY`] packets, so under 2^32 bytes.
    pending_packets: u16,
    pending_bytes: u32,
}

const IN_USE: u8 = 0x80;

impl Flow {
    const EMPTY: Flow = Flow {
        client: FlowAddr::ZERO,
        frontend: FlowAddr::ZERO,
        backend: FlowAddr::ZERO,
        client_port: 0,
        frontend_port: 0,
        backend_port: 0,
        protocol: 0,
        v6: false,
        state: FlowState::Other,
        flags: 0,
        service: ServiceId(0),
        epoch: 0,
        generation: 0,
        last_seen: 0,
        packets: [0; 2],
        egress: [Egress::UNSET; 2],
        egress_neighbours: 0,
        service_slot: u32::MAX,
        backend_slot: u32::MAX,
        pending_packets: 0,
        pending_bytes: 0,
    };

    #[inline]
    fn in_use(&self) -> bool {
        self.flags & IN_USE != 0
    }

    fn held(&self, pending: Pending) -> HeldCounts {
        HeldCounts {
            generation: self.generation,
            frontend: self.frontend(),
            frontend_port: self.frontend_port,
            protocol: self.protocol,
            backend: self.backend(),
            backend_port: self.backend_port,
            pending,
        }
    }

    pub fn client(&self) -> IpAddr {
        self.client.to_ip(self.v6)
    }
    pub fn client_port(&self) -> u16 {
        self.client_port
    }
    pub fn frontend(&self) -> IpAddr {
        self.frontend.to_ip(self.v6)
    }
    pub fn frontend_port(&self) -> u16 {
        self.frontend_port
    }
    pub fn backend(&self) -> IpAddr {
        self.backend.to_ip(self.v6)
    }
    pub fn backend_port(&self) -> u16 {
        self.backend_port
    }
    pub fn protocol(&self) -> u8 {
        self.protocol
    }
    pub fn service(&self) -> ServiceId {
        self.service
    }
    /// The table generation the flow was created or last revalidated under.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn state(&self) -> FlowState {
        self.state
    }
    /// When the last accounted packet was seen (caller's clock, ns).
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }
    /// Packets accounted in one direction (saturating).
    pub fn packets(&self, dir: Direction) -> u32 {
        self.packets[dir.bit() as usize]
    }

    /// Client → frontend.
    #[inline]
    pub fn forward_key(&self) -> FlowKey {
        FlowKey {
            src: self.client,
            dst: self.frontend,
            src_port: self.client_port,
            dst_port: self.frontend_port,
            protocol: self.protocol,
            v6: self.v6,
        }
    }

    /// Backend → client.
    #[inline]
    pub fn reverse_key(&self) -> FlowKey {
        FlowKey {
            src: self.backend,
            dst: self.client,
            src_port: self.backend_port,
            dst_port: self.client_port,
            protocol: self.protocol,
            v6: self.v6,
        }
    }

    #[inline(always)]
    fn matches(&self, key: &FlowKey, dir: Direction) -> bool {
        let (src, sport, dst, dport) = match dir {
            Direction::Forward => (
                &self.client,
                self.client_port,
                &self.frontend,
                self.frontend_port,
            ),
            Direction::Reverse => (
                &self.backend,
                self.backend_port,
                &self.client,
                self.client_port,
            ),
        };
        key.src == *src
            && key.dst == *dst
            && key.src_port == sport
            && key.dst_port == dport
            && key.protocol == self.protocol
            && key.v6 == self.v6
    }
}

/// Why a flow was not stored. The caller still serves the packet (stateless selection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The forward key is already tracked (a lookup would have found it).
    Exists(FlowHandle),
    /// Another flow already has this reverse key (same client address and port to the
    /// same backend address and port through another frontend): replies could not be
    /// told apart. The caller may choose another backend.
    ReverseConflict(FlowHandle),
    /// Capacity 0, or nothing evictable.
    NoRoom,
}

/// Counters a worker exports. Plain integers, bumped by the table's owner only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTrackStats {
    pub inserted: u64,
    pub removed: u64,
    /// Flows removed because their timeout passed (by `expire` or a lookup).
    pub expired: u64,
    /// Live flows removed to admit new ones.
    pub evicted: u64,
    pub no_room: u64,
    pub reverse_conflicts: u64,
    /// Closing flows removed because a new flow needed their reply key.
    pub reclaimed: u64,
    /// Packets removed flows counted that could not be handed over (more removals
    /// between two [`ConnTrack::drain_retired`] calls than it keeps).
    pub counts_dropped: u64,
}

const WAYS: usize = 8;

/// One cache line of the index: `tags[i] == 0` marks a free way; otherwise `refs[i]` is
/// `flow_index << 1 | direction`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; WAYS],
    refs: [u32; WAYS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [0; WAYS],
    refs: [0; WAYS],
};

/// How many slab entries at the eviction hand join the victim candidates.
const HAND_SAMPLE: usize = 8;

/// A worker's connection-tracking table. See the module documentation.
///
/// `repr(C, align(64))` with the fields every lookup reads first (the index, its mask,
/// the hash key, the slab), so that they share one cache line.
#[repr(C, align(64))]
pub struct ConnTrack {
    buckets: Box<[Bucket]>,
    mask: usize,
    /// The key of [`FlowKey::table_hash`], drawn when the table is built.
    hash_key: TableHashKey,
    flows: Box<[Flow]>,
    free: Vec<u32>,
    timeout_ns: [u64; STATES],
    expire_cursor: usize,
    evict_hand: usize,
    len: usize,
    stats: ConnTrackStats,
    /// Uncounted packets of removed flows (capacity [`RETIRED_MAX`], never grown).
    retired: Vec<HeldCounts>,
}

/// Where a key may live: its primary bucket, its secondary bucket (two-choice hashing:
/// an insert goes to the primary unless it is full, so almost every lookup reads one
/// line; when both are full one entry is moved to its own other bucket, cuckoo-style,
/// and only when that fails too is a flow evicted), and its tag.
#[derive(Clone, Copy)]
struct Slot {
    primary: usize,
    secondary: usize,
    tag: u32,
}

impl ConnTrack {
    /// A table for at most `capacity` flows (capped at 2³⁰), with all memory allocated now:
    /// 128 bytes per flow plus 32 bytes per flow of index (rounded up to a power of two).
    /// Its hash key is random ([`TableHashKey::random`]): which bucket a flow lands in
    /// differs from table to table and from run to run.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        ConnTrack::with_key(capacity, timeouts, TableHashKey::random())
    }

    /// [`ConnTrack::new`] with the hash key of the caller's choice (benches and tests
    /// that need the same placement in every run, e.g. [`TableHashKey::FIXED`]).
    pub fn with_key(capacity: usize, timeouts: Timeouts, hash_key: TableHashKey) -> Self {
        let capacity = capacity.min(1 << 30);
        // Two index entries per flow, at most half the ways in use when full.
        let buckets = (capacity * 2 * 2).div_ceil(WAYS).max(1).next_power_of_two();
        let mut free = Vec::with_capacity(capacity);
        free.extend((0..capacity as u32).rev());
        ConnTrack {
            flows: vec![Flow::EMPTY; capacity].into_boxed_slice(),
            free,
            buckets: vec![EMPTY_BUCKET; buckets].into_boxed_slice(),
            mask: buckets - 1,
            hash_key,
            timeout_ns: timeouts.table_ns(),
            expire_cursor: 0,
            evict_hand: 0,
            len: 0,
            stats: ConnTrackStats::default(),
            retired: Vec::with_capacity(RETIRED_MAX),
        }
    }

    /// Hands the uncounted packets of flows removed since the last call to `counts` (see
    /// [`COUNT_EVERY`]); the pipeline calls it after any work that may remove flows.
    #[inline]
    pub fn drain_retired(&mut self, mut counts: impl FnMut(HeldCounts)) {
        if !self.retired.is_empty() {
            for h in self.retired.drain(..) {
                counts(h);
            }
        }
    }

    /// Tracked flows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most flows the table holds; fixed at `new`.
    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    pub fn stats(&self) -> ConnTrackStats {
        self.stats
    }

    /// A key's primary bucket and its tag (never 0, which marks a free way).
    #[inline(always)]
    fn primary_and_tag(&self, key: &FlowKey) -> (usize, u32) {
        let h = key.table_hash(self.hash_key);
        let tag = (h >> 32) as u32;
        let tag = if tag == 0 { 1 } else { tag };
        ((h as usize) & self.mask, tag)
    }

    #[inline]
    fn slot(&self, key: &FlowKey) -> Slot {
        let (primary, tag) = self.primary_and_tag(key);
        Slot {
            primary,
            secondary: self.other_bucket(primary, tag),
            tag,
        }
    }

    /// The other bucket of an entry with `tag` in bucket `b`: an involution (applied to
    /// the secondary it gives the primary back), so an entry can be moved without its key.
    #[inline]
    fn other_bucket(&self, b: usize, tag: u32) -> usize {
        let alt = (u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) as usize;
        (b ^ alt ^ 1) & self.mask
    }

    /// Frees a way in bucket `b` by moving one of its entries to that entry's other
    /// bucket (one cuckoo step). Returns the freed way.
    fn displace(&mut self, b: usize) -> Option<usize> {
        let bucket = *self.buckets.get(b)?;
        for w in 0..WAYS {
            let other = self.other_bucket(b, bucket.tags[w]);
            if other == b {
                continue;
            }
            let Some(dst) = self.buckets.get_mut(other) else {
                continue;
            };
            if let Some(free) = dst.tags.iter().position(|&t| t == 0) {
                dst.tags[free] = bucket.tags[w];
                dst.refs[free] = bucket.refs[w];
                if let Some(src) = self.buckets.get_mut(b) {
                    src.tags[w] = 0;
                }
                return Some(w);
            }
        }
        None
    }

    /// The flow for a handle, if it is still tracked.
    #[inline]
    pub fn flow(&self, h: FlowHandle) -> Option<&Flow> {
        self.flows
            .get(h.index as usize)
            .filter(|f| f.in_use() && f.epoch == h.epoch)
    }

    #[inline]
    fn flow_mut(&mut self, h: FlowHandle) -> Option<&mut Flow> {
        self.flows
            .get_mut(h.index as usize)
            .filter(|f| f.in_use() && f.epoch == h.epoch)
    }

    #[inline]
    fn deadline(&self, f: &Flow) -> u64 {
        f.last_seen
            .saturating_add(self.timeout_ns[f.state as usize])
    }

    /// Finds the flow a packet with this key belongs to, and which way it travels. An
    /// expired flow is removed and not returned. Does not count the packet: call
    /// [`ConnTrack::update_tcp`] or [`ConnTrack::touch`].
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: u64) -> Option<(FlowHandle, Direction)> {
        let found = self.find(key);
        self.unless_expired(found, now)
    }

    /// [`ConnTrack::lookup`] of a key whose buckets are known.
    fn lookup_at(&mut self, s: &Slot, key: &FlowKey, now: u64) -> Option<(FlowHandle, Direction)> {
        let found = self
            .find_in(s.primary, s.tag, key)
            .or_else(|| self.find_in(s.secondary, s.tag, key));
        self.unless_expired(found, now)
    }

    /// A found flow, unless it has expired (then it is removed).
    #[inline]
    fn unless_expired(
        &mut self,
        found: Option<(FlowHandle, Direction)>,
        now: u64,
    ) -> Option<(FlowHandle, Direction)> {
        let (h, dir) = found?;
        let f = self.flow(h)?;
        if now >= self.deadline(f) {
            self.unlink(h.index);
            self.stats.expired += 1;
            return None;
        }
        Some((h, dir))
    }

    /// Index probe without expiry.
    #[inline(always)]
    fn find(&self, key: &FlowKey) -> Option<(FlowHandle, Direction)> {
        let (primary, tag) = self.primary_and_tag(key);
        if let Some(hit) = self.find_in(primary, tag, key) {
            return Some(hit);
        }
        // The secondary bucket is computed only when the primary misses (rarely).
        self.find_in(self.other_bucket(primary, tag), tag, key)
    }

    #[inline(always)]
    fn find_in(&self, b: usize, tag: u32, key: &FlowKey) -> Option<(FlowHandle, Direction)> {
        let bucket = self.buckets.get(b)?;
        for (&t, &r) in bucket.tags.iter().zip(&bucket.refs) {
            if t != tag {
                continue;
            }
            if let Some(hit) = self.check_ref(r, key) {
                return Some(hit);
            }
        }
        None
    }

    /// Tracks a new flow whose first packet had key `forward` (client → frontend),
    /// translated to `nat`. Makes room by eviction when needed (see the module docs).
    /// TCP flows start in [`FlowState::TcpNew`], UDP in `UdpUnreplied`, ICMP (1, 58) in
    /// `IcmpEcho`, others in `Other`; `last_seen` is `now`.
    pub fn insert(
        &mut self,
        forward: &FlowKey,
        nat: NatTarget,
        now: u64,
    ) -> Result<FlowHandle, InsertError> {
        if self.capacity() == 0 {
            self.stats.no_room += 1;
            return Err(InsertError::NoRoom);
        }
        let backend = FlowAddr::from_ip(nat.backend);
        // The reply comes from the backend: the forward key sent to it, turned round.
        let reverse = FlowKey {
            dst: backend,
            dst_port: nat.backend_port,
            ..*forward
        }
        .reversed();
        // Each key's buckets, hashed once for both the checks and the placement.
        let fs = self.slot(forward);
        let rs = self.slot(&reverse);
        if let Some((h, _)) = self.lookup_at(&fs, forward, now) {
            return Err(InsertError::Exists(h));
        }
        if let Some((h, _)) = self.lookup_at(&rs, &reverse, now) {
            // A closing flow that left the same reply key behind (the client reused its
            // port for another frontend of the same backend) is over: the new flow takes
            // the key, as a new SYN takes over a TIME_WAIT connection in the kernel.
            let closing = self.flow(h).is_some_and(|f| {
                matches!(
                    f.state,
                    FlowState::TcpFinWait | FlowState::TcpTimeWait | FlowState::TcpClose
                )
            });
            if !closing {
                self.stats.reverse_conflicts += 1;
                return Err(InsertError::ReverseConflict(h));
            }
            self.remove(h);
            self.stats.reclaimed += 1;
        }
        if self.free.is_empty() {
            self.evict_for_slab(fs.primary, rs.primary, now);
        }
        let Some(index) = self.free.pop() else {
            self.stats.no_room += 1;
            return Err(InsertError::NoRoom);
        };
        let state = match forward.protocol {
            6 => FlowState::TcpNew,
            17 => FlowState::UdpUnreplied,
            1 | 58 => FlowState::IcmpEcho,
            _ => FlowState::Other,
        };
        let Some(f) = self.flows.get_mut(index as usize) else {
            // Free-list entries are always slab indexes; kept total rather than panicking.
            self.stats.no_room += 1;
            return Err(InsertError::NoRoom);
        };
        let epoch = f.epoch;
        *f = Flow {
            client: forward.src,
            frontend: forward.dst,
            backend,
            client_port: forward.src_port,
            frontend_port: forward.dst_port,
            backend_port: nat.backend_port,
            protocol: forward.protocol,
            v6: forward.v6,
            state,
            flags: IN_USE,
            service: nat.service,
            epoch,
            generation: nat.generation,
            last_seen: now,
            // No packets counted, no fast-path cache, no counts held.
            ..Flow::EMPTY
        };
        self.len += 1;
        let placed =
            self.place(fs, index << 1, index, now) && self.place(rs, (index << 1) | 1, index, now);
        if !placed {
            // Not reachable while buckets hold other flows to evict; undone for totality.
            self.unlink(index);
            self.stats.no_room += 1;
            return Err(InsertError::NoRoom);
        }
        self.stats.inserted += 1;
        Ok(FlowHandle { index, epoch })
    }

    /// Puts index entry `r` in the key's primary bucket, else its secondary, else evicts
    /// the flow closest to its deadline among both buckets' flows (never `new_flow`).
    fn place(&mut self, s: Slot, r: u32, new_flow: u32, now: u64) -> bool {
        for _ in 0..=2 * WAYS {
            for b in [s.primary, s.secondary] {
                if let Some(bucket) = self.buckets.get_mut(b) {
                    if let Some(way) = bucket.tags.iter().position(|&t| t == 0) {
                        bucket.tags[way] = s.tag;
                        bucket.refs[way] = r;
                        return true;
                    }
                }
            }
            // Both full: move an entry of either bucket to its other bucket, if that one
            // has room; evict only when neither can.
            for b in [s.primary, s.secondary] {
                if let Some(way) = self.displace(b) {
                    if let Some(bucket) = self.buckets.get_mut(b) {
                        bucket.tags[way] = s.tag;
                        bucket.refs[way] = r;
                        return true;
                    }
                }
            }
            let mut best: Option<(u64, u32)> = None;
            for b in [s.primary, s.secondary] {
                let Some(bucket) = self.buckets.get(b) else {
                    continue;
                };
                for w in 0..WAYS {
                    let i = bucket.refs[w] >> 1;
                    if bucket.tags[w] == 0 || i == new_flow {
                        continue;
                    }
                    if let Some(f) = self.flows.get(i as usize) {
                        let d = self.deadline(f);
                        if best.map_or(true, |(bd, _)| d < bd) {
                            best = Some((d, i));
                        }
                    }
                }
            }
            match best {
                Some((_, i)) => self.evict(i, now),
                None => return false,
            }
        }
        false
    }

    /// Frees one slab entry: the candidate with the earliest deadline among the flows of
    /// buckets `fb` and `rb` and `HAND_SAMPLE` entries at the eviction hand.
    fn evict_for_slab(&mut self, fb: usize, rb: usize, now: u64) {
        let mut best: Option<(u64, u32)> = None;
        let mut consider = |i: u32, flows: &[Flow], timeout: &[u64; STATES]| {
            if let Some(f) = flows.get(i as usize).filter(|f| f.in_use()) {
                let d = f.last_seen.saturating_add(timeout[f.state as usize]);
                if best.map_or(true, |(bd, _)| d < bd) {
                    best = Some((d, i));
                }
            }
        };
        for b in [fb, rb] {
            if let Some(bucket) = self.buckets.get(b) {
                for w in 0..WAYS {
                    if bucket.tags[w] != 0 {
                        consider(bucket.refs[w] >> 1, &self.flows, &self.timeout_ns);
                    }
                }
            }
        }
        let n = self.flows.len();
        for k in 0..HAND_SAMPLE.min(n) {
            let i = (self.evict_hand + k) % n;
            consider(i as u32, &self.flows, &self.timeout_ns);
        }
        self.evict_hand = (self.evict_hand + HAND_SAMPLE) % n.max(1);
        if let Some((_, i)) = best {
            self.evict(i, now);
        }
    }

    fn evict(&mut self, index: u32, now: u64) {
        let expired = self
            .flows
            .get(index as usize)
            .is_some_and(|f| now >= self.deadline(f));
        if self.unlink(index) {
            if expired {
                self.stats.expired += 1;
            } else {
                self.stats.evicted += 1;
            }
        }
    }

    /// Removes the flow at slab `index` and its index entries. False if free.
    fn unlink(&mut self, index: u32) -> bool {
        let Some(f) = self.flows.get(index as usize).filter(|f| f.in_use()) else {
            return false;
        };
        let keys = [f.forward_key(), f.reverse_key()];
        for (d, key) in keys.iter().enumerate() {
            let s = self.slot(key);
            let r = (index << 1) | d as u32;
            'buckets: for b in [s.primary, s.secondary] {
                if let Some(bucket) = self.buckets.get_mut(b) {
                    for w in 0..WAYS {
                        if bucket.tags[w] != 0 && bucket.refs[w] == r {
                            bucket.tags[w] = 0;
                            break 'buckets;
                        }
                    }
                }
            }
        }
        if let Some(f) = self.flows.get_mut(index as usize) {
            f.flags = 0;
            f.epoch = f.epoch.wrapping_add(1);
            if let Some(p) = take_pending(f) {
                let held = f.held(p);
                if self.retired.len() < RETIRED_MAX {
                    self.retired.push(held);
                } else {
                    self.stats.counts_dropped += u64::from(p.packets);
                }
            }
        }
        // `free` has capacity for every slab entry, so this never reallocates.
        self.free.push(index);
        self.len -= 1;
        true
    }

    /// Stops tracking a flow. False for a stale handle.
    pub fn remove(&mut self, h: FlowHandle) -> bool {
        if self.flow(h).is_none() {
            return false;
        }
        let done = self.unlink(h.index);
        if done {
            self.stats.removed += 1;
        }
        done
    }

    /// Accounts a TCP packet: advances the state machine, refreshes `last_seen`, counts
    /// it. Returns the new state, or `None` for a stale handle.
    ///
    /// RST from either side → `TcpClose`. `TcpNew` takes the first packet's meaning: SYN →
    /// SynSent, SYN-ACK → SynRecv, FIN → FinWait, anything else → Established (a flow
    /// picked up mid-stream, e.g. after eviction). SynSent + reverse SYN-ACK → SynRecv;
    /// SynRecv + forward ACK → Established; a FIN → FinWait, a FIN from the other side
    /// too → TimeWait. A forward SYN without ACK in TimeWait or Close reopens the flow
    /// (SynSent; the port was reused).
    pub fn update_tcp(
        &mut self,
        h: FlowHandle,
        dir: Direction,
        flags: TcpFlags,
        now: u64,
    ) -> Option<FlowState> {
        let f = self.flow_mut(h)?;
        account_tcp(f, dir, flags, now);
        Some(f.state)
    }

    /// Accounts a non-TCP packet: refreshes `last_seen`, counts it, and marks a UDP flow
    /// replied on its first reverse packet. Returns the state, `None` for a stale handle.
    pub fn touch(&mut self, h: FlowHandle, dir: Direction, now: u64) -> Option<FlowState> {
        let f = self.flow_mut(h)?;
        account_other(f, dir, now);
        Some(f.state)
    }

    /// Caches the next hop of one direction of a flow for [`ConnTrack::fast_hit`], as
    /// resolved under neighbour snapshot `neighbours` (a version no other snapshot has;
    /// caching under a new version forgets the other direction's next hop), with the
    /// counter slots of the flow's service and backend. Call it only
    /// when the flow has been validated against the current table (its generation is the
    /// table's) and its packets in this direction may skip the full pipeline. False for
    /// a stale handle.
    pub fn cache_egress(
        &mut self,
        h: FlowHandle,
        dir: Direction,
        egress: Egress,
        neighbours: u64,
        service_slot: u32,
        backend_slot: u32,
    ) -> bool {
        let Some(f) = self.flow_mut(h) else {
            return false;
        };
        if f.egress_neighbours != neighbours {
            f.egress = [Egress::UNSET; 2];
            f.egress_neighbours = neighbours;
        }
        f.egress[dir.bit() as usize] = egress;
        if (f.service_slot, f.backend_slot) != (service_slot, backend_slot) {
            // Counts held for other rows (the caller did not take them when the flow
            // changed tables) are not added to these.
            f.pending_packets = 0;
            f.pending_bytes = 0;
        }
        f.service_slot = service_slot;
        f.backend_slot = backend_slot;
        true
    }

    /// Takes the packets the flow counted but has not added to counter rows (see
    /// [`COUNT_EVERY`]), if any: the caller adds them to the rows of the table that cached
    /// the slots, if it still holds them. Call it before the flow moves to another table
    /// generation ([`ConnTrack::set_service`], [`ConnTrack::rebind`]).
    pub fn take_pending(&mut self, h: FlowHandle) -> Option<HeldCounts> {
        let f = self.flow_mut(h)?;
        take_pending(f).map(|p| f.held(p))
    }

    /// The fast path's lookup: the flow of `key` when its cached next hop for this
    /// direction is valid under table `generation` and neighbour snapshot `neighbours`;
    /// the packet is then accounted (`tcp_flags` for TCP, `None` for others) as
    /// [`ConnTrack::update_tcp`] / [`ConnTrack::touch`] would. Otherwise `None`, with
    /// nothing changed: the packet takes the full pipeline (which also removes an
    /// expired flow). `hint` is an index entry that probably names the key's flow (from
    /// [`ConnTrack::primary_candidate`]); it is checked against the whole key, and the
    /// index is searched when it does not match, so a wrong hint costs only time. The
    /// flow counts the packet (`bytes`: its IP length) itself; see [`FastHit::counts`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the packet's facts, spelled out; inlined
    pub fn fast_hit(
        &mut self,
        key: &FlowKey,
        tcp_flags: Option<TcpFlags>,
        now: u64,
        generation: u64,
        neighbours: u64,
        hint: Option<u32>,
        bytes: u16,
    ) -> Option<FastHit> {
        let (h, dir) = match hint.and_then(|r| self.check_ref(r, key)) {
            Some(found) => found,
            None => self.find(key)?,
        };
        let timeout_ns = &self.timeout_ns;
        let f = self.flows.get_mut(h.index as usize)?;
        let egress = f.egress[dir.bit() as usize];
        if f.generation != generation
            || f.egress_neighbours != neighbours
            || egress.port == Egress::UNSET.port
            || now >= f.last_seen.saturating_add(timeout_ns[f.state as usize])
        {
            return None;
        }
        match tcp_flags {
            Some(flags) => account_tcp(f, dir, flags, now),
            None => account_other(f, dir, now),
        }
        f.pending_packets += 1;
        f.pending_bytes += u32::from(bytes);
        let counts = if f.pending_packets >= COUNT_EVERY {
            take_pending(f)
        } else {
            None
        };
        let (nat_addr, nat_port) = match dir {
            Direction::Forward => (f.backend, f.backend_port),
            Direction::Reverse => (f.frontend, f.frontend_port),
        };
        Some(FastHit {
            dir,
            service_slot: f.service_slot,
            backend_slot: f.backend_slot,
            egress,
            nat_addr,
            nat_port,
            counts,
        })
    }

    /// The first index entry in bucket `bucket` that carries `tag`: it names the flow (and
    /// direction) a key with that primary bucket and tag most likely has, for a caller
    /// that prefetches the flow and hands the entry back to [`ConnTrack::fast_hit`] (a
    /// tag collision makes it another flow, harmlessly). Tag 0 (which no key has) gives
    /// none.
    #[inline]
    pub fn primary_candidate(&self, bucket: usize, tag: u32) -> Option<u32> {
        let b = self.buckets.get(bucket & self.mask).filter(|_| tag != 0)?;
        let way = b.tags.iter().position(|&t| t == tag)?;
        b.refs.get(way).copied()
    }

    /// The flow an index entry (from [`ConnTrack::primary_candidate`]) names, for a
    /// caller that prefetches it or what it names.
    #[inline]
    pub fn flow_at(&self, entry: u32) -> Option<&Flow> {
        self.flows.get((entry >> 1) as usize)
    }

    /// The flow and direction of `key` if index entry `r` names them.
    #[inline(always)]
    fn check_ref(&self, r: u32, key: &FlowKey) -> Option<(FlowHandle, Direction)> {
        let dir = if r & 1 == 0 {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        let index = r >> 1;
        let f = self.flows.get(index as usize)?;
        (f.in_use() && f.matches(key, dir)).then_some((
            FlowHandle {
                index,
                epoch: f.epoch,
            },
            dir,
        ))
    }

    /// The primary bucket and tag of a key (what a prefetching caller remembers between
    /// its passes over a burst).
    #[inline]
    pub fn bucket_and_tag(&self, key: &FlowKey) -> (usize, u32) {
        self.primary_and_tag(key)
    }

    /// The slab slot the `k`-th next insert fills (0: the next), if no flow is removed
    /// meanwhile: for a caller that prefetches it.
    #[inline]
    pub fn free_slot_ahead(&self, k: usize) -> Option<&Flow> {
        let at = self.free.len().checked_sub(k + 1)?;
        self.flows.get(*self.free.get(at)? as usize)
    }

    /// The other bucket a key of primary bucket `bucket` and `tag` may be in (where a
    /// lookup that misses in the primary looks, and an insert may place it).
    #[inline]
    pub fn secondary_bucket(&self, bucket: usize, tag: u32) -> usize {
        self.other_bucket(bucket & self.mask, tag)
    }

    /// The index bucket line at `index`, for a caller that prefetches it.
    #[inline]
    pub fn bucket_line(&self, index: usize) -> Option<&impl Sized> {
        self.buckets.get(index & self.mask)
    }

    /// Sends the flow to another backend (the pipeline re-steering a SYN whose backend did
    /// not answer): the reverse key changes, the forward key stays. Fails with
    /// `ReverseConflict` when another flow has the new reverse key, `NoRoom` for a stale
    /// handle; on failure the flow is unchanged.
    pub fn rebind(&mut self, h: FlowHandle, nat: NatTarget, now: u64) -> Result<(), InsertError> {
        let Some(f) = self.flow(h) else {
            return Err(InsertError::NoRoom);
        };
        let old_reverse = f.reverse_key();
        let mut new_reverse = old_reverse;
        new_reverse.src = FlowAddr::from_ip(nat.backend);
        new_reverse.src_port = nat.backend_port;
        if new_reverse == old_reverse {
            self.set_generation(h, nat.generation);
            return Ok(());
        }
        if let Some((other, _)) = self.lookup(&new_reverse, now) {
            self.stats.reverse_conflicts += 1;
            return Err(InsertError::ReverseConflict(other));
        }
        // Drop the old reverse entry, then place the new one (it may evict another flow,
        // never this one).
        let r = (h.index << 1) | 1;
        let s = self.slot(&old_reverse);
        'buckets: for b in [s.primary, s.secondary] {
            if let Some(bucket) = self.buckets.get_mut(b) {
                for w in 0..WAYS {
                    if bucket.tags[w] != 0 && bucket.refs[w] == r {
                        bucket.tags[w] = 0;
                        break 'buckets;
                    }
                }
            }
        }
        if let Some(f) = self.flow_mut(h) {
            f.backend = new_reverse.src;
            f.backend_port = nat.backend_port;
            f.service = nat.service;
            f.generation = nat.generation;
            f.egress = [Egress::UNSET; 2];
        }
        let ns = self.slot(&new_reverse);
        if !self.place(ns, r, h.index, now) {
            // Unreachable while the buckets hold other flows; keep the index consistent.
            self.unlink(h.index);
            return Err(InsertError::NoRoom);
        }
        Ok(())
    }

    /// Records that the flow was revalidated against table `generation` (its backend is
    /// still listed, or it is a TCP flow left to drain), so the pipeline checks it again
    /// only after the next table change. False for a stale handle.
    ///
    /// The pipeline's rule when `flow.generation() != table.generation()`: find the
    /// service again through the flow's frontend (`table.frontend(&FrontendKey { addr:
    /// flow.frontend(), port: flow.frontend_port(), protocol })`; a `ServiceId` is only
    /// meaningful in the generation that issued it), then if `table.has_backend(..)`
    /// still lists the backend, or the flow is TCP (draining), call this; otherwise (UDP
    /// and others to a vanished backend) [`ConnTrack::remove`].
    pub fn set_generation(&mut self, h: FlowHandle, generation: u64) -> bool {
        match self.flow_mut(h) {
            Some(f) => {
                f.generation = generation;
                f.egress = [Egress::UNSET; 2];
                true
            }
            None => false,
        }
    }

    /// Like [`ConnTrack::set_generation`], also re-naming the flow's service by its id in
    /// that generation (ids are only meaningful within one table). False for a stale handle.
    pub fn set_service(&mut self, h: FlowHandle, service: ServiceId, generation: u64) -> bool {
        match self.flow_mut(h) {
            Some(f) => {
                f.service = service;
                f.generation = generation;
                f.egress = [Egress::UNSET; 2];
                true
            }
            None => false,
        }
    }

    /// The slow job: examines up to `budget` slab slots from where the last call stopped
    /// and removes the expired flows among them. Returns how many it removed. A full
    /// sweep takes `capacity / budget` calls. Each examined flow's uncounted packets are
    /// handed to `counts` first (see [`COUNT_EVERY`]), so none is older than a sweep.
    pub fn expire(&mut self, now: u64, budget: usize, mut counts: impl FnMut(HeldCounts)) -> usize {
        let n = self.flows.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let i = self.expire_cursor;
            self.expire_cursor = if i + 1 == n { 0 } else { i + 1 };
            let Some(f) = self.flows.get_mut(i).filter(|f| f.in_use()) else {
                continue;
            };
            if let Some(p) = take_pending(f) {
                counts(f.held(p));
            }
            let expired = self.flows.get(i).is_some_and(|f| now >= self.deadline(f));
            if expired && self.unlink(i as u32) {
                removed += 1;
            }
        }
        self.stats.expired += removed as u64;
        removed
    }

    /// Hands every flow's uncounted packets to `counts` (see [`COUNT_EVERY`]): a full
    /// scan, for a worker stopping or a test reading exact counters; the slow job does
    /// the same a slice at a time.
    pub fn take_all_pending(&mut self, mut counts: impl FnMut(HeldCounts)) {
        for f in self.flows.iter_mut().filter(|f| f.in_use()) {
            if let Some(p) = take_pending(f) {
                counts(f.held(p));
            }
        }
        self.drain_retired(counts);
    }

    /// Every tracked flow (for status pages and tests; not for the packet path).
    pub fn iter(&self) -> impl Iterator<Item = (FlowHandle, &Flow)> {
        self.flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.in_use())
            .map(|(i, f)| {
                (
                    FlowHandle {
                        index: i as u32,
                        epoch: f.epoch,
                    },
                    f,
                )
            })
    }
}

/// Accounts a TCP packet in a flow (see [`ConnTrack::update_tcp`]).
#[inline(always)]
fn account_tcp(f: &mut Flow, dir: Direction, flags: TcpFlags, now: u64) {
    // The common case first: an established flow's segment without SYN, FIN or RST
    // leaves the state as it is.
    let changes = TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST;
    if f.state != FlowState::TcpEstablished || flags.0 & changes != 0 {
        let (state, fins) = tcp_next(f.state, f.flags & 3, dir, flags);
        f.state = state;
        f.flags = (f.flags & !3) | fins;
    }
    f.last_seen = now;
    let p = &mut f.packets[dir.bit() as usize];
    *p = p.saturating_add(1);
}

/// Takes a flow's uncounted packets (see [`ConnTrack::take_pending`]).
#[inline]
fn take_pending(f: &mut Flow) -> Option<Pending> {
    if f.pending_packets == 0 {
        return None;
    }
    let p = Pending {
        service_slot: f.service_slot,
        backend_slot: f.backend_slot,
        packets: u32::from(f.pending_packets),
        bytes: u64::from(f.pending_bytes),
    };
    f.pending_packets = 0;
    f.pending_bytes = 0;
    Some(p)
}

/// Accounts a non-TCP packet in a flow (see [`ConnTrack::touch`]).
#[inline]
fn account_other(f: &mut Flow, dir: Direction, now: u64) {
    if f.state == FlowState::UdpUnreplied && dir == Direction::Reverse {
        f.state = FlowState::UdpReplied;
    }
    f.last_seen = now;
    let p = &mut f.packets[dir.bit() as usize];
    *p = p.saturating_add(1);
}

/// The TCP transition function (see [`ConnTrack::update_tcp`]). `fins`: bit 0 forward FIN
/// seen, bit 1 reverse FIN seen.
fn tcp_next(state: FlowState, fins: u8, dir: Direction, flags: TcpFlags) -> (FlowState, u8) {
    use FlowState::*;
    let syn = flags.has(TcpFlags::SYN);
    let ack = flags.has(TcpFlags::ACK);
    let fin_bit = 1u8 << dir.bit();
    if flags.has(TcpFlags::RST) {
        return (TcpClose, fins);
    }
    if flags.has(TcpFlags::FIN) {
        return match state {
            TcpTimeWait | TcpClose => (state, fins),
            _ => {
                let fins = fins | fin_bit;
                (if fins == 3 { TcpTimeWait } else { TcpFinWait }, fins)
            }
        };
    }
    let next = match (state, dir) {
        (TcpNew, _) if syn && !ack => TcpSynSent,
        (TcpNew, _) if syn => TcpSynRecv,
        (TcpNew, _) => TcpEstablished,
        (TcpSynSent, Direction::Reverse) if syn && ack => TcpSynRecv,
        (TcpSynRecv, Direction::Forward) if ack && !syn => TcpEstablished,
        (TcpTimeWait | TcpClose, Direction::Forward) if syn && !ack => {
            return (TcpSynSent, 0);
        }
        (s, _) => s,
    };
    (next, fins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const S: u64 = 1_000_000_000;

    fn key(client: u32, cport: u16, proto: u8) -> FlowKey {
        FlowKey::new(
            IpAddr::from(client.to_be_bytes()),
            "198.18.0.10".parse().unwrap(),
            cport,
            80,
            proto,
        )
    }

    fn nat(backend: u32) -> NatTarget {
        NatTarget {
            backend: IpAddr::from(backend.to_be_bytes()),
            backend_port: 8080,
            service: ServiceId(3),
            generation: 7,
        }
    }

    fn reverse_of(k: &FlowKey, n: &NatTarget) -> FlowKey {
        FlowKey::new(
            n.backend,
            k.src_ip(),
            n.backend_port,
            k.src_port,
            k.protocol,
        )
    }

    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const SYNACK: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
    const FIN: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const RST: TcpFlags = TcpFlags(TcpFlags::RST);

    #[test]
    fn fast_path_packets_are_counted_in_the_flow_and_handed_over() {
        let mut ct = ConnTrack::new(64, Timeouts::default());
        let k = key(0xc612_0001, 1000, 17);
        let n = nat(0x0a00_0001);
        let h = ct.insert(&k, n, 0).unwrap();
        let egress = Egress {
            port: 1,
            mac: [2, 0, 0, 0, 0, 1],
        };
        assert!(ct.cache_egress(h, Direction::Forward, egress, 5, 11, 12));
        assert!(ct.cache_egress(h, Direction::Reverse, egress, 5, 11, 12));
        let r = reverse_of(&k, &n);
        let pending = |packets: u32, bytes: u64| Pending {
            service_slot: 11,
            backend_slot: 12,
            packets,
            bytes,
        };
        // Every COUNT_EVERY-th packet (either direction) hands the flow's count over.
        let mut handed = Vec::new();
        for i in 0..u64::from(COUNT_EVERY) * 2 + 3 {
            let key = if i % 3 == 0 { &r } else { &k };
            let hit = ct
                .fast_hit(key, None, 1, 7, 5, None, 10 + (i % 2) as u16)
                .unwrap();
            handed.extend(hit.counts);
        }
        let every = u32::from(COUNT_EVERY);
        assert_eq!(
            handed,
            vec![pending(every, 10 * 64 + 32), pending(every, 10 * 64 + 32)]
        );
        // The rest is taken once, by the sweep ...
        let mut swept = Vec::new();
        ct.expire(2, 64, |c| swept.push((c.backend, c.generation, c.pending)));
        assert_eq!(swept, vec![(n.backend, 7, pending(3, 10 + 11 + 10))]);
        assert_eq!(ct.take_pending(h), None);
        // ... or by take_pending; and counts held for other slots are never added to
        // a flow's new ones.
        ct.fast_hit(&k, None, 3, 7, 5, None, 40).unwrap();
        assert_eq!(ct.take_pending(h).map(|c| c.pending), Some(pending(1, 40)));
        ct.fast_hit(&k, None, 4, 7, 5, None, 40).unwrap();
        assert!(ct.cache_egress(h, Direction::Forward, egress, 5, 21, 22));
        assert_eq!(ct.take_pending(h), None);
        ct.fast_hit(&k, None, 5, 7, 5, None, 40).unwrap();
        let mut all = Vec::new();
        ct.take_all_pending(|c| all.push(c.pending));
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].service_slot, all[0].packets, all[0].bytes),
            (21, 1, 40)
        );
        // A removed flow's count waits for drain_retired.
        ct.fast_hit(&k, None, 6, 7, 5, None, 50).unwrap();
        assert!(ct.remove(h));
        let mut retired = Vec::new();
        ct.drain_retired(|c| retired.push((c.frontend, c.frontend_port, c.pending.bytes)));
        assert_eq!(retired, vec![(k.dst_ip(), 80, 50)]);
        ct.drain_retired(|_| panic!("drained twice"));
    }

    #[test]
    fn fast_hit_checks_its_hint_and_searches_when_it_is_wrong() {
        let mut ct = ConnTrack::new(64, Timeouts::default());
        let (ka, kb) = (key(0xc612_0001, 1000, 17), key(0xc612_0002, 2000, 17));
        let (na, nb) = (nat(0x0a00_0001), nat(0x0a00_0002));
        let egress = Egress {
            port: 1,
            mac: [2, 0, 0, 0, 0, 1],
        };
        for (k, n) in [(&ka, na), (&kb, nb)] {
            let h = ct.insert(k, n, 0).unwrap();
            assert!(ct.cache_egress(h, Direction::Forward, egress, 5, 1, 2));
            assert!(ct.cache_egress(h, Direction::Reverse, egress, 5, 1, 2));
        }
        let entry = |ct: &ConnTrack, k: &FlowKey| {
            let (b, tag) = ct.bucket_and_tag(k);
            ct.primary_candidate(b, tag)
        };
        let (ea, eb) = (entry(&ct, &ka), entry(&ct, &kb));
        assert!(ea.is_some() && eb.is_some() && ea != eb);
        assert_eq!(ct.flow_at(ea.unwrap()).unwrap().client(), ka.src_ip());
        let backend = |hit: Option<FastHit>| hit.map(|h| h.nat_addr.to_ip(false));
        // The right hint, no hint, another flow's entry, and an entry past the slab all
        // find the key's own flow; so does a hint to the reverse key's entry.
        for hint in [ea, None, eb, Some(u32::MAX - 1)] {
            let hit = ct.fast_hit(&ka, None, 1, 7, 5, hint, 100);
            assert_eq!(backend(hit), Some(na.backend), "hint {hint:?}");
        }
        let rb = reverse_of(&kb, &nb);
        let hit = ct.fast_hit(&rb, None, 1, 7, 5, eb, 100).unwrap();
        assert_eq!(
            (hit.dir, hit.nat_addr.to_ip(false)),
            (Direction::Reverse, kb.dst_ip())
        );
        // A key with no flow gets nothing, whatever the hint.
        let none = key(0xc612_0003, 3000, 17);
        assert_eq!(ct.fast_hit(&none, None, 1, 7, 5, ea, 100), None);
    }

    /// The keys of one client's ports whose primary bucket under `hash_key` is that of
    /// port 0 (what a client knowing the key would send to fill one bucket pair).
    fn aimed_keys(ct: &ConnTrack) -> Vec<FlowKey> {
        let target = ct.bucket_and_tag(&key(0x0a00_0001, 0, 6)).0;
        (0..=u16::MAX)
            .map(|p| key(0x0a00_0001, p, 6))
            .filter(|k| ct.bucket_and_tag(k).0 == target)
            .collect()
    }

    #[test]
    fn the_hash_key_decides_placement() {
        let fixed = ConnTrack::with_key(1024, Timeouts::default(), TableHashKey::FIXED);
        let aimed = aimed_keys(&fixed);
        // 65,536 ports over 512 buckets: about 128 share port 0's bucket.
        assert!(aimed.len() >= 64, "{} aimed keys", aimed.len());
        for other in [
            TableHashKey([1, 2]),
            TableHashKey([0x5851_f42d_4c95_7f2d, 0x1405_7b7e_f767_814f]),
            TableHashKey([0xd1b5_4a32_d192_ed03, 0xaef1_7502_108e_f2d9]),
        ] {
            let ct = ConnTrack::with_key(1024, Timeouts::default(), other);
            // Under another key the aimed keys scatter like any others ...
            let mut load = HashMap::new();
            for k in &aimed {
                *load.entry(ct.bucket_and_tag(k).0).or_insert(0u32) += 1;
            }
            let fullest = load.values().copied().max().unwrap();
            assert!(
                fullest <= 8,
                "{other:?}: {fullest} aimed keys in one bucket"
            );
            // ... so that a table of those flows finds each in its primary bucket (one
            // line per lookup), where the fixed-key table has room there for 8.
            let in_primary = |hash_key: TableHashKey| {
                let mut ct = ConnTrack::with_key(1024, Timeouts::default(), hash_key);
                for (i, k) in aimed.iter().enumerate() {
                    ct.insert(k, nat(0x0b00_0000 + i as u32), 0).unwrap();
                }
                assert_eq!(ct.stats().evicted, 0);
                aimed
                    .iter()
                    .filter(|k| {
                        let (bucket, tag) = ct.bucket_and_tag(k);
                        ct.primary_candidate(bucket, tag)
                            .and_then(|e| ct.flow_at(e))
                            .is_some_and(|f| f.forward_key() == **k)
                    })
                    .count()
            };
            assert!(in_primary(TableHashKey::FIXED) <= WAYS);
            let spread = in_primary(other);
            assert!(
                spread + 2 >= aimed.len(),
                "{other:?}: {spread} of {}",
                aimed.len()
            );
            // The same key set under two keys: almost no key keeps its bucket.
            let same = (0..4096u16)
                .map(|p| key(0x0a00_0002, p, 17))
                .filter(|k| fixed.bucket_and_tag(k) == ct.bucket_and_tag(k))
                .count();
            assert!(
                same < 64,
                "{other:?}: {same} of 4096 keys kept bucket and tag"
            );
        }
    }

    #[test]
    fn a_table_with_an_explicit_key_places_the_same_in_every_run() {
        let hash_key = TableHashKey([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);
        let mut a = ConnTrack::with_key(256, Timeouts::default(), hash_key);
        let mut b = ConnTrack::with_key(256, Timeouts::default(), hash_key);
        let keys: Vec<FlowKey> = (0..200u32)
            .map(|i| key(0x0a00_0000 + i, 40000, 6))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let n = nat(0x0b00_0000 + i as u32);
            assert_eq!(a.insert(k, n, 0), b.insert(k, n, 0));
        }
        for k in &keys {
            let (bucket, tag) = a.bucket_and_tag(k);
            assert_eq!((bucket, tag), b.bucket_and_tag(k));
            assert_eq!(
                a.primary_candidate(bucket, tag),
                b.primary_candidate(bucket, tag)
            );
        }
        // The placement is the keyed hash's (bucket: its low bits, tag: its high 32).
        let k = key(0x0a00_0001, 40000, 6);
        let h = k.table_hash(hash_key);
        assert_eq!(
            a.bucket_and_tag(&k),
            ((h as usize) & a.mask, (h >> 32) as u32)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Flow>(), 128);
        assert_eq!(std::mem::align_of::<Flow>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn both_directions_found_and_nat_recorded() {
        let mut ct = ConnTrack::new(16, Timeouts::default());
        let k = key(0x0a00_0001, 40000, 6);
        let n = nat(0x0a01_0001);
        let h = ct.insert(&k, n, 0).unwrap();
        assert_eq!(ct.lookup(&k, 1), Some((h, Direction::Forward)));
        assert_eq!(
            ct.lookup(&reverse_of(&k, &n), 1),
            Some((h, Direction::Reverse))
        );
        // The un-translated reply direction (frontend → client) is not a key.
        assert_eq!(ct.lookup(&k.reversed(), 1), None);
        let f = ct.flow(h).unwrap();
        assert_eq!(f.backend(), n.backend);
        assert_eq!(f.backend_port(), 8080);
        assert_eq!(f.frontend_port(), 80);
        assert_eq!(f.client_port(), 40000);
        assert_eq!(f.service(), ServiceId(3));
        assert_eq!(f.generation(), 7);
        assert_eq!(f.forward_key(), k);
        assert_eq!(f.reverse_key(), reverse_of(&k, &n));
        assert_eq!(ct.insert(&k, n, 1), Err(InsertError::Exists(h)));
        // Another frontend, same client port, same backend: replies would be ambiguous.
        let mut other = k;
        other.dst_port = 81;
        assert_eq!(
            ct.insert(&other, n, 1),
            Err(InsertError::ReverseConflict(h))
        );
        assert!(ct.remove(h));
        assert!(!ct.remove(h));
        assert_eq!(ct.lookup(&k, 2), None);
        assert_eq!(ct.lookup(&reverse_of(&k, &n), 2), None);
        assert!(ct.is_empty());
    }

    #[test]
    fn ipv6_flows() {
        let mut ct = ConnTrack::new(4, Timeouts::default());
        let k = FlowKey::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
            5,
            53,
            17,
        );
        let n = NatTarget {
            backend: "2001:db8:1::5".parse().unwrap(),
            backend_port: 5353,
            service: ServiceId(0),
            generation: 1,
        };
        let h = ct.insert(&k, n, 0).unwrap();
        assert_eq!(
            ct.lookup(&reverse_of(&k, &n), 0),
            Some((h, Direction::Reverse))
        );
        assert_eq!(ct.flow(h).unwrap().backend(), n.backend);
    }

    fn tcp_flow(ct: &mut ConnTrack, i: u32) -> FlowHandle {
        ct.insert(&key(0x0a00_0000 + i, 40000, 6), nat(0x0a01_0000 + i), 0)
            .unwrap()
    }

    #[test]
    fn tcp_handshake_and_timeouts_per_state() {
        let t = Timeouts::default();
        let mut ct = ConnTrack::new(8, t);
        let k = key(1, 1000, 6);
        let n = nat(2);
        let h = ct.insert(&k, n, 0).unwrap();
        let st = |ct: &mut ConnTrack, d, f, now| ct.update_tcp(h, d, f, now).unwrap();
        assert_eq!(
            st(&mut ct, Direction::Forward, SYN, 0),
            FlowState::TcpSynSent
        );
        // SYN_SENT lives 30 s.
        assert!(ct.lookup(&k, 29 * S).is_some());
        assert_eq!(
            st(&mut ct, Direction::Reverse, SYNACK, 29 * S),
            FlowState::TcpSynRecv
        );
        assert_eq!(
            st(&mut ct, Direction::Forward, ACK, 30 * S),
            FlowState::TcpEstablished
        );
        // ESTABLISHED lives 24 h after the last packet.
        let day = 24 * 3600 * S;
        assert!(ct.lookup(&k, 30 * S + day - 1).is_some());
        assert!(ct.lookup(&k, 30 * S + day).is_none());
        assert!(ct.flow(h).is_none());
        assert_eq!(ct.stats().expired, 1);

        // A SYN that is never answered expires after 30 s.
        let h2 = tcp_flow(&mut ct, 5);
        ct.update_tcp(h2, Direction::Forward, SYN, 0).unwrap();
        assert!(ct.lookup(&key(0x0a00_0005, 40000, 6), 30 * S).is_none());
    }

    #[test]
    fn fin_and_rst_handling() {
        let mut ct = ConnTrack::new(8, Timeouts::default());
        let h = tcp_flow(&mut ct, 1);
        let k = key(0x0a00_0001, 40000, 6);
        ct.update_tcp(h, Direction::Forward, ACK, 0); // picked up mid-stream
        assert_eq!(ct.flow(h).unwrap().state(), FlowState::TcpEstablished);
        assert_eq!(
            ct.update_tcp(h, Direction::Forward, FIN, S),
            Some(FlowState::TcpFinWait)
        );
        // A retransmitted FIN from the same side stays in FIN_WAIT.
        assert_eq!(
            ct.update_tcp(h, Direction::Forward, FIN, S),
            Some(FlowState::TcpFinWait)
        );
        assert!(ct.lookup(&k, S + 119 * S).is_some());
        assert_eq!(
            ct.update_tcp(h, Direction::Reverse, FIN, 2 * S),
            Some(FlowState::TcpTimeWait)
        );
        assert!(ct.lookup(&k, 2 * S + 59 * S).is_some());
        assert!(ct.lookup(&k, 2 * S + 60 * S).is_none());

        // RST closes: 10 s.
        let h = tcp_flow(&mut ct, 2);
        let k = key(0x0a00_0002, 40000, 6);
        ct.update_tcp(h, Direction::Forward, SYN, 0);
        ct.update_tcp(h, Direction::Reverse, SYNACK, 0);
        ct.update_tcp(h, Direction::Forward, ACK, 0);
        assert_eq!(
            ct.update_tcp(h, Direction::Reverse, RST, S),
            Some(FlowState::TcpClose)
        );
        assert!(ct.lookup(&k, S + 9 * S).is_some());
        // Port reuse: a new SYN reopens the closed flow.
        assert_eq!(
            ct.update_tcp(h, Direction::Forward, SYN, 10 * S),
            Some(FlowState::TcpSynSent)
        );
        assert!(ct.lookup(&k, 10 * S + 29 * S).is_some());
        assert_eq!(ct.flow(h).unwrap().packets(Direction::Forward), 3);
        assert_eq!(ct.flow(h).unwrap().packets(Direction::Reverse), 2);
    }

    #[test]
    fn udp_and_icmp_timeouts() {
        let mut ct = ConnTrack::new(8, Timeouts::default());
        let k = key(1, 5000, 17);
        let h = ct.insert(&k, nat(9), 0).unwrap();
        assert_eq!(ct.flow(h).unwrap().state(), FlowState::UdpUnreplied);
        assert!(ct.lookup(&k, 30 * S).is_none());
        let h = ct.insert(&k, nat(9), 40 * S).unwrap();
        assert_eq!(
            ct.touch(h, Direction::Reverse, 41 * S),
            Some(FlowState::UdpReplied)
        );
        assert!(ct.lookup(&k, 41 * S + 119 * S).is_some());
        assert!(ct.lookup(&k, 41 * S + 120 * S).is_none());
        let k = key(1, 77, 1);
        let h = ct.insert(&k, nat(9), 0).unwrap();
        assert_eq!(ct.flow(h).unwrap().state(), FlowState::IcmpEcho);
        assert!(ct.lookup(&k, 29 * S).is_some());
        assert!(ct.lookup(&k, 30 * S).is_none());
        assert_eq!(ct.touch(h, Direction::Forward, 0), None, "stale handle");
    }

    #[test]
    fn expire_makes_bounded_progress() {
        let mut ct = ConnTrack::new(100, Timeouts::default());
        for i in 0..100 {
            let h = ct.insert(&key(i, 1, 17), nat(7), 0).unwrap();
            if i % 2 == 0 {
                ct.touch(h, Direction::Reverse, 0);
            }
        }
        assert_eq!(ct.len(), 100);
        // At 60 s the 50 unreplied flows are expired; the replied ones live to 120 s.
        let mut total = 0;
        let mut calls = 0;
        while calls < 10 {
            let n = ct.expire(60 * S, 10, |_| {});
            assert!(n <= 10);
            total += n;
            calls += 1;
        }
        assert_eq!(total, 50);
        assert_eq!(ct.len(), 50);
        assert_eq!(ct.expire(60 * S, 1000, |_| {}), 0);
        // The cursor is back at slot 0; slots 0..25 hold the 13 even (replied) flows.
        assert_eq!(ct.expire(120 * S, 25, |_| {}), 13);
    }

    #[test]
    fn full_table_evicts_closing_then_oldest() {
        // Capacity 4: the slab fills before the index does.
        let mut ct = ConnTrack::new(4, Timeouts::default());
        let hs: Vec<FlowHandle> = (0..4)
            .map(|i| {
                let h = tcp_flow(&mut ct, i);
                ct.update_tcp(h, Direction::Forward, ACK, u64::from(i) * S);
                h
            })
            .collect();
        // Flow 3 (the newest) is closing: it is evicted before the older established ones.
        ct.update_tcp(hs[3], Direction::Reverse, RST, 5 * S);
        let h4 = tcp_flow_at(&mut ct, 4, 6 * S);
        assert!(ct.flow(hs[3]).is_none());
        assert!(ct.flow(h4).is_some());
        // Next: the oldest established (flow 0).
        let h5 = tcp_flow_at(&mut ct, 5, 7 * S);
        assert!(ct.flow(hs[0]).is_none());
        assert!(ct.flow(hs[1]).is_some() && ct.flow(hs[2]).is_some());
        assert!(ct.flow(h5).is_some());
        assert_eq!(ct.len(), 4);
        assert_eq!(ct.capacity(), 4);
        assert_eq!(ct.stats().evicted, 2);
    }

    fn tcp_flow_at(ct: &mut ConnTrack, i: u32, now: u64) -> FlowHandle {
        let h = ct
            .insert(&key(0x0a00_0000 + i, 40000, 6), nat(0x0a01_0000 + i), now)
            .unwrap();
        ct.update_tcp(h, Direction::Forward, ACK, now);
        h
    }

    #[test]
    fn flood_keeps_admitting_and_never_grows() {
        let mut ct = ConnTrack::new(1000, Timeouts::default());
        let slab = ct.flows.as_ptr();
        let free_cap = ct.free.capacity();
        let buckets = ct.buckets.len();
        let mut admitted = 0;
        for i in 0..20_000u32 {
            if ct
                .insert(&key(i, (i % 60_000) as u16, 6), nat(i), u64::from(i))
                .is_ok()
            {
                admitted += 1;
            }
            assert!(ct.len() <= ct.capacity());
        }
        assert_eq!(admitted, 20_000);
        assert_eq!(ct.len(), 1000);
        assert_eq!(ct.capacity(), 1000);
        assert_eq!(ct.free.capacity(), free_cap);
        assert_eq!(ct.buckets.len(), buckets);
        assert_eq!(ct.flows.as_ptr(), slab);
        // The survivors are the most recent flows, found in both directions.
        let mut found = 0;
        for i in 19_000..20_000u32 {
            let k = key(i, (i % 60_000) as u16, 6);
            if let Some((h, _)) = ct.lookup(&k, 20_000) {
                found += 1;
                assert!(ct.lookup(&reverse_of(&k, &nat(i)), 20_000).is_some());
                assert!(ct.flow(h).is_some());
            }
        }
        assert!(found > 500, "{found}");
    }

    #[test]
    fn filling_to_capacity_evicts_nothing() {
        let n = 50_000u32;
        let mut ct = ConnTrack::new(n as usize, Timeouts::default());
        for i in 0..n {
            ct.insert(&key(0x0a00_0000 + i, 40000, 6), nat(0x0b00_0000 + i), 0)
                .unwrap();
        }
        assert_eq!(ct.len(), n as usize);
        assert_eq!(ct.stats().evicted, 0);
        for i in (0..n).step_by(97) {
            let k = key(0x0a00_0000 + i, 40000, 6);
            assert!(ct.lookup(&k, 1).is_some());
            assert!(ct
                .lookup(&reverse_of(&k, &nat(0x0b00_0000 + i)), 1)
                .is_some());
        }
    }

    #[test]
    fn rebind_moves_the_reverse_key() {
        let mut ct = ConnTrack::new(8, Timeouts::default());
        let k = key(1, 1000, 6);
        let old = nat(2);
        let h = ct.insert(&k, old, 0).unwrap();
        let other = ct.insert(&key(5, 1000, 6), nat(6), 0).unwrap();
        let new = NatTarget {
            generation: 8,
            ..nat(3)
        };
        assert_eq!(ct.rebind(h, new, 1), Ok(()));
        assert_eq!(ct.lookup(&reverse_of(&k, &old), 1), None);
        assert_eq!(
            ct.lookup(&reverse_of(&k, &new), 1),
            Some((h, Direction::Reverse))
        );
        assert_eq!(ct.lookup(&k, 1), Some((h, Direction::Forward)));
        assert_eq!(ct.flow(h).unwrap().generation(), 8);
        // Client 5 port 1000 through another frontend: moving it to backend 6 would give
        // it `other`'s reverse key.
        let k5 = key(5, 1000, 6);
        let mut k5b = k5;
        k5b.dst_port = 81;
        let h5 = ct.insert(&k5b, nat(7), 1).unwrap();
        assert_eq!(
            ct.rebind(h5, nat(6), 1),
            Err(InsertError::ReverseConflict(other))
        );
        assert_eq!(ct.flow(h5).unwrap().backend(), nat(7).backend);
        ct.remove(h5);
        assert_eq!(ct.rebind(h5, nat(8), 1), Err(InsertError::NoRoom));
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn zero_capacity_refuses() {
        let mut ct = ConnTrack::new(0, Timeouts::default());
        assert_eq!(
            ct.insert(&key(1, 1, 6), nat(1), 0),
            Err(InsertError::NoRoom)
        );
        assert_eq!(ct.expire(0, 10, |_| {}), 0);
        assert_eq!(ct.lookup(&key(1, 1, 6), 0), None);
    }

    #[test]
    fn generation_revalidation() {
        let mut ct = ConnTrack::new(2, Timeouts::default());
        let h = tcp_flow(&mut ct, 1);
        assert!(ct.set_generation(h, 8));
        assert_eq!(ct.flow(h).unwrap().generation(), 8);
        ct.remove(h);
        assert!(!ct.set_generation(h, 9));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Remove(u8),
        Lookup(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Insert(a, b)),
            any::<u8>().prop_map(Op::Remove),
            any::<u8>().prop_map(Op::Lookup),
        ]
    }

    proptest! {
        /// Against a HashMap model (capacity large enough that nothing is evicted, time
        /// frozen): insert, lookup in both directions and remove agree.
        #[test]
        fn matches_model(ops in prop::collection::vec(op(), 1..300)) {
            let mut ct = ConnTrack::new(512, Timeouts::default());
            let mut model: HashMap<FlowKey, (NatTarget, FlowHandle)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(c, b) => {
                        let k = key(u32::from(c), 1000, 6);
                        let n = nat(0x0a00_0000 | u32::from(b));
                        let got = ct.insert(&k, n, 0);
                        let rev = reverse_of(&k, &n);
                        let conflict = model.iter().find(|(mk, (mn, _))| reverse_of(mk, mn) == rev);
                        match (model.get(&k), conflict) {
                            (Some(&(_, h)), _) => prop_assert_eq!(got, Err(InsertError::Exists(h))),
                            (None, Some((_, &(_, h)))) => prop_assert_eq!(got, Err(InsertError::ReverseConflict(h))),
                            (None, None) => {
                                let h = got.unwrap();
                                model.insert(k, (n, h));
                            }
                        }
                    }
                    Op::Remove(c) => {
                        let k = key(u32::from(c), 1000, 6);
                        match model.remove(&k) {
                            Some((_, h)) => prop_assert!(ct.remove(h)),
                            None => prop_assert!(ct.lookup(&k, 0).is_none()),
                        }
                    }
                    Op::Lookup(c) => {
                        let k = key(u32::from(c), 1000, 6);
                        match model.get(&k) {
                            Some(&(n, h)) => {
                                prop_assert_eq!(ct.lookup(&k, 0), Some((h, Direction::Forward)));
                                prop_assert_eq!(ct.lookup(&reverse_of(&k, &n), 0), Some((h, Direction::Reverse)));
                            }
                            None => prop_assert!(ct.lookup(&k, 0).is_none()),
                        }
                    }
                }
                prop_assert_eq!(ct.len(), model.len());
            }
            prop_assert_eq!(ct.iter().count(), model.len());
        }

        /// Under eviction pressure: never more than capacity, and every tracked flow is
        /// found by both of its keys.
        #[test]
        fn index_consistent_under_eviction(ops in prop::collection::vec((any::<u16>(), any::<u8>(), 0u64..1000), 1..400)) {
            let mut ct = ConnTrack::new(32, Timeouts::default());
            for (c, b, t) in ops {
                let _ = ct.insert(&key(u32::from(c), 2000, 17), nat(u32::from(b)), t * S);
                prop_assert!(ct.len() <= 32);
            }
            let flows: Vec<(FlowHandle, Flow)> = ct.iter().map(|(h, f)| (h, *f)).collect();
            prop_assert_eq!(flows.len(), ct.len());
            for (h, f) in flows {
                prop_assert_eq!(ct.find(&f.forward_key()), Some((h, Direction::Forward)));
                prop_assert_eq!(ct.find(&f.reverse_key()), Some((h, Direction::Reverse)));
            }
        }
    }
}
