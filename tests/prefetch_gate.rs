//! The worker loop's look-ahead gate end to end, in-process (one EAL per test binary, so
//! this file holds a single test): a burst whose processor wants prefetching has every
//! frame handed to `prefetch`, in order, before the first is processed; a burst whose
//! processor does not has none. Needs root.

use kubypass::config::Config;
use kubypass::runtime::{self, Action, FrameProcessor, RunOptions};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{frame, write_pcap};

/// One burst as the processor saw it.
#[derive(Debug, Default)]
struct Seen {
    wanted: bool,
    prefetched: Vec<Vec<u8>>,
    processed: Vec<Vec<u8>>,
    /// Whether a frame was prefetched after the burst's first `process`.
    prefetched_late: bool,
}

/// Wants prefetching on every other burst (the first included); records what it is
/// handed.
struct Recorder {
    bursts: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn with_current(&self, f: impl FnOnce(&mut Seen)) {
        if let Some(seen) = self.bursts.lock().unwrap().last_mut() {
            f(seen);
        }
    }
}

impl FrameProcessor for Recorder {
    fn begin_burst(&mut self, _now_ns: u64) {
        let mut bursts = self.bursts.lock().unwrap();
        let wanted = bursts.len() % 2 == 0;
        bursts.push(Seen {
            wanted,
            ..Seen::default()
        });
    }

    fn wants_prefetch(&self) -> bool {
        self.bursts.lock().unwrap().last().is_some_and(|s| s.wanted)
    }

    fn prefetch(&mut self, frame: &[u8]) {
        self.with_current(|s| {
            s.prefetched_late |= !s.processed.is_empty();
            s.prefetched.push(frame.to_vec());
        });
    }

    fn process(&mut self, buf: &mut [u8], len: &mut usize, _rx: u16, _now: u64) -> Action {
        let frame = buf[..*len].to_vec();
        self.with_current(|s| s.processed.push(frame));
        Action::Drop { reason: 0 }
    }
}

#[test]
fn frames_are_prefetched_in_order_when_wanted_and_not_at_all_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Two ports, one burst each (a pcap port hands its whole file in one burst of up to
    // 32): one burst with prefetching, one without.
    let in_a = vec![frame(100, 1), frame(64, 2), frame(60, 3)];
    let in_b = vec![frame(60, 4), frame(500, 5)];
    write_pcap(&dir.path().join("in_a.pcap"), &in_a);
    write_pcap(&dir.path().join("in_b.pcap"), &in_b);
    let config = Config::parse(&format!(
        "eal: {{lcores: \"0-1\", no_huge: true, memory_mb: 256}}\n\
         ports:\n  - {{name: a, device: 'net_pcap0,rx_pcap={d}/in_a.pcap,tx_pcap={d}/out_a.pcap'}}\n  \
         - {{name: b, device: 'net_pcap1,rx_pcap={d}/in_b.pcap,tx_pcap={d}/out_b.pcap'}}\n"
    ))
    .unwrap();
    let opts = RunOptions {
        duration: Some(Duration::from_millis(800)),
        ..RunOptions::default()
    };
    let bursts = Arc::new(Mutex::new(Vec::new()));
    let summary = runtime::run(&config, &opts, Arc::new(AtomicBool::new(false)), |_| {
        Recorder {
            bursts: Arc::clone(&bursts),
        }
    })
    .expect("appliance runs");
    assert_eq!(summary.mempool_in_use, 0, "mbufs leaked");
    assert_eq!(summary.totals.rx, 5);
    let bursts = bursts.lock().unwrap();
    let processed: usize = bursts.iter().map(|s| s.processed.len()).sum();
    assert_eq!(processed, 5, "every frame processed once: {bursts:?}");
    assert!(
        bursts.iter().any(|s| s.wanted && !s.processed.is_empty())
            && bursts.iter().any(|s| !s.wanted && !s.processed.is_empty()),
        "a burst of each kind: {bursts:?}"
    );
    for (i, s) in bursts.iter().enumerate() {
        if s.wanted {
            assert_eq!(
                s.prefetched, s.processed,
                "burst {i}: every frame, in order"
            );
            assert!(
                !s.prefetched_late,
                "burst {i}: all before the first process"
            );
        } else {
            assert!(s.prefetched.is_empty(), "burst {i}: none when not wanted");
        }
    }
}
