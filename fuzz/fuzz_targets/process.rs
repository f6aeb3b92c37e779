//! Fuzzes `Worker::process` with a fixed small table: any frame, on any port, at any
//! time, must neither panic nor leave a length beyond the buffer, and a frame it sends
//! (`Forward`/`Reply`) must have come from one it could parse. The first byte chooses the
//! rx port, the clock, the worker's settings and whether the frame is run twice (to reach
//! tracked-flow paths); the second how many copies make a burst, which goes through the
//! burst look-ahead (`Worker::prefetch`) before it is processed, as on the appliance.
//! Run: `cargo +nightly fuzz run process` from the repository root;
//! `scripts/test.sh` checks that it builds.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use kubypass_dataplane::pipeline::{
    Context, NeighbourTable, PortConfig, Verdict, Worker, WorkerConfig,
};
use kubypass_dataplane::table::{
    Backend, Conditions, FrontendKey, FrontendKind, L4Protocol, NoBackendAction, ServiceSpec,
    ServiceTable,
};
use kubypass_dataplane::wire::{EtherType, EthernetFrame};
use libfuzzer_sys::fuzz_target;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn table() -> &'static ServiceTable {
    static T: OnceLock<ServiceTable> = OnceLock::new();
    T.get_or_init(|| {
        let mut b = ServiceTable::builder().generation(1).workers(2);
        for (name, proto, vip, port, be, affinity, no_backend) in [
            (
                "web",
                L4Protocol::Tcp,
                "198.19.0.10",
                80,
                Some("10.0.0.1"),
                None,
                NoBackendAction::Reject,
            ),
            (
                "dns",
                L4Protocol::Udp,
                "198.19.0.10",
                53,
                Some("10.0.0.2"),
                Some(60),
                NoBackendAction::Reject,
            ),
            (
                "sctp",
                L4Protocol::Sctp,
                "198.19.0.10",
                3868,
                Some("10.0.0.3"),
                None,
                NoBackendAction::Reject,
            ),
            (
                "web6",
                L4Protocol::Tcp,
                "fd00:19::10",
                80,
                Some("fd00:10::1"),
                None,
                NoBackendAction::Reject,
            ),
            (
                "empty",
                L4Protocol::Udp,
                "198.19.0.20",
                53,
                None,
                None,
                NoBackendAction::Reject,
            ),
            (
                "empty6",
                L4Protocol::Tcp,
                "fd00:19::20",
                80,
                None,
                None,
                NoBackendAction::Drop,
            ),
        ] {
            let backends = be
                .map(|a| {
                    vec![Backend {
                        addr: ip(a),
                        port: 8080,
                        weight: 1,
                        conditions: Conditions::READY,
                    }]
                })
                .unwrap_or_default();
            let id = b.add_service(ServiceSpec {
                name: name.into(),
                protocol: proto,
                backends,
                affinity_timeout_secs: affinity,
                no_backend,
            });
            b.add_frontend(
                FrontendKey {
                    addr: ip(vip),
                    port,
                    protocol: proto,
                },
                FrontendKind::ClusterIp,
                id,
                vec![],
            )
            .unwrap();
        }
        b.build()
    })
}

fn config(promiscuous: bool, resolved: bool) -> WorkerConfig {
    WorkerConfig {
        index: 0,
        workers: 2,
        ports: vec![
            PortConfig {
                mac: [2, 0, 0, 0, 0, 2],
                addrs: vec![(ip("198.18.0.254"), 24), (ip("fd00:18::fe"), 64)],
                tx_offloads: Default::default(),
            },
            PortConfig {
                mac: [2, 0, 0, 0, 1, 1],
                addrs: vec![(ip("10.0.0.254"), 24), (ip("fd00:10::fe"), 64)],
                tx_offloads: Default::default(),
            },
        ],
        conntrack_capacity: 64,
        affinity_capacity: 16,
        fragment_capacity: 8,
        promiscuous,
        assume_resolved: resolved.then_some([2, 0, 0, 0, 0, 0x99]),
        ..WorkerConfig::default()
    }
}

fn parses(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    matches!(
        eth.ethertype(),
        EtherType::Arp | EtherType::Ipv4 | EtherType::Ipv6
    )
}

/// The look-ahead's prefetch: nothing to bring in here, but it makes the look-ahead run.
fn no_prefetch(_: *const u8) {}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let Some((&copies, frame)) = rest.split_first() else {
        return;
    };
    let rx = u16::from(ctl & 3);
    let twice = ctl & 4 != 0;
    let mut worker = Worker::new(config(ctl & 8 != 0, ctl & 16 == 0));
    worker.set_prefetcher(no_prefetch);
    let neighbours = NeighbourTable::default();
    let ctx = Context {
        table: table(),
        neighbours: &neighbours,
    };
    let mut now = u64::from(ctl >> 5) * 700_000_000;
    // 1 to 80 copies: bursts shorter and longer than the look-ahead.
    let copies = 1 + usize::from(copies) % 80;
    for _ in 0..if twice { 2 } else { 1 } {
        let mut burst: Vec<(Vec<u8>, usize)> = (0..copies)
            .map(|_| {
                let mut buf = frame.to_vec();
                buf.resize(frame.len() + 256, 0);
                (buf, frame.len())
            })
            .collect();
        worker.begin_burst();
        for (buf, len) in &burst {
            worker.prefetch(&buf[..*len], &ctx);
        }
        for (buf, len) in &mut burst {
            let v = worker.process(buf, len, rx, now, &ctx);
            assert!(*len <= buf.len());
            if matches!(v, Verdict::Forward(_) | Verdict::Reply) {
                assert!(parses(frame), "{v:?} for an unparseable frame");
            }
        }
        worker.slow_job(now, &ctx);
        now += 1_500_000_000;
    }
});
