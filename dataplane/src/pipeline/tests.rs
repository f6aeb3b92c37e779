//! Pipeline tests: a table of `{description, input frame, table, expected output frame,
//! expected verdict}` cases (Katran's fixture style), sequences for state (conntrack,
//! table changes, SYN retry, affinity, neighbours), and property tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::flow::owner_worker;
use crate::packet_builder::{PacketBuilder, DEFAULT_DST_MAC, DEFAULT_SRC_MAC};
use crate::table::{
    Backend, Conditions, FrontendKey, FrontendKind, IpCidr, L4Protocol, NoBackendAction,
    ServiceSpec, ServiceTable,
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
            },
            PortConfig {
                mac: MAC1.0,
                addrs: vec![(ip("10.0.0.254"), 24), (ip("fd00:10::fe"), 64)],
            },
        ],
        routes: vec![Route {
            prefix: "198.19.0.0/16".parse().unwrap(),
            port: 0,
            via: Some(ip("198.18.0.200")),
        }],
        conntrack_capacity: 1024,
        affinity_capacity: 256,
        fragment_capacity: 64,
        promiscuous: false,
        assume_resolved: Some(HOP.0),
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
