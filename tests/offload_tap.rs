//! Tx checksum offload through a PMD that honours it, in-process (one EAL per test
//! binary, so this file holds a single test). net_tap offers the IPv4, TCP and UDP
//! checksum offloads (it finishes them in its own tx path, as a NIC would), not SCTP's:
//! frames a processor leaves unfinished go out of a tap port with the flags and header
//! lengths set, are captured back from the tap interface by an af_packet port, and
//! must equal the frames built correct; SCTP falls back to software and is counted.
//! Needs root (/dev/net/tun).

use kubypass::config::Config;
use kubypass::runtime::{
    self, Action, ChecksumCaps, FrameProcessor, L4Checksum, RunOptions, TxOffload,
};
use kubypass_dataplane::packet_builder::PacketBuilder;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{leave_to_nic, read_pcap, write_pcap};

const INPUT: u16 = 0;
const TAP: u16 = 1;
const CAPTURE: u16 = 2;
const OUTPUT: u16 = 3;

const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const S4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

fn c6() -> Ipv6Addr {
    "2001:db8::1".parse().unwrap()
}

/// What the test frames (Ethernet, optional VLAN tag, IPv4 or IPv6 without extension
/// headers) leave to the NIC: every checksum they have.
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

/// Whether a frame is one of the test's (by source address), not the kernel's own
/// traffic on the tap interface.
fn is_test_frame(frame: &[u8]) -> bool {
    let o = offload_of(frame);
    let ip = &frame[usize::from(o.l2_len)..];
    if o.ipv6 {
        ip.get(8..24) == Some(&c6().octets()[..])
    } else {
        ip.get(12..16) == Some(&C4.octets()[..])
    }
}

/// Input → tap, leaving every checksum to the NIC; what the capture port sees of the
/// test frames → output; everything else dropped.
struct ThroughTap;

impl FrameProcessor for ThroughTap {
    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, _now: u64) -> Action {
        let frame = &buf[..*len];
        match rx_port {
            INPUT => Action::Forward {
                port: TAP,
                offload: offload_of(frame),
            },
            CAPTURE if is_test_frame(frame) => Action::Forward {
                port: OUTPUT,
                offload: TxOffload::NONE,
            },
            _ => Action::Drop { reason: 0 },
        }
    }
}

#[test]
fn a_pmd_with_checksum_offloads_finishes_what_the_flags_ask() {
    let s6: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let data: Vec<u8> = (0..77u8).map(|i| i.wrapping_mul(13)).collect();
    let good = vec![
        PacketBuilder::new()
            .ipv4(C4, S4)
            .tcp(40000, 80)
            .syn()
            .build(),
        PacketBuilder::new()
            .ipv4(C4, S4)
            .tcp(40001, 80)
            .payload(&data)
            .build(),
        PacketBuilder::new()
            .ipv4(C4, S4)
            .udp(40000, 53)
            .payload(&data)
            .build(),
        PacketBuilder::new()
            .ipv4(C4, S4)
            .ipv4_options(&[1, 1, 1, 1])
            .udp(40000, 53)
            .build(),
        PacketBuilder::new()
            .ipv4(C4, S4)
            .sctp(40000, 3868)
            .sctp_init(5)
            .build(),
        PacketBuilder::new()
            .ipv6(c6(), s6)
            .tcp(40000, 443)
            .payload(&data)
            .build(),
        PacketBuilder::new()
            .ipv6(c6(), s6)
            .udp(40000, 53)
            .payload(&data[..10])
            .build(),
        PacketBuilder::new()
            .ipv6(c6(), s6)
            .sctp(40000, 3868)
            .sctp_init(6)
            .build(),
    ];
    let sctp_frames = 2;
    let input: Vec<Vec<u8>> = good
        .iter()
        .map(|g| leave_to_nic(g, &offload_of(g)))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write_pcap(&dir.path().join("in.pcap"), &input);
    write_pcap(&dir.path().join("none.pcap"), &[]);
    let iface = format!("kbpck{}", std::process::id() % 100_000);
    let config = Config::parse(&format!(
        "eal: {{lcores: \"0-1\", no_huge: true, memory_mb: 256}}\n\
         ports:\n  - {{name: in, device: 'net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/in_tx.pcap'}}\n  \
         - {{name: tap, device: 'net_tap0,iface={iface}'}}\n  \
         - {{name: cap, device: 'net_af_packet0,iface={iface}'}}\n  \
         - {{name: out, device: 'net_pcap1,rx_pcap={d}/none.pcap,tx_pcap={d}/out.pcap', checksum_offload: off}}\n\
         mempool: {{size: 2047}}\n"
    ))
    .unwrap();
    let opts = RunOptions {
        duration: Some(Duration::from_millis(1500)),
        ..RunOptions::default()
    };
    let caps = Mutex::new(Vec::new());
    let summary = runtime::run_with(
        &config,
        &opts,
        Arc::new(AtomicBool::new(false)),
        |_| ThroughTap,
        |ready| *caps.lock().unwrap() = ready.tx_checksum.to_vec(),
    )
    .expect("appliance runs");
    let caps = caps.into_inner().unwrap();
    let tap_caps = ChecksumCaps {
        ipv4: true,
        tcp: true,
        udp: true,
        sctp: false,
    };
    assert_eq!(
        caps,
        [
            ChecksumCaps::NONE,
            tap_caps,
            ChecksumCaps::NONE,
            ChecksumCaps::NONE
        ]
    );
    assert_eq!(summary.mempool_in_use, 0, "mbufs leaked");
    assert_eq!(
        summary.totals.offload_fallback, sctp_frames,
        "only SCTP lacks an offload on the tap"
    );

    let out = read_pcap(&dir.path().join("out.pcap"));
    assert_eq!(
        out.len(),
        good.len(),
        "every frame came back through the tap"
    );
    for (i, (o, g)) in out.iter().zip(&good).enumerate() {
        assert_eq!(o, g, "frame {i}");
    }
}
