//! Integration tests of `kubypass replay`: each test builds a capture with
//! `PacketBuilder`, writes it with pcap-file, runs the built binary on the manifests in
//! `tests/data/replay/`, and checks the output capture frame by frame (exact frames where
//! the output is known, parsed fields where it depends on a hash). No root, no DPDK.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kubypass_control::replay::{PORT_MAC, RESOLVED_MAC};
use kubypass_dataplane::packet_builder::PacketBuilder;
use kubypass_dataplane::wire::icmpv6::NeighborFlags;
use kubypass_dataplane::wire::{
    EtherType, EthernetAddress, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};

// ------------------------------------------------------------------ fixture

/// The client's MAC: replies go back to it.
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x10]);
/// Neither the port's MAC nor broadcast: replay takes frames whatever their destination.
const OTHER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x77]);
/// A backend's MAC, as the source of its replies.
const BACKEND_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x20]);
const PORT: EthernetAddress = EthernetAddress(PORT_MAC);
const HOP: EthernetAddress = EthernetAddress(RESOLVED_MAC);

const CLIENT: &str = "198.18.0.1";
const CLIENT6: &str = "fd00:18::1";
const NODE: &str = "198.18.0.254";
const NODE_B: &str = "198.18.0.253";
/// Service `web` (dual-stack, 80 → 8080).
const WEB: &str = "198.19.0.10";
const WEB6: &str = "fd00:19::10";
const WEB_BE: &str = "198.18.2.11";
const WEB_BE6: &str = "fd00:18:2::11";
/// Service `web-np` (NodePort 30080 → 8080).
const NP_BE: &str = "198.18.2.12";
/// Service `web-lb` (ingress 198.19.1.1:443, nodePort 30443 → 8443).
const LB: &str = "198.19.1.1";
const LB_BE: &str = "198.18.2.13";
/// Service `dns` (UDP, externalIP 198.19.2.2 and ClusterIP 198.19.0.13, 53 → 5353).
const EXT: &str = "198.19.2.2";
const DNS: &str = "198.19.0.13";
const DNS_BE: &str = "198.18.2.14";
/// Service `web-named` (80 → http-alt = 8081, 9090 → metrics = 9091).
const NAMED: &str = "198.19.0.14";
const NAMED_BE: &str = "198.18.2.15";
/// Services `sticky` (ClientIP) and `spread` over the same three backends.
const STICKY: &str = "198.19.0.30";
const SPREAD: &str = "198.19.0.31";
/// Service `empty` (no endpoints; TCP 80, UDP 53).
const EMPTY: &str = "198.19.0.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubypass")
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/replay")
}

/// The capture clock: frame `i` of an input is stamped `ts(i)`.
fn ts(i: usize) -> Duration {
    Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64)
}

/// A frame from the client, to a MAC that is not the port's.
fn from_client() -> PacketBuilder {
    PacketBuilder::new().eth(CLIENT_MAC, OTHER_MAC)
}
/// A frame from a backend.
fn from_backend() -> PacketBuilder {
    PacketBuilder::new().eth(BACKEND_MAC, OTHER_MAC)
}
/// A frame the pipeline forwards: from the port to the resolved next hop, TTL - 1.
fn forwarded() -> PacketBuilder {
    PacketBuilder::new().eth(PORT, HOP).ttl(63)
}
/// A frame the pipeline generates in answer: from the port back to the sender.
fn reply_to_client() -> PacketBuilder {
    PacketBuilder::new().eth(PORT, CLIENT_MAC)
}

fn syn(b: PacketBuilder, s: &str, d: &str, sp: u16, dp: u16) -> PacketBuilder {
    b.ip(ip(s), ip(d)).tcp(sp, dp).syn()
}

/// Writes `frames`, frame `i` stamped `ts(i)`.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let stamped: Vec<_> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (ts(i), f.clone()))
        .collect();
    write_pcap_with(path, PcapHeader::default(), &stamped);
}

fn write_pcap_with(path: &Path, header: PcapHeader, frames: &[(Duration, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(file), header).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(*t, f.len() as u32, f))
            .unwrap();
    }
    std::io::Write::flush(&mut w.into_writer()).unwrap();
}

fn read_pcap_with_header(path: &Path) -> (PcapHeader, Vec<(Duration, Vec<u8>)>) {
    let file = std::fs::File::open(path).unwrap();
    let mut r = PcapReader::new(std::io::BufReader::new(file)).unwrap();
    let header = r.header();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        assert_eq!(
            p.orig_len as usize,
            p.data.len(),
            "a truncated output frame"
        );
        out.push((p.timestamp, p.data.into_owned()));
    }
    (header, out)
}

/// What one replay wrote and printed.
struct Replayed {
    header: PcapHeader,
    frames: Vec<(Duration, Vec<u8>)>,
    stdout: String,
}

impl Replayed {
    /// Summary numbers: `frames in 3, out 2 (forwarded 2, replies 0), to host 0,
    /// steered 0` gives `in`, `out`, `forwarded`, `replies`, `host`, `steered`;
    /// `dropped 1` gives `dropped`; each `  reason: n` line gives `reason`.
    fn counts(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for line in self.stdout.lines() {
            if let Some((label, n)) = line.strip_prefix("  ").and_then(|l| l.split_once(": ")) {
                m.insert(label.to_owned(), n.trim().parse().unwrap());
                continue;
            }
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || ",()".contains(c))
                .filter(|w| !w.is_empty())
                .collect();
            for pair in words.windows(2) {
                if let Ok(n) = pair[1].parse() {
                    m.insert(pair[0].to_owned(), n);
                }
            }
        }
        m
    }

    fn count(&self, key: &str) -> u64 {
        self.counts().get(key).copied().unwrap_or(0)
    }

    fn data(&self) -> Vec<Vec<u8>> {
        self.frames.iter().map(|(_, f)| f.clone()).collect()
    }
}

fn kubypass(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .arg("replay")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn kubypass")
}

/// Replays `input` with the test manifests and `extra` arguments; asserts success.
fn replay(input: &[Vec<u8>], extra: &[&str]) -> Replayed {
    let stamped: Vec<_> = input
        .iter()
        .enumerate()
        .map(|(i, f)| (ts(i), f.clone()))
        .collect();
    replay_capture(PcapHeader::default(), &stamped, extra)
}

/// Replays a capture with this header and these stamped frames; asserts success.
fn replay_capture(header: PcapHeader, input: &[(Duration, Vec<u8>)], extra: &[&str]) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    write_pcap_with(&inp, header, input);
    let dir_arg = manifests();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--manifests".as_ref(),
        dir_arg.as_os_str(),
        "--input".as_ref(),
        inp.as_os_str(),
        "--output".as_ref(),
        outp.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = kubypass(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.trim().is_empty(),
        "the test manifests gave warnings:\n{stderr}"
    );
    let (header, frames) = read_pcap_with_header(&outp);
    let r = Replayed {
        header,
        frames,
        stdout,
    };
    assert_eq!(r.count("in"), input.len() as u64, "{}", r.stdout);
    assert_eq!(r.count("out"), r.frames.len() as u64, "{}", r.stdout);
    // Every frame is accounted for: written, left to the host, or dropped for a reason
    // (a frame whose TTL ran out is counted as dropped and may still be answered with
    // an ICMP time exceeded, hence not an equality).
    assert!(
        r.count("out") + r.count("host") <= r.count("in")
            && r.count("in") <= r.count("out") + r.count("host") + r.count("dropped"),
        "frames unaccounted for:\n{}",
        r.stdout
    );
    r
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts the output is exactly `want`: `(index of the input frame that caused it,
/// frame)`, in order, each stamped with its cause's timestamp.
fn assert_frames(r: &Replayed, want: &[(usize, PacketBuilder)]) {
    let got: Vec<(Duration, String)> = r.frames.iter().map(|(t, f)| (*t, hex(f))).collect();
    let want: Vec<(Duration, String)> = want
        .iter()
        .map(|(i, b)| (ts(*i), hex(&b.build())))
        .collect();
    assert_eq!(got, want, "summary:\n{}", r.stdout);
}

/// The destination address and port of an IPv4/IPv6 TCP frame.
fn tcp_dst(frame: &[u8]) -> (IpAddr, u16) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let (dst, l4) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
            (IpAddr::V4(p.dst_addr()), p.payload().to_vec())
        }
        EtherType::Ipv6 => {
            let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
            (IpAddr::V6(p.dst_addr()), p.payload().to_vec())
        }
        other => panic!("not IP: {other:?}"),
    };
    (dst, TcpPacket::new_checked(&l4[..]).unwrap().dst_port())
}

// ------------------------------------------------------------------ DNAT

#[test]
fn clusterip_syn_is_dnated_to_the_backend_and_target_port() {
    let mss = [2, 4, 0x05, 0xb4];
    let r = replay(
        &[syn(from_client(), CLIENT, WEB, 40000, 80)
            .seq(1000)
            .tcp_options(&mss)
            .build()],
        &[],
    );
    assert_frames(
        &r,
        &[(
            0,
            syn(forwarded(), CLIENT, WEB_BE, 40000, 8080)
                .seq(1000)
                .tcp_options(&mss),
        )],
    );
    assert_eq!(r.count("forwarded"), 1);
    assert_eq!(r.count("dropped"), 0);
}

#[test]
fn nodeport_is_captured_on_every_node_ip_given_and_only_there() {
    // Distinct client ports: one client port through two frontends to the same backend
    // would be indistinguishable in the replies (the pipeline drops it as `nat_clash`).
    let to = |node, cp| syn(from_client(), CLIENT, node, cp, 30080).build();
    let r = replay(
        &[to(NODE, 40000), to(NODE_B, 40001)],
        &["--node-ip", NODE, "--node-ip", NODE_B],
    );
    assert_frames(
        &r,
        &[
            (0, syn(forwarded(), CLIENT, NP_BE, 40000, 8080)),
            (1, syn(forwarded(), CLIENT, NP_BE, 40001, 8080)),
        ],
    );
    // Without --node-ip the address is nobody's: no NodePort, no output.
    let r = replay(&[to(NODE, 40000)], &[]);
    assert_frames(&r, &[]);
    assert_eq!(r.count("no_flow"), 1, "{}", r.stdout);
}

#[test]
fn loadbalancer_ingress_ip_and_its_nodeport() {
    let r = replay(
        &[
            syn(from_client(), CLIENT, LB, 40000, 443).build(),
            syn(from_client(), CLIENT, NODE, 40001, 30443).build(),
        ],
        &["--node-ip", NODE],
    );
    assert_frames(
        &r,
        &[
            (0, syn(forwarded(), CLIENT, LB_BE, 40000, 8443)),
            (1, syn(forwarded(), CLIENT, LB_BE, 40001, 8443)),
        ],
    );
}

#[test]
fn external_ip_and_cluster_ip_of_a_udp_service() {
    let query = |dst: &str, sport| {
        from_client()
            .ipv4(v4(CLIENT), v4(dst))
            .udp(sport, 53)
            .payload(b"query")
    };
    let r = replay(&[query(EXT, 5000).build(), query(DNS, 5001).build()], &[]);
    let out = |sport| {
        forwarded()
            .ipv4(v4(CLIENT), v4(DNS_BE))
            .udp(sport, 5353)
            .payload(b"query")
    };
    assert_frames(&r, &[(0, out(5000)), (1, out(5001))]);
}

#[test]
fn named_target_ports_resolve_through_the_slice_port_of_the_same_name() {
    let r = replay(
        &[
            syn(from_client(), CLIENT, NAMED, 40000, 80).build(),
            syn(from_client(), CLIENT, NAMED, 40001, 9090).build(),
        ],
        &[],
    );
    assert_frames(
        &r,
        &[
            (0, syn(forwarded(), CLIENT, NAMED_BE, 40000, 8081)),
            (1, syn(forwarded(), CLIENT, NAMED_BE, 40001, 9091)),
        ],
    );
}

#[test]
fn ipv6_cluster_ip_is_dnated_and_its_reply_reversed() {
    let r = replay(
        &[
            syn(from_client(), CLIENT6, WEB6, 40000, 80).seq(7).build(),
            from_backend()
                .ipv6(v6(WEB_BE6), v6(CLIENT6))
                .tcp(8080, 40000)
                .syn_ack()
                .seq(900)
                .ack(8)
                .build(),
        ],
        &[],
    );
    assert_frames(
        &r,
        &[
            (0, syn(forwarded(), CLIENT6, WEB_BE6, 40000, 8080).seq(7)),
            (
                1,
                forwarded()
                    .ipv6(v6(WEB6), v6(CLIENT6))
                    .tcp(80, 40000)
                    .syn_ack()
                    .seq(900)
                    .ack(8),
            ),
        ],
    );
}

// ------------------------------------------------------------------ state

#[test]
fn a_backend_reply_in_the_same_capture_is_rewritten_back_to_the_frontend() {
    let r = replay(
        &[
            syn(from_client(), CLIENT, WEB, 40000, 80).seq(1000).build(),
            from_backend()
                .ipv4(v4(WEB_BE), v4(CLIENT))
                .tcp(8080, 40000)
                .syn_ack()
                .seq(5000)
                .ack(1001)
                .build(),
            from_client()
                .ipv4(v4(CLIENT), v4(WEB))
                .tcp(40000, 80)
                .seq(1001)
                .ack(5001)
                .payload(b"GET / HTTP/1.0\r\n\r\n")
                .build(),
            from_backend()
                .ipv4(v4(WEB_BE), v4(CLIENT))
                .tcp(8080, 40000)
                .fin()
                .seq(5001)
                .ack(1019)
                .payload(b"hello")
                .build(),
        ],
        &[],
    );
    assert_frames(
        &r,
        &[
            (0, syn(forwarded(), CLIENT, WEB_BE, 40000, 8080).seq(1000)),
            (
                1,
                forwarded()
                    .ipv4(v4(WEB), v4(CLIENT))
                    .tcp(80, 40000)
                    .syn_ack()
                    .seq(5000)
                    .ack(1001),
            ),
            (
                2,
                forwarded()
                    .ipv4(v4(CLIENT), v4(WEB_BE))
                    .tcp(40000, 8080)
                    .seq(1001)
                    .ack(5001)
                    .payload(b"GET / HTTP/1.0\r\n\r\n"),
            ),
            (
                3,
                forwarded()
                    .ipv4(v4(WEB), v4(CLIENT))
                    .tcp(80, 40000)
                    .fin()
                    .seq(5001)
                    .ack(1019)
                    .payload(b"hello"),
            ),
        ],
    );
    assert_eq!(r.count("forwarded"), 4);
}

#[test]
fn a_reply_with_no_flow_produces_nothing() {
    let r = replay(
        &[from_backend()
            .ipv4(v4(WEB_BE), v4(CLIENT))
            .tcp(8080, 40000)
            .syn_ack()
            .build()],
        &[],
    );
    assert_frames(&r, &[]);
    assert_eq!(r.count("no_flow"), 1, "{}", r.stdout);
}

#[test]
fn client_ip_affinity_sends_every_client_port_to_one_backend() {
    let ports = 41000..41012u16;
    let frames = |vip: &str| -> Vec<Vec<u8>> {
        ports
            .clone()
            .map(|p| syn(from_client(), CLIENT, vip, p, 80).build())
            .collect()
    };
    let backends = |r: &Replayed| -> BTreeSet<(IpAddr, u16)> {
        assert_eq!(r.frames.len(), ports.len(), "{}", r.stdout);
        r.frames.iter().map(|(_, f)| tcp_dst(f)).collect()
    };
    let all = [ip("198.18.3.1"), ip("198.18.3.2"), ip("198.18.3.3")];

    let sticky = backends(&replay(&frames(STICKY), &[]));
    assert_eq!(
        sticky.len(),
        1,
        "ClientIP affinity split a client: {sticky:?}"
    );
    assert!(sticky.iter().all(|(a, p)| all.contains(a) && *p == 80));

    // The control: the same client ports to the same backends without affinity spread.
    let spread = backends(&replay(&frames(SPREAD), &[]));
    assert!(spread.len() > 1, "the control did not spread: {spread:?}");
    assert!(spread.iter().all(|(a, p)| all.contains(a) && *p == 80));
}

// ------------------------------------------------------------------ rejects and drops

#[test]
fn no_endpoints_tcp_is_answered_with_rst_from_the_frontend() {
    let r = replay(
        &[syn(from_client(), CLIENT, EMPTY, 40000, 80)
            .seq(1000)
            .build()],
        &[],
    );
    assert_frames(
        &r,
        &[(
            0,
            reply_to_client()
                .ipv4(v4(EMPTY), v4(CLIENT))
                .dont_frag()
                .tcp(80, 40000)
                .flags(TcpFlags::RST | TcpFlags::ACK)
                .seq(0)
                .ack(1001)
                .window(0),
        )],
    );
    assert_eq!(r.count("replies"), 1);
}

#[test]
fn no_endpoints_udp_is_answered_with_icmp_port_unreachable() {
    let query = from_client()
        .ipv4(v4(CLIENT), v4(EMPTY))
        .udp(5000, 53)
        .payload(b"query");
    let r = replay(&[query.build()], &[]);
    assert_frames(
        &r,
        &[(
            0,
            reply_to_client()
                .ipv4(v4(EMPTY), v4(CLIENT))
                .icmp_dst_unreachable(3)
                .payload(&PacketBuilder::quote(&query.build())),
        )],
    );
}

#[test]
fn an_unknown_port_on_a_service_address_produces_nothing() {
    let r = replay(
        &[
            syn(from_client(), CLIENT, WEB, 40000, 81).build(),
            // UDP to a TCP-only port is unknown too.
            from_client()
                .ipv4(v4(CLIENT), v4(WEB))
                .udp(40000, 80)
                .build(),
        ],
        &[],
    );
    assert_frames(&r, &[]);
    assert_eq!(r.count("unknown_service_port"), 2, "{}", r.stdout);
    assert_eq!(r.count("dropped"), 2, "{}", r.stdout);
}

// ------------------------------------------------------------------ node and zone

const LOCAL: &str = "198.19.0.40";
const ZONED: &str = "198.19.0.41";

#[test]
fn node_name_picks_the_local_endpoint_of_a_local_policy() {
    let frame = syn(from_client(), CLIENT, LOCAL, 40000, 80).build();
    for (node, backend) in [("node-a", "198.18.2.21"), ("node-b", "198.18.2.22")] {
        let r = replay(std::slice::from_ref(&frame), &["--node-name", node]);
        assert_frames(&r, &[(0, syn(forwarded(), CLIENT, backend, 40000, 8080))]);
    }
    // Standing for no node, no endpoint is local: dropped (kube-proxy's "no local
    // endpoints"), not rejected.
    let r = replay(&[frame], &[]);
    assert!(r.frames.is_empty(), "{}", r.stdout);
    assert_eq!(r.count("dropped"), 1, "{}", r.stdout);
}

#[test]
fn zone_follows_the_endpoints_hints() {
    let frames: Vec<_> = (0..8)
        .map(|i| syn(from_client(), CLIENT, ZONED, 40000 + i, 80).build())
        .collect();
    for (zone, backend) in [("zone-a", "198.18.2.31"), ("zone-b", "198.18.2.32")] {
        let r = replay(&frames, &["--zone", zone]);
        assert_eq!(r.frames.len(), frames.len(), "{}", r.stdout);
        for (_, f) in &r.frames {
            assert_eq!(tcp_dst(f), (ip(backend), 8080), "{zone}");
        }
    }
    // No zone: hints ignored, both endpoints used.
    let r = replay(&frames, &[]);
    let used: HashSet<_> = r.frames.iter().map(|(_, f)| tcp_dst(f)).collect();
    assert_eq!(used.len(), 2, "{}", r.stdout);
}

// ------------------------------------------------------------------ workers

/// Many flows of every kind, with replies, in one capture.
fn mixed_capture() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for i in 0..24u16 {
        let cp = 42000 + i;
        v.push(syn(from_client(), CLIENT, WEB, cp, 80).seq(100).build());
        v.push(syn(from_client(), CLIENT6, WEB6, cp, 80).seq(100).build());
        v.push(syn(from_client(), CLIENT, STICKY, cp, 80).build());
        v.push(
            from_client()
                .ipv4(v4(CLIENT), v4(EXT))
                .udp(cp, 53)
                .payload(b"q")
                .build(),
        );
        v.push(syn(from_client(), CLIENT, EMPTY, cp, 80).build());
        v.push(
            from_backend()
                .ipv4(v4(WEB_BE), v4(CLIENT))
                .tcp(8080, cp)
                .syn_ack()
                .seq(700)
                .ack(101)
                .build(),
        );
        v.push(
            from_backend()
                .ipv6(v6(WEB_BE6), v6(CLIENT6))
                .tcp(8080, cp)
                .syn_ack()
                .seq(700)
                .ack(101)
                .build(),
        );
        v.push(
            from_backend()
                .ipv4(v4(DNS_BE), v4(CLIENT))
                .udp(5353, cp)
                .payload(b"a")
                .build(),
        );
        v.push(
            from_client()
                .ipv4(v4(CLIENT), v4(WEB))
                .tcp(cp, 80)
                .seq(101)
                .ack(701)
                .build(),
        );
    }
    v
}

#[test]
fn two_workers_steer_and_give_the_same_output_as_one() {
    let input = mixed_capture();
    let one = replay(&input, &["--workers", "1"]);
    // Every frame of the capture produces exactly one frame.
    assert_eq!(one.frames.len(), input.len(), "{}", one.stdout);
    assert_eq!(one.count("dropped"), 0, "{}", one.stdout);
    assert_eq!(one.count("steered"), 0, "{}", one.stdout);
    for workers in ["2", "3"] {
        let many = replay(&input, &["--workers", workers]);
        assert!(
            many.count("steered") > 0,
            "{workers} workers never steered:\n{}",
            many.stdout
        );
        assert_eq!(many.count("dropped"), 0, "{}", many.stdout);
        assert_eq!(many.frames, one.frames, "{workers} workers differ from one");
    }
    // Replies are reversed with the frontend: spot-check the first IPv4 SYN-ACK.
    assert_eq!(
        hex(&one.data()[5]),
        hex(&forwarded()
            .ipv4(v4(WEB), v4(CLIENT))
            .tcp(80, 42000)
            .syn_ack()
            .seq(700)
            .ack(101)
            .build())
    );
}

// ------------------------------------------------------------------ errors

/// Runs a replay expected to fail; returns its one-line message.
fn replay_error(args: &[&std::ffi::OsStr]) -> String {
    let out = kubypass(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line:\n{stderr}"
    );
    assert!(stderr.starts_with("kubypass: "), "{stderr}");
    stderr
}

#[test]
fn a_missing_input_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pcap");
    let msg = replay_error(&[
        "--manifests".as_ref(),
        manifests().as_os_str(),
        "--input".as_ref(),
        missing.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
    ]);
    assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");
}

#[test]
fn an_input_that_is_not_a_pcap_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pcap");
    std::fs::write(&text, "this is not a capture, only text\n").unwrap();
    let msg = replay_error(&[
        "--manifests".as_ref(),
        manifests().as_os_str(),
        "--input".as_ref(),
        text.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
    ]);
    assert!(msg.contains(&*text.to_string_lossy()), "{msg}");
    assert!(msg.contains("not a pcap"), "{msg}");
}

#[test]
fn a_broken_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    write_pcap(
        &input,
        &[syn(from_client(), CLIENT, WEB, 40000, 80).build()],
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x\nspec: [\n",
    )
    .unwrap();
    let out = dir.path().join("out.pcap");
    let msg = replay_error(&[
        "--manifests".as_ref(),
        manifests().as_os_str(),
        broken.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    assert!(msg.contains(&*broken.to_string_lossy()), "{msg}");
    assert!(!out.exists(), "an output was written despite the error");
}

#[test]
fn a_manifest_object_of_the_wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    write_pcap(&input, &[]);
    let bad = dir.path().join("bad-object.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: 7}\n",
    )
    .unwrap();
    let msg = replay_error(&[
        "--manifests".as_ref(),
        bad.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
    ]);
    assert!(msg.contains(&*bad.to_string_lossy()), "{msg}");
}

#[test]
fn zero_workers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    write_pcap(&input, &[]);
    let msg = replay_error(&[
        "--manifests".as_ref(),
        manifests().as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
        "--workers".as_ref(),
        "0".as_ref(),
    ]);
    assert!(msg.contains("--workers"), "{msg}");
}

// ------------------------------------------------------------------ captures

#[test]
fn frames_larger_than_an_mbuf_are_translated_whole() {
    // A jumbo frame, and a 64 KiB TSO segment as host captures are full of (tcpdump's
    // default snapshot length, 262144, keeps them whole).
    let header = PcapHeader {
        snaplen: 262_144,
        ..PcapHeader::default()
    };
    let jumbo = vec![b'j'; 8000];
    let tso = vec![b't'; 65535 - 20 - 20];
    let to_web = |body: &[u8]| {
        from_client()
            .ipv4(v4(CLIENT), v4(WEB))
            .tcp(40000, 80)
            .payload(body)
            .build()
    };
    let r = replay_capture(
        header,
        &[(ts(0), to_web(&jumbo)), (ts(1), to_web(&tso))],
        &[],
    );
    let out = |body: &[u8]| {
        forwarded()
            .ipv4(v4(CLIENT), v4(WEB_BE))
            .tcp(40000, 8080)
            .payload(body)
    };
    assert_frames(&r, &[(0, out(&jumbo)), (1, out(&tso))]);
}

#[test]
fn nanosecond_timestamps_are_kept_and_time_may_go_backwards() {
    let header = PcapHeader {
        ts_resolution: TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let reply = from_backend()
        .ipv4(v4(WEB_BE), v4(CLIENT))
        .tcp(8080, 40000)
        .syn_ack();
    // Merged captures are not always in time order: the replies come "before" the SYN.
    let stamps = [
        Duration::new(100, 123_456_789),
        Duration::new(5, 1),
        Duration::ZERO,
    ];
    let input = [
        syn(from_client(), CLIENT, WEB, 40000, 80).build(),
        reply.build(),
        reply.clone().ack(2).build(),
    ];
    let stamped: Vec<_> = stamps.iter().copied().zip(input).collect();
    let r = replay_capture(header, &stamped, &[]);
    assert_eq!(r.header.ts_resolution, TsResolution::NanoSecond);
    let reversed = forwarded()
        .ipv4(v4(WEB), v4(CLIENT))
        .tcp(80, 40000)
        .syn_ack();
    let want = vec![
        (
            stamps[0],
            syn(forwarded(), CLIENT, WEB_BE, 40000, 8080).build(),
        ),
        (stamps[1], reversed.build()),
        (stamps[2], reversed.clone().ack(2).build()),
    ];
    assert_eq!(r.frames, want);
}

#[test]
fn a_capture_that_is_not_ethernet_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("any.pcap");
    // `tcpdump -i any` writes Linux cooked captures.
    let header = PcapHeader {
        datalink: DataLink::LINUX_SLL,
        ..PcapHeader::default()
    };
    write_pcap_with(&input, header, &[]);
    let m = manifests();
    let msg = replay_error(&[
        "--manifests".as_ref(),
        m.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
    ]);
    assert!(msg.contains(&*input.to_string_lossy()), "{msg}");
    assert!(msg.contains("not Ethernet"), "{msg}");
}

#[test]
fn arp_neighbour_solicitation_ping_and_expired_ttl_are_answered() {
    const NODE6: &str = "fd00:18::fe";
    let ttl1 = syn(from_client(), CLIENT, WEB, 40000, 80).ttl(1);
    let hop1 = syn(from_client(), CLIENT6, WEB6, 40000, 80).ttl(1);
    let ping = |b: PacketBuilder, seq| b.icmp_echo_request(7, seq).payload(b"ping");
    let r = replay(
        &[
            PacketBuilder::new()
                .arp_request(CLIENT_MAC, v4(CLIENT), v4(WEB))
                .build(),
            ping(from_client().ipv4(v4(CLIENT), v4(WEB)), 1).build(),
            ping(from_client().ipv4(v4(CLIENT), v4(NODE)), 2).build(),
            ttl1.build(),
            from_client()
                .ipv6(v6(CLIENT6), v6("ff02::1:ff00:10"))
                .ttl(255)
                .neighbor_solicit(v6(WEB6), Some(CLIENT_MAC))
                .build(),
            ping(from_client().ipv6(v6(CLIENT6), v6(WEB6)), 3).build(),
            hop1.build(),
        ],
        &["--node-ip", NODE, "--node-ip", NODE6],
    );
    let pong = |b: PacketBuilder, seq| b.icmp_echo_reply(7, seq).payload(b"ping");
    assert_frames(
        &r,
        &[
            (
                0,
                PacketBuilder::new().arp_reply(PORT, v4(WEB), CLIENT_MAC, v4(CLIENT)),
            ),
            (1, pong(reply_to_client().ipv4(v4(WEB), v4(CLIENT)), 1)),
            (2, pong(reply_to_client().ipv4(v4(NODE), v4(CLIENT)), 2)),
            (
                3,
                reply_to_client()
                    .ipv4(v4(NODE), v4(CLIENT))
                    .icmp_time_exceeded(0)
                    .payload(&PacketBuilder::quote(&ttl1.build())),
            ),
            (
                4,
                reply_to_client()
                    .ipv6(v6(WEB6), v6(CLIENT6))
                    .ttl(255)
                    .neighbor_advert(
                        NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
                        v6(WEB6),
                        Some(PORT),
                    ),
            ),
            (5, pong(reply_to_client().ipv6(v6(WEB6), v6(CLIENT6)), 3)),
            (
                6,
                reply_to_client()
                    .ipv6(v6(NODE6), v6(CLIENT6))
                    .icmp_time_exceeded(0)
                    .payload(&PacketBuilder::quote(&hop1.build())),
            ),
        ],
    );
    // The expired frames themselves count as dropped for their TTL.
    assert_eq!(r.count("ttl_exceeded"), 2, "{}", r.stdout);
}

#[test]
fn a_capture_cut_short_names_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cut.pcap");
    write_pcap(
        &input,
        &[
            syn(from_client(), CLIENT, WEB, 40000, 80).build(),
            syn(from_client(), CLIENT, WEB, 40001, 80).build(),
        ],
    );
    // As a capture stopped mid-write leaves it: the second frame's record is cut.
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&input, &bytes[..bytes.len() - 10]).unwrap();
    let m = manifests();
    let msg = replay_error(&[
        "--manifests".as_ref(),
        m.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        dir.path().join("out.pcap").as_os_str(),
    ]);
    assert!(msg.contains(&*input.to_string_lossy()), "{msg}");
    assert!(msg.contains("frame 2 cannot be read"), "{msg}");
}

#[test]
fn the_capture_timestamps_are_the_clock_flows_expire() {
    let query = |sport| {
        from_client()
            .ipv4(v4(CLIENT), v4(EXT))
            .udp(sport, 53)
            .payload(b"q")
    };
    let answer = |dport| {
        from_backend()
            .ipv4(v4(DNS_BE), v4(CLIENT))
            .udp(5353, dport)
            .payload(b"a")
    };
    let at = |s: u64, b: PacketBuilder| (Duration::from_secs(1_700_000_000 + s), b.build());
    // An unreplied UDP flow lives 30 s: the answer at +10 s is translated back, the one
    // at +100 s finds no flow.
    let input = [
        at(0, query(5000)),
        at(0, query(5001)),
        at(10, answer(5000)),
        at(100, answer(5001)),
    ];
    let r = replay_capture(PcapHeader::default(), &input, &[]);
    let out = |dport| {
        forwarded()
            .ipv4(v4(CLIENT), v4(DNS_BE))
            .udp(dport, 5353)
            .payload(b"q")
            .build()
    };
    let want = vec![
        (input[0].0, out(5000)),
        (input[1].0, out(5001)),
        (
            input[2].0,
            forwarded()
                .ipv4(v4(EXT), v4(CLIENT))
                .udp(53, 5000)
                .payload(b"a")
                .build(),
        ),
    ];
    assert_eq!(r.frames, want, "{}", r.stdout);
    assert_eq!(r.count("no_flow"), 1, "{}", r.stdout);
}
