//! The tx checksum offload fallback end to end, in-process (one EAL per test binary, so
//! this file holds a single test): a processor leaves checksums to the NIC on net_pcap
//! ports, which offer no checksum offload, so the workers finish them in software and
//! count it; the output capture holds the frames exactly as if built correct. A frame
//! forwarded with no offload leaves untouched, and one whose offload does not match it
//! is dropped and counted. Needs root.

use kubypass::config::Config;
use kubypass::runtime::{
    self, Action, ChecksumCaps, FrameProcessor, L4Checksum, RunOptions, RuntimeDrop, TxOffload,
};
use kubypass_dataplane::packet_builder::PacketBuilder;
use kubypass_dataplane::wire::IpProtocol;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{leave_to_nic, read_pcap, write_pcap};

/// UDP destination port of the frame sent with no offload (it leaves as it came).
const NO_OFFLOAD_PORT: u16 = 7777;
/// UDP destination port of the frame whose offload claims TCP (it must be dropped).
const WRONG_OFFLOAD_PORT: u16 = 9999;

/// What a processor leaves to the NIC for `frame` (Ethernet, optional VLAN tag, IPv4 or
/// IPv6 without extension headers): every checksum it has. This test's stand-in for
/// the dataplane's offload intent.
fn offload_of(frame: &[u8]) -> TxOffload {
    let (l2, ethertype) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 => (18, u16::from_be_bytes([frame[16], frame[17]])),
        t => (14, t),
    };
    let ip = &frame[l2..];
    let (ipv6, l3, proto) = if ethertype == 0x86dd {
        (true, 40, ip[6])
    } else {
        (false, usize::from(ip[0] & 0xf) * 4, ip[9])
    };
    let l4 = match proto {
        6 => Some(L4Checksum::Tcp),
        17 => Some(L4Checksum::Udp),
        132 => Some(L4Checksum::Sctp),
        _ => None,
    };
    TxOffload {
        ipv4_header: !ipv6,
        l4,
        ipv6,
        l2_len: l2 as u8,
        l3_len: l3 as u16,
    }
}

fn udp_dst_port(frame: &[u8], o: &TxOffload) -> Option<u16> {
    if o.l4 != Some(L4Checksum::Udp) {
        return None;
    }
    let at = usize::from(o.l2_len) + usize::from(o.l3_len) + 2;
    Some(u16::from_be_bytes([frame[at], frame[at + 1]]))
}

/// Port 0 → port 1, leaving every checksum to the NIC (see [`offload_of`]), except the
/// two marked frames.
struct LeaveToNic;

impl FrameProcessor for LeaveToNic {
    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, _now: u64) -> Action {
        let frame = &buf[..*len];
        let mut offload = offload_of(frame);
        match udp_dst_port(frame, &offload) {
            Some(NO_OFFLOAD_PORT) => offload = TxOffload::NONE,
            Some(WRONG_OFFLOAD_PORT) => offload.l4 = Some(L4Checksum::Tcp),
            _ => {}
        }
        Action::Forward {
            port: rx_port ^ 1,
            offload,
        }
    }
}

#[test]
fn checksums_left_to_a_port_without_offloads_are_finished_in_software_and_counted() {
    let c4 = Ipv4Addr::new(198, 18, 0, 1);
    let s4 = Ipv4Addr::new(198, 19, 0, 10);
    let c6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let s6: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let data: Vec<u8> = (0..101u8).collect();
    let mut padded = PacketBuilder::new().ipv4(c4, s4).udp(1, 53).build();
    padded.resize(60, 0);
    let good = vec![
        PacketBuilder::new()
            .ipv4(c4, s4)
            .tcp(40000, 80)
            .syn()
            .build(),
        PacketBuilder::new()
            .ipv4(c4, s4)
            .udp(40000, 53)
            .payload(&data)
            .build(),
        PacketBuilder::new()
            .ipv4(c4, s4)
            .sctp(40000, 3868)
            .sctp_init(5)
            .build(),
        PacketBuilder::new()
            .ipv6(c6, s6)
            .tcp(40000, 443)
            .payload(&data)
            .build(),
        PacketBuilder::new().ipv6(c6, s6).udp(40000, 53).build(),
        PacketBuilder::new()
            .ipv6(c6, s6)
            .sctp(40000, 3868)
            .sctp_init(6)
            .build(),
        PacketBuilder::new()
            .vlan(42)
            .ipv4(c4, s4)
            .ipv4_options(&[1, 1, 1, 1])
            .tcp(40000, 80)
            .build(),
        padded,
    ];
    let offloaded = good.len() as u64;
    let broken: Vec<Vec<u8>> = good
        .iter()
        .map(|g| leave_to_nic(g, &offload_of(g)))
        .collect();
    for (g, b) in good.iter().zip(&broken) {
        assert_ne!(g, b, "the contract left nothing to the NIC");
    }
    // Sent as it is, with a bad IPv4 header checksum: the runtime must not touch it.
    let mut untouched = PacketBuilder::new()
        .ipv4(c4, s4)
        .udp(1, NO_OFFLOAD_PORT)
        .build();
    untouched[14 + 10] ^= 0xff;
    let mismatched = PacketBuilder::new()
        .ipv4(c4, s4)
        .udp(1, WRONG_OFFLOAD_PORT)
        .build();
    let mismatched = leave_to_nic(&mismatched, &offload_of(&mismatched));
    let mut input = broken.clone();
    input.push(untouched.clone());
    input.push(mismatched);
    let header_only = PacketBuilder::new()
        .ipv4(c4, s4)
        .raw(IpProtocol::Unknown(253))
        .payload(&[1, 2, 3, 4])
        .build();
    // No transport checksum: the IPv4 header one only, finished in software too.
    input.push(leave_to_nic(&header_only, &offload_of(&header_only)));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write_pcap(&dir.path().join("in_a.pcap"), &input);
    write_pcap(&dir.path().join("in_b.pcap"), &[]);
    let config = Config::parse(&format!(
        "eal: {{lcores: \"0-1\", no_huge: true, memory_mb: 256}}\n\
         ports:\n  - {{name: a, device: 'net_pcap0,rx_pcap={d}/in_a.pcap,tx_pcap={d}/out_a.pcap'}}\n  \
         - {{name: b, device: 'net_pcap1,rx_pcap={d}/in_b.pcap,tx_pcap={d}/out_b.pcap', checksum_offload: off}}\n\
         mempool: {{size: 2047}}\n"
    ))
    .unwrap();
    let opts = RunOptions {
        duration: Some(Duration::from_millis(800)),
        ..RunOptions::default()
    };
    let seen_caps = Mutex::new(None);
    let summary = runtime::run_with(
        &config,
        &opts,
        Arc::new(AtomicBool::new(false)),
        |slot| {
            assert_eq!(&*slot.tx_checksum, &[ChecksumCaps::NONE; 2]);
            LeaveToNic
        },
        |ready| *seen_caps.lock().unwrap() = Some(ready.tx_checksum.to_vec()),
    )
    .expect("appliance runs");
    assert_eq!(
        seen_caps.into_inner().unwrap(),
        Some(vec![ChecksumCaps::NONE; 2]),
        "net_pcap offers no checksum offload"
    );
    assert_eq!(summary.mempool_in_use, 0, "mbufs leaked");
    let t = summary.totals;
    assert_eq!(t.rx, input.len() as u64);
    assert_eq!(t.offload_fallback, offloaded + 1, "every offloaded frame");
    assert_eq!(t.runtime_drops[RuntimeDrop::BadOffload as usize], 1);
    assert_eq!(t.drops(), 1);

    let out = read_pcap(&dir.path().join("out_b.pcap"));
    let mut want = good.clone();
    want.push(untouched);
    want.push(header_only);
    assert_eq!(out.len(), want.len());
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        assert_eq!(o, w, "frame {i}");
    }
}
