//! The `FrameProcessor` contract end to end, in-process (one EAL per test binary, so
//! this file holds a single test): a custom processor shrinks, grows and drops frames on
//! net_pcap ports, and the output captures show exactly those edits; a frame too big
//! for one mbuf arrives segmented and is dropped and counted. Needs root.

use kubypass::config::Config;
use kubypass::runtime::{self, Action, FrameProcessor, RunOptions, RuntimeDrop, TxOffload};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{frame, read_pcap, write_pcap};

/// Port 0 → 1: cut the last 4 bytes. Port 1 → 0: append 8 bytes 0xEE. A frame whose
/// byte 14 is 0xDD is dropped with reason 1.
struct Editor;

impl FrameProcessor for Editor {
    fn drop_reason_names() -> &'static [&'static str] {
        &["unused", "marked"]
    }

    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, _now: u64) -> Action {
        if buf.get(14) == Some(&0xDD) {
            return Action::Drop { reason: 1 };
        }
        if rx_port == 0 {
            *len -= 4;
            Action::Forward {
                port: 1,
                offload: TxOffload::NONE,
            }
        } else {
            let Some(tail) = buf.get_mut(*len..*len + 8) else {
                return Action::Drop { reason: 0 };
            };
            tail.fill(0xEE);
            *len += 8;
            Action::Forward {
                port: 0,
                offload: TxOffload::NONE,
            }
        }
    }
}

#[test]
fn processor_edits_lengths_drops_with_reasons_and_segmented_frames_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // data_room 1152 = 128 headroom + 1024 bytes: the 1400-byte frame needs two mbufs.
    let in_a = vec![
        frame(100, 1),
        frame(64, 0xDD),
        frame(1000, 2),
        frame(1400, 3),
    ];
    let in_b = vec![frame(60, 4), frame(500, 5), frame(1020, 6)];
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
    let summary = runtime::run(&config, &opts, Arc::new(AtomicBool::new(false)), |_| Editor)
        .expect("appliance runs");
    assert_eq!(summary.mempool_in_use, 0, "mbufs leaked");
    let t = summary.totals;
    assert_eq!(t.rx, 7);
    assert_eq!(t.processor_drops[1], 1, "marked frame");
    assert_eq!(
        t.runtime_drops[RuntimeDrop::Segmented as usize],
        1,
        "1400-byte frame"
    );
    // The 1020-byte frame cannot grow by 8 within 1024 bytes of room: the processor drops it.
    assert_eq!(t.processor_drops[0], 1, "frame without tailroom");
    assert_eq!(t.tx, 4);

    let out_b = read_pcap(&dir.path().join("out_b.pcap"));
    let want_b: Vec<Vec<u8>> = [&in_a[0], &in_a[2]]
        .iter()
        .map(|f| f[..f.len() - 4].to_vec())
        .collect();
    assert_eq!(out_b, want_b, "port a frames shortened by 4 on port b");

    let out_a = read_pcap(&dir.path().join("out_a.pcap"));
    let want_a: Vec<Vec<u8>> = [&in_b[0], &in_b[1]]
        .iter()
        .map(|f| {
            let mut g = f.to_vec();
            g.extend_from_slice(&[0xEE; 8]);
            g
        })
        .collect();
    assert_eq!(out_a, want_a, "port b frames grown by 8 on port a");
}
