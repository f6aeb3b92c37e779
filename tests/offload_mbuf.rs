//! Tx checksum offload on real mbufs and ports, in-process (one EAL per test binary, so
//! this file holds a single test): `prepare_tx` writes the tx flags and l2/l3 lengths for
//! the checksums a port offloads and finishes the others in software; a device that
//! offers no checksum offload (net_null) gets none enabled whatever is asked. Needs root.

use kubypass::config::Config;
use kubypass::dpdk::{tx_flags, ChecksumCaps, Eal, Mbuf, Mempool, Port, BUILD_PMD_DIR};
use kubypass::runtime::{prepare_tx, L4Checksum, OffloadError, TxOffload};
use kubypass_dataplane::packet_builder::PacketBuilder;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

mod common;
use common::leave_to_nic;

const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const S4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

/// An rx flag (RTE_MBUF_F_RX_RSS_HASH) standing in for what a PMD leaves on a received
/// mbuf: it must survive when nothing is offloaded.
const RX_FLAG: u64 = 1 << 1;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn mbuf_with(pool: &Mempool, frame: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("mbuf");
    m.write_frame(frame).unwrap();
    m.set_ol_flags(RX_FLAG);
    m
}

#[test]
fn prepare_tx_flags_offloaded_checksums_and_finishes_the_rest_on_real_mbufs() {
    let config = Config::parse(
        "eal: {lcores: \"0\", no_huge: true, memory_mb: 128}\nports: [{name: a, device: net_null0}]\n",
    )
    .unwrap();
    let devices = config.validate().unwrap();
    let pmd_dir = (!BUILD_PMD_DIR.is_empty()).then(|| Path::new(BUILD_PMD_DIR));
    let tag = format!("offload-mbuf-{}", std::process::id());
    let eal = Eal::init(&config.eal_args(&devices, pmd_dir, &tag)).expect("EAL (run as root)");
    let pool = Mempool::new(&eal, "offload_test", 1023, 256, 2176, eal.socket_id()).unwrap();

    // The port enables what the device offers of what is asked: net_null offers no
    // checksum offload, so `auto` (ALL) leaves it with none, and `off` asks for none.
    {
        let mut port = Port::by_name(&eal, "net_null0").unwrap();
        let offered = port.info().unwrap().tx_checksum_capa();
        assert_eq!(
            port.tx_checksum_offloads(),
            ChecksumCaps::NONE,
            "before configure"
        );
        port.configure(1, 512, 512, &pool, ChecksumCaps::ALL)
            .unwrap();
        assert_eq!(port.tx_checksum_offloads(), offered);
        assert_eq!(
            offered,
            ChecksumCaps::NONE,
            "net_null offers checksum offloads now?"
        );
        port.configure(1, 512, 512, &pool, ChecksumCaps::NONE)
            .unwrap();
        assert_eq!(port.tx_checksum_offloads(), ChecksumCaps::NONE);
    }
    // The RTE_ETH_TX_OFFLOAD_* bits round-trip and are distinct.
    let bits = ChecksumCaps::ALL.tx_offloads();
    assert_eq!(bits.count_ones(), 4);
    assert_eq!(ChecksumCaps::from_tx_offloads(bits), ChecksumCaps::ALL);
    let udp_only = ChecksumCaps {
        udp: true,
        ..ChecksumCaps::NONE
    };
    assert_eq!(
        ChecksumCaps::from_tx_offloads(udp_only.tx_offloads()),
        udp_only
    );

    let tcp4 = PacketBuilder::new()
        .ipv4(C4, S4)
        .tcp(40000, 80)
        .payload(b"hello, offload")
        .build();
    let tcp4_off = TxOffload {
        ipv4_header: true,
        l4: Some(L4Checksum::Tcp),
        ipv6: false,
        l2_len: 14,
        l3_len: 20,
    };
    let broken = leave_to_nic(&tcp4, &tcp4_off);

    // A port with every offload: flags and lengths set, the frame left for the NIC.
    let mut m = mbuf_with(&pool, &broken);
    let done = prepare_tx(&mut m, &tcp4_off, ChecksumCaps::ALL).unwrap();
    assert!(!done.fell_back());
    assert_eq!(
        m.ol_flags(),
        tx_flags::IPV4 | tx_flags::IP_CKSUM | tx_flags::TCP_CKSUM
    );
    assert_eq!(m.tx_header_lens(), (14, 20));
    assert_eq!(m.data(), &broken[..], "left for the NIC");

    // A port with none: the fallback finishes the frame; the mbuf's flags stay.
    m = mbuf_with(&pool, &broken);
    let done = prepare_tx(&mut m, &tcp4_off, ChecksumCaps::NONE).unwrap();
    assert!(done.fell_back());
    assert_eq!(done.software, tcp4_off);
    assert_eq!(m.ol_flags(), RX_FLAG);
    assert_eq!(m.data(), &tcp4[..], "finished in software");

    // Partial: the port does the IPv4 header, software the UDP checksum.
    let udp4 = PacketBuilder::new().ipv4(C4, S4).udp(5353, 53).build();
    let udp4_off = TxOffload {
        l4: Some(L4Checksum::Udp),
        ..tcp4_off
    };
    let broken_udp = leave_to_nic(&udp4, &udp4_off);
    let ipv4_only = ChecksumCaps {
        ipv4: true,
        ..ChecksumCaps::NONE
    };
    m = mbuf_with(&pool, &broken_udp);
    let done = prepare_tx(&mut m, &udp4_off, ipv4_only).unwrap();
    assert!(done.fell_back());
    assert_eq!(m.ol_flags(), tx_flags::IPV4 | tx_flags::IP_CKSUM);
    assert_eq!(m.tx_header_lens(), (14, 20));
    let mut want = udp4.clone();
    want[14 + 10..14 + 12].fill(0); // the header checksum is still the NIC's to write
    assert_eq!(m.data(), &want[..]);

    // IPv6 behind a VLAN tag, with an extension header: l2 18, l3 48.
    let udp6 = PacketBuilder::new()
        .vlan(7)
        .ipv6(v6("2001:db8::1"), v6("2001:db8:1::10"))
        .ipv6_ext(kubypass_dataplane::wire::IpProtocol::HopByHop, 8)
        .udp(40000, 53)
        .payload(&[1, 2, 3])
        .build();
    let udp6_off = TxOffload {
        ipv4_header: false,
        l4: Some(L4Checksum::Udp),
        ipv6: true,
        l2_len: 18,
        l3_len: 48,
    };
    let broken6 = leave_to_nic(&udp6, &udp6_off);
    m = mbuf_with(&pool, &broken6);
    prepare_tx(&mut m, &udp6_off, ChecksumCaps::ALL).unwrap();
    assert_eq!(m.ol_flags(), tx_flags::IPV6 | tx_flags::UDP_CKSUM);
    assert_eq!(m.tx_header_lens(), (18, 48));
    m = mbuf_with(&pool, &broken6);
    prepare_tx(&mut m, &udp6_off, ChecksumCaps::NONE).unwrap();
    assert_eq!(m.data(), &udp6[..]);

    // SCTP on a port with TCP/UDP/IPv4 but no SCTP: all in software, no flags.
    let sctp4 = PacketBuilder::new()
        .ipv4(C4, S4)
        .sctp(40000, 3868)
        .sctp_init(11)
        .build();
    let sctp4_off = TxOffload {
        l4: Some(L4Checksum::Sctp),
        ..tcp4_off
    };
    let no_sctp = ChecksumCaps {
        sctp: false,
        ..ChecksumCaps::ALL
    };
    m = mbuf_with(&pool, &leave_to_nic(&sctp4, &sctp4_off));
    let done = prepare_tx(&mut m, &sctp4_off, no_sctp).unwrap();
    assert_eq!(m.ol_flags(), tx_flags::IPV4 | tx_flags::IP_CKSUM);
    assert_eq!(done.software.l4, Some(L4Checksum::Sctp));
    let mut want = sctp4.clone();
    want[14 + 10..14 + 12].fill(0);
    assert_eq!(m.data(), &want[..]);

    // A frame that does not match its offload: an error, the mbuf untouched.
    m = mbuf_with(&pool, &broken[..30]);
    assert_eq!(
        prepare_tx(&mut m, &tcp4_off, ChecksumCaps::NONE),
        Err(OffloadError::Truncated)
    );
    assert_eq!(m.ol_flags(), RX_FLAG);
    assert_eq!(m.data(), &broken[..30]);

    drop(m);
    assert_eq!(pool.in_use(), 0, "every mbuf went back");
    drop(pool);
    drop(eal);
}
