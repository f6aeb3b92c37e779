//! `PacketBuilder`: complete, valid frames from nothing, for tests here and in other
//! crates (pipeline test tables, fuzz seeds, benches). Not on the per-packet path: it
//! allocates, and `build` panics on a contradictory recipe (see its doc).
//!
//! ```
//! use kubypass_dataplane::packet_builder::PacketBuilder;
//! use std::net::Ipv4Addr;
//! let syn = PacketBuilder::new()
//!     .ipv4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 10))
//!     .tcp(40000, 80)
//!     .syn()
//!     .build();
//! assert_eq!(syn.len(), 14 + 20 + 20);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::checksum::{self, PseudoHeader};
use crate::wire::icmpv6::NeighborFlags;
use crate::wire::sctp;
use crate::wire::{
    ArpOperation, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol,
    Ipv4Packet, Ipv6Packet, TcpFlags,
};

/// Default source MAC of built frames.
pub const DEFAULT_SRC_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
/// Default destination MAC of built frames.
pub const DEFAULT_DST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);

#[derive(Clone, Debug)]
enum Ip {
    None,
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// First SCTP chunk to put in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpChunk {
    /// DATA carrying the builder's payload as user data.
    Data { tsn: u32 },
    /// INIT with the given initiate tag (also used as the initial TSN).
    Init { initiate_tag: u32 },
    /// ABORT (no causes).
    Abort,
}

#[derive(Clone, Debug)]
enum L4 {
    None,
    Tcp {
        src: u16,
        dst: u16,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Sctp {
        src: u16,
        dst: u16,
    },
    Echo {
        request: bool,
        ident: u16,
        seq: u16,
    },
    /// ICMPv4 destination unreachable (with MTU) / ICMPv6 destination unreachable.
    Unreachable {
        code: u8,
        mtu: u16,
    },
    /// ICMPv4 frag-needed / ICMPv6 packet too big.
    TooBig {
        mtu: u32,
    },
    TimeExceeded {
        code: u8,
    },
    NeighborSolicit {
        target: Ipv6Addr,
        lladdr: Option<EthernetAddress>,
    },
    NeighborAdvert {
        flags: NeighborFlags,
        target: Ipv6Addr,
        lladdr: Option<EthernetAddress>,
    },
    Arp(ArpRepr),
    /// Raw IP payload under this protocol number.
    Raw(IpProtocol),
}

/// Builds Ethernet (optionally 802.1Q-tagged) frames carrying IPv4 or IPv6 with TCP,
/// UDP, SCTP or ICMP, or ARP; with correct checksums unless asked otherwise.
///
/// Each method consumes and returns the builder, in any order (`.syn().tcp(1, 2)` is
/// `.tcp(1, 2).syn()`); settings for a transport not chosen are ignored. `build` takes
/// `&self`, so one recipe can build variants (`b.clone().seq(2).build()`).
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    eth_src: EthernetAddress,
    eth_dst: EthernetAddress,
    vlan_tci: Option<u16>,
    ethernet: bool,
    ip: Ip,
    ttl: u8,
    dscp_ecn: u8,
    ident: u32,
    dont_frag: bool,
    fragment: Option<(u16, bool)>,
    ipv4_options: Vec<u8>,
    ipv6_ext: Vec<(IpProtocol, usize)>,
    l4: L4,
    tcp_seq: u32,
    tcp_ack: u32,
    tcp_flags: TcpFlags,
    tcp_window: u16,
    tcp_options: Vec<u8>,
    sctp_vtag: Option<u32>,
    sctp_chunk: SctpChunk,
    payload: Vec<u8>,
    udp_zero_checksum: bool,
    bad_checksum: bool,
}

impl Default for PacketBuilder {
    fn default() -> Self {
        PacketBuilder::new()
    }
}

impl PacketBuilder {
    /// An Ethernet frame from `DEFAULT_SRC_MAC` to `DEFAULT_DST_MAC`, TTL 64, nothing
    /// else yet.
    pub fn new() -> PacketBuilder {
        PacketBuilder {
            eth_src: DEFAULT_SRC_MAC,
            eth_dst: DEFAULT_DST_MAC,
            vlan_tci: None,
            ethernet: true,
            ip: Ip::None,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: false,
            fragment: None,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            l4: L4::None,
            tcp_seq: 1,
            tcp_ack: 1,
            tcp_flags: TcpFlags::ACK,
            tcp_window: 65535,
            tcp_options: Vec::new(),
            sctp_vtag: None,
            sctp_chunk: SctpChunk::Data { tsn: 1 },
            payload: Vec::new(),
            udp_zero_checksum: false,
            bad_checksum: false,
        }
    }

    // --- Ethernet ---

    /// Source and destination MAC addresses.
    pub fn eth(mut self, src: EthernetAddress, dst: EthernetAddress) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }

    /// Adds one 802.1Q tag with this VLAN id (PCP and DEI zero).
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan_tci = Some(vid & 0x0fff);
        self
    }

    /// Emits the IP packet alone, without an Ethernet header.
    pub fn ip_only(mut self) -> Self {
        self.ethernet = false;
        self
    }

    // --- IP ---

    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.ip = Ip::V4(src, dst);
        self
    }

    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.ip = Ip::V6(src, dst);
        self
    }

    /// IPv4 or IPv6 by the addresses' family (for tests run over both).
    ///
    /// # Panics
    /// If the families differ.
    pub fn ip(self, src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ipv6(s, d),
            _ => panic!("PacketBuilder::ip: {src} and {dst} are of different families"),
        }
    }

    /// IPv4 TTL or IPv6 hop limit (default 64).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// The IPv4 DSCP/ECN byte or IPv6 traffic class.
    pub fn dscp_ecn(mut self, v: u8) -> Self {
        self.dscp_ecn = v;
        self
    }

    /// IPv4 identification (low 16 bits) or IPv6 fragment-header identification.
    pub fn ident(mut self, ident: u32) -> Self {
        self.ident = ident;
        self
    }

    /// Sets IPv4 DF.
    pub fn dont_frag(mut self) -> Self {
        self.dont_frag = true;
        self
    }

    /// Makes the packet a fragment at `offset` bytes (multiple of 8) with MF as given:
    /// IPv4 flags/offset, or an IPv6 fragment header after any other extension headers.
    /// A non-zero offset carries only the payload (no transport header); the transport
    /// checksum of a first fragment covers only the bytes in it.
    pub fn fragment(mut self, offset: u16, more_frags: bool) -> Self {
        self.fragment = Some((offset, more_frags));
        self
    }

    /// IPv4 options, padded with zero (end-of-list) to a multiple of 4 bytes.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    /// Appends an IPv6 extension header (`HopByHop`, `Ipv6Route` or `Ipv6Opts`) of
    /// `len` bytes (a multiple of 8, ≥ 8), zero-filled (Pad options / routing type 0
    /// with segments left 0).
    pub fn ipv6_ext(mut self, kind: IpProtocol, len: usize) -> Self {
        self.ipv6_ext.push((kind, len.max(8).div_ceil(8) * 8));
        self
    }

    // --- transports ---

    /// TCP from `src` to `dst` port; defaults: flags ACK, seq 1, ack 1, window 65535.
    pub fn tcp(mut self, src: u16, dst: u16) -> Self {
        self.l4 = L4::Tcp { src, dst };
        self
    }

    /// TCP flags (exactly these).
    pub fn flags(mut self, f: TcpFlags) -> Self {
        self.tcp_flags = f;
        self
    }

    /// TCP SYN only.
    pub fn syn(self) -> Self {
        self.flags(TcpFlags::SYN)
    }

    /// TCP SYN+ACK.
    pub fn syn_ack(self) -> Self {
        self.flags(TcpFlags::SYN | TcpFlags::ACK)
    }

    /// TCP FIN+ACK.
    pub fn fin(self) -> Self {
        self.flags(TcpFlags::FIN | TcpFlags::ACK)
    }

    /// TCP RST.
    pub fn rst(self) -> Self {
        self.flags(TcpFlags::RST)
    }

    /// TCP sequence number.
    pub fn seq(mut self, n: u32) -> Self {
        self.tcp_seq = n;
        self
    }

    /// TCP acknowledgement number.
    pub fn ack(mut self, n: u32) -> Self {
        self.tcp_ack = n;
        self
    }

    /// TCP window.
    pub fn window(mut self, n: u16) -> Self {
        self.tcp_window = n;
        self
    }

    /// TCP options, padded with zero (end-of-list) to a multiple of 4 bytes.
    pub fn tcp_options(mut self, o: &[u8]) -> Self {
        self.tcp_options = o.to_vec();
        self
    }

    pub fn udp(mut self, src: u16, dst: u16) -> Self {
        self.l4 = L4::Udp { src, dst };
        self
    }

    /// UDP over IPv4 with checksum field 0 (none).
    pub fn udp_zero_checksum(mut self) -> Self {
        self.udp_zero_checksum = true;
        self
    }

    /// SCTP; defaults: a DATA chunk (TSN 1) carrying the payload, verification tag 1
    /// (0 for INIT).
    pub fn sctp(mut self, src: u16, dst: u16) -> Self {
        self.l4 = L4::Sctp { src, dst };
        self
    }

    /// SCTP verification tag.
    pub fn sctp_vtag(mut self, tag: u32) -> Self {
        self.sctp_vtag = Some(tag);
        self
    }

    /// The one SCTP chunk the packet carries.
    pub fn sctp_chunk(mut self, c: SctpChunk) -> Self {
        self.sctp_chunk = c;
        self
    }

    /// SCTP INIT chunk (the verification tag defaults to 0, as RFC 9260 requires).
    pub fn sctp_init(self, initiate_tag: u32) -> Self {
        self.sctp_chunk(SctpChunk::Init { initiate_tag })
    }

    /// ICMP (v4 or v6 by the IP family) echo request.
    pub fn icmp_echo_request(mut self, ident: u16, seq: u16) -> Self {
        self.l4 = L4::Echo {
            request: true,
            ident,
            seq,
        };
        self
    }

    pub fn icmp_echo_reply(mut self, ident: u16, seq: u16) -> Self {
        self.l4 = L4::Echo {
            request: false,
            ident,
            seq,
        };
        self
    }

    /// Destination unreachable with `code` (v4: MTU field 0); quote with `payload`.
    pub fn icmp_dst_unreachable(mut self, code: u8) -> Self {
        self.l4 = L4::Unreachable { code, mtu: 0 };
        self
    }

    /// ICMPv4 frag-needed (type 3 code 4) or ICMPv6 packet too big, with `mtu`.
    pub fn icmp_too_big(mut self, mtu: u32) -> Self {
        self.l4 = L4::TooBig { mtu };
        self
    }

    pub fn icmp_time_exceeded(mut self, code: u8) -> Self {
        self.l4 = L4::TimeExceeded { code };
        self
    }

    /// ICMPv6 neighbour solicitation, with a source link-layer option if `lladdr`.
    pub fn neighbor_solicit(mut self, target: Ipv6Addr, lladdr: Option<EthernetAddress>) -> Self {
        self.l4 = L4::NeighborSolicit { target, lladdr };
        self
    }

    /// ICMPv6 neighbour advertisement, with a target link-layer option if `lladdr`.
    pub fn neighbor_advert(
        mut self,
        flags: NeighborFlags,
        target: Ipv6Addr,
        lladdr: Option<EthernetAddress>,
    ) -> Self {
        self.l4 = L4::NeighborAdvert {
            flags,
            target,
            lladdr,
        };
        self
    }

    /// An ARP request from `sender` for `target_ip`, broadcast; the Ethernet source is
    /// the sender's MAC.
    pub fn arp_request(
        mut self,
        sender: EthernetAddress,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    ) -> Self {
        self.l4 = L4::Arp(ArpRepr::request(sender, sender_ip, target_ip));
        self.eth_src = sender;
        self.eth_dst = EthernetAddress::BROADCAST;
        self
    }

    /// An ARP reply: `sender` has `sender_ip`, told to `target`; Ethernet unicast.
    pub fn arp_reply(
        mut self,
        sender: EthernetAddress,
        sender_ip: Ipv4Addr,
        target: EthernetAddress,
        target_ip: Ipv4Addr,
    ) -> Self {
        self.l4 = L4::Arp(ArpRepr {
            operation: ArpOperation::Reply,
            sender_hw_addr: sender,
            sender_ip,
            target_hw_addr: target,
            target_ip,
        });
        self.eth_src = sender;
        self.eth_dst = target;
        self
    }

    /// The IP payload is just `payload`, under protocol number `p`.
    pub fn raw(mut self, p: IpProtocol) -> Self {
        self.l4 = L4::Raw(p);
        self
    }

    /// Application payload (TCP/UDP data, SCTP user data, echo data, or the quoted
    /// packet of an ICMP error: see [`PacketBuilder::quote`]).
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// Corrupts the transport (or ICMP) checksum, for tests of verification.
    pub fn bad_checksum(mut self) -> Self {
        self.bad_checksum = true;
        self
    }

    /// What an ICMP error about `frame` (a built Ethernet frame) quotes: IPv4 header +
    /// 8 bytes (RFC 792), or the IPv6 packet cut to 1232 bytes (RFC 4443).
    ///
    /// # Panics
    /// If `frame` is not an Ethernet frame with a valid IP packet.
    pub fn quote(frame: &[u8]) -> Vec<u8> {
        let eth = EthernetFrame::new_checked(frame).expect("quote: not an Ethernet frame");
        let ip = eth.payload();
        match eth.ethertype() {
            EtherType::Ipv4 => {
                let p = Ipv4Packet::new_checked(ip).expect("quote: bad IPv4");
                let n = (p.header_len() + 8).min(p.total_len() as usize);
                ip[..n].to_vec()
            }
            EtherType::Ipv6 => {
                let p = Ipv6Packet::new_checked(ip).expect("quote: bad IPv6");
                ip[..p.end().min(1232)].to_vec()
            }
            other => panic!("quote: not IP but {other:?}"),
        }
    }

    /// Builds the frame.
    ///
    /// With no transport chosen, the IP payload is `payload` under next header 59 (no
    /// next header); use `raw` to choose the number.
    ///
    /// # Panics
    /// On a contradictory recipe: a transport without `ipv4`/`ipv6`, NDP over IPv4, a
    /// packet over 65535 bytes.
    pub fn build(&self) -> Vec<u8> {
        let (ethertype, l3) = match (&self.l4, &self.ip) {
            (L4::Arp(r), _) => {
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b).expect("sized");
                (EtherType::Arp, b)
            }
            (_, Ip::V4(s, d)) => (EtherType::Ipv4, self.build_v4(*s, *d)),
            (_, Ip::V6(s, d)) => (EtherType::Ipv6, self.build_v6(*s, *d)),
            (_, Ip::None) => panic!("PacketBuilder: call ipv4() or ipv6() before build()"),
        };
        if !self.ethernet {
            return l3;
        }
        let eth = EthernetRepr {
            src: self.eth_src,
            dst: self.eth_dst,
            ethertype,
            vlan_tci: self.vlan_tci,
        };
        let mut out = vec![0u8; eth.header_len() + l3.len()];
        let n = eth.emit(&mut out).expect("sized");
        out[n..].copy_from_slice(&l3);
        out
    }

    fn later_fragment(&self) -> bool {
        matches!(self.fragment, Some((off, _)) if off != 0)
    }

    fn build_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let pseudo = PseudoHeader::V4 { src, dst };
        let (proto, l4) = self.transport(&pseudo, false);
        let mut opts = self.ipv4_options.clone();
        opts.resize(opts.len().div_ceil(4) * 4, 0);
        assert!(
            opts.len() <= 40,
            "PacketBuilder: IPv4 options over 40 bytes"
        );
        let hl = 20 + opts.len();
        let total = u16::try_from(hl + l4.len()).expect("PacketBuilder: IPv4 packet too long");
        let mut b = vec![0u8; hl + l4.len()];
        b[20..hl].copy_from_slice(&opts);
        b[hl..].copy_from_slice(&l4);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_header_len(hl);
        p.set_dscp_ecn(self.dscp_ecn);
        p.set_total_len(total);
        p.set_ident(self.ident as u16);
        let (off, mf) = self.fragment.unwrap_or((0, false));
        p.set_frag(self.dont_frag, mf, off);
        p.set_ttl(self.ttl);
        p.set_protocol(proto);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.fill_checksum();
        b
    }

    fn build_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let pseudo = PseudoHeader::V6 { src, dst };
        let (proto, l4) = self.transport(&pseudo, true);
        // Chain: user extension headers in order, then the fragment header, then l4.
        let mut kinds: Vec<(IpProtocol, usize)> = self.ipv6_ext.clone();
        if self.fragment.is_some() {
            kinds.push((IpProtocol::Ipv6Frag, 8));
        }
        let ext_len: usize = kinds.iter().map(|k| k.1).sum();
        let payload_len =
            u16::try_from(ext_len + l4.len()).expect("PacketBuilder: IPv6 payload too long");
        let mut b = vec![0u8; 40 + ext_len + l4.len()];
        let mut off = 40;
        for (i, &(kind, len)) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).map_or(proto, |k| k.0);
            b[off] = next.into();
            if kind == IpProtocol::Ipv6Frag {
                let (fo, mf) = self.fragment.unwrap_or((0, false));
                b[off + 2..off + 4].copy_from_slice(&((fo & 0xfff8) | u16::from(mf)).to_be_bytes());
                b[off + 4..off + 8].copy_from_slice(&self.ident.to_be_bytes());
            } else {
                b[off + 1] = (len / 8 - 1) as u8;
                if len > 2 && kind != IpProtocol::Ipv6Route {
                    // One PadN option filling the rest of the header.
                    b[off + 2] = 1;
                    b[off + 3] = (len - 4) as u8;
                }
            }
            off += len;
        }
        b[off..].copy_from_slice(&l4);
        let first = kinds.first().map_or(proto, |k| k.0);
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(self.dscp_ecn, 0);
        p.set_payload_len(payload_len);
        p.set_next_header(first);
        p.set_hop_limit(self.ttl);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        b
    }

    /// The transport bytes and their protocol number.
    fn transport(&self, pseudo: &PseudoHeader, v6: bool) -> (IpProtocol, Vec<u8>) {
        let icmp = if v6 {
            IpProtocol::Icmpv6
        } else {
            IpProtocol::Icmp
        };
        let proto = match &self.l4 {
            L4::Tcp { .. } => IpProtocol::Tcp,
            L4::Udp { .. } => IpProtocol::Udp,
            L4::Sctp { .. } => IpProtocol::Sctp,
            L4::Raw(p) => *p,
            L4::None => IpProtocol::Ipv6NoNxt,
            L4::Arp(_) => unreachable!("ARP is not carried over IP"),
            _ => icmp,
        };
        if self.later_fragment() || matches!(self.l4, L4::None | L4::Raw(_)) {
            return (proto, self.payload.clone());
        }
        let mut b = match &self.l4 {
            L4::Tcp { src, dst } => {
                let mut opts = self.tcp_options.clone();
                opts.resize(opts.len().div_ceil(4) * 4, 0);
                let hl = 20 + opts.len();
                let mut b = vec![0u8; hl + self.payload.len()];
                b[20..hl].copy_from_slice(&opts);
                b[hl..].copy_from_slice(&self.payload);
                let mut p = crate::wire::TcpPacket::new_unchecked(&mut b[..]);
                p.set_src_port(*src);
                p.set_dst_port(*dst);
                p.set_seq_number(self.tcp_seq);
                p.set_ack_number(self.tcp_ack);
                p.set_header_len_and_flags(hl, self.tcp_flags);
                p.set_window_len(self.tcp_window);
                p.fill_checksum(pseudo);
                b
            }
            L4::Udp { src, dst } => {
                let r = crate::wire::UdpRepr {
                    src_port: *src,
                    dst_port: *dst,
                    payload: &self.payload,
                };
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b, pseudo)
                    .expect("PacketBuilder: UDP datagram too long");
                if self.udp_zero_checksum {
                    b[6..8].copy_from_slice(&[0, 0]);
                }
                b
            }
            L4::Sctp { src, dst } => {
                let vtag = match (self.sctp_vtag, self.sctp_chunk) {
                    (Some(t), _) => t,
                    (None, SctpChunk::Init { .. }) => 0,
                    (None, _) => 1,
                };
                self.sctp_bytes(*src, *dst, vtag, self.sctp_chunk)
            }
            L4::Echo {
                request,
                ident,
                seq,
            } => {
                let t = match (v6, request) {
                    (false, true) => 8,
                    (false, false) => 0,
                    (true, true) => 128,
                    (true, false) => 129,
                };
                let mut b = vec![t, 0, 0, 0];
                b.extend_from_slice(&ident.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&self.payload);
                b
            }
            L4::Unreachable { code, mtu } => {
                let mut b = vec![if v6 { 1 } else { 3 }, *code, 0, 0, 0, 0];
                b.extend_from_slice(&(if v6 { 0 } else { *mtu }).to_be_bytes());
                b.extend_from_slice(&self.payload);
                b
            }
            L4::TooBig { mtu } => {
                let mut b = if v6 {
                    let mut b = vec![2, 0, 0, 0];
                    b.extend_from_slice(&mtu.to_be_bytes());
                    b
                } else {
                    let mut b = vec![3, 4, 0, 0, 0, 0];
                    b.extend_from_slice(&(*mtu as u16).to_be_bytes());
                    b
                };
                b.extend_from_slice(&self.payload);
                b
            }
            L4::TimeExceeded { code } => {
                let mut b = vec![if v6 { 3 } else { 11 }, *code, 0, 0, 0, 0, 0, 0];
                b.extend_from_slice(&self.payload);
                b
            }
            L4::NeighborSolicit { target, lladdr } => {
                assert!(v6, "PacketBuilder: neighbour solicitation needs ipv6()");
                let r = crate::wire::Icmpv6Repr::NeighborSolicit {
                    target: *target,
                    lladdr: *lladdr,
                };
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b, Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
                    .expect("sized");
                b
            }
            L4::NeighborAdvert {
                flags,
                target,
                lladdr,
            } => {
                assert!(v6, "PacketBuilder: neighbour advertisement needs ipv6()");
                let r = crate::wire::Icmpv6Repr::NeighborAdvert {
                    flags: *flags,
                    target: *target,
                    lladdr: *lladdr,
                };
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b, Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
                    .expect("sized");
                b
            }
            L4::None | L4::Raw(_) | L4::Arp(_) => unreachable!("handled above"),
        };
        if proto == icmp {
            // ICMPv4 sums the message alone; ICMPv6 adds the pseudo-header.
            b[2..4].copy_from_slice(&[0, 0]);
            let c = if v6 {
                checksum::transport(pseudo, 58, &b)
            } else {
                !checksum::sum(&b)
            };
            b[2..4].copy_from_slice(&c.to_be_bytes());
        }
        if self.bad_checksum {
            let at = match proto {
                IpProtocol::Tcp => 16,
                IpProtocol::Udp => 6,
                IpProtocol::Sctp => 8,
                _ => 2,
            };
            b[at] ^= 0x5a;
        }
        (proto, b)
    }

    fn sctp_bytes(&self, src: u16, dst: u16, vtag: u32, chunk: SctpChunk) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0..2].copy_from_slice(&src.to_be_bytes());
        b[2..4].copy_from_slice(&dst.to_be_bytes());
        b[4..8].copy_from_slice(&vtag.to_be_bytes());
        match chunk {
            SctpChunk::Data { tsn } => {
                let len = 16 + self.payload.len();
                b.extend_from_slice(&[0, 0x03]); // DATA, unfragmented (B|E)
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&tsn.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // stream, SSN, PPID
                b.extend_from_slice(&self.payload);
            }
            SctpChunk::Init { initiate_tag } => {
                b.extend_from_slice(&[1, 0, 0, 20]);
                b.extend_from_slice(&initiate_tag.to_be_bytes());
                b.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
                b.extend_from_slice(&[0, 10, 0, 10]); // outbound, inbound streams
                b.extend_from_slice(&initiate_tag.to_be_bytes()); // initial TSN
            }
            SctpChunk::Abort => b.extend_from_slice(&[6, 0, 0, 4]),
        }
        b.resize(b.len().div_ceil(4) * 4, 0);
        let c = sctp::Packet::new_unchecked(&b[..]).compute_checksum();
        b[8..12].copy_from_slice(&c.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn c4() -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 1)
    }
    fn s4() -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 0, 10)
    }
    fn c6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }
    fn s6() -> Ipv6Addr {
        "fd00:10::a".parse().unwrap()
    }

    #[test]
    fn tcp_syn_v4_exact_bytes() {
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .tcp(40000, 80)
            .syn()
            .seq(7)
            .build();
        let mut want = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        want.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 10,
        ]);
        want.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 7, 0, 0, 0, 1, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        // Checksums filled independently with the reference sum.
        let ipc = !checksum::sum(&want[14..34]);
        want[24..26].copy_from_slice(&ipc.to_be_bytes());
        let ph = checksum::pseudo_header_v4(c4(), s4(), 6, 20);
        let tc = !checksum::add(ph, checksum::sum(&want[34..]));
        want[50..52].copy_from_slice(&tc.to_be_bytes());
        assert_eq!(f, want);
    }

    fn ipv4_of(f: &[u8]) -> Ipv4Packet<&[u8]> {
        Ipv4Packet::new_checked(&f[EthernetFrame::new_checked(f).unwrap().header_len()..]).unwrap()
    }

    fn ipv6_of(f: &[u8]) -> Ipv6Packet<&[u8]> {
        Ipv6Packet::new_checked(&f[EthernetFrame::new_checked(f).unwrap().header_len()..]).unwrap()
    }

    #[test]
    fn tcp_v6_with_vlan_payload_and_options() {
        let f = PacketBuilder::new()
            .vlan(42)
            .ipv6(c6(), s6())
            .ttl(9)
            .tcp(1234, 443)
            .flags(TcpFlags::PSH | TcpFlags::ACK)
            .tcp_options(&[2, 4, 5, 0xb4, 1])
            .payload(b"hello")
            .build();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.vlan_id(), Some(42));
        let ip = ipv6_of(&f);
        assert_eq!(ip.hop_limit(), 9);
        let t = ip.transport().unwrap();
        assert_eq!((t.protocol, t.offset), (IpProtocol::Tcp, 40));
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(tcp.header_len(), 28);
        assert_eq!(tcp.payload(), b"hello");
        assert!(tcp.verify_checksum(&ip.pseudo_header()));
        assert_eq!(tcp.flags(), TcpFlags::PSH | TcpFlags::ACK);
    }

    #[test]
    fn udp_both_families_and_zero_checksum() {
        for (src, dst) in [
            (IpAddr::V4(c4()), IpAddr::V4(s4())),
            (IpAddr::V6(c6()), IpAddr::V6(s6())),
        ] {
            let f = PacketBuilder::new()
                .ip(src, dst)
                .udp(5000, 53)
                .payload(&[1, 2, 3])
                .build();
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            let (ph, l4) = match eth.ethertype() {
                EtherType::Ipv4 => {
                    let p = ipv4_of(&f);
                    (p.pseudo_header(), p.payload().to_vec())
                }
                _ => {
                    let p = ipv6_of(&f);
                    (p.pseudo_header(), p.payload().to_vec())
                }
            };
            let u = UdpPacket::new_checked(&l4[..]).unwrap();
            assert_eq!(
                (u.src_port(), u.dst_port(), u.payload()),
                (5000, 53, &[1u8, 2, 3][..])
            );
            assert_ne!(u.checksum(), 0);
            assert!(u.verify_checksum(&ph));
        }
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .udp(1, 2)
            .udp_zero_checksum()
            .build();
        assert_eq!(
            UdpPacket::new_checked(ipv4_of(&f).payload())
                .unwrap()
                .checksum(),
            0
        );
    }

    #[test]
    fn sctp_init_and_data() {
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .sctp(5000, 36412)
            .sctp_init(0xabcd)
            .build();
        let ip = ipv4_of(&f);
        assert_eq!(ip.protocol(), IpProtocol::Sctp);
        let s = SctpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(s.first_chunk_type(), SctpChunkType::Init);
        assert_eq!(s.verification_tag(), 0);
        assert!(s.verify_checksum());
        let f = PacketBuilder::new()
            .ipv6(c6(), s6())
            .sctp(5000, 36412)
            .sctp_vtag(9)
            .payload(b"abc")
            .build();
        let ip = ipv6_of(&f);
        let s = SctpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(s.first_chunk_type(), SctpChunkType::Data);
        assert_eq!(s.first_chunk_len(), 19);
        assert_eq!(s.chunks().len(), 20, "padded to 4");
        assert!(s.verify_checksum());
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .sctp(1, 2)
            .sctp_chunk(SctpChunk::Abort)
            .build();
        assert_eq!(
            SctpPacket::new_checked(ipv4_of(&f).payload())
                .unwrap()
                .first_chunk_type(),
            SctpChunkType::Abort
        );
    }

    #[test]
    fn icmp_echo_and_errors_v4() {
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .icmp_echo_request(3, 4)
            .payload(b"ping")
            .build();
        let ip = ipv4_of(&f);
        assert_eq!(ip.protocol(), IpProtocol::Icmp);
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&i),
            Ok(Icmpv4Repr::EchoRequest {
                ident: 3,
                seq_no: 4,
                data: b"ping"
            })
        );

        let orig = PacketBuilder::new()
            .ipv4(c4(), s4())
            .udp(5000, 53)
            .payload(&[0; 100])
            .build();
        let q = PacketBuilder::quote(&orig);
        assert_eq!(q.len(), 28);
        let f = PacketBuilder::new()
            .ipv4(s4(), c4())
            .icmp_too_big(1400)
            .payload(&q)
            .build();
        let ip = ipv4_of(&f);
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!(
            (i.msg_type(), i.msg_code(), i.next_hop_mtu()),
            (Icmpv4Message::DstUnreachable, 4, 1400)
        );
        assert_eq!(i.quoted_ipv4().unwrap().dst_addr(), s4());
        let f = PacketBuilder::new()
            .ipv4(s4(), c4())
            .icmp_time_exceeded(0)
            .payload(&q)
            .build();
        let i_ip = ipv4_of(&f);
        let i = Icmpv4Packet::new_checked(i_ip.payload()).unwrap();
        assert_eq!(i.msg_type(), Icmpv4Message::TimeExceeded);
        assert!(i.verify_checksum());
        let f = PacketBuilder::new()
            .ipv4(s4(), c4())
            .icmp_dst_unreachable(3)
            .payload(&q)
            .build();
        let i_ip = ipv4_of(&f);
        let i = Icmpv4Packet::new_checked(i_ip.payload()).unwrap();
        assert_eq!(
            (i.msg_type(), i.msg_code()),
            (Icmpv4Message::DstUnreachable, 3)
        );
    }

    #[test]
    fn icmpv6_errors_and_ndp() {
        let orig = PacketBuilder::new().ipv6(c6(), s6()).tcp(1, 2).build();
        let q = PacketBuilder::quote(&orig);
        assert_eq!(q.len(), 60);
        for b in [
            PacketBuilder::new().icmp_too_big(1280),
            PacketBuilder::new().icmp_dst_unreachable(4),
            PacketBuilder::new().icmp_time_exceeded(0),
            PacketBuilder::new().icmp_echo_reply(1, 2),
        ] {
            let f = b.ipv6(s6(), c6()).payload(&q).build();
            let ip = ipv6_of(&f);
            assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
            let i = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(i.verify_checksum(s6(), c6()));
            assert!(Icmpv6Repr::parse(&i).is_ok());
        }
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        let f = PacketBuilder::new()
            .ipv6(c6(), "ff02::1:ff00:a".parse().unwrap())
            .ttl(255)
            .neighbor_solicit(s6(), Some(mac))
            .build();
        let ip = ipv6_of(&f);
        let i = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert_eq!(
            Icmpv6Repr::parse(&i),
            Ok(Icmpv6Repr::NeighborSolicit {
                target: s6(),
                lladdr: Some(mac)
            })
        );
        let f = PacketBuilder::new()
            .ipv6(s6(), c6())
            .neighbor_advert(NeighborFlags::SOLICITED, s6(), Some(mac))
            .build();
        let ip = ipv6_of(&f);
        let i = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum(s6(), c6()));
        assert_eq!(i.ndp_link_layer_addr(icmpv6::OPT_TARGET_LL), Some(mac));
    }

    #[test]
    fn arp_request_and_reply() {
        let m1 = EthernetAddress([2, 0, 0, 0, 0, 0x11]);
        let m2 = EthernetAddress([2, 0, 0, 0, 0, 0x22]);
        let f = PacketBuilder::new().arp_request(m1, c4(), s4()).build();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (eth.ethertype(), eth.dst_addr(), eth.src_addr()),
            (EtherType::Arp, EthernetAddress::BROADCAST, m1)
        );
        let a = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (a.operation(), a.target_ip()),
            (ArpOperation::Request, s4())
        );
        let f = PacketBuilder::new()
            .vlan(7)
            .arp_reply(m2, s4(), m1, c4())
            .build();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let a = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (a.operation(), a.sender_hw_addr(), a.target_ip()),
            (ArpOperation::Reply, m2, c4())
        );
        assert_eq!(eth.dst_addr(), m1);
    }

    #[test]
    fn ipv4_fragments_and_options() {
        let first = PacketBuilder::new()
            .ipv4(c4(), s4())
            .ident(77)
            .fragment(0, true)
            .udp(1, 2)
            .payload(&[9; 16])
            .build();
        let ip = ipv4_of(&first);
        assert!(ip.more_frags() && ip.is_fragment() && !ip.is_later_fragment());
        assert_eq!(ip.ident(), 77);
        assert_eq!(UdpPacket::new_checked(ip.payload()).unwrap().dst_port(), 2);
        let later = PacketBuilder::new()
            .ipv4(c4(), s4())
            .ident(77)
            .fragment(24, false)
            .udp(1, 2)
            .payload(&[9; 8])
            .build();
        let ip = ipv4_of(&later);
        assert_eq!(
            (ip.frag_offset(), ip.more_frags(), ip.protocol()),
            (24, false, IpProtocol::Udp)
        );
        assert_eq!(ip.payload(), &[9; 8]);
        assert!(ip.verify_checksum());
        let opt = PacketBuilder::new()
            .ipv4(c4(), s4())
            .ipv4_options(&[1, 1, 1, 1, 1])
            .tcp(1, 2)
            .build();
        let ip = ipv4_of(&opt);
        assert_eq!(ip.header_len(), 28);
        assert!(ip.verify_checksum());
        assert!(TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&ip.pseudo_header()));
        assert!(
            PacketBuilder::new()
                .ipv4(c4(), s4())
                .dont_frag()
                .build()
                .len()
                == 34
        );
        assert!(ipv4_of(
            &PacketBuilder::new()
                .ipv4(c4(), s4())
                .dont_frag()
                .udp(1, 2)
                .build()
        )
        .dont_frag());
    }

    #[test]
    fn ipv6_extension_headers_and_fragment() {
        let f = PacketBuilder::new()
            .ipv6(c6(), s6())
            .ipv6_ext(IpProtocol::HopByHop, 8)
            .ipv6_ext(IpProtocol::Ipv6Route, 24)
            .ipv6_ext(IpProtocol::Ipv6Opts, 16)
            .ident(0xdead)
            .fragment(0, true)
            .udp(7, 8)
            .build();
        let ip = ipv6_of(&f);
        let t = ip.transport().unwrap();
        assert_eq!(t.protocol, IpProtocol::Udp);
        assert_eq!(t.offset, 40 + 8 + 24 + 16 + 8);
        assert_eq!(
            t.fragment,
            Some(Ipv6FragmentHeader {
                offset: 0,
                more_frags: true,
                ident: 0xdead
            })
        );
        let u = UdpPacket::new_checked(&ip.payload()[t.offset - 40..]).unwrap();
        assert!(u.verify_checksum(&ip.pseudo_header()));
        let later = PacketBuilder::new()
            .ipv6(c6(), s6())
            .fragment(1448, false)
            .udp(7, 8)
            .payload(&[1; 8])
            .build();
        let t = ipv6_of(&later).transport().unwrap();
        assert!(t.fragment.unwrap().is_later_fragment());
        assert_eq!(t.offset, 48);
    }

    #[test]
    fn settings_are_order_independent() {
        let a = PacketBuilder::new()
            .syn()
            .seq(9)
            .ipv4(c4(), s4())
            .tcp(1, 2)
            .build();
        let b = PacketBuilder::new()
            .ipv4(c4(), s4())
            .tcp(1, 2)
            .seq(9)
            .syn()
            .build();
        assert_eq!(a, b);
        let t = TcpPacket::new_checked(&a[34..]).unwrap();
        assert_eq!((t.flags(), t.seq_number()), (TcpFlags::SYN, 9));
        let a = PacketBuilder::new()
            .sctp_vtag(5)
            .ipv4(c4(), s4())
            .sctp(1, 2)
            .build();
        assert_eq!(
            SctpPacket::new_checked(&a[34..])
                .unwrap()
                .verification_tag(),
            5
        );
    }

    #[test]
    fn bad_checksum_and_ip_only() {
        let f = PacketBuilder::new()
            .ipv4(c4(), s4())
            .tcp(1, 2)
            .bad_checksum()
            .build();
        let ip = ipv4_of(&f);
        assert!(ip.verify_checksum());
        assert!(!TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&ip.pseudo_header()));
        let raw = PacketBuilder::new()
            .ipv6(c6(), s6())
            .udp(1, 2)
            .ip_only()
            .build();
        assert_eq!(raw.len(), 48);
        assert!(Ipv6Packet::new_checked(&raw[..]).is_ok());
    }
}
