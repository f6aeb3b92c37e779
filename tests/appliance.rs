//! Integration tests: spawn the built `kubypass` binary on DPDK virtual devices
//! (--no-huge, so no hugepages are needed) and check what it forwarded, its counters,
//! its shutdown, and its error messages. They need root, as DPDK does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::{read_pcap, write_pcap};

/// DPDK runs busy-poll lcores; on a 2-CPU machine they must not overlap.
static DPDK: Mutex<()> = Mutex::new(());

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubypass")
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    DPDK.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("kubypass.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(config: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("spawn kubypass")
}

/// `key=value` pairs of the first stdout line starting with `prefix`.
fn line_kv(stdout: &str, prefix: &str) -> HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Asserts a clean run: exit 0 and every mbuf back in the pool.
fn assert_clean_exit(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let pool = line_kv(&stdout, "exit mempool");
    assert_eq!(pool["in_use"], 0, "mbufs leaked:\n{stdout}");
    assert_eq!(pool["available"], pool["size"], "{stdout}");
    stdout
}

// --- pcap files (written and read by hand; little-endian, as x86 libpcap writes) ---

/// Distinct Ethernet frames of varied lengths (60..=1514 bytes).
fn frames(n: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = 60 + (i * 97) % 1455;
            let mut f: Vec<u8> = (0..len)
                .map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            f[0..6].copy_from_slice(&[0x02, 0, 0, 0, seed, 2]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, seed, 1]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14..18].copy_from_slice(&(i as u32).to_be_bytes());
            f
        })
        .collect()
}

const NO_HUGE_EAL: &str = "eal: {lcores: \"0-1\", no_huge: true, memory_mb: 256}";

#[test]
fn pcap_ports_forward_every_frame_unchanged_to_the_paired_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let in_a = frames(100, 0xa);
    let in_b = frames(37, 0xb);
    write_pcap(&dir.path().join("in_a.pcap"), &in_a);
    write_pcap(&dir.path().join("in_b.pcap"), &in_b);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{NO_HUGE_EAL}\nports:\n  - {{name: a, device: 'net_pcap0,rx_pcap={d}/in_a.pcap,tx_pcap={d}/out_a.pcap'}}\n  - {{name: b, device: 'net_pcap1,rx_pcap={d}/in_b.pcap,tx_pcap={d}/out_b.pcap'}}\nmempool: {{size: 4095}}\n"
        ),
    );
    let _g = lock();
    let out = run(&cfg, &["--duration", "1"]);
    let stdout = assert_clean_exit(&out);
    let total = line_kv(&stdout, "exit t=");
    assert_eq!(total["rx"], 137, "{stdout}");
    let out_a = read_pcap(&dir.path().join("out_a.pcap"));
    let out_b = read_pcap(&dir.path().join("out_b.pcap"));
    assert_eq!(out_b.len(), in_a.len());
    assert_eq!(out_a.len(), in_b.len());
    for (i, (got, want)) in out_b.iter().zip(&in_a).enumerate() {
        assert_eq!(got, want, "frame {i} from port a differs on port b");
    }
    for (i, (got, want)) in out_a.iter().zip(&in_b).enumerate() {
        assert_eq!(got, want, "frame {i} from port b differs on port a");
    }
}

fn ring_config(dir: &Path, lcores: &str, processor: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "eal: {{lcores: \"{lcores}\", no_huge: true, memory_mb: 256}}\nports: [{{name: a, device: net_ring0}}, {{name: b, device: net_ring1}}]\nworkers: {{processor: {processor}}}\nmempool: {{size: 8191}}\n"
        ),
    )
}

#[test]
fn ring_ports_loop_traffic_without_loss_or_leak() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ring_config(dir.path(), "0-1", "paired");
    let _g = lock();
    let out = run(&cfg, &["--tx-first", "32", "--duration", "0.5"]);
    let stdout = assert_clean_exit(&out);
    assert!(
        stdout.contains("kubypass: port a id=0 driver=net_ring queues=1 mac="),
        "{stdout}"
    );
    let w = line_kv(&stdout, "exit t=");
    assert_eq!(w["injected"], 64);
    assert!(w["rx"] > 10_000, "too little traffic: {stdout}");
    // Every injected or received frame was sent, except those still queued at exit.
    assert_eq!(w["rx"] + w["injected"], w["tx"], "{stdout}");
    assert_eq!(
        w["drops"],
        w.get("shutdown").copied().unwrap_or(0),
        "{stdout}"
    );
}

#[test]
fn two_workers_each_own_a_queue_on_every_port() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ring_config(dir.path(), "0@0,1@1,2@1", "paired");
    let _g = lock();
    let out = run(&cfg, &["--tx-first", "16", "--duration", "0.6"]);
    let stdout = assert_clean_exit(&out);
    let workers: Vec<HashMap<String, u64>> = stdout
        .lines()
        .filter(|l| l.starts_with("exit") && l.contains(" worker="))
        .map(|l| line_kv(l, "exit"))
        .collect();
    assert_eq!(workers.len(), 2, "{stdout}");
    for w in &workers {
        assert_eq!(w["injected"], 32, "{stdout}");
        assert!(w["rx"] > 1000, "a worker saw too little: {stdout}");
    }
}

#[test]
fn steering_hands_frames_to_their_owner_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ring_config(dir.path(), "0@0,1@1,2@1", "steer-by-hash");
    let _g = lock();
    let out = run(&cfg, &["--tx-first", "32", "--duration", "0.6"]);
    let stdout = assert_clean_exit(&out);
    let workers: Vec<HashMap<String, u64>> = stdout
        .lines()
        .filter(|l| l.starts_with("exit") && l.contains(" worker="))
        .map(|l| line_kv(l, "exit"))
        .collect();
    assert_eq!(workers.len(), 2, "{stdout}");
    for w in &workers {
        assert!(
            w["steered_in"] > 0 && w["steered_out"] > 0,
            "no steering: {stdout}"
        );
        assert!(w.get("steer_invalid").is_none(), "{stdout}");
    }
    let out_sum: u64 = workers.iter().map(|w| w["steered_out"]).sum();
    let in_sum: u64 = workers.iter().map(|w| w["steered_in"]).sum();
    let shutdown: u64 = workers
        .iter()
        .map(|w| w.get("shutdown").copied().unwrap_or(0))
        .sum();
    // Each steered frame was taken by its owner or freed at shutdown.
    assert!(
        out_sum >= in_sum && out_sum <= in_sum + shutdown,
        "{stdout}"
    );
}

#[test]
fn sigterm_stops_within_a_second_with_every_mbuf_returned() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ring_config(dir.path(), "0-1", "paired");
    let _g = lock();
    let mut child: Child = Command::new(bin())
        .args(["run", "--tx-first", "32", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    while !first.starts_with("kubypass: running") {
        first.clear();
        assert!(stdout.read_line(&mut first).unwrap() > 0, "no start line");
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    // kill(1) sends the signal, so the test needs no unsafe libc call.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    let pool = line_kv(&rest, "exit mempool");
    assert_eq!(pool["in_use"], 0, "{rest}");
    assert!(
        line_kv(&rest, "exit t=").get("rx").copied().unwrap_or(0) > 0,
        "{rest}"
    );
}

// --- error paths: one clear line, non-zero exit, no panic ---

fn assert_clear_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("kubypass: "))
        .unwrap_or_else(|| panic!("no kubypass: line in\n{stderr}"));
    assert!(last.contains(needle), "wanted {needle:?} in {last:?}");
}

#[test]
fn unreadable_config_is_a_clear_error() {
    let out = run(Path::new("/nonexistent/kubypass.yaml"), &[]);
    assert_clear_error(&out, "cannot read config file /nonexistent/kubypass.yaml");
}

#[test]
fn invalid_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ports: [{name: a, device: net_ring0}]\nmempol: {size: 1}\n",
    );
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "unknown field `mempol`");
}

#[test]
fn build_threads_without_services_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "ports: [{name: a, device: net_ring0}]\n");
    let out = run(&cfg, &["--build-threads", "2"]);
    assert_clear_error(&out, "--build-threads sets how Service tables are built");
}

#[test]
fn unknown_vdev_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{NO_HUGE_EAL}\nports: [{{name: a, device: net_bogus0}}]\n"),
    );
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "no PMD for vdev \"net_bogus0\"");
}

#[test]
fn bad_pci_address_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{NO_HUGE_EAL}\nports: [{{name: a, device: '0000:01:33.0'}}]\n"),
    );
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "bad PCI address");
}

#[test]
fn missing_pci_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{NO_HUGE_EAL}\nports: [{{name: a, device: '0000:7f:1f.7'}}]\n"),
    );
    let _g = lock();
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "PCI device 0000:7f:1f.7 not found");
}

#[test]
fn no_hugepages_without_no_huge_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // The hugepage check reads this stand-in for /proc/meminfo, so the test holds whether
    // or not the machine has hugepages reserved.
    let meminfo = dir.path().join("meminfo");
    std::fs::write(
        &meminfo,
        "HugePages_Total:       0\nHugePages_Free:        0\n",
    )
    .unwrap();
    let cfg = write_config(
        dir.path(),
        "eal: {lcores: \"0-1\"}\nports: [{name: a, device: net_ring0}]\n",
    );
    let out = run(&cfg, &["--meminfo", meminfo.to_str().unwrap()]);
    assert_clear_error(&out, "no free hugepages");
}

#[test]
fn too_few_lcores_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "eal: {lcores: \"0\", no_huge: true, memory_mb: 256}\nports: [{name: a, device: net_ring0}]\n",
    );
    let _g = lock();
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "too few lcores");
}

#[test]
fn too_few_queues_for_workers_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write_pcap(&dir.path().join("in.pcap"), &frames(1, 1));
    let cfg = write_config(
        dir.path(),
        &format!("eal: {{lcores: \"0@0,1@1,2@1\", no_huge: true, memory_mb: 256}}\nports: [{{name: a, device: 'net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/out.pcap'}}]\n"),
    );
    let _g = lock();
    let out = run(&cfg, &[]);
    assert_clear_error(&out, "2 workers need 2 each");
}

#[test]
fn idle_workers_yield_the_cpu_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = |yield_after: u32| {
        write_config(
            dir.path(),
            &format!(
                "{NO_HUGE_EAL}\nports: [{{name: a, device: net_ring0}}, {{name: b, device: net_ring1}}]\nworkers: {{idle_yield_after: {yield_after}}}\nmempool: {{size: 4095}}\n"
            ),
        )
    };
    let _g = lock();
    for (yield_after, yields) in [(0, false), (8, true)] {
        // No traffic at all: every turn is idle.
        let out = run(&config(yield_after), &["--duration", "0.3"]);
        let stdout = assert_clean_exit(&out);
        let w = line_kv(&stdout, "exit t=");
        assert!(w["empty_polls"] > 8, "{stdout}");
        assert_eq!(
            w["idle_yields"] > 0,
            yields,
            "idle_yield_after {yield_after}: {stdout}"
        );
        if yields {
            assert_eq!(
                w["idle_yields"],
                w["empty_polls"] - 7,
                "yields from the 8th idle turn: {stdout}"
            );
        }
    }
}
