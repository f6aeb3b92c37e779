//! The burst-level fast path of `FrameProcessor` end to end, in-process (one EAL per
//! test binary, so this file holds a single test): bursts a processor forwards whole
//! leave on the named port byte for byte, segmented frames included, without any
//! per-frame call; a whole burst sent to a port that does not exist is freed and counted.
//! Needs root.

use kubypass::config::Config;
use kubypass::runtime::{self, Action, FrameProcessor, RunOptions, RuntimeDrop};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{frame, read_pcap, write_pcap};

/// Bursts from port 0 go whole to port 1; bursts from port 1 go whole to port 7, which
/// does not exist. Counts every per-frame call, which must never come.
struct WholeBursts {
    per_frame_calls: Arc<AtomicUsize>,
}

impl FrameProcessor for WholeBursts {
    fn forward_whole_burst(&mut self, rx_port: u16) -> Option<u16> {
        Some(if rx_port == 0 { 1 } else { 7 })
    }

    fn begin_burst(&mut self, _now_ns: u64) {
        self.per_frame_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn process(&mut self, _buf: &mut [u8], _len: &mut usize, _rx: u16, _now: u64) -> Action {
        self.per_frame_calls.fetch_add(1, Ordering::Relaxed);
        Action::Drop { reason: 0 }
    }
}

#[test]
fn whole_bursts_leave_untouched_and_bad_ports_are_counted_drops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // data_room 1152 = 128 headroom + 1024 bytes: the 1400-byte frame needs two mbufs,
    // and still leaves whole (io forwarding does not look at segments).
    let in_a = vec![frame(100, 1), frame(64, 2), frame(1400, 3), frame(60, 4)];
    let in_b = vec![frame(60, 5), frame(500, 6), frame(1020, 7)];
    write_pcap(&dir.path().join("in_a.pcap"), &in_a);
    write_pcap(&dir.path().join("in_b.pcap"), &in_b);
    let config = Config::parse(&format!(
        "eal: {{lcores: \"0-1\", no_huge: true, memory_mb: 256}}\n\
         ports:\n  - {{name: a, device: 'net_pcap0,rx_pcap={d}/in_a.pcap,tx_pcap={d}/out_a.pcap'}}\n  \
         - {{name: b, device: 'net_pcap1,rx_pcap={d}/in_b.pcap,tx_pcap={d}/out_b.pcap'}}\n\
         mempool: {{size: 2047, data_room: 1152}}\n"
    ))
    .unwrap();
    let opts = RunOptions {
        duration: Some(Duration::from_millis(800)),
        ..RunOptions::default()
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let summary = runtime::run(&config, &opts, Arc::new(AtomicBool::new(false)), |_| {
        WholeBursts {
            per_frame_calls: Arc::clone(&calls),
        }
    })
    .expect("appliance runs");
    assert_eq!(summary.mempool_in_use, 0, "mbufs leaked");
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no per-frame call");
    let t = summary.totals;
    assert_eq!(t.rx, 7);
    assert_eq!(t.tx, 4, "every frame of port a's bursts");
    assert_eq!(
        t.runtime_drops[RuntimeDrop::BadPort as usize],
        3,
        "port b's"
    );
    assert_eq!(t.drops(), 3);
    assert_eq!(
        read_pcap(&dir.path().join("out_b.pcap")),
        in_a,
        "unchanged, in order"
    );
    assert!(read_pcap(&dir.path().join("out_a.pcap")).is_empty());
}
