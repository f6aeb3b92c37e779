//! The worker: one per polling core. It owns its connection tracking, ClientIP affinity,
//! fragment and neighbour-request tables and its counters, all allocated in
//! [`Worker::new`], and turns each received frame into a [`Verdict`], rewriting the
//! frame in place. Nothing in [`Worker::process`] allocates, locks or panics.
//!
//! Order of decisions for an IP frame (see `process`):
//! 1. Ethernet (one 802.1Q tag, kept as is), destination MAC, IP header checks.
//! 2. Stateless answers on any worker: ARP and IPv6 ND, ICMP echo to the appliance's and
//!    the Services' addresses, frames for the appliance itself (`ToHost`).
//! 3. Flow ownership, before any flow state is read or written: the client is the source
//!    of a frame to a Service address and the destination of anything else (a reply); for
//!    an ICMP error, the client comes from the quoted header. Another worker's frame is
//!    returned as `Steer(owner)`, untouched.
//! 4. Connection tracking, backend selection, NAT with incremental checksums, TTL.
//! 5. Next hop: route, neighbour (or an ARP request / NS in the frame's place), MACs.
//!
//! Fragments. A first fragment is translated like any packet and its translation is
//! remembered (keyed by the datagram's addresses, identification and protocol) so later
//! fragments, which carry no ports, get the same address rewrite. A first fragment that
//! must be steered leaves a "steer to owner" note on the worker it arrived at, so later
//! fragments that RSS delivers there (NICs hash fragments by addresses only, so they
//! arrive where the first did) follow it to the owner. A later fragment with neither
//! note is dropped as `FragmentNoState` (e.g. it overtook its first fragment). SCTP
//! first fragments are dropped (`FragmentUnsupported`): the CRC32c covers the whole
//! packet, which a fragment does not hold.

mod fast;
mod lookahead;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub use lookahead::{Prefetcher, LOOKAHEAD, OPENING_MEMORY, PREFETCH_MIN_FLOWS};

use crate::affinity::{AffinityTable, AffinityTarget};
use crate::conntrack::{
    ConnTrack, Direction, Egress, FlowHandle, FlowState, HeldCounts, InsertError, NatTarget,
    TcpFlags, Timeouts,
};
use crate::flow::{client_hash, flow_hash, owner_worker, FlowKey, TableHashKey};
use crate::hash::{addr_word, mix64};
use crate::pipeline::config::{MacAddr, NextHop, Routes, WorkerConfig};
use crate::pipeline::counters::{bump, PipelineCounters};
use crate::pipeline::fragments::{FragmentAction, FragmentKey, FragmentTable};
use crate::pipeline::neighbour::{Learned, NeighbourTable};
use crate::pipeline::verdict::{ChecksumOffload, DropReason, Verdict};
use crate::table::{
    Backend, Conditions, FrontendKey, IpCidr, L4Protocol, NoBackendAction, Scheduler, Service,
    ServiceId, ServiceTable,
};
use crate::traffic::NO_SLOT;
use crate::wire::checksum::{self, PseudoHeader};
use crate::wire::icmpv4::{self, Message as V4Msg};
use crate::wire::icmpv6::{self, Message as V6Msg, NeighborFlags};
use crate::wire::{
    set_transport_ports, transport_ports, ArpOperation, ArpPacket, ArpRepr, EtherType,
    EthernetAddress, EthernetFrame, Icmpv4Packet, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, SctpPacket, TcpPacket, TcpRepr, UdpPacket,
};

/// A SYN retransmitted this long after the last one, on a flow whose backend never
/// answered, may be sent to another backend (kube-proxy's userspace-mode retry).
pub const SYN_RETRY_NS: u64 = 1_000_000_000;
/// At most one ARP request / neighbour solicitation per next hop per this interval.
pub const NEIGHBOUR_RETRY_NS: u64 = 100_000_000;
/// Backends [`Worker::originate`] checks per call.
pub const PROBE_BUDGET: usize = 64;
/// An untagged Ethernet header.
const ETHERNET_HEADER_LEN: usize = 14;
/// TTL / hop limit of packets the appliance originates.
const OWN_TTL: u8 = 64;
/// Slots examined per `slow_job` call in each table.
pub(crate) const EXPIRE_BUDGET: usize = 512;
/// Round-robin positions per worker (indexed by service id).
const RR_SLOTS: usize = 1024;
/// Next hops whose resolution is being rate-limited.
const PENDING_SLOTS: usize = 64;
/// The IPv6 minimum MTU less the IPv6 and ICMPv6 headers: the most an ICMPv6 error quotes.
const V6_QUOTE_MAX: usize = 1232;
/// A service id no table issues: a draining flow whose frontend is gone.
const NO_SERVICE: ServiceId = ServiceId(u32::MAX);

/// What a worker reads besides its own state, loaded once per burst.
pub struct Context<'a> {
    pub table: &'a ServiceTable,
    pub neighbours: &'a NeighbourTable,
}

/// One polling core's pipeline state. See the module documentation.
pub struct Worker {
    config: WorkerConfig,
    routes: Routes,
    /// Every address of every port (ToHost, echo).
    own: Vec<IpAddr>,
    /// Per port: its on-link prefixes (neighbour learning).
    links: Vec<Vec<IpCidr>>,
    conntrack: ConnTrack,
    affinity: AffinityTable,
    affinity_cursor: usize,
    fragments: FragmentTable,
    learned: Learned,
    counters: Arc<PipelineCounters>,
    rr: Box<[u32]>,
    rng: u64,
    pending: [(IpAddr, u64); PENDING_SLOTS],
    /// Where [`Worker::originate`] resumes: (service index, backend index).
    probe_cursor: (usize, usize),
    lookahead: lookahead::Lookahead,
    /// What the frame being processed leaves to the NIC: set by the rewrite, kept only
    /// if the frame is forwarded as rewritten (see [`Worker::offload`]).
    pending_offload: Option<ChecksumOffload>,
    offload: Option<ChecksumOffload>,
}

/// Where the parts of an IP packet are in the frame, and what it says.
#[derive(Clone, Copy, Debug)]
struct Ip {
    v6: bool,
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the transport header (of the data, for a later fragment).
    l4: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    frag: Frag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    Whole,
    First(u32),
    Later(u32),
}

/// Transport ports and TCP flags.
#[derive(Clone, Copy, Debug)]
struct Ports {
    src: u16,
    dst: u16,
    flags: u8,
}

type Step<T> = Result<T, Verdict>;

#[inline]
fn dropped(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

impl Worker {
    /// A worker with every table allocated now, sized by `config`, with the default
    /// connection-tracking timeouts.
    pub fn new(config: WorkerConfig) -> Worker {
        Worker::with_timeouts(config, Timeouts::default())
    }

    /// [`Worker::new`] with connection-tracking timeouts of the caller's choice.
    pub fn with_timeouts(config: WorkerConfig, timeouts: Timeouts) -> Worker {
        let routes = Routes::new(&config.ports, &config.routes);
        let own = config
            .ports
            .iter()
            .flat_map(|p| p.addrs.iter().map(|a| a.0))
            .collect();
        let links = config
            .ports
            .iter()
            .map(|p| {
                p.addrs
                    .iter()
                    .filter_map(|&(a, l)| IpCidr::new(a, l).ok())
                    .collect()
            })
            .collect();
        Worker {
            conntrack: ConnTrack::with_key(
                config.conntrack_capacity,
                timeouts,
                config
                    .conntrack_hash_key
                    .unwrap_or_else(TableHashKey::random),
            ),
            affinity: AffinityTable::new(config.affinity_capacity),
            affinity_cursor: 0,
            fragments: FragmentTable::new(config.fragment_capacity),
            learned: Learned::default(),
            counters: Arc::new(PipelineCounters::default()),
            rr: vec![0u32; RR_SLOTS].into_boxed_slice(),
            rng: mix64(config.index as u64 ^ 0x7261_6e64_6f6d_2121) | 1,
            pending: [(IpAddr::from([0u8; 4]), 0); PENDING_SLOTS],
            probe_cursor: (0, 0),
            lookahead: lookahead::Lookahead::default(),
            pending_offload: None,
            offload: None,
            routes,
            own,
            links,
            config,
        }
    }

    /// This worker's counters, shared with the control thread.
    pub fn counters(&self) -> Arc<PipelineCounters> {
        self.counters.clone()
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Neighbours learned from ARP/ND since the last drain (the runtime drains it).
    pub fn learned(&mut self) -> &mut Learned {
        &mut self.learned
    }

    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }

    /// Adds every packet the tracked flows counted but have not yet added to counter rows
    /// to the current table's rows (see [`crate::conntrack::COUNT_EVERY`]): a full scan of
    /// the conntrack, for a worker stopping or a reader that needs exact counters now.
    /// [`Worker::slow_job`] does the same a slice at a time.
    pub fn flush_counts(&mut self, ctx: &Context) {
        let w = self.config.index;
        self.conntrack.take_all_pending(|c| settle(ctx.table, w, c));
    }

    /// Bounded periodic work: expires conntrack, affinity and fragment entries (a few
    /// hundred slots each per call), adds the packets the examined flows counted to the
    /// current table's counter rows, and refreshes the conntrack gauge and counters.
    pub fn slow_job(&mut self, now_ns: u64, ctx: &Context) {
        let w = self.config.index;
        self.conntrack
            .expire(now_ns, EXPIRE_BUDGET, |c| settle(ctx.table, w, c));
        self.conntrack.drain_retired(|c| settle(ctx.table, w, c));
        let (cursor, _) = self
            .affinity
            .expire(self.affinity_cursor, now_ns, EXPIRE_BUDGET);
        self.affinity_cursor = cursor;
        self.fragments.expire(now_ns, EXPIRE_BUDGET);
        let stats = self.conntrack.stats();
        let c = &self.counters;
        for (counter, value) in [
            (&c.conntrack_entries, self.conntrack.len() as u64),
            (&c.conntrack_expired, stats.expired),
            (&c.conntrack_evicted, stats.evicted),
            (&c.flow_counts_dropped, stats.counts_dropped),
        ] {
            counter.store(value, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The checksum the last [`Worker::process`] left to the NIC of the port it forwarded
    /// the frame to (only ever a port whose [`PortConfig::tx_offloads`] offer it); `None`
    /// when every checksum of the frame is final.
    ///
    /// [`PortConfig::tx_offloads`]: crate::pipeline::PortConfig::tx_offloads
    #[inline]
    pub fn offload(&self) -> Option<ChecksumOffload> {
        self.offload
    }

    /// Processes one received frame. `frame` is the writable buffer from the frame's first
    /// byte to the end of the buffer (tailroom included); `*len` is the frame's length on
    /// entry and the length to transmit on exit (it may grow up to `frame.len()`, e.g. for
    /// an ICMP error quoting the original, or shrink, e.g. for a RST). Every verdict is
    /// counted; a `Drop` by its reason. A `Steer` leaves the frame unchanged.
    pub fn process(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        rx_port: u16,
        now_ns: u64,
        ctx: &Context,
    ) -> Verdict {
        bump(&self.counters.frames, 1);
        self.offload = None;
        let hint = if self.lookahead.active() {
            self.prefetch_flows(ctx)
        } else {
            self.lookahead.pass();
            None
        };
        if self.config.fast_path {
            if let Some(v) = self.fast_v4(frame, *len, rx_port, now_ns, ctx, hint) {
                return v;
            }
        }
        self.process_full(frame, len, rx_port, now_ns, ctx)
    }

    /// The full pipeline, for the frames the fast path did not take. Kept out of line so
    /// that `process` is laid out, and its registers allocated, for the fast path alone.
    #[inline(never)]
    fn process_full(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        rx_port: u16,
        now_ns: u64,
        ctx: &Context,
    ) -> Verdict {
        let v = match self.classify(frame, len, rx_port, now_ns, ctx) {
            Ok(v) | Err(v) => v,
        };
        // Flows the full pipeline removed hand over the packets they counted.
        let w = self.config.index;
        self.conntrack.drain_retired(|c| settle(ctx.table, w, c));
        let c = &self.counters;
        match v {
            Verdict::Drop(r) => PipelineCounters::count_drop(c, r),
            Verdict::Reply => bump(&c.replies, 1),
            Verdict::Steer(_) => bump(&c.steered, 1),
            Verdict::ToHost => bump(&c.to_host, 1),
            Verdict::Forward(_) => {}
        }
        v
    }

    fn classify(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        rx_port: u16,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let n = (*len).min(frame.len());
        let head = frame.get(..n).unwrap_or(&[]);
        let eth =
            EthernetFrame::new_checked(head).map_err(|_| dropped(DropReason::EthernetTruncated))?;
        if eth.is_tagged() && eth.ethertype() == EtherType::Vlan {
            return Err(dropped(DropReason::UnsupportedVlan));
        }
        let dst_mac = eth.dst_addr();
        let port_mac = self.config.ports.get(usize::from(rx_port)).map(|p| p.mac);
        let ours = port_mac == Some(dst_mac.0) || dst_mac.is_multicast();
        if !ours && !self.config.promiscuous {
            return Err(dropped(DropReason::NotForUs));
        }
        let rx_mac = port_mac.unwrap_or(dst_mac.0);
        let l2 = eth.header_len();
        let at = Rx {
            port: rx_port,
            mac: rx_mac,
            l2,
        };
        match eth.ethertype() {
            EtherType::Arp => self.arp(frame, len, n, at, ctx),
            EtherType::Ipv4 => self.ip(frame, len, n, false, at, now, ctx),
            EtherType::Ipv6 => self.ip(frame, len, n, true, at, now, ctx),
            _ => Err(dropped(DropReason::UnsupportedEthertype)),
        }
    }

    // ---------------------------------------------------------------- ARP and ND

    fn arp(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        n: usize,
        at: Rx,
        ctx: &Context,
    ) -> Step<Verdict> {
        let body = frame.get(at.l2..n).unwrap_or(&[]);
        let p = ArpPacket::new_checked(body).map_err(|_| dropped(DropReason::ArpMalformed))?;
        let r = ArpRepr::parse(&p);
        let sender = IpAddr::V4(r.sender_ip);
        if !r.sender_ip.is_unspecified() && self.on_link(at.port, sender) {
            self.learned
                .record(ctx.neighbours, sender, r.sender_hw_addr.0);
        }
        if r.operation == ArpOperation::Reply {
            return Err(dropped(DropReason::ArpReplyConsumed));
        }
        let target = IpAddr::V4(r.target_ip);
        if r.operation != ArpOperation::Request
            || !(self.owns(at.port, target) || ctx.table.is_service_addr(target))
            || r.sender_ip == r.target_ip
        {
            return Err(dropped(DropReason::ArpIgnored));
        }
        let reply = ArpRepr::reply_to(&r, EthernetAddress(at.mac));
        let out = frame.get_mut(at.l2..).ok_or(dropped(DropReason::NoRoom))?;
        reply.emit(out).map_err(|_| dropped(DropReason::NoRoom))?;
        set_macs(frame, at.mac, r.sender_hw_addr.0);
        *len = at.l2 + reply.buffer_len();
        Ok(Verdict::Reply)
    }

    /// Neighbour solicitations and advertisements (hop limit 255, checksum verified).
    fn ndp(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        at: Rx,
        ctx: &Context,
    ) -> Step<Verdict> {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip.src, ip.dst) else {
            return Err(dropped(DropReason::IcmpMalformed));
        };
        let seg = frame.get(ip.l4..ip.end).unwrap_or(&[]);
        let p = Icmpv6Packet::new_checked(seg).map_err(|_| dropped(DropReason::IcmpMalformed))?;
        if ip.ttl != 255 || !p.verify_checksum(src, dst) {
            return Err(dropped(DropReason::IcmpMalformed));
        }
        let Some(target) = p.target_addr() else {
            return Err(dropped(DropReason::IcmpMalformed));
        };
        if p.msg_type() == V6Msg::NeighborAdvert {
            if let Some(mac) = p.ndp_link_layer_addr(icmpv6::OPT_TARGET_LL) {
                if self.on_link(at.port, IpAddr::V6(target)) {
                    self.learned
                        .record(ctx.neighbours, IpAddr::V6(target), mac.0);
                }
            }
            return Err(dropped(DropReason::NdAdvertConsumed));
        }
        let sll = p.ndp_link_layer_addr(icmpv6::OPT_SOURCE_LL);
        if let Some(mac) = sll {
            if !src.is_unspecified() && self.on_link(at.port, ip.src) {
                self.learned.record(ctx.neighbours, ip.src, mac.0);
            }
        }
        let t = IpAddr::V6(target);
        if !(self.owns(at.port, t) || ctx.table.is_service_addr(t)) {
            return Err(dropped(DropReason::NdIgnored));
        }
        let src_mac = frame_src_mac(frame);
        let (to, to_mac, flags) = if src.is_unspecified() {
            let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            (
                all_nodes,
                EthernetAddress::ipv6_multicast(all_nodes).0,
                NeighborFlags::OVERRIDE,
            )
        } else {
            (
                src,
                sll.map_or(src_mac, |m| m.0),
                NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            )
        };
        let na = Icmpv6Repr::NeighborAdvert {
            flags,
            target,
            lladdr: Some(EthernetAddress(at.mac)),
        };
        let total = ipv6_emit(
            frame,
            ip.l3,
            target,
            to,
            IpProtocol::Icmpv6,
            255,
            na.buffer_len(),
        )?;
        let body = frame
            .get_mut(ip.l3 + 40..)
            .ok_or(dropped(DropReason::NoRoom))?;
        na.emit(body, target, to)
            .map_err(|_| dropped(DropReason::NoRoom))?;
        set_macs(frame, at.mac, to_mac);
        *len = ip.l3 + total;
        Ok(Verdict::Reply)
    }

    // ---------------------------------------------------------------- IP

    #[allow(clippy::too_many_arguments)] // the frame, its length and where it came from
    fn ip(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        n: usize,
        v6: bool,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let ip = parse_ip(frame, at.l2, n, v6, true).map_err(dropped)?;
        if let Frag::Later(id) = ip.frag {
            return self.later_fragment(frame, len, &ip, id, at, now, ctx);
        }
        let icmp = if v6 { 58 } else { 1 };
        if ip.proto == icmp {
            return self.icmp(frame, len, &ip, at, now, ctx);
        }
        let table = ctx.table;
        let own = self.is_own(ip.dst);
        let Some(protocol) = L4Protocol::from_ip_number(ip.proto) else {
            return Err(if own {
                Verdict::ToHost
            } else if table.is_service_addr(ip.dst) {
                dropped(DropReason::UnknownServicePort)
            } else {
                dropped(DropReason::NoFlow)
            });
        };
        if own && !table.is_service_addr(ip.dst) {
            return Ok(Verdict::ToHost);
        }
        if protocol == L4Protocol::Sctp && matches!(ip.frag, Frag::First(_)) {
            return Err(dropped(DropReason::FragmentUnsupported));
        }
        let ports = parse_ports(frame, &ip).map_err(dropped)?;
        let frontend_key = FrontendKey {
            addr: ip.dst,
            port: ports.dst,
            protocol,
        };
        // A frame to a Service is looked up by its frontend first: when that is found, the
        // address set (a second probe, and a cache miss with many Services) is not needed.
        let found = table.frontend(&frontend_key);
        let to_service = found.is_some() || table.is_service_addr(ip.dst);
        // Ownership first: nothing below runs on a worker that does not own the flow. A
        // frame to a deleted frontend's address is a client's too (its flow may drain).
        let (client, client_port) = if to_service || table.is_former_service_addr(ip.dst) {
            (ip.src, ports.src)
        } else {
            (ip.dst, ports.dst)
        };
        let owner = owner_worker(client, client_port, self.config.workers);
        if owner != self.config.index {
            if let Frag::First(id) = ip.frag {
                let key = FragmentKey::new(ip.src, ip.dst, id, ip.proto);
                self.fragments
                    .insert(key, FragmentAction::Steer(owner), now);
            }
            return Ok(Verdict::Steer(owner));
        }
        let frontend = if to_service {
            match found {
                Some(f) => Some(f),
                None if own => return Ok(Verdict::ToHost),
                None => return Err(dropped(DropReason::UnknownServicePort)),
            }
        } else {
            None
        };
        let key = FlowKey::new(ip.src, ip.dst, ports.src, ports.dst, ip.proto);
        let mut hit = self.conntrack.lookup(&key, now);
        let mut service = None;
        if let Some((h, _)) = hit {
            match self.revalidate(h, protocol, table) {
                Some(s) => service = Some(s),
                None => hit = None,
            }
        }
        if hit.is_none() && frontend.is_none() {
            return Err(dropped(DropReason::NoFlow));
        }
        if ip.ttl <= 1 {
            return self.time_exceeded(frame, len, &ip, at);
        }
        match (hit, frontend) {
            (Some((h, Direction::Reverse)), _) => {
                let sid = service.unwrap_or(NO_SERVICE);
                self.reverse(frame, len, &ip, &ports, h, sid, at, now, ctx)
            }
            (Some((h, Direction::Forward)), Some(fe)) if self.reopens(h, &ip, &ports) => {
                // A new connection on a closed flow's 5-tuple (the client reused its
                // port): a new flow, balanced on the current backends, as the kernel's
                // conntrack reopens a TIME_WAIT entry on a SYN.
                self.conntrack.remove(h);
                if !fe.admits(ip.src) {
                    return Err(dropped(DropReason::SourceRangeDenied));
                }
                let sid = fe.service;
                self.forward_new(frame, len, &ip, &ports, &key, sid, at, now, ctx)
            }
            (Some((h, Direction::Forward)), _) => {
                let sid = service.unwrap_or(NO_SERVICE);
                self.forward_tracked(frame, len, &ip, &ports, &key, h, sid, at, now, ctx)
            }
            (None, Some(fe)) => {
                if !fe.admits(ip.src) {
                    return Err(dropped(DropReason::SourceRangeDenied));
                }
                let sid = fe.service;
                self.forward_new(frame, len, &ip, &ports, &key, sid, at, now, ctx)
            }
            (None, None) => Err(dropped(DropReason::NoFlow)),
        }
    }

    /// Whether a client→frontend segment opens a new connection over a tracked flow that
    /// has closed: a bare SYN on a flow past its FIN or RST.
    fn reopens(&self, h: FlowHandle, ip: &Ip, ports: &Ports) -> bool {
        let syn_only = ports.flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN;
        ip.proto == 6
            && syn_only
            && self.conntrack.flow(h).is_some_and(|f| {
                matches!(
                    f.state(),
                    FlowState::TcpFinWait | FlowState::TcpTimeWait | FlowState::TcpClose
                )
            })
    }

    /// Checks a tracked flow against a changed table. Returns the flow's service id in
    /// this table (`NO_SERVICE` for a TCP flow draining from a vanished frontend), or
    /// `None` when the flow was forgotten (a non-TCP flow whose backend left).
    fn revalidate(
        &mut self,
        h: FlowHandle,
        protocol: L4Protocol,
        table: &ServiceTable,
    ) -> Option<ServiceId> {
        let f = self.conntrack.flow(h)?;
        if f.generation() == table.generation() {
            return Some(f.service());
        }
        let fk = FrontendKey {
            addr: f.frontend(),
            port: f.frontend_port(),
            protocol,
        };
        let sid = table.frontend(&fk).map(|fe| fe.service);
        let listed = sid.is_some_and(|s| table.has_backend(s, f.backend(), f.backend_port()));
        // The packets it counted under the last table go to the rows that table cached.
        if let Some(c) = self.conntrack.take_pending(h) {
            settle(table, self.config.index, c);
        }
        if listed || protocol == L4Protocol::Tcp {
            let s = sid.unwrap_or(NO_SERVICE);
            self.conntrack.set_service(h, s, table.generation());
            Some(s)
        } else {
            self.conntrack.remove(h);
            None
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_tracked(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        ports: &Ports,
        key: &FlowKey,
        h: FlowHandle,
        sid: ServiceId,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let table = ctx.table;
        let Some(f) = self.conntrack.flow(h) else {
            return Err(dropped(DropReason::NoFlow));
        };
        let (mut backend, mut bport) = (f.backend(), f.backend_port());
        let syn_only = ports.flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN;
        let retry = ip.proto == 6
            && syn_only
            && f.state() == FlowState::TcpSynSent
            && f.packets(Direction::Reverse) == 0
            && now.saturating_sub(f.last_seen()) >= SYN_RETRY_NS;
        if retry {
            if let Some(svc) = table.service(sid) {
                let attempt = f.packets(Direction::Forward);
                if let Some(b) = pick_other(svc, table.seed(), key, attempt, backend, bport) {
                    let nat = NatTarget {
                        backend: b.addr,
                        backend_port: b.port,
                        service: sid,
                        generation: table.generation(),
                    };
                    if let Some(c) = self.conntrack.take_pending(h) {
                        settle(table, self.config.index, c);
                    }
                    if self.conntrack.rebind(h, nat, now).is_ok() {
                        (backend, bport) = (b.addr, b.port);
                        if let Some(t) = svc.affinity_timeout_secs() {
                            self.affinity.insert(
                                ip.src,
                                svc.key(),
                                AffinityTarget {
                                    backend,
                                    port: bport,
                                },
                                u64::from(t) * 1_000_000_000,
                                now,
                            );
                        }
                    }
                }
            }
        }
        self.account(h, Direction::Forward, ip, ports, now);
        self.dnat(
            frame,
            len,
            ip,
            (backend, bport, None),
            sid,
            false,
            Some(h),
            at,
            now,
            ctx,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_new(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        ports: &Ports,
        key: &FlowKey,
        sid: ServiceId,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        self.note_opening();
        let table = ctx.table;
        let Some(svc) = table.service(sid) else {
            return Err(dropped(DropReason::NoBackend));
        };
        // A new client on a connected prefix: its MAC is the frame's source, so replies
        // need no ARP round trip (and no lost first SYN-ACK).
        if self.on_link(at.port, ip.src) {
            self.learned
                .record(ctx.neighbours, ip.src, frame_src_mac(frame));
        }
        let Some((b, index)) = self.select(svc, sid, key, now, table) else {
            return match svc.no_backend() {
                NoBackendAction::Drop => Err(dropped(DropReason::NoBackend)),
                NoBackendAction::Reject => self.reject(frame, len, ip, ports, at),
            };
        };
        let nat = |b: &Backend| NatTarget {
            backend: b.addr,
            backend_port: b.port,
            service: sid,
            generation: table.generation(),
        };
        let (mut chosen, mut chosen_index) = (b, index);
        let mut tracked = None;
        match self.conntrack.insert(key, nat(&b), now) {
            Ok(h) => {
                self.account(h, Direction::Forward, ip, ports, now);
                tracked = Some(h);
            }
            Err(InsertError::ReverseConflict(_)) => {
                // A live flow of this client port already reaches this backend through
                // another frontend: its replies could not be told apart. Another
                // backend whose reply key is free takes the flow; with none, it is
                // dropped rather than answered from the wrong address.
                let mut placed = None;
                for (i, other) in svc.usable_backends().iter().enumerate() {
                    if *other == b {
                        continue;
                    }
                    if let Ok(h) = self.conntrack.insert(key, nat(other), now) {
                        placed = Some((h, *other, i));
                        break;
                    }
                }
                let Some((h, other, i)) = placed else {
                    return Err(dropped(DropReason::NatClash));
                };
                (chosen, chosen_index) = (other, Some(i));
                self.account(h, Direction::Forward, ip, ports, now);
                tracked = Some(h);
            }
            Err(_) => bump(&self.counters.stateless_flows, 1),
        }
        bump(&self.counters.new_flows, 1);
        self.dnat(
            frame,
            len,
            ip,
            (chosen.addr, chosen.port, chosen_index),
            sid,
            true,
            tracked,
            at,
            now,
            ctx,
        )
    }

    /// Counts the packet in the flow and advances its TCP state.
    fn account(&mut self, h: FlowHandle, dir: Direction, ip: &Ip, ports: &Ports, now: u64) {
        if ip.proto == 6 {
            self.conntrack
                .update_tcp(h, dir, TcpFlags(ports.flags), now);
        } else {
            self.conntrack.touch(h, dir, now);
        }
    }

    /// Rewrites client→frontend into client→backend and sends it on.
    #[allow(clippy::too_many_arguments)]
    fn dnat(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        (backend, bport, usable_index): (IpAddr, u16, Option<usize>),
        sid: ServiceId,
        new_flow: bool,
        flow: Option<FlowHandle>,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let leave = self.sctp_offload(ip, at, backend);
        rewrite(
            frame,
            ip,
            None,
            Some((backend, Some(bport))),
            leave.is_some(),
        )?;
        self.pending_offload = leave;
        if let Frag::First(id) = ip.frag {
            let key = FragmentKey::new(ip.src, ip.dst, id, ip.proto);
            let action = FragmentAction::Rewrite {
                src: None,
                dst: Some(backend),
            };
            self.fragments.insert(key, action, now);
        }
        bump(&self.counters.dnat, 1);
        let slots =
            self.count_service(ctx.table, sid, (backend, bport, usable_index), ip, new_flow);
        // The flow's later packets may take the fast path when it still names a service.
        let cache = flow
            .filter(|_| sid != NO_SERVICE && fast_eligible(ip))
            .map(|h| (h, Direction::Forward, slots));
        self.route_out_caching(frame, len, at.l2, backend, now, ctx, cache)
    }

    #[allow(clippy::too_many_arguments)]
    fn reverse(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        ports: &Ports,
        h: FlowHandle,
        sid: ServiceId,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let Some(f) = self.conntrack.flow(h) else {
            return Err(dropped(DropReason::NoFlow));
        };
        let (frontend, fport) = (f.frontend(), f.frontend_port());
        self.account(h, Direction::Reverse, ip, ports, now);
        let leave = self.sctp_offload(ip, at, ip.dst);
        rewrite(
            frame,
            ip,
            Some((frontend, Some(fport))),
            None,
            leave.is_some(),
        )?;
        self.pending_offload = leave;
        if let Frag::First(id) = ip.frag {
            let key = FragmentKey::new(ip.src, ip.dst, id, ip.proto);
            let action = FragmentAction::Rewrite {
                src: Some(frontend),
                dst: None,
            };
            self.fragments.insert(key, action, now);
        }
        bump(&self.counters.reverse_nat, 1);
        let slots = self.count_service(ctx.table, sid, (ip.src, ports.src, None), ip, false);
        // Replies may take the fast path unless the client's address is one the full
        // pipeline treats otherwise (the appliance's own, or a Service address).
        let cache = Some((h, Direction::Reverse, slots)).filter(|_| {
            fast_eligible(ip) && !self.is_own(ip.dst) && !ctx.table.is_service_addr(ip.dst)
        });
        self.route_out_caching(frame, len, at.l2, ip.dst, now, ctx, cache)
    }

    /// Counts the packet in its Service's and backend's rows; returns their counter slots
    /// (`NO_SLOT` for one that is not in the table), which the flow caches for the fast
    /// path. The backend is `(address, port, index in the usable list if known)`.
    fn count_service(
        &self,
        table: &ServiceTable,
        sid: ServiceId,
        (backend, bport, usable_index): (IpAddr, u16, Option<usize>),
        ip: &Ip,
        new_flow: bool,
    ) -> (u32, u32) {
        let bytes = (ip.end - ip.l3) as u64;
        let w = self.config.index;
        let Some(s) = table.service(sid) else {
            return (NO_SLOT, NO_SLOT);
        };
        s.counters().count(w, bytes, new_flow);
        // A backend the scheduler just picked is found by its index, without a lookup.
        let b = match usable_index {
            Some(i) => s.usable_backend_counters(i),
            None => s.backend_counters(backend, bport),
        };
        if let Some(b) = b {
            b.count(w, bytes, new_flow);
        }
        (s.counters().slot(), b.map_or(NO_SLOT, |c| c.slot()))
    }

    /// Chooses a backend for a new flow: the client's affinity pin (or a Maglev pick by
    /// client hash, so every worker pins a client alike), else the table's scheduler.
    fn select(
        &mut self,
        svc: &Service,
        sid: ServiceId,
        key: &FlowKey,
        now: u64,
        table: &ServiceTable,
    ) -> Option<(Backend, Option<usize>)> {
        let usable = svc.usable_backends();
        if usable.is_empty() {
            return None;
        }
        let client = key.src_ip();
        let pick = if let Some(secs) = svc.affinity_timeout_secs() {
            let pinned = self
                .affinity
                .lookup(client, svc.key(), now)
                .filter(|t| table.is_usable_backend(sid, t.backend, t.port));
            let (b, index) = match pinned {
                // Only its address and port are used from here on.
                Some(t) => Some((
                    Backend {
                        addr: t.backend,
                        port: t.port,
                        weight: 1,
                        conditions: Conditions::READY,
                    },
                    None,
                )),
                None => svc
                    .maglev_pick(client_hash(table.seed(), client))
                    .and_then(|i| Some((*usable.get(i)?, Some(i)))),
            }?;
            // Every new flow refreshes the pin (kube-proxy's `recent --set`).
            let target = AffinityTarget {
                backend: b.addr,
                port: b.port,
            };
            self.affinity.insert(
                client,
                svc.key(),
                target,
                u64::from(secs) * 1_000_000_000,
                now,
            );
            (b, index)
        } else {
            let i = match table.scheduler() {
                Scheduler::Maglev => svc.maglev_pick(flow_hash(table.seed(), key))?,
                Scheduler::RoundRobin => {
                    let slot = self.rr.get_mut(sid.0 as usize % RR_SLOTS)?;
                    let i = *slot as usize % usable.len();
                    *slot = slot.wrapping_add(1);
                    i
                }
                Scheduler::Random => {
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    ((u128::from(self.rng) * usable.len() as u128) >> 64) as usize
                }
            };
            (*usable.get(i)?, Some(i))
        };
        (pick.0.addr.is_ipv6() == key.v6).then_some(pick)
    }

    /// REJECT: a RST for TCP (unless the segment is itself a RST), ICMP port unreachable
    /// for UDP and SCTP, from the frontend address back to the client.
    fn reject(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        ports: &Ports,
        at: Rx,
    ) -> Step<Verdict> {
        if ip.proto != 6 {
            let code = if ip.v6 {
                icmpv6::unreachable::PORT
            } else {
                icmpv4::unreachable::PORT
            };
            let ty = if ip.v6 { 1 } else { 3 };
            return icmp_error(frame, len, ip, at, ip.dst, ty, code);
        }
        if ports.flags & TcpFlags::RST != 0 {
            return Err(dropped(DropReason::NoBackend));
        }
        let seg = frame.get(ip.l4..ip.end).unwrap_or(&[]);
        let tcp = TcpPacket::new_checked(seg).map_err(|_| dropped(DropReason::L4Malformed))?;
        let rst = TcpRepr::rst_for(&tcp);
        let total = match (ip.dst, ip.src) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let h = Ipv4Repr {
                    src: s,
                    dst: d,
                    protocol: IpProtocol::Tcp,
                    payload_len: rst.buffer_len(),
                    ttl: OWN_TTL,
                    dont_frag: true,
                };
                let b = frame.get_mut(ip.l3..).ok_or(dropped(DropReason::NoRoom))?;
                let hl = h.emit(b).map_err(|_| dropped(DropReason::NoRoom))?;
                let t = b.get_mut(hl..).ok_or(dropped(DropReason::NoRoom))?;
                hl + rst
                    .emit(t, &PseudoHeader::V4 { src: s, dst: d })
                    .map_err(|_| dropped(DropReason::NoRoom))?
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let hl = ipv6_emit(
                    frame,
                    ip.l3,
                    s,
                    d,
                    IpProtocol::Tcp,
                    OWN_TTL,
                    rst.buffer_len(),
                )?;
                let t = frame
                    .get_mut(ip.l3 + 40..)
                    .ok_or(dropped(DropReason::NoRoom))?;
                let _ = hl;
                40 + rst
                    .emit(t, &PseudoHeader::V6 { src: s, dst: d })
                    .map_err(|_| dropped(DropReason::NoRoom))?
            }
            _ => return Err(dropped(DropReason::L4Malformed)),
        };
        let to = frame_src_mac(frame);
        set_macs(frame, at.mac, to);
        *len = ip.l3 + total;
        Ok(Verdict::Reply)
    }

    /// TTL ran out: an ICMP time exceeded from the rx port's address (or the packet's
    /// destination when the port has none of that family) back to the sender.
    fn time_exceeded(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        at: Rx,
    ) -> Step<Verdict> {
        PipelineCounters::count_drop(&self.counters, DropReason::TtlExceeded);
        let from = self
            .config
            .ports
            .get(usize::from(at.port))
            .and_then(|p| p.addrs.iter().find(|a| a.0.is_ipv6() == ip.v6))
            .map_or(ip.dst, |a| a.0);
        let ty = if ip.v6 { 3 } else { 11 };
        icmp_error(frame, len, ip, at, from, ty, 0)
    }

    // ---------------------------------------------------------------- fragments

    #[allow(clippy::too_many_arguments)]
    fn later_fragment(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        id: u32,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let key = FragmentKey::new(ip.src, ip.dst, id, ip.proto);
        match self.fragments.lookup(&key, now) {
            None => Err(dropped(DropReason::FragmentNoState)),
            Some(FragmentAction::Steer(o)) if o != self.config.index => Ok(Verdict::Steer(o)),
            Some(FragmentAction::Steer(_)) => Err(dropped(DropReason::FragmentNoState)),
            Some(FragmentAction::Rewrite { src, dst }) => {
                if ip.ttl <= 1 {
                    return Err(dropped(DropReason::TtlExceeded));
                }
                rewrite(
                    frame,
                    ip,
                    src.map(|a| (a, None)),
                    dst.map(|a| (a, None)),
                    false,
                )?;
                bump(&self.counters.fragments_followed, 1);
                self.route_out(frame, len, at.l2, dst.unwrap_or(ip.dst), now, ctx)
            }
        }
    }

    // ---------------------------------------------------------------- ICMP

    fn icmp(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let seg = frame.get(ip.l4..ip.end).unwrap_or(&[]);
        let mine = self.is_own(ip.dst) || ctx.table.is_service_addr(ip.dst);
        let is_error = if ip.v6 {
            let p =
                Icmpv6Packet::new_checked(seg).map_err(|_| dropped(DropReason::IcmpMalformed))?;
            match p.msg_type() {
                V6Msg::NeighborSolicit | V6Msg::NeighborAdvert => {
                    return self.ndp(frame, len, ip, at, ctx);
                }
                V6Msg::EchoRequest if mine => {
                    return echo_reply(frame, ip, at, true);
                }
                m if m.is_error() => true,
                _ => false,
            }
        } else {
            let p =
                Icmpv4Packet::new_checked(seg).map_err(|_| dropped(DropReason::IcmpMalformed))?;
            if !p.verify_checksum() {
                return Err(dropped(DropReason::IcmpMalformed));
            }
            match p.msg_type() {
                V4Msg::EchoRequest if mine => return echo_reply(frame, ip, at, false),
                // A redirect names a gateway, not a flow: never translated.
                V4Msg::Redirect => false,
                m => m.is_error(),
            }
        };
        if !is_error {
            return Err(if self.is_own(ip.dst) {
                Verdict::ToHost
            } else {
                dropped(DropReason::IcmpIgnored)
            });
        }
        self.icmp_error_in(frame, len, ip, at, now, ctx)
    }

    /// An ICMP error about a translated flow: the client comes from the quoted header;
    /// the quoted header (addresses, ports, checksums) and the outer header are
    /// translated like the flow's packets, and the ICMP checksum is recomputed.
    fn icmp_error_in(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        ip: &Ip,
        at: Rx,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        let table = ctx.table;
        let q_off = ip.l4 + 8;
        let quoted_buf = frame.get(q_off..ip.end).unwrap_or(&[]);
        let q = if ip.v6 {
            let q = Ipv6Packet::new_checked_quoted(quoted_buf)
                .map_err(|_| dropped(DropReason::IcmpMalformed))?;
            let t = q
                .transport()
                .map_err(|_| dropped(DropReason::IcmpMalformed))?;
            if t.fragment.is_some_and(|f| f.is_later_fragment()) {
                return Err(dropped(DropReason::IcmpNoFlow));
            }
            Quoted {
                src: IpAddr::V6(q.src_addr()),
                dst: IpAddr::V6(q.dst_addr()),
                proto: t.protocol.into(),
                l4: q_off + t.offset,
            }
        } else {
            let q = Ipv4Packet::new_checked_quoted(quoted_buf)
                .map_err(|_| dropped(DropReason::IcmpMalformed))?;
            if q.is_later_fragment() {
                return Err(dropped(DropReason::IcmpNoFlow));
            }
            Quoted {
                src: IpAddr::V4(q.src_addr()),
                dst: IpAddr::V4(q.dst_addr()),
                proto: q.protocol().into(),
                l4: q_off + q.header_len(),
            }
        };
        let Some(protocol) = L4Protocol::from_ip_number(q.proto) else {
            return Err(dropped(DropReason::IcmpNoFlow));
        };
        let (qs, qd) = frame
            .get(q.l4..ip.end)
            .and_then(transport_ports)
            .ok_or(dropped(DropReason::IcmpMalformed))?;
        let quoted = FlowKey::new(q.src, q.dst, qs, qd, q.proto);
        // An error sent to a (former) frontend address is about a reply to the client.
        let to_service = table.is_service_addr(ip.dst) || table.is_former_service_addr(ip.dst);
        let (client, client_port) = if to_service { (q.dst, qd) } else { (q.src, qs) };
        let owner = owner_worker(client, client_port, self.config.workers);
        if owner != self.config.index {
            return Ok(Verdict::Steer(owner));
        }
        let Some((h, dir)) = self.conntrack.lookup(&quoted.reversed(), now) else {
            return Err(if self.is_own(ip.dst) {
                Verdict::ToHost
            } else {
                dropped(DropReason::IcmpNoFlow)
            });
        };
        if self.revalidate(h, protocol, table).is_none() {
            return Err(dropped(DropReason::IcmpNoFlow));
        }
        let Some(f) = self.conntrack.flow(h) else {
            return Err(dropped(DropReason::IcmpNoFlow));
        };
        let (frontend, fport, backend, bport) = (
            f.frontend(),
            f.frontend_port(),
            f.backend(),
            f.backend_port(),
        );
        if ip.ttl <= 1 {
            // Never an ICMP error about an ICMP error.
            return Err(dropped(DropReason::TtlExceeded));
        }
        let (outer_src, outer_dst, out_to) = match dir {
            // The quote is frontend→client (a reply after reverse NAT): it came back to
            // the frontend; it is about the backend's packet, so it goes to the backend.
            Direction::Forward => {
                rewrite_quoted(frame, ip, &q, Some((backend, bport)), None)?;
                (None, Some(backend), backend)
            }
            // The quote is client→backend (after DNAT): it goes to the client, and must
            // look like it is about the frontend.
            Direction::Reverse => {
                rewrite_quoted(frame, ip, &q, None, Some((frontend, fport)))?;
                let src = (ip.src == backend).then_some(frontend);
                (src, None, ip.dst)
            }
        };
        rewrite(
            frame,
            ip,
            outer_src.map(|a| (a, None)),
            outer_dst.map(|a| (a, None)),
            false,
        )?;
        // Recompute the ICMP checksum over the translated message.
        let new_src = outer_src.unwrap_or(ip.src);
        let new_dst = outer_dst.unwrap_or(ip.dst);
        let msg = frame
            .get_mut(ip.l4..ip.end)
            .ok_or(dropped(DropReason::IcmpMalformed))?;
        match (new_src, new_dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Icmpv6Packet::new_checked(msg)
                    .map_err(|_| dropped(DropReason::IcmpMalformed))?
                    .fill_checksum(s, d);
            }
            _ => Icmpv4Packet::new_checked(msg)
                .map_err(|_| dropped(DropReason::IcmpMalformed))?
                .fill_checksum(),
        }
        bump(&self.counters.icmp_translated, 1);
        self.route_out(frame, len, at.l2, out_to, now, ctx)
    }

    // ---------------------------------------------------------------- next hop

    /// Routes the rewritten frame: the next hop's MAC from the neighbour snapshot (or
    /// `assume_resolved`); when unknown, the frame becomes an ARP request / neighbour
    /// solicitation for the next hop (at most one per hop per `NEIGHBOUR_RETRY_NS`;
    /// otherwise it is dropped), counted as `NeighbourUnresolved` either way.
    fn route_out(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        l2: usize,
        dst: IpAddr,
        now: u64,
        ctx: &Context,
    ) -> Step<Verdict> {
        self.route_out_caching(frame, len, l2, dst, now, ctx, None)
    }

    /// [`Worker::route_out`], also caching the next hop in the flow `cache` names — (flow,
    /// direction, (Service's and backend's counter slots)) — for the fast path, when the
    /// MAC came from the published neighbour snapshot (not from this worker's recent
    /// cache, which the snapshot's version does not cover).
    #[allow(clippy::too_many_arguments)]
    fn route_out_caching(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        l2: usize,
        dst: IpAddr,
        now: u64,
        ctx: &Context,
        cache: Option<(FlowHandle, Direction, (u32, u32))>,
    ) -> Step<Verdict> {
        let hop = self
            .routes
            .lookup(dst)
            .ok_or(dropped(DropReason::NoRoute))?;
        let port = self
            .config
            .ports
            .get(usize::from(hop.port))
            .ok_or(dropped(DropReason::NoRoute))?;
        let port_mac = port.mac;
        let published = self
            .config
            .assume_resolved
            .or_else(|| ctx.neighbours.get(hop.addr));
        if let (Some(m), Some((h, dir, (service_slot, backend_slot)))) = (published, cache) {
            let egress = Egress {
                port: hop.port,
                mac: m,
            };
            self.conntrack.cache_egress(
                h,
                dir,
                egress,
                ctx.neighbours.version(),
                service_slot,
                backend_slot,
            );
        }
        if let Some(m) = published.or_else(|| self.learned.recent(hop.addr)) {
            set_macs(frame, port_mac, m);
            self.offload = self.pending_offload.take();
            return Ok(Verdict::Forward(hop.port));
        }
        self.pending_offload = None;
        self.solicit(frame, len, l2, hop, port_mac, now)
    }

    /// The SCTP CRC32c left to the NIC when a translated SCTP packet (not a fragment) to
    /// `dst` leaves by a port that finishes it.
    fn sctp_offload(&self, ip: &Ip, at: Rx, dst: IpAddr) -> Option<ChecksumOffload> {
        if ip.proto != 132 || ip.frag != Frag::Whole {
            return None;
        }
        let port = self.routes.lookup(dst)?.port;
        let offers = self
            .config
            .ports
            .get(usize::from(port))
            .is_some_and(|p| p.tx_offloads.sctp);
        offers.then(|| ChecksumOffload {
            l4: L4Protocol::Sctp,
            ipv6: ip.v6,
            l2_len: at.l2 as u8,
            l3_len: (ip.l4 - ip.l3) as u16,
        })
    }

    fn solicit(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        l2: usize,
        hop: NextHop,
        port_mac: MacAddr,
        now: u64,
    ) -> Step<Verdict> {
        self.probe(frame, len, l2, hop, port_mac, now)?;
        PipelineCounters::count_drop(&self.counters, DropReason::NeighbourUnresolved);
        bump(&self.counters.neighbour_requests, 1);
        Ok(Verdict::Forward(hop.port))
    }

    /// Frames the worker originates: ARP requests / neighbour solicitations for the next
    /// hops of backends it does not know yet, so the first packet of a flow to a new
    /// backend does not wait for resolution. Worker 0 alone probes (the neighbour table
    /// is shared); it checks at most `PROBE_BUDGET` backends per call, resuming where it
    /// stopped, and asks for each hop at most once per `NEIGHBOUR_RETRY_NS`. `frame` is
    /// a fresh buffer; returns the port to send the probe on, with `*len` set.
    pub fn originate(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        now_ns: u64,
        ctx: &Context,
    ) -> Option<u16> {
        if self.config.index != 0 || self.config.assume_resolved.is_some() {
            return None;
        }
        let services = ctx.table.services();
        for _ in 0..PROBE_BUDGET {
            let (si, bi) = self.probe_cursor;
            let Some(svc) = services.get(si) else {
                self.probe_cursor = (0, 0);
                return None;
            };
            let Some(b) = svc.usable_backends().get(bi) else {
                self.probe_cursor = (si + 1, 0);
                continue;
            };
            self.probe_cursor = (si, bi + 1);
            let Some(hop) = self.routes.lookup(b.addr) else {
                continue;
            };
            if ctx.neighbours.get(hop.addr).is_some() {
                continue;
            }
            let Some(port_mac) = self.config.ports.get(usize::from(hop.port)).map(|p| p.mac) else {
                continue;
            };
            if self
                .probe(frame, len, ETHERNET_HEADER_LEN, hop, port_mac, now_ns)
                .is_ok()
            {
                bump(&self.counters.neighbour_requests, 1);
                return Some(hop.port);
            }
        }
        None
    }

    /// Writes an ARP request (IPv4) or neighbour solicitation (IPv6) for `hop` over the
    /// frame after its `l2` bytes of Ethernet header, unless one went out for the same
    /// hop less than `NEIGHBOUR_RETRY_NS` ago.
    fn probe(
        &mut self,
        frame: &mut [u8],
        len: &mut usize,
        l2: usize,
        hop: NextHop,
        port_mac: MacAddr,
        now: u64,
    ) -> Step<()> {
        let slot = (mix64(addr_word(hop.addr)) as usize) % PENDING_SLOTS;
        let Some(p) = self.pending.get_mut(slot) else {
            return Err(dropped(DropReason::NeighbourUnresolved));
        };
        if p.0 == hop.addr && p.1 != 0 && now.saturating_sub(p.1) < NEIGHBOUR_RETRY_NS {
            return Err(dropped(DropReason::NeighbourUnresolved));
        }
        let from = self.config.ports.get(usize::from(hop.port)).and_then(|pc| {
            pc.addrs
                .iter()
                .find(|&&(a, l)| IpCidr::new(a, l).is_ok_and(|c| c.contains(hop.addr)))
                .or_else(|| {
                    pc.addrs
                        .iter()
                        .find(|a| a.0.is_ipv6() == hop.addr.is_ipv6())
                })
                .map(|a| a.0)
        });
        let total = match hop.addr {
            IpAddr::V4(target) => {
                let sender = match from {
                    Some(IpAddr::V4(a)) => a,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                let req = ArpRepr::request(EthernetAddress(port_mac), sender, target);
                let b = frame.get_mut(l2..).ok_or(dropped(DropReason::NoRoom))?;
                req.emit(b).map_err(|_| dropped(DropReason::NoRoom))?;
                set_ethertype(frame, l2, EtherType::Arp);
                set_macs(frame, port_mac, EthernetAddress::BROADCAST.0);
                l2 + req.buffer_len()
            }
            IpAddr::V6(target) => {
                let src = match from {
                    Some(IpAddr::V6(a)) => a,
                    _ => Ipv6Addr::UNSPECIFIED,
                };
                let t = target.octets();
                let group = Ipv6Addr::from([
                    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
                ]);
                let ns = Icmpv6Repr::NeighborSolicit {
                    target,
                    lladdr: (!src.is_unspecified()).then_some(EthernetAddress(port_mac)),
                };
                let hl = ipv6_emit(
                    frame,
                    l2,
                    src,
                    group,
                    IpProtocol::Icmpv6,
                    255,
                    ns.buffer_len(),
                )?;
                let b = frame
                    .get_mut(l2 + 40..)
                    .ok_or(dropped(DropReason::NoRoom))?;
                ns.emit(b, src, group)
                    .map_err(|_| dropped(DropReason::NoRoom))?;
                set_ethertype(frame, l2, EtherType::Ipv6);
                set_macs(frame, port_mac, EthernetAddress::ipv6_multicast(group).0);
                l2 + hl
            }
        };
        *p = (hop.addr, now.max(1));
        *len = total;
        Ok(())
    }

    // ---------------------------------------------------------------- addresses

    fn is_own(&self, a: IpAddr) -> bool {
        self.own.contains(&a)
    }

    fn owns(&self, port: u16, a: IpAddr) -> bool {
        self.config
            .ports
            .get(usize::from(port))
            .is_some_and(|p| p.addrs.iter().any(|x| x.0 == a))
    }

    fn on_link(&self, port: u16, a: IpAddr) -> bool {
        self.links
            .get(usize::from(port))
            .is_some_and(|l| l.iter().any(|c| c.contains(a)))
    }
}

/// Where a frame came in.
#[derive(Clone, Copy, Debug)]
struct Rx {
    port: u16,
    mac: MacAddr,
    l2: usize,
}

/// The header an ICMP error quotes.
#[derive(Clone, Copy, Debug)]
struct Quoted {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// Offset of the quoted transport header in the frame.
    l4: usize,
}

/// Parses and checks the IP header at `l3` (and IPv6 extension headers), up to `n`.
fn parse_ip(frame: &[u8], l3: usize, n: usize, v6: bool, verify: bool) -> Result<Ip, DropReason> {
    let b = frame.get(l3..n).unwrap_or(&[]);
    if v6 {
        let p = Ipv6Packet::new_checked(b).map_err(|_| DropReason::Ipv6Malformed)?;
        let t = p.transport().map_err(|_| DropReason::Ipv6Malformed)?;
        let frag = match t.fragment {
            Some(f) if f.is_later_fragment() => Frag::Later(f.ident),
            Some(f) if f.more_frags => Frag::First(f.ident),
            _ => Frag::Whole,
        };
        Ok(Ip {
            v6,
            l3,
            l4: l3 + t.offset,
            end: l3 + p.end(),
            src: IpAddr::V6(p.src_addr()),
            dst: IpAddr::V6(p.dst_addr()),
            proto: t.protocol.into(),
            ttl: p.hop_limit(),
            frag,
        })
    } else {
        let p = Ipv4Packet::new_checked(b).map_err(|_| DropReason::Ipv4Malformed)?;
        if verify && !p.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let id = u32::from(p.ident());
        let frag = if p.is_later_fragment() {
            Frag::Later(id)
        } else if p.more_frags() {
            Frag::First(id)
        } else {
            Frag::Whole
        };
        Ok(Ip {
            v6,
            l3,
            l4: l3 + p.header_len(),
            end: l3 + usize::from(p.total_len()),
            src: IpAddr::V4(p.src_addr()),
            dst: IpAddr::V4(p.dst_addr()),
            proto: p.protocol().into(),
            ttl: p.ttl(),
            frag,
        })
    }
}

/// Checks the transport header and reads its ports (and TCP flags). A first fragment's
/// UDP length covers the whole datagram, so only the 8-byte header is required there.
fn parse_ports(frame: &[u8], ip: &Ip) -> Result<Ports, DropReason> {
    let seg = frame.get(ip.l4..ip.end).unwrap_or(&[]);
    let bad = |_| DropReason::L4Malformed;
    match ip.proto {
        6 => {
            let t = TcpPacket::new_checked(seg).map_err(bad)?;
            Ok(Ports {
                src: t.src_port(),
                dst: t.dst_port(),
                flags: t.flags().0 as u8,
            })
        }
        17 => {
            if matches!(ip.frag, Frag::First(_)) {
                let (src, dst) = transport_ports(seg)
                    .filter(|_| seg.len() >= 8)
                    .ok_or(DropReason::L4Malformed)?;
                return Ok(Ports { src, dst, flags: 0 });
            }
            let u = UdpPacket::new_checked(seg).map_err(bad)?;
            Ok(Ports {
                src: u.src_port(),
                dst: u.dst_port(),
                flags: 0,
            })
        }
        132 => {
            let s = SctpPacket::new_checked(seg).map_err(bad)?;
            Ok(Ports {
                src: s.src_port(),
                dst: s.dst_port(),
                flags: 0,
            })
        }
        _ => Err(DropReason::L4Malformed),
    }
}

/// Rewrites the packet's source and/or destination (address, and port when given),
/// decrements the TTL / hop limit, and updates every checksum incrementally: the IPv4
/// header, the TCP/UDP checksum (pseudo-header and port), SCTP's CRC32c (port only; it
/// covers no address). For a later fragment (`ip.frag == Later`) only addresses change.
///
/// `leave_sctp`: an SCTP packet's CRC32c is left as it was, for the NIC to finish.
fn rewrite(
    frame: &mut [u8],
    ip: &Ip,
    src: Option<(IpAddr, Option<u16>)>,
    dst: Option<(IpAddr, Option<u16>)>,
    leave_sctp: bool,
) -> Result<(), Verdict> {
    let malformed = dropped(DropReason::L4Malformed);
    let family = |a: &IpAddr| a.is_ipv6() == ip.v6;
    if !src.iter().chain(dst.iter()).all(|(a, _)| family(a)) {
        return Err(dropped(DropReason::NoBackend));
    }
    let rel = ip.l4.checked_sub(ip.l3).ok_or(malformed)?;
    let pkt = frame.get_mut(ip.l3..ip.end).ok_or(malformed)?;
    if rel > pkt.len() {
        return Err(malformed);
    }
    let (hdr, seg) = pkt.split_at_mut(rel);
    let mut changes: [Option<(IpAddr, IpAddr)>; 2] = [None, None];
    if ip.v6 {
        let mut p = Ipv6Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
        p.decrement_hop_limit();
        if let Some((IpAddr::V6(a), _)) = src {
            changes[0] = Some((IpAddr::V6(p.src_addr()), IpAddr::V6(a)));
            p.set_src_addr(a);
        }
        if let Some((IpAddr::V6(a), _)) = dst {
            changes[1] = Some((IpAddr::V6(p.dst_addr()), IpAddr::V6(a)));
            p.set_dst_addr(a);
        }
    } else {
        let mut p = Ipv4Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
        p.decrement_ttl();
        if let Some((IpAddr::V4(a), _)) = src {
            changes[0] = Some((IpAddr::V4(p.rewrite_src_addr(a)), IpAddr::V4(a)));
        }
        if let Some((IpAddr::V4(a), _)) = dst {
            changes[1] = Some((IpAddr::V4(p.rewrite_dst_addr(a)), IpAddr::V4(a)));
        }
    }
    // Later fragments carry no transport header; an ICMP message's checksum is
    // recomputed by the caller after its quote is translated.
    if matches!(ip.frag, Frag::Later(_)) || ip.proto == 1 || ip.proto == 58 {
        return Ok(());
    }
    let sport = src.and_then(|s| s.1);
    let dport = dst.and_then(|d| d.1);
    if leave_sctp && ip.proto == 132 {
        // The NIC finishes the CRC32c: only the ports change here.
        let mut p = SctpPacket::new_checked(seg).map_err(|_| malformed)?;
        if let Some(s) = sport {
            p.set_src_port(s);
        }
        if let Some(d) = dport {
            p.set_dst_port(d);
        }
        return Ok(());
    }
    transport_rewrite(seg, ip.proto, &changes, sport, dport, false)
}

/// Applies address changes (to the pseudo-header part of the checksum) and port changes
/// to a transport header. `quoted`: the header is the start of a quoted packet (an ICMP
/// error's), where the checksum is updated only if the quote reaches it.
fn transport_rewrite(
    seg: &mut [u8],
    proto: u8,
    changes: &[Option<(IpAddr, IpAddr)>; 2],
    sport: Option<u16>,
    dport: Option<u16>,
    quoted: bool,
) -> Result<(), Verdict> {
    let malformed = dropped(DropReason::L4Malformed);
    // (checksum offset, UDP zero rule)
    let (at, udp) = match proto {
        6 => (16, false),
        17 => (6, true),
        132 => {
            if quoted {
                let (s, d) = transport_ports(seg).ok_or(malformed)?;
                return set_transport_ports(seg, sport.unwrap_or(s), dport.unwrap_or(d))
                    .map_err(|_| malformed);
            }
            let mut p = SctpPacket::new_checked(seg).map_err(|_| malformed)?;
            if let Some(s) = sport {
                p.rewrite_src_port(s);
            }
            if let Some(d) = dport {
                p.rewrite_dst_port(d);
            }
            return Ok(());
        }
        _ => return Err(malformed),
    };
    let (s, d) = transport_ports(seg).ok_or(malformed)?;
    if let Some(c) = seg.get(at..at + 2) {
        let mut check = u16::from_be_bytes([c[0], c[1]]);
        let zero_stays = udp && check == 0;
        if !zero_stays {
            for (old, new) in changes.iter().flatten() {
                check = match (old, new) {
                    (IpAddr::V4(o), IpAddr::V4(n)) => {
                        checksum::update32(check, o.octets(), n.octets())
                    }
                    (IpAddr::V6(o), IpAddr::V6(n)) => {
                        checksum::update128(check, o.octets(), n.octets())
                    }
                    _ => check,
                };
            }
            if let Some(p) = sport {
                check = checksum::update16(check, s, p);
            }
            if let Some(p) = dport {
                check = checksum::update16(check, d, p);
            }
            if udp && check == 0 {
                check = 0xffff;
            }
            if let Some(c) = seg.get_mut(at..at + 2) {
                c.copy_from_slice(&check.to_be_bytes());
            }
        }
    } else if !quoted {
        return Err(malformed);
    }
    set_transport_ports(seg, sport.unwrap_or(s), dport.unwrap_or(d)).map_err(|_| malformed)
}

/// Translates the packet an ICMP error quotes: its source or destination address and
/// port, the quoted IPv4 header checksum, and the quoted transport checksum if quoted.
fn rewrite_quoted(
    frame: &mut [u8],
    ip: &Ip,
    q: &Quoted,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) -> Result<(), Verdict> {
    let malformed = dropped(DropReason::IcmpMalformed);
    let q_off = ip.l4 + 8;
    let rel = q.l4.checked_sub(q_off).ok_or(malformed)?;
    let buf = frame.get_mut(q_off..ip.end).ok_or(malformed)?;
    if rel > buf.len() {
        return Err(malformed);
    }
    let (hdr, seg) = buf.split_at_mut(rel);
    let mut changes: [Option<(IpAddr, IpAddr)>; 2] = [None, None];
    match (src, dst) {
        (Some((IpAddr::V4(a), _)), _) | (_, Some((IpAddr::V4(a), _))) if !ip.v6 => {
            let mut p = Ipv4Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
            if src.is_some() {
                changes[0] = Some((IpAddr::V4(p.rewrite_src_addr(a)), IpAddr::V4(a)));
            } else {
                changes[1] = Some((IpAddr::V4(p.rewrite_dst_addr(a)), IpAddr::V4(a)));
            }
        }
        (Some((IpAddr::V6(a), _)), _) | (_, Some((IpAddr::V6(a), _))) if ip.v6 => {
            let mut p = Ipv6Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
            if src.is_some() {
                changes[0] = Some((IpAddr::V6(p.src_addr()), IpAddr::V6(a)));
                p.set_src_addr(a);
            } else {
                changes[1] = Some((IpAddr::V6(p.dst_addr()), IpAddr::V6(a)));
                p.set_dst_addr(a);
            }
        }
        _ => return Err(dropped(DropReason::NoBackend)),
    }
    transport_rewrite(
        seg,
        q.proto,
        &changes,
        src.map(|s| s.1),
        dst.map(|d| d.1),
        true,
    )
}

/// Answers an echo request in place: addresses swapped, type echo reply, fresh TTL.
fn echo_reply(frame: &mut [u8], ip: &Ip, at: Rx, v6: bool) -> Step<Verdict> {
    let malformed = dropped(DropReason::IcmpMalformed);
    let rel = ip.l4.checked_sub(ip.l3).ok_or(malformed)?;
    let pkt = frame.get_mut(ip.l3..ip.end).ok_or(malformed)?;
    if rel > pkt.len() {
        return Err(malformed);
    }
    let (hdr, seg) = pkt.split_at_mut(rel);
    match (ip.src, ip.dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) if v6 => {
            let mut p = Ipv6Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
            p.set_src_addr(d);
            p.set_dst_addr(s);
            p.set_hop_limit(OWN_TTL);
            let mut m = Icmpv6Packet::new_checked(seg).map_err(|_| malformed)?;
            m.set_msg_type(V6Msg::EchoReply);
            m.fill_checksum(d, s);
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Ipv4Packet::new_checked_quoted(hdr).map_err(|_| malformed)?;
            p.set_src_addr(d);
            p.set_dst_addr(s);
            p.set_ttl(OWN_TTL);
            p.fill_checksum();
            let mut m = Icmpv4Packet::new_checked(seg).map_err(|_| malformed)?;
            m.set_msg_type(V4Msg::EchoReply);
            m.fill_checksum();
        }
        _ => return Err(malformed),
    }
    let to = frame_src_mac(frame);
    set_macs(frame, at.mac, to);
    Ok(Verdict::Reply)
}

/// Turns the frame into an ICMP/ICMPv6 error (`ty`, `code`) from `from` to the packet's
/// source, quoting the packet (IPv4: header + 8 bytes; IPv6: up to 1232 bytes). The
/// quote moves back by the new headers' length; `NoRoom` if the buffer is too short.
fn icmp_error(
    frame: &mut [u8],
    len: &mut usize,
    ip: &Ip,
    at: Rx,
    from: IpAddr,
    ty: u8,
    code: u8,
) -> Step<Verdict> {
    let no_room = dropped(DropReason::NoRoom);
    let pkt_len = ip.end - ip.l3;
    let (qlen, hl) = if ip.v6 {
        (pkt_len.min(V6_QUOTE_MAX), 40)
    } else {
        ((ip.l4 - ip.l3 + 8).min(pkt_len), 20)
    };
    let msg_len = 8 + qlen;
    let total = hl + msg_len;
    if ip.l3 + total > frame.len() {
        return Err(no_room);
    }
    frame.copy_within(ip.l3..ip.l3 + qlen, ip.l3 + hl + 8);
    match (from, ip.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = Ipv4Repr {
                src: s,
                dst: d,
                protocol: IpProtocol::Icmp,
                payload_len: msg_len,
                ttl: OWN_TTL,
                dont_frag: false,
            };
            h.emit(frame.get_mut(ip.l3..).ok_or(no_room)?)
                .map_err(|_| no_room)?;
            let m = frame.get_mut(ip.l3 + hl..ip.l3 + total).ok_or(no_room)?;
            m[..8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
            Icmpv4Packet::new_checked(m)
                .map_err(|_| no_room)?
                .fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6_emit(frame, ip.l3, s, d, IpProtocol::Icmpv6, OWN_TTL, msg_len)?;
            let m = frame.get_mut(ip.l3 + hl..ip.l3 + total).ok_or(no_room)?;
            m[..8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
            Icmpv6Packet::new_checked(m)
                .map_err(|_| no_room)?
                .fill_checksum(s, d);
        }
        _ => return Err(dropped(DropReason::NoRoute)),
    }
    let to = frame_src_mac(frame);
    set_macs(frame, at.mac, to);
    *len = ip.l3 + total;
    Ok(Verdict::Reply)
}

/// Writes a fixed IPv6 header at `at`; returns 40 + `payload_len`.
fn ipv6_emit(
    frame: &mut [u8],
    at: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: IpProtocol,
    hop_limit: u8,
    payload_len: usize,
) -> Result<usize, Verdict> {
    let no_room = dropped(DropReason::NoRoom);
    if at + 40 + payload_len > frame.len() {
        return Err(no_room);
    }
    let h = Ipv6Repr {
        src,
        dst,
        next_header: next,
        payload_len,
        hop_limit,
    };
    h.emit(frame.get_mut(at..).ok_or(no_room)?)
        .map_err(|_| no_room)?;
    Ok(40 + payload_len)
}

/// For a SYN retry: another usable backend than (`cur`, `cur_port`), by a Maglev pick
/// salted with the attempt number, or the next one in the usable list.
fn pick_other(
    svc: &Service,
    seed: u64,
    key: &FlowKey,
    attempt: u32,
    cur: IpAddr,
    cur_port: u16,
) -> Option<Backend> {
    let usable = svc.usable_backends();
    if usable.len() < 2 {
        return None;
    }
    let salt = mix64(
        u64::from(attempt)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let i = svc.maglev_pick(flow_hash(seed, key) ^ salt)?;
    let b = *usable.get(i)?;
    if b.addr == cur && b.port == cur_port {
        usable.get((i + 1) % usable.len()).copied()
    } else {
        Some(b)
    }
}

#[inline]
/// Whether a translated packet's flow may cache its next hop for the fast path, which
/// takes IPv4 TCP and UDP packets that are not fragments.
fn fast_eligible(ip: &Ip) -> bool {
    !ip.v6 && ip.frag == Frag::Whole && (ip.proto == 6 || ip.proto == 17)
}

/// Adds packets a flow counted (see [`crate::conntrack::COUNT_EVERY`]) to worker `w`'s
/// counter rows in `table`. The flow's slots are `table`'s when the flow was last checked
/// against it (same generation). Otherwise they count only where `table` still gives the
/// flow's Service and backend those same slots: a Service or backend that left takes its
/// last uncounted packets with it, and no other Service or backend gets them.
fn settle(table: &ServiceTable, w: usize, c: HeldCounts) {
    let p = c.pending;
    let (packets, bytes) = (u64::from(p.packets), p.bytes);
    let bank = table.bank();
    if c.generation == table.generation() {
        bank.add(w, p.service_slot, packets, bytes);
        bank.add(w, p.backend_slot, packets, bytes);
        return;
    }
    let Some(protocol) = L4Protocol::from_ip_number(c.protocol) else {
        return;
    };
    let fk = FrontendKey {
        addr: c.frontend,
        port: c.frontend_port,
        protocol,
    };
    let Some(svc) = table.frontend(&fk).and_then(|fe| table.service(fe.service)) else {
        return;
    };
    if svc.counters().slot() == p.service_slot {
        bank.add(w, p.service_slot, packets, bytes);
    }
    let backend = svc.backend_counters(c.backend, c.backend_port);
    if backend.is_some_and(|c| c.slot() == p.backend_slot) {
        bank.add(w, p.backend_slot, packets, bytes);
    }
}

fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst);
        h[6..].copy_from_slice(&src);
    }
}

#[inline]
fn frame_src_mac(frame: &[u8]) -> MacAddr {
    let mut m = [0u8; 6];
    if let Some(s) = frame.get(6..12) {
        m.copy_from_slice(s);
    }
    m
}

/// Sets the (inner, for a tagged frame) EtherType, which ends at `l2`.
#[inline]
fn set_ethertype(frame: &mut [u8], l2: usize, t: EtherType) {
    if let Some(b) = l2.checked_sub(2).and_then(|s| frame.get_mut(s..l2)) {
        b.copy_from_slice(&u16::from(t).to_be_bytes());
    }
}
