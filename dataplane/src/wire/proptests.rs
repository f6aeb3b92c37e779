//! Property tests over every view: arbitrary bytes never make a checked constructor or
//! an accessor panic, and incremental checksum updates equal a full recompute.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::checksum::{self, PseudoHeader};
use super::*;
use crate::packet_builder::PacketBuilder;

fn exercise_ethernet(b: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(b) {
        let _ = (
            f.dst_addr(),
            f.src_addr(),
            f.outer_ethertype(),
            f.vlan_id(),
            f.ethertype(),
        );
        let _ = f.payload().len();
        let _ = EthernetRepr::parse(&f);
        let mut m = EthernetFrame::new_checked(b.to_vec()).unwrap();
        m.swap_addrs();
        m.set_ethertype(EtherType::Ipv6);
        m.set_vlan_tci(1);
        let _ = m.payload_mut().len();
    }
}

fn exercise_arp(b: &[u8]) {
    if let Ok(p) = ArpPacket::new_checked(b) {
        let r = ArpRepr::parse(&p);
        let mut out = [0u8; 28];
        assert_eq!(r.emit(&mut out), Ok(28));
        assert_eq!(&out[..], &b[..28]);
    }
}

fn exercise_ipv4(b: &[u8]) {
    for p in [
        Ipv4Packet::new_checked(b),
        Ipv4Packet::new_checked_quoted(b),
    ]
    .into_iter()
    .flatten()
    {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
        );
        let _ = (
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.options().len(),
        );
        let _ = (p.verify_checksum(), p.payload().len(), p.pseudo_header());
        let mut m = Ipv4Packet::new_unchecked(b.to_vec());
        let _ = m.decrement_ttl();
        m.rewrite_dst_addr(Ipv4Addr::new(1, 2, 3, 4));
        m.rewrite_src_addr(Ipv4Addr::new(5, 6, 7, 8));
        m.fill_checksum();
        assert!(m.verify_checksum());
        let _ = m.payload_mut().len();
        let _ = m.header_mut().len();
    }
}

fn exercise_ipv6(b: &[u8]) {
    for p in [
        Ipv6Packet::new_checked(b),
        Ipv6Packet::new_checked_quoted(b),
    ]
    .into_iter()
    .flatten()
    {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        );
        let _ = (
            p.next_header(),
            p.hop_limit(),
            p.src_addr(),
            p.dst_addr(),
            p.end(),
        );
        let _ = p.payload().len();
        if let Ok(t) = p.transport() {
            assert!(t.offset <= p.end());
        }
        let mut m = Ipv6Packet::new_unchecked(b.to_vec());
        let _ = m.decrement_hop_limit();
        let _ = (m.payload_mut().len(), m.as_mut_bytes().len());
    }
}

fn pseudo_pair() -> [PseudoHeader; 2] {
    [
        PseudoHeader::V4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
        },
        PseudoHeader::V6 {
            src: Ipv6Addr::LOCALHOST,
            dst: Ipv6Addr::UNSPECIFIED,
        },
    ]
}

fn exercise_tcp(b: &[u8]) {
    if let Ok(p) = TcpPacket::new_checked(b) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.seq_number(),
            p.ack_number(),
            p.header_len(),
        );
        let _ = (
            p.flags(),
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
            p.options().len(),
        );
        let _ = (p.payload().len(), p.segment_len(), TcpRepr::rst_for(&p));
        for ph in pseudo_pair() {
            let _ = p.verify_checksum(&ph);
            let mut m = TcpPacket::new_checked(b.to_vec()).unwrap();
            m.fill_checksum(&ph);
            assert!(m.verify_checksum(&ph));
            m.rewrite_src_port(1);
            m.rewrite_dst_port(2);
            assert!(m.verify_checksum(&ph));
            let _ = m.payload_mut().len();
        }
    }
}

fn exercise_udp(b: &[u8]) {
    if let Ok(p) = UdpPacket::new_checked(b) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.is_empty(),
            p.checksum(),
            p.payload().len(),
        );
        for ph in pseudo_pair() {
            let _ = p.verify_checksum(&ph);
            let mut m = UdpPacket::new_checked(b.to_vec()).unwrap();
            m.fill_checksum(&ph);
            assert!(m.verify_checksum(&ph));
            m.rewrite_dst_port(3);
            assert!(m.verify_checksum(&ph));
            let _ = m.payload_mut().len();
        }
    }
}

fn exercise_sctp(b: &[u8]) {
    if let Ok(p) = SctpPacket::new_checked(b) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.verification_tag(),
            p.checksum(),
        );
        let _ = (
            p.first_chunk_type(),
            p.first_chunk_flags(),
            p.first_chunk_len(),
            p.chunks().len(),
        );
        let mut m = SctpPacket::new_checked(b.to_vec()).unwrap();
        m.fill_checksum();
        assert!(m.verify_checksum());
        m.rewrite_dst_port(0x5ca1);
        m.rewrite_src_port(0xab);
        assert!(m.verify_checksum());
    }
}

fn exercise_icmpv4(b: &[u8]) {
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = (p.next_hop_mtu(), p.data().len(), p.verify_checksum());
        if let Ok(q) = p.quoted_ipv4() {
            let _ = (q.dst_addr(), transport_ports(q.payload()));
        }
        if let Ok(r) = Icmpv4Repr::parse(&p) {
            let mut out = vec![0u8; r.buffer_len()];
            assert_eq!(r.emit(&mut out), Ok(b.len()));
        }
        let mut m = Icmpv4Packet::new_checked(b.to_vec()).unwrap();
        m.fill_checksum();
        assert!(m.verify_checksum());
        let _ = m
            .quoted_ipv4_mut()
            .map(|mut q| q.rewrite_dst_addr(Ipv4Addr::BROADCAST));
    }
}

fn exercise_icmpv6(b: &[u8]) {
    if let Ok(p) = Icmpv6Packet::new_checked(b) {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = (p.mtu(), p.data().len(), p.neighbor_flags(), p.target_addr());
        let _ = (p.ndp_link_layer_addr(1), p.ndp_link_layer_addr(2));
        let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let _ = p.verify_checksum(s, d);
        if let Ok(q) = p.quoted_ipv6() {
            let _ = (q.dst_addr(), q.transport());
        }
        if let Ok(r) = Icmpv6Repr::parse(&p) {
            let mut out = vec![0u8; r.buffer_len()];
            assert!(r.emit(&mut out, s, d).is_ok());
        }
        let mut m = Icmpv6Packet::new_checked(b.to_vec()).unwrap();
        m.fill_checksum(s, d);
        assert!(m.verify_checksum(s, d));
        let _ = m.quoted_ipv6_mut().map(|mut q| q.set_dst_addr(s));
    }
}

fn exercise_all(b: &[u8]) {
    exercise_ethernet(b);
    exercise_arp(b);
    exercise_ipv4(b);
    exercise_ipv6(b);
    exercise_tcp(b);
    exercise_udp(b);
    exercise_sctp(b);
    exercise_icmpv4(b);
    exercise_icmpv6(b);
}

/// Bytes biased toward headers that pass the first checks (right version nibble, a
/// sane length), so the deeper paths get exercised, not only `Truncated`.
fn biased_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..200),
        0u8..6,
        any::<u8>(),
    )
        .prop_map(|(mut b, kind, n)| {
            if let Some(first) = b.first_mut() {
                *first = match kind {
                    0 => 0x40 | (*first & 0x0f),
                    1 => 0x60 | (*first & 0x0f),
                    2 => 0x45,
                    3 => 135,
                    _ => *first,
                };
            }
            let len = b.len();
            if kind == 2 && len >= 4 {
                b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            if kind == 1 && len >= 40 {
                b[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                b[6] = [0, 43, 44, 60, 51, 6][usize::from(n % 6)];
            }
            if kind == 4 && len >= 14 {
                b[12..14].copy_from_slice(&[0x81, 0x00]);
            }
            if kind == 5 && len >= 13 {
                b[4..6].copy_from_slice(&(len as u16).to_be_bytes()); // UDP length
                b[12] = (n & 0xf0).max(0x50); // TCP data offset
            }
            b
        })
}

#[derive(Clone, Copy, Debug)]
enum L4Kind {
    Tcp,
    Udp,
    UdpNoChecksum,
}

fn l4_kind() -> impl Strategy<Value = L4Kind> {
    prop_oneof![
        Just(L4Kind::Tcp),
        Just(L4Kind::Udp),
        Just(L4Kind::UdpNoChecksum)
    ]
}

fn build(
    kind: L4Kind,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::new()
        .ip(src, dst)
        .ttl(64)
        .ip_only()
        .payload(payload);
    match kind {
        L4Kind::Tcp => b.tcp(sport, dport).build(),
        L4Kind::Udp => b.udp(sport, dport).build(),
        L4Kind::UdpNoChecksum => b.udp(sport, dport).udp_zero_checksum().build(),
    }
}

/// NAT as the pipeline will do it: incremental updates of the IP header (v4) and the
/// transport checksum for a destination address + port rewrite and a source port rewrite.
fn nat_in_place(
    kind: L4Kind,
    pkt: &mut [u8],
    new_dst: std::net::IpAddr,
    new_dport: u16,
    new_sport: u16,
) {
    let v4 = pkt[0] >> 4 == 4;
    let (l4_off, old_dst) = if v4 {
        let mut ip = Ipv4Packet::new_checked(&mut *pkt).unwrap();
        let std::net::IpAddr::V4(nd) = new_dst else {
            unreachable!()
        };
        let old = ip.rewrite_dst_addr(nd);
        (ip.header_len(), std::net::IpAddr::V4(old))
    } else {
        let mut ip = Ipv6Packet::new_checked(&mut *pkt).unwrap();
        let std::net::IpAddr::V6(nd) = new_dst else {
            unreachable!()
        };
        let old = ip.dst_addr();
        ip.set_dst_addr(nd);
        (40, std::net::IpAddr::V6(old))
    };
    let l4 = &mut pkt[l4_off..];
    match kind {
        L4Kind::Tcp => {
            let mut t = TcpPacket::new_checked(l4).unwrap();
            match (old_dst, new_dst) {
                (std::net::IpAddr::V4(o), std::net::IpAddr::V4(n)) => {
                    t.update_checksum_v4_addr(o, n)
                }
                (std::net::IpAddr::V6(o), std::net::IpAddr::V6(n)) => {
                    t.update_checksum_v6_addr(o, n)
                }
                _ => unreachable!(),
            }
            t.rewrite_dst_port(new_dport);
            t.rewrite_src_port(new_sport);
        }
        L4Kind::Udp | L4Kind::UdpNoChecksum => {
            let mut u = UdpPacket::new_checked(l4).unwrap();
            match (old_dst, new_dst) {
                (std::net::IpAddr::V4(o), std::net::IpAddr::V4(n)) => {
                    u.update_checksum_v4_addr(o, n)
                }
                (std::net::IpAddr::V6(o), std::net::IpAddr::V6(n)) => {
                    u.update_checksum_v6_addr(o, n)
                }
                _ => unreachable!(),
            }
            u.rewrite_dst_port(new_dport);
            u.rewrite_src_port(new_sport);
        }
    }
}

fn addr_pair() -> impl Strategy<Value = (std::net::IpAddr, std::net::IpAddr, std::net::IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| (
            Ipv4Addr::from(a).into(),
            Ipv4Addr::from(b).into(),
            Ipv4Addr::from(c).into()
        )),
        (any::<u128>(), any::<u128>(), any::<u128>()).prop_map(|(a, b, c)| (
            Ipv6Addr::from(a).into(),
            Ipv6Addr::from(b).into(),
            Ipv6Addr::from(c).into()
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..160)) {
        exercise_all(&b);
    }

    #[test]
    fn biased_bytes_never_panic(b in biased_bytes()) {
        exercise_all(&b);
    }

    #[test]
    fn incremental_word_updates_match_recompute(
        mut data in proptest::collection::vec(any::<u8>(), 24..120),
        at in 0usize..5,
        w16 in any::<u16>(),
        w32 in any::<[u8; 4]>(),
        w128 in any::<[u8; 16]>(),
    ) {
        // Word-aligned positions so each rewrite is a whole 16-bit-aligned field.
        let at = at * 2;
        let check = !checksum::sum(&data);
        let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&w16.to_be_bytes());
        let c = checksum::update16(check, old16, w16);
        prop_assert_eq!(c, !checksum::sum(&data));
        let old32 = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        data[at..at + 4].copy_from_slice(&w32);
        let c = checksum::update32(c, old32, w32);
        prop_assert_eq!(c, !checksum::sum(&data));
        let mut old128 = [0u8; 16];
        old128.copy_from_slice(&data[at..at + 16]);
        data[at..at + 16].copy_from_slice(&w128);
        let c = checksum::update128(c, old128, w128);
        prop_assert_eq!(c, !checksum::sum(&data));
    }

    #[test]
    fn nat_incremental_equals_rebuilt_packet(
        kind in l4_kind(),
        (src, dst, new_dst) in addr_pair(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        new_sport in any::<u16>(),
        new_dport in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let kind = if src.is_ipv6() && matches!(kind, L4Kind::UdpNoChecksum) { L4Kind::Udp } else { kind };
        let mut pkt = build(kind, src, dst, sport, dport, &payload);
        nat_in_place(kind, &mut pkt, new_dst, new_dport, new_sport);
        let want = build(kind, src, new_dst, new_sport, new_dport, &payload);
        prop_assert_eq!(pkt, want);
    }

    #[test]
    fn sctp_incremental_crc_equals_rebuilt_packet(
        sport in any::<u16>(),
        dport in any::<u16>(),
        new_sport in any::<u16>(),
        new_dport in any::<u16>(),
        vtag in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        let b = |s: u16, d: u16| {
            PacketBuilder::new()
                .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
                .ip_only()
                .sctp(s, d)
                .sctp_vtag(vtag)
                .payload(&payload)
                .build()
        };
        let mut pkt = b(sport, dport);
        {
            let mut s = SctpPacket::new_checked(&mut pkt[20..]).unwrap();
            s.rewrite_src_port(new_sport);
            s.rewrite_dst_port(new_dport);
        }
        prop_assert_eq!(pkt, b(new_sport, new_dport));
    }

    #[test]
    fn builder_frames_parse_and_verify(
        (src, dst, _) in addr_pair(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        vlan in proptest::option::of(0u16..4096),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        tcp in any::<bool>(),
    ) {
        let mut b = PacketBuilder::new().ip(src, dst).payload(&payload);
        if let Some(v) = vlan {
            b = b.vlan(v);
        }
        let f = if tcp { b.tcp(sport, dport).build() } else { b.udp(sport, dport).build() };
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        prop_assert_eq!(eth.vlan_id(), vlan);
        let l3 = &f[eth.header_len()..];
        let (ph, l4): (PseudoHeader, &[u8]) = if src.is_ipv4() {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            prop_assert!(ip.verify_checksum());
            (ip.pseudo_header(), &l3[ip.header_len()..])
        } else {
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            (ip.pseudo_header(), &l3[ip.transport().unwrap().offset..])
        };
        if tcp {
            let t = TcpPacket::new_checked(l4).unwrap();
            prop_assert!(t.verify_checksum(&ph));
            prop_assert_eq!((t.src_port(), t.dst_port(), t.payload()), (sport, dport, &payload[..]));
        } else {
            let u = UdpPacket::new_checked(l4).unwrap();
            prop_assert!(u.verify_checksum(&ph));
            prop_assert_eq!((u.src_port(), u.dst_port(), u.payload()), (sport, dport, &payload[..]));
        }
    }
}
