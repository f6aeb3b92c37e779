//! Pipeline tests: a table of `{description, input frame, table, expected output frame,
//! expected verdict}` cases (Katran's fixture style), sequences for state (conntrack,
//! table changes, SYN retry, affinity, neighbours), and property tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::conntrack::Direction;
use crate::flow::owner_worker;
use crate::packet_builder::{PacketBuilder, DEFAULT_DST_MAC, DEFAULT_SRC_MAC};
use crate::table::{
    Backend, Conditions, FrontendKey, FrontendKind, IpCidr, L4Protocol, NoBackendAction, Service,
    ServiceId, ServiceSpec, ServiceTable,
};
use crate::wire::icmpv6::NeighborFlags;
use crate::wire::{
    EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, SctpPacket,
    TcpFlags as WireTcpFlags, TcpPacket, UdpPacket,
};

// ------------------------------------------------------------------ fixture

/// Port 0 faces clients, port 1 faces backends.
const MAC0: EthernetAddress = DEFAULT_DST_MAC;
const MAC1: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 1, 0x01]);
const CLIENT_MAC: EthernetAddress = DEFAULT_SRC_MAC;
/// The MAC every next hop resolves to (`assume_resolved`).
const HOP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const CLIENT: &str = "198.18.0.1";
const CLIENT6: &str = "fd00:18::1";
const NODE: &str = "198.18.0.254"; // port 0's address, also a NodePort address
const NODE6: &str = "fd00:18::fe";
const VIP: &str = "198.19.0.10";
const VIP6: &str = "fd00:19::10";
const LB: &str = "198.19.1.1";
const EXT: &str = "198.19.2.2";
const REJECT: &str = "198.19.0.20";
const REJECT6: &str = "fd00:19::20";
const DROP: &str = "198.19.0.21";
const AFFINITY: &str = "198.19.0.30";
const RANGED: &str = "198.19.0.40";
const BE1: &str = "10.0.0.1";
const BE2: &str = "10.0.0.2";
const BE3: &str = "10.0.0.3";
const BE6: &str = "fd00:10::1";
const ROUTER: &str = "10.0.0.200";

fn config(index: usize, workers: usize) -> WorkerConfig {
    WorkerConfig {
        index,
        workers,
        ports: vec![
            PortConfig {
                mac: MAC0.0,
                addrs: vec![(ip(NODE), 24), (ip(NODE6), 64)],
                tx_offloads: Default::default(),
            },
            PortConfig {
                mac: MAC1.0,
                addrs: vec![(ip("10.0.0.254"), 24), (ip("fd00:10::fe"), 64)],
                tx_offloads: Default::default(),
            },
        ],
        routes: vec![Route {
            prefix: "198.19.0.0/16".parse().unwrap(),
            port: 0,
            via: Some(ip("198.18.0.200")),
        }],
        conntrack_capacity: 1024,
        conntrack_hash_key: None,
        affinity_capacity: 256,
        fragment_capacity: 64,
        promiscuous: false,
        assume_resolved: Some(HOP.0),
        fast_path: true,
    }
}

fn backend(addr: &str, port: u16) -> Backend {
    Backend {
        addr: ip(addr),
        port,
        weight: 1,
        conditions: Conditions::READY,
    }
}

fn spec(name: &str, protocol: L4Protocol, backends: Vec<Backend>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        protocol,
        backends,
        affinity_timeout_secs: None,
        no_backend: NoBackendAction::Reject,
    }
}

fn frontend(
    b: &mut crate::table::ServiceTableBuilder,
    id: crate::table::ServiceId,
    addr: &str,
    port: u16,
    protocol: L4Protocol,
    kind: FrontendKind,
    ranges: Vec<IpCidr>,
) {
    b.add_frontend(
        FrontendKey {
            addr: ip(addr),
            port,
            protocol,
        },
        kind,
        id,
        ranges,
    )
    .unwrap();
}

/// The standard table, with `web`'s backends given (generation `generation`).
fn table_with(generation: u64, web: Vec<Backend>, prev: Option<&ServiceTable>) -> ServiceTable {
    use FrontendKind::*;
    use L4Protocol::*;
    let mut b = ServiceTable::builder().generation(generation).workers(2);
    let web = b.add_service(spec("default/web:http", Tcp, web));
    frontend(&mut b, web, VIP, 80, Tcp, ClusterIp, vec![]);
    frontend(&mut b, web, NODE, 30080, Tcp, NodePort, vec![]);
    frontend(&mut b, web, LB, 443, Tcp, LoadBalancer, vec![]);
    let dns = b.add_service(spec("default/dns:53", Udp, vec![backend(BE1, 5353)]));
    frontend(&mut b, dns, EXT, 53, Udp, ExternalIp, vec![]);
    frontend(&mut b, dns, VIP, 53, Udp, ClusterIp, vec![]);
    let sctp = b.add_service(spec("default/diameter", Sctp, vec![backend(BE3, 3868)]));
    frontend(&mut b, sctp, VIP, 3868, Sctp, ClusterIp, vec![]);
    let web6 = b.add_service(spec("default/web6:http", Tcp, vec![backend(BE6, 8080)]));
    frontend(&mut b, web6, VIP6, 80, Tcp, ClusterIp, vec![]);
    let dns6 = b.add_service(spec("default/dns6", Udp, vec![backend(BE6, 5353)]));
    frontend(&mut b, dns6, VIP6, 53, Udp, ClusterIp, vec![]);
    let sctp6 = b.add_service(spec("default/sctp6", Sctp, vec![backend(BE6, 3868)]));
    frontend(&mut b, sctp6, VIP6, 3868, Sctp, ClusterIp, vec![]);
    let rej = b.add_service(spec("default/empty", Tcp, vec![]));
    frontend(&mut b, rej, REJECT, 80, Tcp, ClusterIp, vec![]);
    frontend(&mut b, rej, REJECT6, 80, Tcp, ClusterIp, vec![]);
    let rej_udp = b.add_service(spec("default/empty-udp", Udp, vec![]));
    frontend(&mut b, rej_udp, REJECT, 53, Udp, ClusterIp, vec![]);
    frontend(&mut b, rej_udp, REJECT6, 53, Udp, ClusterIp, vec![]);
    let mut dropping = spec("default/local", Tcp, vec![]);
    dropping.no_backend = NoBackendAction::Drop;
    let drop_id = b.add_service(dropping);
    frontend(&mut b, drop_id, DROP, 80, Tcp, ClusterIp, vec![]);
    let mut sticky = spec(
        "default/sticky",
        Tcp,
        vec![backend(BE1, 80), backend(BE2, 80), backend(BE3, 80)],
    );
    sticky.affinity_timeout_secs = Some(10800);
    let sticky = b.add_service(sticky);
    frontend(&mut b, sticky, AFFINITY, 80, Tcp, ClusterIp, vec![]);
    let ranged = b.add_service(spec("default/ranged", Tcp, vec![backend(BE1, 80)]));
    frontend(
        &mut b,
        ranged,
        RANGED,
        80,
        Tcp,
        LoadBalancer,
        vec!["198.18.0.0/28".parse().unwrap()],
    );
    b.build_reusing(prev)
}

fn table() -> ServiceTable {
    table_with(1, vec![backend(BE1, 8080)], None)
}

/// Runs one frame through `w`; returns the verdict and the frame as it would leave.
fn run(
    w: &mut Worker,
    t: &ServiceTable,
    n: &NeighbourTable,
    input: &[u8],
    rx: u16,
    now: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = input.to_vec();
    buf.resize(input.len() + 2048, 0xee);
    let mut len = input.len();
    let ctx = Context {
        table: t,
        neighbours: n,
    };
    w.prefetch(&buf[..len], &ctx);
    let v = w.process(&mut buf, &mut len, rx, now, &ctx);
    buf.truncate(len);
    (v, buf)
}

/// A frame from a client (port 0).
fn from_client() -> PacketBuilder {
    PacketBuilder::new().eth(CLIENT_MAC, MAC0)
}
/// A frame from a backend (port 1).
fn from_backend() -> PacketBuilder {
    PacketBuilder::new().eth(HOP, MAC1)
}
/// A frame leaving port 0 / port 1 to the resolved next hop.
fn to_port(p: u16) -> PacketBuilder {
    PacketBuilder::new().eth(if p == 0 { MAC0 } else { MAC1 }, HOP)
}
/// A reply leaving the port it came in on, back to the client.
fn reply_to_client() -> PacketBuilder {
    PacketBuilder::new().eth(MAC0, CLIENT_MAC)
}

fn syn(b: PacketBuilder, s: &str, d: &str, sp: u16, dp: u16) -> PacketBuilder {
    b.ip(ip(s), ip(d)).tcp(sp, dp).syn()
}

struct Case {
    description: &'static str,
    /// Frames run first (their verdicts are not checked).
    setup: Vec<(Vec<u8>, u16)>,
    input: Vec<u8>,
    rx: u16,
    verdict: Verdict,
    /// The frame as it leaves; `None`: unchanged (drops, steering, ToHost).
    output: Option<Vec<u8>>,
}

fn case(
    d: &'static str,
    input: PacketBuilder,
    rx: u16,
    verdict: Verdict,
    out: Option<PacketBuilder>,
) -> Case {
    Case {
        description: d,
        setup: vec![],
        input: input.build(),
        rx,
        verdict,
        output: out.map(|o| o.build()),
    }
}

fn fwd_syn_setup(s: &str, d: &str, sp: u16, dp: u16) -> Vec<(Vec<u8>, u16)> {
    vec![(syn(from_client(), s, d, sp, dp).build(), 0)]
}

fn cases() -> Vec<Case> {
    use DropReason as R;
    use Verdict::*;
    let quote = |b: PacketBuilder| PacketBuilder::quote(&b.build());
    let mut v = vec![
        // --- DNAT, every frontend kind, every protocol, both families
        case(
            "TCP SYN to a ClusterIP is DNATed to its backend and routed out of port 1",
            syn(from_client(), CLIENT, VIP, 40000, 80),
            0,
            Forward(1),
            Some(syn(to_port(1), CLIENT, BE1, 40000, 8080).ttl(63)),
        ),
        case(
            "TCP to a NodePort on the node address",
            syn(from_client(), CLIENT, NODE, 40000, 30080),
            0,
            Forward(1),
            Some(syn(to_port(1), CLIENT, BE1, 40000, 8080).ttl(63)),
        ),
        case(
            "TCP to a LoadBalancer ingress IP",
            syn(from_client(), CLIENT, LB, 40000, 443),
            0,
            Forward(1),
            Some(syn(to_port(1), CLIENT, BE1, 40000, 8080).ttl(63)),
        ),
        case(
            "UDP to an externalIP",
            from_client()
                .ipv4(v4(CLIENT), v4(EXT))
                .udp(5000, 53)
                .payload(b"query"),
            0,
            Forward(1),
            Some(
                to_port(1)
                    .ipv4(v4(CLIENT), v4(BE1))
                    .ttl(63)
                    .udp(5000, 5353)
                    .payload(b"query"),
            ),
        ),
        case(
            "UDP with a zero (absent) IPv4 checksum keeps it zero",
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .udp(5001, 53)
                .udp_zero_checksum()
                .payload(b"q"),
            0,
            Forward(1),
            Some(
                to_port(1)
                    .ipv4(v4(CLIENT), v4(BE1))
                    .ttl(63)
                    .udp(5001, 5353)
                    .udp_zero_checksum()
                    .payload(b"q"),
            ),
        ),
        case(
            "SCTP INIT to a ClusterIP (CRC32c updated)",
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .sctp(7000, 3868)
                .sctp_init(42),
            0,
            Forward(1),
            Some(
                to_port(1)
                    .ipv4(v4(CLIENT), v4(BE3))
                    .ttl(63)
                    .sctp(7000, 3868)
                    .sctp_init(42),
            ),
        ),
        case(
            "IPv6 TCP SYN to a ClusterIP",
            syn(from_client(), CLIENT6, VIP6, 40000, 80),
            0,
            Forward(1),
            Some(syn(to_port(1), CLIENT6, BE6, 40000, 8080).ttl(63)),
        ),
        case(
            "IPv6 UDP to a ClusterIP",
            from_client()
                .ipv6(v6(CLIENT6), v6(VIP6))
                .udp(5000, 53)
                .payload(b"q6"),
            0,
            Forward(1),
            Some(
                to_port(1)
                    .ipv6(v6(CLIENT6), v6(BE6))
                    .ttl(63)
                    .udp(5000, 5353)
                    .payload(b"q6"),
            ),
        ),
        case(
            "IPv6 SCTP to a ClusterIP",
            from_client()
                .ipv6(v6(CLIENT6), v6(VIP6))
                .sctp(7000, 3868)
                .sctp_init(9),
            0,
            Forward(1),
            Some(
                to_port(1)
                    .ipv6(v6(CLIENT6), v6(BE6))
                    .ttl(63)
                    .sctp(7000, 3868)
                    .sctp_init(9),
            ),
        ),
        case(
            "an 802.1Q tag is preserved",
            syn(from_client().vlan(7), CLIENT, VIP, 40000, 80),
            0,
            Forward(1),
            Some(syn(to_port(1).vlan(7), CLIENT, BE1, 40000, 8080).ttl(63)),
        ),
        // --- drops
        case(
            "unknown port on a Service address is dropped",
            syn(from_client(), CLIENT, VIP, 40000, 81),
            0,
            Drop(R::UnknownServicePort),
            None,
        ),
        case(
            "a client outside loadBalancerSourceRanges is dropped",
            syn(from_client(), "198.18.0.100", RANGED, 40000, 80),
            0,
            Drop(R::SourceRangeDenied),
            None,
        ),
        case(
            "a client inside loadBalancerSourceRanges is served",
            syn(from_client(), "198.18.0.5", RANGED, 40000, 80),
            0,
            Forward(1),
            Some(syn(to_port(1), "198.18.0.5", BE1, 40000, 80).ttl(63)),
        ),
        case(
            "no backend, policy drop",
            syn(from_client(), CLIENT, DROP, 40000, 80),
            0,
            Drop(R::NoBackend),
            None,
        ),
        case(
            "a reply that belongs to no flow",
            from_backend()
                .ipv4(v4(BE1), v4(CLIENT))
                .tcp(8080, 40000)
                .syn_ack(),
            1,
            Drop(R::NoFlow),
            None,
        ),
        case(
            "a destination MAC of another host",
            syn(
                PacketBuilder::new().eth(CLIENT_MAC, HOP),
                CLIENT,
                VIP,
                40000,
                80,
            ),
            0,
            Drop(R::NotForUs),
            None,
        ),
        case(
            "IPv4 options are kept through DNAT",
            syn(from_client(), CLIENT, VIP, 40000, 80).ipv4_options(&[1, 1, 1, 1]),
            0,
            Forward(1),
            Some(
                syn(to_port(1), CLIENT, BE1, 40000, 8080)
                    .ttl(63)
                    .ipv4_options(&[1, 1, 1, 1]),
            ),
        ),
        case(
            "TCP to the node address on a port that is no NodePort goes to the host",
            syn(from_client(), CLIENT, NODE, 40000, 22),
            0,
            ToHost,
            None,
        ),
        // --- REJECT
        case(
            "no backend: TCP SYN answered with RST|ACK from the frontend",
            syn(from_client(), CLIENT, REJECT, 40000, 80).seq(1000),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv4(v4(REJECT), v4(CLIENT))
                    .dont_frag()
                    .tcp(80, 40000)
                    .flags(WireTcpFlags::RST | WireTcpFlags::ACK)
                    .seq(0)
                    .ack(1001)
                    .window(0),
            ),
        ),
        case(
            "no backend: IPv6 TCP SYN answered with RST|ACK",
            syn(from_client(), CLIENT6, REJECT6, 40000, 80).seq(5),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv6(v6(REJECT6), v6(CLIENT6))
                    .tcp(80, 40000)
                    .flags(WireTcpFlags::RST | WireTcpFlags::ACK)
                    .seq(0)
                    .ack(6)
                    .window(0),
            ),
        ),
        case(
            "no backend: UDP answered with ICMP port unreachable quoting it",
            from_client()
                .ipv4(v4(CLIENT), v4(REJECT))
                .udp(5000, 53)
                .payload(b"query"),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv4(v4(REJECT), v4(CLIENT))
                    .icmp_dst_unreachable(3)
                    .payload(&quote(
                        from_client()
                            .ipv4(v4(CLIENT), v4(REJECT))
                            .udp(5000, 53)
                            .payload(b"query"),
                    )),
            ),
        ),
        case(
            "no backend: IPv6 UDP answered with ICMPv6 port unreachable",
            from_client()
                .ipv6(v6(CLIENT6), v6(REJECT6))
                .udp(5000, 53)
                .payload(b"q"),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv6(v6(REJECT6), v6(CLIENT6))
                    .icmp_dst_unreachable(4)
                    .payload(&quote(
                        from_client()
                            .ipv6(v6(CLIENT6), v6(REJECT6))
                            .udp(5000, 53)
                            .payload(b"q"),
                    )),
            ),
        ),
        // --- TTL
        case(
            "TTL 1: ICMP time exceeded from the port's address, no flow created",
            syn(from_client(), CLIENT, VIP, 40000, 80).ttl(1),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv4(v4(NODE), v4(CLIENT))
                    .icmp_time_exceeded(0)
                    .payload(&quote(syn(from_client(), CLIENT, VIP, 40000, 80).ttl(1))),
            ),
        ),
        case(
            "hop limit 1: ICMPv6 time exceeded",
            syn(from_client(), CLIENT6, VIP6, 40000, 80).ttl(1),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv6(v6(NODE6), v6(CLIENT6))
                    .icmp_time_exceeded(0)
                    .payload(&quote(syn(from_client(), CLIENT6, VIP6, 40000, 80).ttl(1))),
            ),
        ),
        // --- ARP / ND / echo
        case(
            "ARP request for a Service address is answered with the port's MAC",
            PacketBuilder::new().arp_request(CLIENT_MAC, v4(CLIENT), v4(VIP)),
            0,
            Reply,
            Some(PacketBuilder::new().arp_reply(MAC0, v4(VIP), CLIENT_MAC, v4(CLIENT))),
        ),
        case(
            "ARP request for the port's own address is answered",
            PacketBuilder::new().arp_request(CLIENT_MAC, v4(CLIENT), v4(NODE)),
            0,
            Reply,
            Some(PacketBuilder::new().arp_reply(MAC0, v4(NODE), CLIENT_MAC, v4(CLIENT))),
        ),
        case(
            "ARP request for someone else is ignored",
            PacketBuilder::new().arp_request(CLIENT_MAC, v4(CLIENT), v4("198.18.0.77")),
            0,
            Drop(R::ArpIgnored),
            None,
        ),
        case(
            "ARP reply is consumed (its sender learned), not answered",
            PacketBuilder::new().arp_reply(CLIENT_MAC, v4(CLIENT), MAC0, v4(NODE)),
            0,
            Drop(R::ArpReplyConsumed),
            None,
        ),
        case(
            "neighbour solicitation for a Service address is answered",
            PacketBuilder::new()
                .eth(
                    CLIENT_MAC,
                    EthernetAddress::ipv6_multicast(v6("ff02::1:ff00:10")),
                )
                .ipv6(v6(CLIENT6), v6("ff02::1:ff00:10"))
                .ttl(255)
                .neighbor_solicit(v6(VIP6), Some(CLIENT_MAC)),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv6(v6(VIP6), v6(CLIENT6))
                    .ttl(255)
                    .neighbor_advert(
                        NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
                        v6(VIP6),
                        Some(MAC0),
                    ),
            ),
        ),
        case(
            "ICMP echo to the appliance is answered",
            from_client()
                .ipv4(v4(CLIENT), v4(NODE))
                .icmp_echo_request(7, 1)
                .payload(b"ping"),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv4(v4(NODE), v4(CLIENT))
                    .icmp_echo_reply(7, 1)
                    .payload(b"ping"),
            ),
        ),
        case(
            "ICMP echo to a Service address is answered too",
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .ttl(9)
                .icmp_echo_request(7, 2),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv4(v4(VIP), v4(CLIENT))
                    .icmp_echo_reply(7, 2),
            ),
        ),
        case(
            "ICMPv6 echo to the appliance is answered",
            from_client()
                .ipv6(v6(CLIENT6), v6(NODE6))
                .icmp_echo_request(3, 4)
                .payload(b"p"),
            0,
            Reply,
            Some(
                reply_to_client()
                    .ipv6(v6(NODE6), v6(CLIENT6))
                    .icmp_echo_reply(3, 4)
                    .payload(b"p"),
            ),
        ),
        case(
            "an ICMP redirect is never translated",
            from_backend()
                .ipv4(v4(ROUTER), v4(CLIENT))
                .raw(IpProtocol::Icmp)
                .payload(&[5, 0, 0xfa, 0xff, 0, 0, 0, 0]),
            1,
            Drop(R::IcmpIgnored),
            None,
        ),
        case(
            "ICMP echo to an address that is neither ours nor a Service's",
            from_client()
                .ipv4(v4(CLIENT), v4("203.0.113.9"))
                .icmp_echo_request(1, 1),
            0,
            Drop(R::IcmpIgnored),
            None,
        ),
        case(
            "neighbour solicitation for an address nobody here answers for",
            PacketBuilder::new()
                .eth(
                    CLIENT_MAC,
                    EthernetAddress::ipv6_multicast(v6("ff02::1:ff00:77")),
                )
                .ipv6(v6(CLIENT6), v6("ff02::1:ff00:77"))
                .ttl(255)
                .neighbor_solicit(v6("fd00:18::77"), Some(CLIENT_MAC)),
            0,
            Drop(R::NdIgnored),
            None,
        ),
        case(
            "neighbour solicitation with a hop limit below 255 is refused",
            PacketBuilder::new()
                .eth(
                    CLIENT_MAC,
                    EthernetAddress::ipv6_multicast(v6("ff02::1:ff00:10")),
                )
                .ipv6(v6(CLIENT6), v6("ff02::1:ff00:10"))
                .ttl(64)
                .neighbor_solicit(v6(VIP6), Some(CLIENT_MAC)),
            0,
            Drop(R::IcmpMalformed),
            None,
        ),
        case(
            "an SCTP first fragment cannot be translated",
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .ident(3)
                .fragment(0, true)
                .sctp(7000, 3868)
                .sctp_init(1),
            0,
            Drop(R::FragmentUnsupported),
            None,
        ),
        case(
            "an IP protocol no Service carries, to a Service address",
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .raw(IpProtocol::Unknown(99)),
            0,
            Drop(R::UnknownServicePort),
            None,
        ),
        // --- fragments
        case(
            "a later fragment with no first fragment seen",
            from_client()
                .ipv4(v4(CLIENT), v4(EXT))
                .ident(9)
                .fragment(16, false)
                .udp(5000, 53)
                .payload(&[1; 8]),
            0,
            Drop(R::FragmentNoState),
            None,
        ),
    ];
    // Reverse NAT of each protocol after its forward packet.
    v.push(Case {
        setup: fwd_syn_setup(CLIENT, VIP, 40000, 80),
        ..case(
            "the backend's SYN-ACK is reverse-NATed to the frontend and routed to the client",
            from_backend()
                .ipv4(v4(BE1), v4(CLIENT))
                .tcp(8080, 40000)
                .syn_ack(),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv4(v4(VIP), v4(CLIENT))
                    .ttl(63)
                    .tcp(80, 40000)
                    .syn_ack(),
            ),
        )
    });
    v.push(Case {
        setup: fwd_syn_setup(CLIENT6, VIP6, 40000, 80),
        ..case(
            "IPv6 reverse NAT",
            from_backend()
                .ipv6(v6(BE6), v6(CLIENT6))
                .tcp(8080, 40000)
                .syn_ack(),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv6(v6(VIP6), v6(CLIENT6))
                    .ttl(63)
                    .tcp(80, 40000)
                    .syn_ack(),
            ),
        )
    });
    v.push(Case {
        setup: vec![(
            from_client()
                .ipv4(v4(CLIENT), v4(EXT))
                .udp(5000, 53)
                .build(),
            0,
        )],
        ..case(
            "UDP reverse NAT back to the externalIP",
            from_backend()
                .ipv4(v4(BE1), v4(CLIENT))
                .udp(5353, 5000)
                .payload(b"answer"),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv4(v4(EXT), v4(CLIENT))
                    .ttl(63)
                    .udp(53, 5000)
                    .payload(b"answer"),
            ),
        )
    });
    v.push(Case {
        setup: vec![(
            from_client()
                .ipv4(v4(CLIENT), v4(VIP))
                .sctp(7000, 3868)
                .sctp_init(1)
                .build(),
            0,
        )],
        ..case(
            "SCTP reverse NAT",
            from_backend()
                .ipv4(v4(BE3), v4(CLIENT))
                .sctp(3868, 7000)
                .sctp_init(2),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv4(v4(VIP), v4(CLIENT))
                    .ttl(63)
                    .sctp(3868, 7000)
                    .sctp_init(2),
            ),
        )
    });
    v.push(Case {
        setup: vec![(
            from_client()
                .ipv6(v6(CLIENT6), v6(VIP6))
                .udp(5000, 53)
                .build(),
            0,
        )],
        ..case(
            "IPv6 UDP reverse NAT",
            from_backend()
                .ipv6(v6(BE6), v6(CLIENT6))
                .udp(5353, 5000)
                .payload(b"a"),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv6(v6(VIP6), v6(CLIENT6))
                    .ttl(63)
                    .udp(53, 5000)
                    .payload(b"a"),
            ),
        )
    });
    // ICMP errors about translated flows.
    let dnated = syn(to_port(1), CLIENT, BE1, 40000, 8080).ttl(63);
    let original = syn(from_client(), CLIENT, VIP, 40000, 80).ttl(63);
    v.push(Case {
        setup: fwd_syn_setup(CLIENT, VIP, 40000, 80),
        ..case(
            "frag-needed from a router about client→backend reaches the client about client→frontend",
            from_backend().ipv4(v4(ROUTER), v4(CLIENT)).icmp_too_big(1400).payload(&quote(dnated.clone())),
            1,
            Forward(0),
            Some(to_port(0).ipv4(v4(ROUTER), v4(CLIENT)).ttl(63).icmp_too_big(1400).payload(&quote(original.clone()))),
        )
    });
    v.push(Case {
        setup: fwd_syn_setup(CLIENT, VIP, 40000, 80),
        ..case(
            "port unreachable from the backend itself comes from the frontend address",
            from_backend()
                .ipv4(v4(BE1), v4(CLIENT))
                .icmp_dst_unreachable(3)
                .payload(&quote(dnated)),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv4(v4(VIP), v4(CLIENT))
                    .ttl(63)
                    .icmp_dst_unreachable(3)
                    .payload(&quote(original)),
            ),
        )
    });
    let reply_out = to_port(0)
        .ipv4(v4(VIP), v4(CLIENT))
        .ttl(63)
        .tcp(80, 40000)
        .syn_ack();
    let reply_in = from_backend()
        .ipv4(v4(BE1), v4(CLIENT))
        .ttl(63)
        .tcp(8080, 40000)
        .syn_ack();
    v.push(Case {
        setup: vec![
            (syn(from_client(), CLIENT, VIP, 40000, 80).build(), 0),
            (from_backend().ipv4(v4(BE1), v4(CLIENT)).tcp(8080, 40000).syn_ack().build(), 1),
        ],
        ..case(
            "frag-needed about frontend→client (client side) goes to the backend about backend→client",
            from_client().ipv4(v4("198.18.0.200"), v4(VIP)).icmp_too_big(1200).payload(&quote(reply_out)),
            0,
            Forward(1),
            Some(to_port(1).ipv4(v4("198.18.0.200"), v4(BE1)).ttl(63).icmp_too_big(1200).payload(&quote(reply_in))),
        )
    });
    let dnated6 = syn(to_port(1), CLIENT6, BE6, 40000, 8080).ttl(63);
    let original6 = syn(from_client(), CLIENT6, VIP6, 40000, 80).ttl(63);
    v.push(Case {
        setup: fwd_syn_setup(CLIENT6, VIP6, 40000, 80),
        ..case(
            "ICMPv6 packet too big about client→backend, quoted TCP checksum translated too",
            from_backend()
                .ipv6(v6("fd00:10::200"), v6(CLIENT6))
                .icmp_too_big(1280)
                .payload(&quote(dnated6)),
            1,
            Forward(0),
            Some(
                to_port(0)
                    .ipv6(v6("fd00:10::200"), v6(CLIENT6))
                    .ttl(63)
                    .icmp_too_big(1280)
                    .payload(&quote(original6)),
            ),
        )
    });
    v.push(case(
        "an ICMP error about no tracked flow",
        from_backend()
            .ipv4(v4(ROUTER), v4(CLIENT))
            .icmp_too_big(1400)
            .payload(&quote(syn(to_port(1), CLIENT, BE1, 1, 8080))),
        1,
        Drop(R::IcmpNoFlow),
        None,
    ));
    // Fragments follow their first fragment.
    let first = |b: PacketBuilder, s: &str, d: &str, dp: u16| {
        b.ip(ip(s), ip(d))
            .ident(77)
            .fragment(0, true)
            .udp(5000, dp)
            .payload(&[7; 16])
    };
    let later = |b: PacketBuilder, s: &str, d: &str, dp: u16| {
        b.ip(ip(s), ip(d))
            .ident(77)
            .fragment(24, false)
            .udp(5000, dp)
            .payload(&[8; 16])
    };
    v.push(case(
        "a first UDP fragment is DNATed",
        first(from_client(), CLIENT, EXT, 53),
        0,
        Forward(1),
        Some(first(to_port(1), CLIENT, BE1, 5353).ttl(63)),
    ));
    v.push(Case {
        setup: vec![(first(from_client(), CLIENT, EXT, 53).build(), 0)],
        ..case(
            "a later fragment follows its first fragment's translation",
            later(from_client(), CLIENT, EXT, 53),
            0,
            Forward(1),
            Some(later(to_port(1), CLIENT, BE1, 5353).ttl(63)),
        )
    });
    v.push(Case {
        setup: vec![(first(from_client(), CLIENT6, VIP6, 53).build(), 0)],
        ..case(
            "an IPv6 later fragment follows its first fragment",
            later(from_client(), CLIENT6, VIP6, 53),
            0,
            Forward(1),
            Some(later(to_port(1), CLIENT6, BE6, 5353).ttl(63)),
        )
    });
    v
}

#[test]
fn table_driven_cases() {
    let t = table();
    let n = NeighbourTable::default();
    let mut failures = Vec::new();
    for c in cases() {
        let mut w = Worker::new(config(0, 1));
        for (f, rx) in &c.setup {
            run(&mut w, &t, &n, f, *rx, 1);
        }
        let (v, out) = run(&mut w, &t, &n, &c.input, c.rx, 2);
        let want_out = c.output.clone().unwrap_or_else(|| c.input.clone());
        if v != c.verdict || out != want_out {
            failures.push(format!(
                "{}:\n  verdict {:?} (want {:?})\n  got  {:02x?}\n  want {:02x?}",
                c.description, v, c.verdict, out, want_out
            ));
        }
        // Every verdict is counted once.
        let cs = w.counters();
        let frames = cs.frames.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(frames, c.setup.len() as u64 + 1, "{}", c.description);
        if let Verdict::Drop(r) = c.verdict {
            assert!(cs.drops(r) >= 1, "{}: drop not counted", c.description);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------ sequences

fn relaxed(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// A client port whose flows worker `want` of `n` owns.
fn port_owned_by(client: &str, want: usize, n: usize) -> u16 {
    (40000..u16::MAX)
        .find(|&p| owner_worker(ip(client), p, n) == want)
        .unwrap()
}

#[test]
fn frames_of_another_workers_flow_are_steered_untouched() {
    let t = table();
    let n = NeighbourTable::default();
    let cport = port_owned_by(CLIENT, 1, 2);
    let mut w0 = Worker::new(config(0, 2));
    let mut w1 = Worker::new(config(1, 2));
    let fwd = syn(from_client(), CLIENT, VIP, cport, 80).build();
    let (v, out) = run(&mut w0, &t, &n, &fwd, 0, 1);
    assert_eq!(v, Verdict::Steer(1));
    assert_eq!(out, fwd);
    assert!(
        w0.conntrack().is_empty(),
        "no state touched on the non-owner"
    );
    let (v, _) = run(&mut w1, &t, &n, &fwd, 0, 1);
    assert_eq!(v, Verdict::Forward(1));
    // The reply carries the client as destination: same owner.
    let reply = from_backend()
        .ipv4(v4(BE1), v4(CLIENT))
        .tcp(8080, cport)
        .syn_ack()
        .build();
    assert_eq!(run(&mut w0, &t, &n, &reply, 1, 2).0, Verdict::Steer(1));
    assert_eq!(run(&mut w1, &t, &n, &reply, 1, 2).0, Verdict::Forward(0));
    // An ICMP error names its client through the quoted header.
    let dnated = syn(to_port(1), CLIENT, BE1, cport, 8080).ttl(63).build();
    let err = from_backend()
        .ipv4(v4(ROUTER), v4(CLIENT))
        .icmp_too_big(1400)
        .payload(&PacketBuilder::quote(&dnated))
        .build();
    assert_eq!(run(&mut w0, &t, &n, &err, 1, 3).0, Verdict::Steer(1));
    assert_eq!(run(&mut w1, &t, &n, &err, 1, 3).0, Verdict::Forward(0));
    assert_eq!(relaxed(&w0.counters().steered), 3);
}

#[test]
fn later_fragments_follow_a_steered_first_fragment_to_its_owner() {
    let t = table();
    let n = NeighbourTable::default();
    let cport = port_owned_by(CLIENT, 1, 2);
    let first = from_client()
        .ipv4(v4(CLIENT), v4(EXT))
        .ident(5)
        .fragment(0, true)
        .udp(cport, 53)
        .payload(&[1; 16])
        .build();
    let later = from_client()
        .ipv4(v4(CLIENT), v4(EXT))
        .ident(5)
        .fragment(24, false)
        .udp(cport, 53)
        .payload(&[2; 8])
        .build();
    let mut w0 = Worker::new(config(0, 2));
    let mut w1 = Worker::new(config(1, 2));
    assert_eq!(run(&mut w0, &t, &n, &first, 0, 1).0, Verdict::Steer(1));
    assert_eq!(run(&mut w0, &t, &n, &later, 0, 1).0, Verdict::Steer(1));
    assert_eq!(run(&mut w1, &t, &n, &first, 0, 1).0, Verdict::Forward(1));
    let (v, out) = run(&mut w1, &t, &n, &later, 0, 1);
    assert_eq!(v, Verdict::Forward(1));
    let want = to_port(1)
        .ipv4(v4(CLIENT), v4(BE1))
        .ttl(63)
        .ident(5)
        .fragment(24, false)
        .udp(cport, 5353)
        .payload(&[2; 8])
        .build();
    assert_eq!(out, want);
    assert_eq!(relaxed(&w1.counters().fragments_followed), 1);
}

#[test]
fn established_flows_keep_their_backend_across_table_changes() {
    let n = NeighbourTable::default();
    let t1 = table_with(1, vec![backend(BE1, 8080)], None);
    let mut w = Worker::new(config(0, 1));
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    assert_eq!(run(&mut w, &t1, &n, &s, 0, 1).0, Verdict::Forward(1));
    // BE1 stops being ready (still listed); BE2 is the only usable backend now.
    let mut not_ready = backend(BE1, 8080);
    not_ready.conditions = Conditions {
        ready: false,
        serving: false,
        terminating: true,
    };
    let t2 = table_with(2, vec![not_ready, backend(BE2, 8080)], Some(&t1));
    let ack = from_client()
        .ipv4(v4(CLIENT), v4(VIP))
        .tcp(40000, 80)
        .build();
    let (v, out) = run(&mut w, &t2, &n, &ack, 0, 2);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(
        out,
        to_port(1)
            .ipv4(v4(CLIENT), v4(BE1))
            .ttl(63)
            .tcp(40000, 8080)
            .build()
    );
    // A new flow goes to the usable backend.
    let other = syn(from_client(), CLIENT, VIP, 40001, 80).build();
    let (_, out) = run(&mut w, &t2, &n, &other, 0, 3);
    assert_eq!(
        out,
        syn(to_port(1), CLIENT, BE2, 40001, 8080).ttl(63).build()
    );
}

#[test]
fn tcp_drains_to_a_removed_backend_udp_forgets_it() {
    let n = NeighbourTable::default();
    let t1 = table_with(1, vec![backend(BE1, 8080)], None);
    let mut w = Worker::new(config(0, 1));
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    run(&mut w, &t1, &n, &s, 0, 1);
    let udp = |t: &str| {
        from_client()
            .ipv4(v4(CLIENT), v4(t))
            .udp(6000, 53)
            .payload(b"x")
            .build()
    };
    run(&mut w, &t1, &n, &udp(VIP), 0, 1);
    // Table 2: `web` loses BE1 for BE2; `dns` loses BE1:5353 for BE2:5353.
    let mut b = ServiceTable::builder().generation(2).workers(2);
    let web = b.add_service(spec(
        "default/web:http",
        L4Protocol::Tcp,
        vec![backend(BE2, 8080)],
    ));
    frontend(
        &mut b,
        web,
        VIP,
        80,
        L4Protocol::Tcp,
        FrontendKind::ClusterIp,
        vec![],
    );
    let dns = b.add_service(spec(
        "default/dns:53",
        L4Protocol::Udp,
        vec![backend(BE2, 5353)],
    ));
    frontend(
        &mut b,
        dns,
        VIP,
        53,
        L4Protocol::Udp,
        FrontendKind::ClusterIp,
        vec![],
    );
    let t2 = b.build_reusing(Some(&t1));
    let ack = from_client()
        .ipv4(v4(CLIENT), v4(VIP))
        .tcp(40000, 80)
        .build();
    let (_, out) = run(&mut w, &t2, &n, &ack, 0, 2);
    assert_eq!(
        out,
        to_port(1)
            .ipv4(v4(CLIENT), v4(BE1))
            .ttl(63)
            .tcp(40000, 8080)
            .build(),
        "TCP keeps draining to the removed backend"
    );
    let (_, out) = run(&mut w, &t2, &n, &udp(VIP), 0, 2);
    assert_eq!(
        out,
        to_port(1)
            .ipv4(v4(CLIENT), v4(BE2))
            .ttl(63)
            .udp(6000, 5353)
            .payload(b"x")
            .build(),
        "UDP forgets the removed backend and picks again"
    );
    let late = from_backend()
        .ipv4(v4(BE1), v4(CLIENT))
        .udp(5353, 6000)
        .build();
    assert_eq!(
        run(&mut w, &t2, &n, &late, 1, 3).0,
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn a_retransmitted_syn_whose_backend_never_answered_goes_elsewhere() {
    let n = NeighbourTable::default();
    let t = table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
    let mut w = Worker::new(config(0, 1));
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    let (_, first) = run(&mut w, &t, &n, &s, 0, 1);
    let first_dst = Ipv4Packet::new_checked(&first[14..]).unwrap().dst_addr();
    // Within a second: same backend.
    let (_, again) = run(&mut w, &t, &n, &s, 0, 500_000_000);
    assert_eq!(again, first);
    // After a second with no answer: the other backend.
    let (v, retry) = run(&mut w, &t, &n, &s, 0, 1_600_000_000);
    assert_eq!(v, Verdict::Forward(1));
    let retry_dst = Ipv4Packet::new_checked(&retry[14..]).unwrap().dst_addr();
    assert_ne!(retry_dst, first_dst);
    // Its reply is reverse-NATed; the flow now answers and is not re-steered again.
    let sa = from_backend()
        .ipv4(retry_dst, v4(CLIENT))
        .tcp(8080, 40000)
        .syn_ack()
        .build();
    assert_eq!(
        run(&mut w, &t, &n, &sa, 1, 1_700_000_000).0,
        Verdict::Forward(0)
    );
    let (_, later) = run(&mut w, &t, &n, &s, 0, 5_000_000_000);
    assert_eq!(
        Ipv4Packet::new_checked(&later[14..]).unwrap().dst_addr(),
        retry_dst
    );
}

#[test]
fn client_ip_affinity_holds_across_ports_and_workers() {
    let n = NeighbourTable::default();
    let t = table();
    let workers = 2;
    let mut ws: Vec<Worker> = (0..workers)
        .map(|i| Worker::new(config(i, workers)))
        .collect();
    for client in ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.9"] {
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..12u16 {
            let cport = 41000 + k * 7;
            let owner = owner_worker(ip(client), cport, workers);
            let (v, out) = run(
                &mut ws[owner],
                &t,
                &n,
                &syn(from_client(), client, AFFINITY, cport, 80).build(),
                0,
                1 + u64::from(k),
            );
            assert_eq!(v, Verdict::Forward(1));
            seen.insert(Ipv4Packet::new_checked(&out[14..]).unwrap().dst_addr());
        }
        assert_eq!(seen.len(), 1, "client {client} went to {seen:?}");
    }
}

#[test]
fn round_robin_cycles_and_random_stays_in_the_pool() {
    let n = NeighbourTable::default();
    for sched in [
        crate::table::Scheduler::RoundRobin,
        crate::table::Scheduler::Random,
    ] {
        let mut b = ServiceTable::builder().scheduler(sched);
        let id = b.add_service(spec(
            "rr",
            L4Protocol::Tcp,
            vec![backend(BE1, 80), backend(BE2, 80), backend(BE3, 80)],
        ));
        frontend(
            &mut b,
            id,
            VIP,
            80,
            L4Protocol::Tcp,
            FrontendKind::ClusterIp,
            vec![],
        );
        let t = b.build();
        let mut w = Worker::new(config(0, 1));
        let mut got = Vec::new();
        for p in 0..30 {
            let (_, out) = run(
                &mut w,
                &t,
                &n,
                &syn(from_client(), CLIENT, VIP, 40000 + p, 80).build(),
                0,
                1,
            );
            got.push(Ipv4Packet::new_checked(&out[14..]).unwrap().dst_addr());
        }
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 3, "{sched:?}: {got:?}");
        if sched == crate::table::Scheduler::RoundRobin {
            assert!(got
                .windows(3)
                .all(|w| w[0] != w[1] && w[1] != w[2] && w[0] != w[2]));
        }
    }
}

#[test]
fn unresolved_next_hops_get_one_rate_limited_arp_request_or_solicitation() {
    let t = table();
    let mut cfg = config(0, 1);
    cfg.assume_resolved = None;
    let mut w = Worker::new(cfg);
    let empty = NeighbourTable::default();
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    let (v, out) = run(&mut w, &t, &empty, &s, 0, 1_000);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(
        out,
        PacketBuilder::new()
            .arp_request(MAC1, v4("10.0.0.254"), v4(BE1))
            .build()
    );
    let s2 = syn(from_client(), CLIENT, VIP, 40001, 80).build();
    assert_eq!(
        run(&mut w, &t, &empty, &s2, 0, 2_000).0,
        Verdict::Drop(DropReason::NeighbourUnresolved)
    );
    let c = w.counters();
    assert_eq!(c.drops(DropReason::NeighbourUnresolved), 2);
    assert_eq!(relaxed(&c.neighbour_requests), 1);
    // After the retry interval, another request.
    let s3 = syn(from_client(), CLIENT, VIP, 40002, 80).build();
    assert_eq!(
        run(
            &mut w,
            &t,
            &empty,
            &s3,
            0,
            2_000 + worker::NEIGHBOUR_RETRY_NS
        )
        .0,
        Verdict::Forward(1)
    );
    // IPv6: a neighbour solicitation to the solicited-node group.
    let s6 = syn(from_client(), CLIENT6, VIP6, 40000, 80).build();
    let (v, out) = run(&mut w, &t, &empty, &s6, 0, 3_000);
    assert_eq!(v, Verdict::Forward(1));
    let group = v6("ff02::1:ff00:1");
    assert_eq!(
        out,
        PacketBuilder::new()
            .eth(MAC1, EthernetAddress::ipv6_multicast(group))
            .ipv6(v6("fd00:10::fe"), group)
            .ttl(255)
            .neighbor_solicit(v6(BE6), Some(MAC1))
            .build()
    );
    // Once known, frames go straight to the neighbour.
    let known = NeighbourTable::new([(ip(BE1), [0x0a; 6])]);
    let s4 = syn(from_client(), CLIENT, VIP, 40003, 80).build();
    let (v, out) = run(&mut w, &t, &known, &s4, 0, 4_000);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(
        out,
        syn(
            PacketBuilder::new().eth(MAC1, EthernetAddress([0x0a; 6])),
            CLIENT,
            BE1,
            40003,
            8080
        )
        .ttl(63)
        .build()
    );
}

#[test]
fn arp_and_nd_senders_on_connected_prefixes_are_learned() {
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    run(
        &mut w,
        &t,
        &n,
        &PacketBuilder::new()
            .arp_request(CLIENT_MAC, v4(CLIENT), v4(VIP))
            .build(),
        0,
        1,
    );
    // Not on port 0's prefix: not learned.
    run(
        &mut w,
        &t,
        &n,
        &PacketBuilder::new()
            .arp_request(CLIENT_MAC, v4("203.0.113.1"), v4(VIP))
            .build(),
        0,
        1,
    );
    let na = PacketBuilder::new()
        .eth(EthernetAddress([0x0b; 6]), MAC1)
        .ipv6(v6("fd00:10::7"), v6("fd00:10::fe"))
        .ttl(255)
        .neighbor_advert(
            NeighborFlags::SOLICITED,
            v6("fd00:10::7"),
            Some(EthernetAddress([0x0b; 6])),
        )
        .build();
    assert_eq!(
        run(&mut w, &t, &n, &na, 1, 1).0,
        Verdict::Drop(DropReason::NdAdvertConsumed)
    );
    let learned: Vec<_> = w.learned().drain().collect();
    assert_eq!(
        learned,
        vec![(ip(CLIENT), CLIENT_MAC.0), (ip("fd00:10::7"), [0x0b; 6])]
    );
}

/// Each new flow is counted in the row of the backend its flow was sent to: the
/// scheduler's pick is counted by its index in the usable list, which skips a backend
/// that is not ready, so a misaligned index would credit a neighbour.
#[test]
fn new_flows_are_counted_in_the_backend_they_were_sent_to() {
    let not_ready = Conditions {
        ready: false,
        serving: false,
        terminating: false,
    };
    let mut web = vec![backend(BE1, 8080), backend(BE2, 8080), backend(BE3, 8080)];
    web[1].conditions = not_ready;
    web.push(backend("10.0.0.4", 8080));
    let t = table_with(1, web, None);
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    for port in 40_000..40_060 {
        let frame = syn(from_client(), CLIENT, VIP, port, 80).build();
        assert_eq!(run(&mut w, &t, &n, &frame, 0, 1).0, Verdict::Forward(1));
    }
    let web = t.service(ServiceId(0)).unwrap();
    let mut sent = std::collections::HashMap::new();
    for (_, f) in w.conntrack().iter() {
        *sent.entry((f.backend(), f.backend_port())).or_insert(0u64) += 1;
    }
    assert!(sent.len() >= 2, "the flows spread: {sent:?}");
    for be in [BE1, BE2, BE3, "10.0.0.4"] {
        let counted = web.backend_counters(ip(be), 8080).unwrap().totals();
        let flows = sent.get(&(ip(be), 8080)).copied().unwrap_or(0);
        assert_eq!((counted.new_flows, counted.packets), (flows, flows), "{be}");
    }
    assert_eq!(sent.get(&(ip(BE2), 8080)), None, "not ready: no flow");
}

#[test]
fn service_and_backend_counters_survive_a_rebuild() {
    let n = NeighbourTable::default();
    let t1 = table();
    let mut w = Worker::new(config(1, 2));
    let cport = port_owned_by(CLIENT, 1, 2);
    let s = syn(from_client(), CLIENT, VIP, cport, 80).build();
    run(&mut w, &t1, &n, &s, 0, 1);
    let sa = from_backend()
        .ipv4(v4(BE1), v4(CLIENT))
        .tcp(8080, cport)
        .syn_ack()
        .build();
    run(&mut w, &t1, &n, &sa, 1, 2);
    let web = t1
        .services()
        .iter()
        .find(|s| s.name() == "default/web:http")
        .unwrap();
    let totals = web.counters().totals();
    assert_eq!((totals.packets, totals.new_flows, totals.bytes), (2, 1, 80));
    let t2 = table_with(2, vec![backend(BE1, 8080), backend(BE2, 8080)], Some(&t1));
    let web2 = t2
        .services()
        .iter()
        .find(|s| s.name() == "default/web:http")
        .unwrap();
    assert_eq!(web2.counters().totals(), totals);
    let id2 = t2
        .frontend(&FrontendKey {
            addr: ip(VIP),
            port: 80,
            protocol: L4Protocol::Tcp,
        })
        .unwrap()
        .service;
    assert_eq!(
        t2.backend_counters(id2, ip(BE1), 8080)
            .unwrap()
            .totals()
            .packets,
        2
    );
    assert_eq!(
        t2.backend_counters(id2, ip(BE2), 8080)
            .unwrap()
            .totals()
            .packets,
        0
    );
    let ack = from_client()
        .ipv4(v4(CLIENT), v4(VIP))
        .tcp(cport, 80)
        .build();
    run(&mut w, &t2, &n, &ack, 0, 3);
    assert_eq!(
        web.counters().totals().packets,
        3,
        "the same counters object"
    );
}

/// The backend address and port a forwarded frame was sent to.
fn dnat_target(frame: &[u8]) -> (IpAddr, u16) {
    let ip4 = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let tcp = TcpPacket::new_checked(ip4.payload()).unwrap();
    (IpAddr::V4(ip4.dst_addr()), tcp.dst_port())
}

#[test]
fn a_client_port_reused_through_another_frontend_never_shares_a_reply_key() {
    // One backend: flow A (client:40000 → VIP:80) is live; flow B from the same client
    // port to another frontend of the same backend would share A's reply key.
    let t = table_with(1, vec![backend(BE1, 8080)], None);
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let a = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    assert_eq!(run(&mut w, &t, &n, &a, 0, 1).0, Verdict::Forward(1));
    let b = syn(from_client(), CLIENT, LB, 40000, 443).build();
    assert_eq!(
        run(&mut w, &t, &n, &b, 0, 2).0,
        Verdict::Drop(DropReason::NatClash)
    );
    // The live flow still gets its replies from the frontend it used.
    let reply = from_backend()
        .ip(ip(BE1), ip(CLIENT))
        .tcp(8080, 40000)
        .syn_ack()
        .build();
    let (v, out) = run(&mut w, &t, &n, &reply, 1, 3);
    assert_eq!(v, Verdict::Forward(0));
    let back = Ipv4Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(IpAddr::V4(back.src_addr()), ip(VIP));

    // Once A has closed (client RST), B takes the reply key over.
    let rst = from_client()
        .ip(ip(CLIENT), ip(VIP))
        .tcp(40000, 80)
        .rst()
        .build();
    run(&mut w, &t, &n, &rst, 0, 4);
    assert_eq!(run(&mut w, &t, &n, &b, 0, 5).0, Verdict::Forward(1));
    let (v, out) = run(&mut w, &t, &n, &reply, 1, 6);
    assert_eq!(v, Verdict::Forward(0));
    let back = Ipv4Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(IpAddr::V4(back.src_addr()), ip(LB));
    assert_eq!(
        TcpPacket::new_checked(back.payload()).unwrap().src_port(),
        443
    );
}

#[test]
fn a_reply_key_clash_with_a_live_flow_moves_the_new_flow_to_another_backend() {
    let t = table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    for port in 40000..40040 {
        let a = syn(from_client(), CLIENT, VIP, port, 80).build();
        let (va, out_a) = run(&mut w, &t, &n, &a, 0, 1);
        let b = syn(from_client(), CLIENT, LB, port, 443).build();
        let (vb, out_b) = run(&mut w, &t, &n, &b, 0, 2);
        assert_eq!((va, vb), (Verdict::Forward(1), Verdict::Forward(1)));
        // Whatever Maglev picked for B, it never lands on A's backend.
        assert_ne!(
            dnat_target(&out_a),
            dnat_target(&out_b),
            "client port {port}"
        );
    }
}

#[test]
fn new_clients_are_gleaned_and_their_replies_need_no_arp() {
    let t = table();
    let mut cfg = config(0, 1);
    cfg.assume_resolved = None;
    let mut w = Worker::new(cfg);
    // The backend is known; the client is not in the published snapshot.
    let n = NeighbourTable::new([(ip(BE1), HOP.0)]);
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    assert_eq!(run(&mut w, &t, &n, &s, 0, 1).0, Verdict::Forward(1));
    let learned: Vec<_> = w.learned().drain().collect();
    assert_eq!(learned, vec![(ip(CLIENT), CLIENT_MAC.0)]);
    // Before the control thread publishes it, the SYN-ACK already finds the client.
    let reply = from_backend()
        .ip(ip(BE1), ip(CLIENT))
        .tcp(8080, 40000)
        .syn_ack()
        .build();
    let (v, out) = run(&mut w, &t, &n, &reply, 1, 2);
    assert_eq!(v, Verdict::Forward(0));
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!(eth.dst_addr(), CLIENT_MAC);
    assert_eq!(w.counters().drops(DropReason::NeighbourUnresolved), 0);
}

#[test]
fn worker_zero_probes_the_next_hops_of_unresolved_backends() {
    use crate::wire::{ArpPacket, ArpRepr};
    let t = table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
    let known = NeighbourTable::new([(ip(BE1), HOP.0)]);
    let ctx = Context {
        table: &t,
        neighbours: &known,
    };
    let probe_all = |w: &mut Worker, now: u64| {
        let mut targets = Vec::new();
        let mut ns = 0;
        let mut buf = vec![0u8; 2048];
        let mut len = 0;
        while let Some(port) = w.originate(&mut buf, &mut len, now, &ctx) {
            assert_eq!(port, 1, "backends sit behind port 1");
            let eth = EthernetFrame::new_checked(&buf[..len]).unwrap();
            match eth.ethertype() {
                EtherType::Arp => {
                    let arp = ArpPacket::new_checked(eth.payload()).unwrap();
                    targets.push(IpAddr::V4(ArpRepr::parse(&arp).target_ip));
                }
                EtherType::Ipv6 => ns += 1,
                other => panic!("unexpected probe {other:?}"),
            }
        }
        targets.sort();
        (targets, ns)
    };
    let mut cfg = config(0, 2);
    cfg.assume_resolved = None;
    let mut w0 = Worker::new(cfg.clone());
    // BE2 and BE3 are unknown (BE1 is resolved), and the IPv6 backend gets an NS.
    let (targets, ns) = probe_all(&mut w0, 1_000);
    assert_eq!(targets, vec![ip(BE2), ip(BE3)]);
    assert_eq!(ns, 1);
    assert_eq!(relaxed(&w0.counters().neighbour_requests), 3);
    // Within the retry interval nothing is asked again; after it, everything is.
    assert_eq!(probe_all(&mut w0, 2_000), (vec![], 0));
    let later = 1_000 + worker::NEIGHBOUR_RETRY_NS;
    assert_eq!(probe_all(&mut w0, later).0, vec![ip(BE2), ip(BE3)]);
    // Only worker 0 probes; with every next hop assumed resolved, nobody does.
    cfg.index = 1;
    assert_eq!(probe_all(&mut Worker::new(cfg), 1_000), (vec![], 0));
    assert_eq!(
        probe_all(&mut Worker::new(config(0, 1)), 1_000),
        (vec![], 0)
    );
}

#[test]
fn a_syn_reusing_a_closed_flows_port_is_a_new_flow_on_current_backends() {
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let one = table_with(1, vec![backend(BE1, 8080)], None);
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    let (_, out) = run(&mut w, &one, &n, &s, 0, 1);
    assert_eq!(dnat_target(&out), (ip(BE1), 8080));
    // BE1 leaves while the connection is open: it keeps draining there.
    let two = table_with(2, vec![backend(BE2, 8080)], Some(&one));
    let data = from_client()
        .ip(ip(CLIENT), ip(VIP))
        .tcp(40000, 80)
        .ack(1)
        .payload(b"GET /")
        .build();
    let (_, out) = run(&mut w, &two, &n, &data, 0, 2);
    let ip4 = Ipv4Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(IpAddr::V4(ip4.dst_addr()), ip(BE1));
    // The client resets it and later reuses the port: the new SYN is a new flow.
    let rst = from_client()
        .ip(ip(CLIENT), ip(VIP))
        .tcp(40000, 80)
        .rst()
        .build();
    run(&mut w, &two, &n, &rst, 0, 3);
    let (v, out) = run(&mut w, &two, &n, &s, 0, 4);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(dnat_target(&out), (ip(BE2), 8080));
}

#[test]
fn a_full_conntrack_table_still_forwards_statelessly() {
    let t = table();
    let n = NeighbourTable::default();
    let mut cfg = config(0, 1);
    cfg.conntrack_capacity = 0;
    let mut w = Worker::new(cfg);
    let (v, out) = run(
        &mut w,
        &t,
        &n,
        &syn(from_client(), CLIENT, VIP, 40000, 80).build(),
        0,
        1,
    );
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(
        out,
        syn(to_port(1), CLIENT, BE1, 40000, 8080).ttl(63).build()
    );
    assert_eq!(relaxed(&w.counters().stateless_flows), 1);
}

#[test]
fn malformed_frames_are_dropped_by_reason() {
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let mut bad_sum = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    bad_sum[14 + 10] ^= 0xff;
    assert_eq!(
        run(&mut w, &t, &n, &bad_sum, 0, 1).0,
        Verdict::Drop(DropReason::Ipv4BadChecksum)
    );
    assert_eq!(
        run(&mut w, &t, &n, &[0u8; 10], 0, 1).0,
        Verdict::Drop(DropReason::EthernetTruncated)
    );
    let s = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    assert_eq!(
        run(&mut w, &t, &n, &s[..14 + 20 + 10], 0, 1).0,
        Verdict::Drop(DropReason::Ipv4Malformed)
    );
    let short_tcp = from_client()
        .ipv4(v4(CLIENT), v4(VIP))
        .raw(IpProtocol::Tcp)
        .payload(&[0; 6])
        .build();
    assert_eq!(
        run(&mut w, &t, &n, &short_tcp, 0, 1).0,
        Verdict::Drop(DropReason::L4Malformed)
    );
    let mut qinq = syn(from_client().vlan(1), CLIENT, VIP, 40000, 80).build();
    qinq[16..18].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(
        run(&mut w, &t, &n, &qinq, 0, 1).0,
        Verdict::Drop(DropReason::UnsupportedVlan)
    );
    let mut lldp = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(
        run(&mut w, &t, &n, &lldp, 0, 1).0,
        Verdict::Drop(DropReason::UnsupportedEthertype)
    );
    let c = w.counters();
    assert_eq!(c.total_drops(), 6);
    assert_eq!(relaxed(&c.frames), 6);
}

// ------------------------------------------------------------------ properties

/// Whether `frame` is an Ethernet frame carrying a well-formed ARP, IPv4 or IPv6 packet.
fn parses(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    match eth.ethertype() {
        EtherType::Arp => crate::wire::ArpPacket::new_checked(eth.payload()).is_ok(),
        EtherType::Ipv4 => {
            Ipv4Packet::new_checked(eth.payload()).is_ok_and(|p| p.verify_checksum())
        }
        EtherType::Ipv6 => {
            Ipv6Packet::new_checked(eth.payload()).is_ok_and(|p| p.transport().is_ok())
        }
        _ => false,
    }
}

/// Checks every checksum of an Ethernet/IP frame with a TCP, UDP or SCTP payload.
fn checksums_verify(frame: &[u8]) -> bool {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let (pseudo, proto, seg) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
            if !p.verify_checksum() {
                return false;
            }
            (
                p.pseudo_header(),
                u8::from(p.protocol()),
                p.payload().to_vec(),
            )
        }
        EtherType::Ipv6 => {
            let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let t = p.transport().unwrap();
            (
                p.pseudo_header(),
                u8::from(t.protocol),
                p.payload()[t.offset - 40..].to_vec(),
            )
        }
        _ => return false,
    };
    match proto {
        6 => TcpPacket::new_checked(&seg[..])
            .unwrap()
            .verify_checksum(&pseudo),
        17 => UdpPacket::new_checked(&seg[..])
            .unwrap()
            .verify_checksum(&pseudo),
        132 => SctpPacket::new_checked(&seg[..]).unwrap().verify_checksum(),
        _ => false,
    }
}

fn l4_frame(b: PacketBuilder, proto: u8, sport: u16, dport: u16, payload: &[u8]) -> PacketBuilder {
    let b = b.payload(payload);
    match proto {
        6 => b.tcp(sport, dport).syn(),
        17 => b.udp(sport, dport),
        _ => b.sctp(sport, dport).sctp_init(7),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any byte string: no panic, and nothing unparseable is forwarded or answered.
    #[test]
    fn arbitrary_bytes_never_panic_nor_forward_garbage(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        rx in 0u16..3,
    ) {
        let t = table();
        let n = NeighbourTable::default();
        let mut w = Worker::new(config(0, 1));
        let (v, _) = run(&mut w, &t, &n, &bytes, rx, 1);
        if matches!(v, Verdict::Forward(_) | Verdict::Reply) {
            prop_assert!(parses(&bytes), "{v:?} for {bytes:02x?}");
        }
    }

    /// Valid frames with bytes changed or cut: no panic, nothing unparseable forwarded,
    /// and the length to transmit stays within the buffer.
    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
        cut_it in any::<bool>(),
    ) {
        let t = table();
        let n = NeighbourTable::default();
        let base = match which {
            0 => syn(from_client(), CLIENT, VIP, 40000, 80).build(),
            1 => from_client().ipv6(v6(CLIENT6), v6(VIP6)).udp(5, 53).build(),
            2 => PacketBuilder::new().arp_request(CLIENT_MAC, v4(CLIENT), v4(VIP)).build(),
            3 => from_backend().ipv4(v4(ROUTER), v4(CLIENT)).icmp_too_big(1400)
                .payload(&PacketBuilder::quote(&syn(to_port(1), CLIENT, BE1, 40000, 8080).build())).build(),
            4 => from_client().ipv6(v6(CLIENT6), v6(VIP6)).ident(3).fragment(0, true).sctp(1, 3868).build(),
            _ => from_client().ipv4(v4(CLIENT), v4(REJECT)).udp(1, 53).payload(&[0; 40]).build(),
        };
        let mut f = base.clone();
        for (at, x) in flips {
            let i = at % f.len();
            f[i] ^= x;
        }
        if cut_it {
            f.truncate(cut % (f.len() + 1));
        }
        let mut w = Worker::new(config(0, 1));
        // Warm state so replies and ICMP errors find flows.
        run(&mut w, &t, &n, &syn(from_client(), CLIENT, VIP, 40000, 80).build(), 0, 1);
        let mut buf = f.clone();
        buf.resize(f.len() + 64, 0);
        let mut len = f.len();
        let ctx = Context { table: &t, neighbours: &n };
        let v = w.process(&mut buf, &mut len, 0, 2, &ctx);
        prop_assert!(len <= buf.len());
        if matches!(v, Verdict::Forward(_) | Verdict::Reply) {
            prop_assert!(parses(&f), "{v:?} for {f:02x?}");
            prop_assert!(parses(&buf[..len]), "{v:?} emitted {:02x?}", &buf[..len]);
        }
    }

    /// Every translated frame's checksums verify, and reverse NAT of the backend's reply
    /// restores the frontend's address and port: reverse(NAT(p)) swaps back to p.
    #[test]
    fn nat_checksums_verify_and_reverse_restores(
        six in any::<bool>(),
        proto in prop_oneof![Just(6u8), Just(17u8), Just(132u8)],
        client_host in 1u8..250,
        cport in 1024u16..65535,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let t = table();
        let n = NeighbourTable::default();
        let mut w = Worker::new(config(0, 1));
        let (client, vip, dport) = if six {
            (IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, u16::from(client_host))), ip(VIP6), match proto { 6 => 80, 17 => 53, _ => 3868 })
        } else {
            (IpAddr::V4(Ipv4Addr::new(198, 18, 0, client_host)), ip(VIP), match proto { 6 => 80, 17 => 53, _ => 3868 })
        };
        let fwd = l4_frame(from_client().ip(client, vip), proto, cport, dport, &payload).build();
        let (v, out) = run(&mut w, &t, &n, &fwd, 0, 1);
        prop_assert_eq!(v, Verdict::Forward(1));
        prop_assert!(checksums_verify(&out));
        // The backend answers: swap the translated frame's addresses and ports.
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        let (be, bport) = match eth.ethertype() {
            EtherType::Ipv4 => {
                let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
                (IpAddr::V4(p.dst_addr()), crate::wire::transport_ports(p.payload()).unwrap().1)
            }
            _ => {
                let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
                (IpAddr::V6(p.dst_addr()), crate::wire::transport_ports(p.payload()).unwrap().1)
            }
        };
        let reply = l4_frame(from_backend().ip(be, client), proto, bport, cport, &payload).build();
        let (v, back) = run(&mut w, &t, &n, &reply, 1, 2);
        prop_assert_eq!(v, Verdict::Forward(0));
        prop_assert!(checksums_verify(&back));
        let want = l4_frame(to_port(0).ip(vip, client).ttl(63), proto, dport, cport, &payload).build();
        prop_assert_eq!(back, want);
    }
}

// ------------------------------------------------------------------ fast path

fn fast_frames(w: &Worker) -> u64 {
    relaxed(&w.counters().fast_path)
}

/// A translated UDP datagram whose checksum computes to zero leaves with 0xffff (RFC 768:
/// zero would mean "no checksum"), from the full pipeline and from the fast path alike.
#[test]
fn a_translated_udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    let out = |payload: &[u8]| {
        to_port(1)
            .ipv4(v4(CLIENT), v4(BE1))
            .ttl(63)
            .udp(5002, 5353)
            .payload(payload)
            .build()
    };
    // The payload's last word is chosen so that the translated datagram sums to 0xffff:
    // it is the checksum the datagram has with that word zero.
    let check_at = 14 + 20 + 6;
    let mut payload = b"query-\0\0".to_vec();
    let probe = out(&payload);
    let last = payload.len() - 2;
    payload[last..].copy_from_slice(&probe[check_at..check_at + 2]);
    let want = out(&payload);
    assert_eq!(want[check_at..check_at + 2], [0xff, 0xff], "fixture");
    let input = from_client()
        .ipv4(v4(CLIENT), v4(VIP))
        .udp(5002, 53)
        .payload(&payload)
        .build();
    let (t, n) = (table(), NeighbourTable::default());
    let mut w = Worker::new(config(0, 1));
    for (now, fast) in [(1, 0), (2, 1)] {
        assert_eq!(
            run(&mut w, &t, &n, &input, 0, now),
            (Verdict::Forward(1), want.clone())
        );
        assert_eq!(fast_frames(&w), fast, "frame {now}");
    }
}

/// Opens the TCP flow CLIENT:40000 → VIP:80 (its SYN at time 1, the backend's SYN-ACK at
/// 2, both through the full pipeline); returns the backend it was sent to.
fn open_web_flow(w: &mut Worker, t: &ServiceTable, n: &NeighbourTable) -> (IpAddr, u16) {
    let (v, out) = run(
        w,
        t,
        n,
        &syn(from_client(), CLIENT, VIP, 40000, 80).build(),
        0,
        1,
    );
    assert_eq!(v, Verdict::Forward(1));
    let (be, bport) = dnat_target(&out);
    let synack = from_backend()
        .ip(be, ip(CLIENT))
        .tcp(bport, 40000)
        .syn_ack()
        .build();
    assert_eq!(run(w, t, n, &synack, 1, 2).0, Verdict::Forward(0));
    (be, bport)
}

#[test]
fn established_flows_take_the_fast_path_until_their_state_changes() {
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let (client, vip) = (ip(CLIENT), ip(VIP));
    // The SYN and the SYN-ACK take the full pipeline (a SYN may open a flow or retry a
    // backend); each leaves its direction's next hop in the flow.
    let (be, bport) = open_web_flow(&mut w, &t, &n);
    assert_eq!(fast_frames(&w), 0);

    // Then both directions are fast, and translated exactly as the full pipeline does.
    let ack = |p: &[u8]| from_client().ip(client, vip).tcp(40000, 80).payload(p);
    let data = |p: &[u8]| from_backend().ip(be, client).tcp(bport, 40000).payload(p);
    let fwd_out = |p: &[u8]| {
        to_port(1)
            .ip(client, be)
            .ttl(63)
            .tcp(40000, bport)
            .payload(p)
    };
    let rev_out = |p: &[u8]| to_port(0).ip(vip, client).ttl(63).tcp(80, 40000).payload(p);
    assert_eq!(
        run(&mut w, &t, &n, &ack(b"GET /").build(), 0, 3),
        (Verdict::Forward(1), fwd_out(b"GET /").build())
    );
    assert_eq!(fast_frames(&w), 1);
    assert_eq!(
        run(&mut w, &t, &n, &data(b"200").build(), 1, 4),
        (Verdict::Forward(0), rev_out(b"200").build())
    );
    assert_eq!(fast_frames(&w), 2);
    let web = t.service(ServiceId(0)).unwrap();
    let packets = |s: &Service| {
        let b = s.backend_counters(be, bport).unwrap().totals().packets;
        (s.counters().totals().packets, b)
    };
    // The flow holds the fast frames' counts; a flush (or the slow job's sweep, or the
    // flow's next check against a new table) adds them to the rows.
    assert_eq!(
        packets(web),
        (2, 2),
        "the full pipeline's frames count at once"
    );
    let ctx = Context {
        table: &t,
        neighbours: &n,
    };
    w.flush_counts(&ctx);
    assert_eq!(packets(web), (4, 4), "fast frames are counted");
    assert_eq!(
        run(&mut w, &t, &n, &ack(b"h").build(), 0, 4).0,
        Verdict::Forward(1)
    );
    assert_eq!(fast_frames(&w), 3);
    assert_eq!(packets(web), (4, 4));

    // A new table generation: one packet per direction revalidates the flow on the full
    // pipeline, then the flow is fast again.
    let t2 = table_with(2, vec![backend(BE1, 8080)], Some(&t));
    for (expect_fast, frame, rx) in [(3, ack(b"a"), 0), (3, data(b"b"), 1), (4, ack(b"c"), 0)] {
        assert!(matches!(
            run(&mut w, &t2, &n, &frame.build(), rx, 5).0,
            Verdict::Forward(_)
        ));
        assert_eq!(fast_frames(&w), expect_fast);
    }
    // The packet the flow held under `t` went to the rows when it moved to `t2`, whose
    // Service and backend keep their counters; the last fast one is held.
    let web2 = t2.service(ServiceId(0)).unwrap();
    assert_eq!(packets(web2), (4 + 1 + 2, 4 + 1 + 2));
    // A new neighbour snapshot likewise.
    let n2 = n.clone();
    for expect_fast in [4, 5] {
        assert!(matches!(
            run(&mut w, &t2, &n2, &ack(b"d").build(), 0, 6).0,
            Verdict::Forward(1)
        ));
        assert_eq!(fast_frames(&w), expect_fast);
    }
    // What the fast path leaves to the full pipeline: TTL running out, a bad IPv4 header
    // checksum, a tagged frame, IP options.
    let expiring = ack(b"e").ttl(1).build();
    assert_eq!(run(&mut w, &t2, &n2, &expiring, 0, 7).0, Verdict::Reply);
    let mut corrupt = ack(b"f").build();
    corrupt[24] ^= 0xff;
    assert_eq!(
        run(&mut w, &t2, &n2, &corrupt, 0, 7).0,
        Verdict::Drop(DropReason::Ipv4BadChecksum)
    );
    let tagged = from_client().vlan(7).ip(client, vip).tcp(40000, 80).build();
    assert_eq!(run(&mut w, &t2, &n2, &tagged, 0, 7).0, Verdict::Forward(1));
    let options = ack(b"g").ipv4_options(&[1, 1, 1, 1]).build();
    assert_eq!(run(&mut w, &t2, &n2, &options, 0, 7).0, Verdict::Forward(1));
    assert_eq!(fast_frames(&w), 5);
    // A FIN is fast; a bare SYN on the closed flow reopens it on the full pipeline.
    assert_eq!(
        run(&mut w, &t2, &n2, &ack(b"").fin().build(), 0, 8).0,
        Verdict::Forward(1)
    );
    assert_eq!(fast_frames(&w), 6);
    let again = syn(from_client(), CLIENT, VIP, 40000, 80).build();
    assert_eq!(run(&mut w, &t2, &n2, &again, 0, 9).0, Verdict::Forward(1));
    assert_eq!(fast_frames(&w), 6);
}

#[test]
fn counts_a_flow_holds_follow_its_service_but_not_a_backend_that_left() {
    let n = NeighbourTable::default();
    let t = table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
    let mut w = Worker::new(config(0, 1));
    let client = ip(CLIENT);
    let (be, bport) = open_web_flow(&mut w, &t, &n);
    let ack = from_client().ip(client, ip(VIP)).tcp(40000, 80).build();
    for now in 3..6 {
        assert_eq!(run(&mut w, &t, &n, &ack, 0, now).0, Verdict::Forward(1));
    }
    assert_eq!(fast_frames(&w), 3);
    let web = |t: &ServiceTable| t.service(ServiceId(0)).unwrap().counters().totals().packets;
    assert_eq!(web(&t), 2, "the fast frames are held by the flow");

    // The flow's backend leaves; the TCP flow drains. Its next packet takes it to the new
    // table: the held packets go to the Service (same counters), not to any backend.
    let other = if be == ip(BE1) { BE2 } else { BE1 };
    let t2 = table_with(2, vec![backend(other, 8080)], Some(&t));
    assert_eq!(run(&mut w, &t2, &n, &ack, 0, 6).0, Verdict::Forward(1));
    assert_eq!(web(&t2), 2 + 3 + 1);
    let svc2 = t2.service(ServiceId(0)).unwrap();
    assert!(svc2.backend_counters(be, bport).is_none());
    assert_eq!(
        svc2.backend_counters(ip(other), 8080)
            .unwrap()
            .totals()
            .packets,
        0
    );
    let old = t
        .service(ServiceId(0))
        .unwrap()
        .backend_counters(be, bport)
        .unwrap();
    assert_eq!(
        old.totals().packets,
        2,
        "a backend that left gets no late counts"
    );
}

#[test]
fn the_slow_job_hands_flows_counts_over_and_mirrors_conntrack_figures() {
    let t = table();
    let n = NeighbourTable::default();
    let ctx = Context {
        table: &t,
        neighbours: &n,
    };
    let mut w = Worker::new(config(0, 1));
    open_web_flow(&mut w, &t, &n);
    let ack = from_client().ip(ip(CLIENT), ip(VIP)).tcp(40000, 80).build();
    for now in 3..8 {
        assert_eq!(run(&mut w, &t, &n, &ack, 0, now).0, Verdict::Forward(1));
    }
    assert_eq!(fast_frames(&w), 5);
    let web = t.service(ServiceId(0)).unwrap();
    let packets = || web.counters().totals().packets;
    assert_eq!(packets(), 2);
    // One sweep of the conntrack (slow jobs examine a slice each): the flow's five
    // packets reach the rows.
    let sweep = |w: &mut Worker, now: u64| {
        let jobs = w
            .conntrack()
            .capacity()
            .div_ceil(super::worker::EXPIRE_BUDGET);
        for _ in 0..jobs {
            w.slow_job(now, &ctx);
        }
    };
    sweep(&mut w, 8);
    assert_eq!(packets(), 7);
    assert_eq!(relaxed(&w.counters().conntrack_entries), 1);
    // Days later the flow has expired; the next sweep removes it and says so.
    for now in 9..12 {
        assert_eq!(run(&mut w, &t, &n, &ack, 0, now).0, Verdict::Forward(1));
    }
    sweep(&mut w, 86_400 * 1_000_000_000 * 8);
    assert_eq!(
        packets(),
        10,
        "an expiring flow's held packets are counted first"
    );
    let c = w.counters();
    assert_eq!(relaxed(&c.conntrack_entries), 0);
    assert_eq!(relaxed(&c.conntrack_expired), 1);
    assert_eq!(relaxed(&c.conntrack_evicted), 0);
    assert_eq!(relaxed(&c.flow_counts_dropped), 0);
}

/// A worker that resolves next hops from the neighbour snapshot (nothing assumed), a
/// client's SYN to the VIP and its ACK, for the neighbour-cache tests.
fn resolving_worker_and_flow() -> (Worker, Vec<u8>, Vec<u8>) {
    let w = Worker::new(WorkerConfig {
        assume_resolved: None,
        ..config(0, 1)
    });
    let s = syn(from_client(), CLIENT, VIP, 40001, 80).build();
    let ack = from_client().ip(ip(CLIENT), ip(VIP)).tcp(40001, 80).build();
    (w, s, ack)
}

/// That ACK as translated to BE1 and sent to `mac`.
fn ack_to_backend_at(mac: MacAddr) -> Vec<u8> {
    PacketBuilder::new()
        .eth(MAC1, EthernetAddress(mac))
        .ip(ip(CLIENT), ip(BE1))
        .ttl(63)
        .tcp(40001, 8080)
        .build()
}

#[test]
fn the_fast_path_follows_a_changed_neighbour_mac() {
    const OLD: MacAddr = [0x02, 0, 0, 0, 0xbe, 0x01];
    const NEW: MacAddr = [0x02, 0, 0, 0, 0xbe, 0x02];
    let t = table();
    let (mut w, s, ack) = resolving_worker_and_flow();
    let hops = |be: MacAddr| NeighbourTable::new([(ip(BE1), be), (ip(CLIENT), CLIENT_MAC.0)]);
    let (n1, n2) = (hops(OLD), hops(NEW));
    let want = ack_to_backend_at;
    run(&mut w, &t, &n1, &s, 0, 1);
    assert_eq!(run(&mut w, &t, &n1, &ack, 0, 2).1, want(OLD));
    assert_eq!(fast_frames(&w), 1);
    // The backend moved to another MAC: the cached next hop is not used.
    assert_eq!(run(&mut w, &t, &n2, &ack, 0, 3).1, want(NEW));
    assert_eq!(run(&mut w, &t, &n2, &ack, 0, 4).1, want(NEW));
    assert_eq!(fast_frames(&w), 2);
}

/// A snapshot that only learns new neighbours keeps the flows' cached next hops (the
/// fast path goes on); one that changes or forgets an entry sends each flow's next
/// packet through the full pipeline, which finds the new MAC or solicits it.
#[test]
fn the_fast_path_outlives_snapshots_that_only_add_neighbours() {
    const OTHER: MacAddr = [0x02, 0, 0, 0, 0xbe, 0x02];
    let t = table();
    let (mut w, s, ack) = resolving_worker_and_flow();
    let n1 = NeighbourTable::new([(ip(BE1), HOP.0), (ip(CLIENT), CLIENT_MAC.0)]);
    let want = ack_to_backend_at;
    run(&mut w, &t, &n1, &s, 0, 1);
    assert_eq!(run(&mut w, &t, &n1, &ack, 0, 2).1, want(HOP.0));
    assert_eq!(fast_frames(&w), 1);
    // New clients learned: same version, the cached next hop still serves.
    let n2 = n1.with((1..=50u8).map(|i| (IpAddr::from([198, 18, 7, i]), [i; 6])));
    assert_eq!(n2.version(), n1.version());
    assert_eq!(run(&mut w, &t, &n2, &ack, 0, 3).1, want(HOP.0));
    assert_eq!(fast_frames(&w), 2);
    // The backend's MAC changed: the full pipeline takes the packet and re-caches.
    let n3 = n2.with([(ip(BE1), OTHER)]);
    assert_eq!(run(&mut w, &t, &n3, &ack, 0, 4).1, want(OTHER));
    assert_eq!(fast_frames(&w), 2);
    assert_eq!(run(&mut w, &t, &n3, &ack, 0, 5).1, want(OTHER));
    assert_eq!(fast_frames(&w), 3);
    // The backend's entry forgotten: the packet is not sent to the old MAC; it becomes a
    // request for the backend's.
    let n4 = n3.with_changes([], &[ip(BE1)]);
    let request = PacketBuilder::new()
        .arp_request(MAC1, v4("10.0.0.254"), v4(BE1))
        .build();
    assert_eq!(
        run(&mut w, &t, &n4, &ack, 0, 6),
        (Verdict::Forward(1), request)
    );
    assert_eq!(fast_frames(&w), 3);
}

/// TCP flags a fast-path property case may put on a packet.
const FLAG_CHOICES: [WireTcpFlags; 8] = [
    WireTcpFlags::ACK,
    WireTcpFlags(WireTcpFlags::ACK.0 | WireTcpFlags::PSH.0),
    WireTcpFlags(WireTcpFlags::FIN.0 | WireTcpFlags::ACK.0),
    WireTcpFlags::RST,
    WireTcpFlags::SYN,
    WireTcpFlags(WireTcpFlags::SYN.0 | WireTcpFlags::ACK.0),
    WireTcpFlags(0),
    WireTcpFlags(WireTcpFlags::ACK.0 | WireTcpFlags::URG.0),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The fast path changes nothing but speed: any sequence of packets of IPv4 TCP and
    /// UDP flows, either way, with any flags, TTL, payload or damage, gives the same
    /// verdicts, frames, counters and flow states with it as without it.
    #[test]
    fn the_fast_path_gives_what_the_full_pipeline_gives(
        flows in proptest::collection::vec((any::<bool>(), 1u8..250, 1024u16..65535), 1..4),
        // (flow, from the client?, flags, TTL, payload, damage: 0 a bad IPv4 header
        // checksum, 1 a zero UDP checksum, else none)
        steps in proptest::collection::vec(
            (0usize..4, any::<bool>(), 0usize..FLAG_CHOICES.len(),
             prop_oneof![Just(1u8), Just(2), Just(64)],
             proptest::collection::vec(any::<u8>(), 0..24), 0u8..8),
            1..40),
    ) {
        // One table each, so that their Service and backend counters can be compared.
        let table = || table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
        let (tf, ts) = (table(), table());
        let n = NeighbourTable::default();
        let mut fast = Worker::new(config(0, 1));
        let mut full = Worker::new(WorkerConfig { fast_path: false, ..config(0, 1) });
        let mut now = 1;
        let mut both = |frame: &[u8], rx: u16, fast: &mut Worker, full: &mut Worker| {
            now += 1_000;
            let a = run(fast, &tf, &n, frame, rx, now);
            let b = run(full, &ts, &n, frame, rx, now);
            (a, b)
        };
        // Open every flow (the first packet and its answer), learning its backend.
        let mut opened = Vec::new();
        for &(tcp, host, cport) in &flows {
            let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, host));
            let first = if tcp {
                from_client().ip(client, ip(VIP)).tcp(cport, 80).syn().build()
            } else {
                from_client().ip(client, ip(VIP)).udp(cport, 53).payload(b"q").build()
            };
            let (a, b) = both(&first, 0, &mut fast, &mut full);
            prop_assert_eq!(&a, &b);
            if a.0 != Verdict::Forward(1) {
                continue; // the same client and port twice: a reopen or a clash
            }
            let p = Ipv4Packet::new_checked(&a.1[14..]).unwrap();
            let (_, bport) = crate::wire::transport_ports(p.payload()).unwrap();
            let be = IpAddr::V4(p.dst_addr());
            let answer = if tcp {
                from_backend().ip(be, client).tcp(bport, cport).syn_ack().build()
            } else {
                from_backend().ip(be, client).udp(bport, cport).payload(b"a").build()
            };
            let (a, b) = both(&answer, 1, &mut fast, &mut full);
            prop_assert_eq!(&a, &b);
            opened.push((tcp, client, cport, be, bport));
        }
        prop_assume!(!opened.is_empty());
        for (flow, forward, flags, ttl, payload, damage) in steps {
            let (tcp, client, cport, be, bport) = opened[flow % opened.len()];
            let (b, rx) = if forward {
                (from_client().ip(client, ip(VIP)), 0)
            } else {
                (from_backend().ip(be, client), 1)
            };
            let (sport, dport) = match (forward, tcp) {
                (true, true) => (cport, 80),
                (true, false) => (cport, 53),
                (false, _) => (bport, cport),
            };
            let mut b = b.ttl(ttl).payload(&payload);
            b = if tcp {
                b.tcp(sport, dport).flags(FLAG_CHOICES[flags])
            } else {
                b.udp(sport, dport)
            };
            if damage == 1 && !tcp {
                b = b.udp_zero_checksum();
            }
            let mut frame = b.build();
            if damage == 0 {
                frame[24] ^= 0x5a;
            }
            let (a, b) = both(&frame, rx, &mut fast, &mut full);
            prop_assert_eq!(a, b);
        }
        // The flows' held counts go to the rows (the full pipeline's are there already).
        fast.flush_counts(&Context { table: &tf, neighbours: &n });
        let (cf, cs) = (fast.counters(), full.counters());
        prop_assert_eq!(relaxed(&cs.fast_path), 0);
        for (x, y) in [(&cf.frames, &cs.frames), (&cf.dnat, &cs.dnat), (&cf.reverse_nat, &cs.reverse_nat), (&cf.replies, &cs.replies), (&cf.new_flows, &cs.new_flows)] {
            prop_assert_eq!(relaxed(x), relaxed(y));
        }
        for &r in DropReason::ALL {
            prop_assert_eq!(cf.drops(r), cs.drops(r), "{:?}", r);
        }
        for (a, b) in tf.services().iter().zip(ts.services()) {
            prop_assert_eq!(a.counters().totals(), b.counters().totals());
            for be in [BE1, BE2] {
                let c = |s: &Service| s.backend_counters(ip(be), 8080).map(|c| c.totals());
                prop_assert_eq!(c(a), c(b));
            }
        }
        let states = |w: &Worker| {
            let mut s: Vec<_> = w.conntrack().iter().map(|(_, f)| {
                (f.client(), f.client_port(), f.backend(), f.state(), f.last_seen(),
                 f.packets(Direction::Forward), f.packets(Direction::Reverse))
            }).collect();
            s.sort_by_key(|x| (x.0, x.1));
            s
        };
        prop_assert_eq!(states(&fast), states(&full));
    }
}

// ------------------------------------------------------------------ checksum offload

#[test]
fn the_sctp_crc_is_left_to_a_port_that_finishes_it() {
    use crate::pipeline::{ChecksumOffload, TxChecksumOffloads};
    // SCTP's CRC covers ports, not addresses: the backends listen on another port.
    let mut b = ServiceTable::builder().generation(1);
    let v4 = b.add_service(spec(
        "default/m3ua",
        L4Protocol::Sctp,
        vec![backend(BE3, 2905)],
    ));
    frontend(
        &mut b,
        v4,
        VIP,
        3868,
        L4Protocol::Sctp,
        FrontendKind::ClusterIp,
        vec![],
    );
    let v6 = b.add_service(spec(
        "default/m3ua6",
        L4Protocol::Sctp,
        vec![backend(BE6, 2905)],
    ));
    frontend(
        &mut b,
        v6,
        VIP6,
        3868,
        L4Protocol::Sctp,
        FrontendKind::ClusterIp,
        vec![],
    );
    let t = b.build();
    let n = NeighbourTable::default();
    let offloading = |w: usize| {
        let mut c = config(w, 1);
        c.ports[1].tx_offloads = TxChecksumOffloads {
            sctp: true,
            ..Default::default()
        };
        c
    };
    let mut plain = Worker::new(config(0, 1));
    let mut nic = Worker::new(offloading(0));
    for (client, vip, l3_len, ipv6) in [(CLIENT, VIP, 20, false), (CLIENT6, VIP6, 40, true)] {
        let init = from_client()
            .ip(ip(client), ip(vip))
            .sctp(40000, 3868)
            .payload(b"m3ua data")
            .build();
        let (v, software) = run(&mut plain, &t, &n, &init, 0, 1);
        assert_eq!((v, plain.offload()), (Verdict::Forward(1), None));
        let (v, mut left) = run(&mut nic, &t, &n, &init, 0, 1);
        assert_eq!(v, Verdict::Forward(1));
        assert_eq!(
            nic.offload(),
            Some(ChecksumOffload {
                l4: L4Protocol::Sctp,
                ipv6,
                l2_len: 14,
                l3_len,
            })
        );
        // Everything but the CRC is final; the NIC's CRC makes it the software frame.
        let at = 14 + l3_len as usize;
        assert_ne!(left, software);
        assert_eq!(left[..at + 8], software[..at + 8]);
        assert_eq!(
            left[at + 8..at + 12],
            init[at + 8..at + 12],
            "CRC left as received"
        );
        SctpPacket::new_checked(&mut left[at..])
            .unwrap()
            .fill_checksum();
        assert_eq!(left, software);

        // The answer leaves by port 0, which finishes nothing: all final.
        let be = ip(if ipv6 { BE6 } else { BE3 });
        let answer = from_backend()
            .ip(be, ip(client))
            .sctp(2905, 40000)
            .payload(b"ok")
            .build();
        let (v, out) = run(&mut nic, &t, &n, &answer, 1, 2);
        assert_eq!((v, nic.offload()), (Verdict::Forward(0), None));
        assert!(checksums_verify(&out));
    }
    // A frame that becomes an ARP request for its next hop leaves nothing to the NIC.
    let mut unresolved = Worker::new(WorkerConfig {
        assume_resolved: None,
        ..offloading(0)
    });
    let init = from_client()
        .ip(ip(CLIENT), ip(VIP))
        .sctp(40001, 3868)
        .build();
    let (v, out) = run(&mut unresolved, &t, &n, &init, 0, 1);
    assert_eq!((v, unresolved.offload()), (Verdict::Forward(1), None));
    assert_eq!(
        EthernetFrame::new_checked(&out[..]).unwrap().ethertype(),
        EtherType::Arp
    );
}

// ------------------------------------------------------------------ burst look-ahead

thread_local! {
    static PREFETCHED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn record_prefetch(p: *const u8) {
    PREFETCHED.with(|v| v.borrow_mut().push(p as usize));
}

#[test]
fn the_look_ahead_is_wanted_only_while_new_flows_come_or_flows_are_many() {
    use crate::pipeline::worker::OPENING_MEMORY;
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let syn = |p: u16| {
        from_client()
            .ip(ip(CLIENT), ip(VIP))
            .tcp(p, 80)
            .syn()
            .build()
    };
    let ack = from_client().ip(ip(CLIENT), ip(VIP)).tcp(1000, 80).build();
    w.begin_burst();
    assert_eq!(run(&mut w, &t, &n, &syn(1000), 0, 1).0, Verdict::Forward(1));
    assert!(
        !w.wants_lookahead(),
        "no prefetcher, nothing to look ahead with"
    );
    w.set_prefetcher(record_prefetch);
    // The new flow keeps it wanted for OPENING_MEMORY bursts, the current one included.
    for burst in 1..OPENING_MEMORY {
        w.begin_burst();
        assert!(w.wants_lookahead(), "burst {burst} after a new flow");
    }
    w.begin_burst();
    assert!(!w.wants_lookahead(), "one tracked flow and no new one");
    // A frame of a tracked flow does not bring it back; a new flow does.
    assert_eq!(run(&mut w, &t, &n, &ack, 0, 2).0, Verdict::Forward(1));
    w.begin_burst();
    assert!(!w.wants_lookahead());
    assert_eq!(run(&mut w, &t, &n, &syn(1001), 0, 3).0, Verdict::Forward(1));
    w.begin_burst();
    assert!(w.wants_lookahead());
}

#[test]
fn the_look_ahead_prefetches_each_frames_bucket_then_its_flow() {
    use crate::pipeline::worker::PREFETCH_MIN_FLOWS;
    // Enough tracked flows for the look-ahead to run, and for the frames below.
    let flows = PREFETCH_MIN_FLOWS.max(16_384);
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(WorkerConfig {
        conntrack_capacity: flows + 64,
        ..config(0, 1)
    });
    let client = |k: usize| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + k as u32 / 1000));
    let port = |k: usize| 10_000 + (k % 1000) as u16;
    let ack = |k: usize| {
        from_client()
            .ip(client(k), ip(VIP))
            .tcp(port(k), 80)
            .build()
    };
    for k in 0..flows {
        let s = from_client()
            .ip(client(k), ip(VIP))
            .tcp(port(k), 80)
            .syn()
            .build();
        assert_eq!(run(&mut w, &t, &n, &s, 0, 1).0, Verdict::Forward(1));
    }
    w.set_prefetcher(record_prefetch);
    // Wanted for the flows' sake long after the last new one.
    for _ in 0..2 * crate::pipeline::worker::OPENING_MEMORY {
        w.begin_burst();
    }
    assert!(w.wants_lookahead(), "{flows} tracked flows");
    let ctx = Context {
        table: &t,
        neighbours: &n,
    };
    let arp = from_client()
        .arp_request(
            EthernetAddress([2, 0, 0, 0, 0, 7]),
            v4("198.18.0.7"),
            v4(NODE),
        )
        .build();
    let burst = [ack(3), arp, ack(7_000), ack(16_000)];
    // A burst left half-done (the runtime dropped frames before processing them) is
    // forgotten when the next one begins.
    w.prefetch(&ack(100), &ctx);
    w.prefetch(&ack(200), &ctx);
    w.begin_burst();
    PREFETCHED.with(|v| v.borrow_mut().clear());
    for f in &burst {
        w.prefetch(f, &ctx);
    }
    let buckets = PREFETCHED.with(|v| v.borrow().len());
    assert_eq!(
        buckets, 3,
        "one bucket per frame with a flow key (not the ARP request)"
    );
    for (i, f) in burst.iter().enumerate() {
        let mut buf = f.clone();
        buf.resize(f.len() + 128, 0);
        let mut len = f.len();
        let v = w.process(&mut buf, &mut len, 0, 2, &ctx);
        assert_eq!(matches!(v, Verdict::Forward(1)), i != 1, "frame {i}: {v:?}");
    }
    // Then both lines of each of the three flows.
    let want: Vec<usize> = [3, 7_000, 16_000]
        .iter()
        .flat_map(|&k| {
            let (_, f) = w
                .conntrack()
                .iter()
                .find(|(_, f)| f.client() == client(k) && f.client_port() == port(k))
                .unwrap();
            let f = f as *const _ as usize;
            [f, f + 64]
        })
        .collect();
    let got = PREFETCHED.with(|v| v.borrow()[buckets..].to_vec());
    assert_eq!(got, want);
}

#[test]
fn the_look_ahead_prepares_each_new_flow_before_it_is_processed() {
    use crate::flow::{flow_hash, FlowAddr, FlowKey};
    let t = table_with(
        1,
        vec![backend(BE1, 8080), backend(BE2, 8080), backend(BE3, 8080)],
        None,
    );
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    // One established flow, so the burst mixes a continuing segment among new ones.
    let established = syn(from_client(), CLIENT, VIP, 20_000, 80).build();
    assert_eq!(
        run(&mut w, &t, &n, &established, 0, 1).0,
        Verdict::Forward(1)
    );
    let ack = from_client()
        .ip(ip(CLIENT), ip(VIP))
        .tcp(20_000, 80)
        .build();
    let ports = [30_001u16, 30_002, 30_003, 30_004, 30_005, 30_006];
    let mut burst: Vec<Vec<u8>> = ports
        .iter()
        .map(|&p| syn(from_client(), CLIENT, VIP, p, 80).build())
        .collect();
    // First: the look-ahead starts at the first SYN, the segment keeping its place.
    burst.insert(0, ack);
    w.set_prefetcher(record_prefetch);
    let ctx = Context {
        table: &t,
        neighbours: &n,
    };
    w.begin_burst();
    PREFETCHED.with(|v| v.borrow_mut().clear());
    for f in &burst {
        w.prefetch(f, &ctx);
    }
    let first_pass = PREFETCHED.with(|v| v.borrow().clone());
    // The slab slots the new flows will fill, in order.
    let slots: Vec<usize> = (0..ports.len())
        .map(|k| w.conntrack().free_slot_ahead(k).unwrap() as *const _ as usize)
        .collect();
    let mut before = Vec::new();
    for f in &burst {
        before.push(PREFETCHED.with(|v| v.borrow().len()));
        let mut buf = f.clone();
        buf.resize(f.len() + 128, 0);
        let mut len = f.len();
        assert_eq!(
            w.process(&mut buf, &mut len, 0, 2, &ctx),
            Verdict::Forward(1)
        );
    }
    let got = PREFETCHED.with(|v| v.borrow().clone());
    let ct = w.conntrack();
    let line = |b: usize| ct.bucket_line(b).map(|l| l as *const _ as usize).unwrap();
    let buckets = |k: &FlowKey| {
        let (b, tag) = ct.bucket_and_tag(k);
        [line(b), line(ct.secondary_bucket(b, tag))]
    };
    let fk = FrontendKey {
        addr: ip(VIP),
        port: 80,
        protocol: L4Protocol::Tcp,
    };
    let fe = t.frontend_at(t.find_frontend(&fk).unwrap()).unwrap();
    let svc = t.service(fe.service).unwrap();
    let svc_at = svc as *const Service as usize;
    let row = |slot: u32| t.bank().row(0, slot).unwrap() as *const _ as usize;
    let at = |r: &Backend| r as *const Backend as usize;
    for (m, &by) in before.iter().enumerate().skip(1) {
        let opener = m - 1;
        let port = ports[opener];
        let key = FlowKey::new(ip(CLIENT), ip(VIP), port, 80, 6);
        // Found by `prefetch`: both buckets and the frontend's index line.
        let early = [
            buckets(&key)[0],
            buckets(&key)[1],
            t.frontend_line(&fk).unwrap() as *const _ as usize,
            slots[opener],
            slots[opener] + 64,
        ];
        for a in early {
            assert!(
                first_pass.contains(&a),
                "frame {m}: {a:#x} not prefetched first"
            );
        }
        // Then everything its new flow reads, before it is processed (in earlier
        // `process` calls: even the first SYN's, in the segment's call).
        let i = svc.maglev_pick(flow_hash(t.seed(), &key)).unwrap();
        let b = &svc.usable_backends()[i];
        let reply = FlowKey {
            src: FlowAddr::from_ip(b.addr),
            dst: key.src,
            src_port: b.port,
            dst_port: port,
            protocol: 6,
            v6: false,
        };
        let counters = svc.usable_backend_counters(i).unwrap();
        let want = [
            svc_at,
            svc_at + 64,
            &t.services()[fe.service.0 as usize] as *const _ as usize,
            svc.maglev().slot_addr(flow_hash(t.seed(), &key)).unwrap() as usize,
            row(svc.counters().slot()),
            at(b),
            at(b) + std::mem::size_of::<Backend>() - 1,
            counters as *const _ as usize,
            row(counters.slot()),
            buckets(&reply)[0],
            buckets(&reply)[1],
        ];
        for (k, a) in want.iter().enumerate() {
            assert!(
                got[..by].contains(a),
                "frame {m}: line {k} ({a:#x}) not prefetched before it was processed"
            );
        }
        // The flow went where the look-ahead said, into the slot it said.
        let (_, flow) = ct.iter().find(|(_, f)| f.client_port() == port).unwrap();
        assert_eq!(flow.backend(), b.addr, "frame {m}");
        assert_eq!(flow as *const _ as usize, slots[opener], "frame {m}");
    }
    // The continuing segment of a small table had nothing prefetched for it.
    assert_eq!(first_pass.len(), 5 * ports.len());
}

/// A datagram of a tracked UDP flow costs the look-ahead its primary bucket only; one of
/// a new flow has the rest of its lines prefetched once that bucket shows it is new.
#[test]
fn the_look_ahead_prepares_a_datagram_only_once_its_bucket_shows_a_new_flow() {
    use crate::flow::FlowKey;
    let t = table();
    let n = NeighbourTable::default();
    let mut w = Worker::new(config(0, 1));
    let datagram = |port: u16| {
        from_client()
            .ip(ip(CLIENT), ip(VIP))
            .udp(port, 53)
            .payload(b"q")
            .build()
    };
    assert_eq!(
        run(&mut w, &t, &n, &datagram(31_000), 0, 1).0,
        Verdict::Forward(1)
    );
    w.set_prefetcher(record_prefetch);
    let ctx = Context {
        table: &t,
        neighbours: &n,
    };
    let burst = [datagram(31_000), datagram(31_001)];
    w.begin_burst();
    PREFETCHED.with(|v| v.borrow_mut().clear());
    for f in &burst {
        w.prefetch(f, &ctx);
    }
    let ct = w.conntrack();
    let line = |b: usize| ct.bucket_line(b).map(|l| l as *const _ as usize).unwrap();
    let buckets = |port: u16| {
        let (b, tag) = ct.bucket_and_tag(&FlowKey::new(ip(CLIENT), ip(VIP), port, 53, 17));
        (line(b), line(ct.secondary_bucket(b, tag)))
    };
    let (tracked, new) = (buckets(31_000), buckets(31_001));
    let first_pass = PREFETCHED.with(|v| v.borrow().clone());
    assert_eq!(first_pass, vec![tracked.0, new.0]);
    for f in &burst {
        let (v, _) = run_in(&mut w, &ctx, f, 0, 2);
        assert_eq!(v, Verdict::Forward(1));
    }
    let later = PREFETCHED.with(|v| v.borrow()[first_pass.len()..].to_vec());
    let fk = FrontendKey {
        addr: ip(VIP),
        port: 53,
        protocol: L4Protocol::Udp,
    };
    let frontend = t.frontend_line(&fk).unwrap() as *const _ as usize;
    assert!(
        later.contains(&new.1) && later.contains(&frontend),
        "{later:x?}"
    );
    if tracked.1 != new.1 {
        assert!(
            !later.contains(&tracked.1),
            "the tracked flow's second bucket"
        );
    }
}

fn no_prefetch(_: *const u8) {}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The look-ahead changes nothing but speed: bursts of new flows, continuing
    /// segments, replies, other frames and damaged bytes, longer than the look-ahead or
    /// not, give the same verdicts and frames with it as without it.
    #[test]
    fn the_look_ahead_gives_what_no_look_ahead_gives(
        bursts in proptest::collection::vec(
            proptest::collection::vec((0u8..6, 1u16..40, any::<u16>(), any::<u8>()), 0..80),
            1..4),
    ) {
        let t = table_with(1, vec![backend(BE1, 8080), backend(BE2, 8080)], None);
        let n = NeighbourTable::default();
        let mut ahead = Worker::new(config(0, 1));
        ahead.set_prefetcher(no_prefetch);
        let mut plain = Worker::new(config(0, 1));
        let ctx = Context { table: &t, neighbours: &n };
        for (round, burst) in bursts.iter().enumerate() {
            let frames: Vec<Vec<u8>> = burst.iter().map(|&(kind, port, at, x)| {
                let port = 30_000 + port;
                let mut f = match kind {
                    0 => syn(from_client(), CLIENT, VIP, port, 80).build(),
                    1 => from_client().ip(ip(CLIENT), ip(VIP)).tcp(port, 80).build(),
                    2 => from_client().ip(ip(CLIENT), ip(VIP)).udp(port, 53).payload(b"q").build(),
                    3 => from_backend().ip(ip(BE1), ip(CLIENT)).tcp(8080, port).syn_ack().build(),
                    4 => syn(from_client(), CLIENT, REJECT, port, 80).build(),
                    _ => syn(from_client(), CLIENT, VIP, port, 80).build(),
                };
                if kind == 5 {
                    // Damaged: a byte changed and the frame maybe cut.
                    let i = usize::from(at) % f.len();
                    f[i] ^= x | 1;
                    f.truncate(usize::from(x) % (f.len() + 1));
                }
                f
            }).collect();
            ahead.begin_burst();
            for f in &frames {
                ahead.prefetch(f, &ctx);
            }
            let now = 1 + round as u64 * 1_000;
            for (f, &(kind, ..)) in frames.iter().zip(burst) {
                let rx = u16::from(kind == 3);
                let a = run_in(&mut ahead, &ctx, f, rx, now);
                let b = run_in(&mut plain, &ctx, f, rx, now);
                prop_assert_eq!(a, b);
            }
        }
        prop_assert_eq!(ahead.conntrack().len(), plain.conntrack().len());
    }
}

/// `run` with the caller's context, keeping the worker's burst look-ahead going.
fn run_in(w: &mut Worker, ctx: &Context, input: &[u8], rx: u16, now: u64) -> (Verdict, Vec<u8>) {
    let mut buf = input.to_vec();
    buf.resize(input.len() + 2048, 0xee);
    let mut len = input.len();
    let v = w.process(&mut buf, &mut len, rx, now, ctx);
    buf.truncate(len);
    (v, buf)
}

#[test]
fn tcp_flows_through_a_deleted_frontend_drain_on_their_owner() {
    let n = NeighbourTable::default();
    let t1 = table();
    // The client port is owned by worker 1, the frontend's (address, port) by worker 0:
    // a frame steered by its destination would reach the worker without the flow.
    let cport = (40000..u16::MAX)
        .find(|&p| owner_worker(ip(CLIENT), p, 2) == 1)
        .unwrap();
    assert_eq!(
        owner_worker(ip(LB), 443, 2),
        0,
        "fixture: the frontend names worker 0"
    );
    let mut w0 = Worker::new(config(0, 2));
    let mut w1 = Worker::new(config(1, 2));
    let s = syn(from_client(), CLIENT, LB, cport, 443).build();
    assert_eq!(run(&mut w1, &t1, &n, &s, 0, 1).0, Verdict::Forward(1));
    // Table 2: the LoadBalancer frontend is gone (its address is no Service's now).
    let mut b = ServiceTable::builder().generation(2).workers(2);
    let web = b.add_service(spec(
        "default/web:http",
        L4Protocol::Tcp,
        vec![backend(BE1, 8080)],
    ));
    frontend(
        &mut b,
        web,
        VIP,
        80,
        L4Protocol::Tcp,
        FrontendKind::ClusterIp,
        vec![],
    );
    let t2 = b.build_reusing(Some(&t1));
    assert!(!t2.is_service_addr(ip(LB)) && t2.is_former_service_addr(ip(LB)));
    let ack = from_client().ip(ip(CLIENT), ip(LB)).tcp(cport, 443).build();
    // RSS hands the frame to worker 0: it goes to the client's owner, which drains it.
    assert_eq!(run(&mut w0, &t2, &n, &ack, 0, 2).0, Verdict::Steer(1));
    let (v, out) = run(&mut w1, &t2, &n, &ack, 0, 2);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(dnat_target(&out), (ip(BE1), 8080));
    // A new connection to the deleted frontend is not served.
    let fresh = syn(from_client(), CLIENT, LB, cport + 2, 443).build();
    let owner = owner_worker(ip(CLIENT), cport + 2, 2);
    let w = if owner == 0 { &mut w0 } else { &mut w1 };
    assert_eq!(
        run(w, &t2, &n, &fresh, 0, 3).0,
        Verdict::Drop(DropReason::NoFlow)
    );
}
