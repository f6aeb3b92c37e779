//! io-forward throughput: kubypass (1 worker, paired forwarder) next to
//! `dpdk-testpmd --forward-mode=io`, on the same two vdevs (net_null and net_ring) and
//! the same lcores, alternating rounds so machine noise hits both alike. Prints the
//! median Mpps of each and their ratio.
//!
//! `cargo bench -p kubypass --bench io_forward -- [--seconds N] [--rounds N] [--vdev null|ring]`
//! (as root; `scripts/bench.sh` sets the host up and runs this). `KUBYPASS_BENCH_BIN=path`
//! measures that kubypass binary instead of the one cargo built (to compare builds).

use std::process::{Command, Stdio};

struct Args {
    seconds: u32,
    rounds: u32,
    vdevs: Vec<&'static str>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 5,
        rounds: 3,
        vdevs: vec!["null", "ring"],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.rounds),
            "--vdev" => match it.next().map(String::as_str) {
                Some("null") => a.vdevs = vec!["null"],
                Some("ring") => a.vdevs = vec!["ring"],
                _ => {}
            },
            _ => {} // cargo bench adds --bench
        }
    }
    a.seconds = a.seconds.max(2);
    a.rounds = a.rounds.max(1);
    a
}

/// Mean of per-second rates, the first (warm-up) one left out.
fn steady_mean(rates: &[f64]) -> Option<f64> {
    let tail = rates.get(1..)?;
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn kubypass(vdev: &str, seconds: u32, huge: bool) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let cfg = dir.path().join("bench.yaml");
    std::fs::write(
        &cfg,
        format!(
            "eal: {{lcores: \"0-1\", in_memory: false, no_huge: {}, memory_mb: 512}}\n\
             ports: [{{name: a, device: net_{vdev}0}}, {{name: b, device: net_{vdev}1}}]\n\
             queues: {{rx_size: 1024, tx_size: 1024}}\nmempool: {{size: 16383, cache: 256}}\n",
            !huge
        ),
    )
    .ok()?;
    // KUBYPASS_BENCH_BIN runs another build (a saved baseline) under the same harness.
    let bin = std::env::var_os("KUBYPASS_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kubypass").into());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--stats-interval", "1", "--duration"])
        .arg(seconds.to_string())
        .arg("--config")
        .arg(&cfg);
    if vdev == "ring" {
        cmd.args(["--tx-first", "32"]);
    }
    let out = cmd
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("stats ") && l.contains(" total "))
        .filter_map(|l| {
            l.split("rx_mpps=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    steady_mean(&rates)
}

fn testpmd(vdev: &str, seconds: u32, huge: bool) -> Option<f64> {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-s",
        "INT",
        &(seconds + 2).to_string(),
        "dpdk-testpmd",
        "-l",
        "0-1",
        "-m",
        "512",
    ]);
    if !huge {
        cmd.arg("--no-huge");
    }
    cmd.args([
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "kubypass-bench-testpmd",
        "-d",
    ])
    .arg(kubypass::dpdk::BUILD_PMD_DIR)
    .args([
        "--vdev",
        &format!("net_{vdev}0"),
        "--vdev",
        &format!("net_{vdev}1"),
    ])
    .args([
        "--",
        "--forward-mode=io",
        "--nb-cores=1",
        "--burst=32",
        "--rxd=1024",
        "--txd=1024",
    ])
    .args(["--total-num-mbufs=16383", "--stats-period", "1"]);
    if vdev == "ring" {
        cmd.arg("--tx-first");
    }
    let out = cmd
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Each period prints "Rx-pps:" for port 0 then port 1: sum pairs.
    let per_port: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    let rates: Vec<f64> = per_port
        .chunks_exact(2)
        .map(|p| (p[0] + p[1]) / 1e6)
        .take(seconds as usize)
        .collect();
    steady_mean(&rates)
}

fn main() {
    let a = args();
    let huge = hugepages_free() >= 512;
    let have_testpmd = Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    println!(
        "io-forward, 1 worker on lcore 1 (main lcore 0), 2 ports, burst 32, {}s x {} rounds, {}",
        a.seconds,
        a.rounds,
        if huge { "hugepages" } else { "--no-huge" }
    );
    for vdev in &a.vdevs {
        let (mut kb, mut tp) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            if let Some(r) = kubypass(vdev, a.seconds, huge) {
                kb.push(r);
            }
            if have_testpmd {
                if let Some(r) = testpmd(vdev, a.seconds, huge) {
                    tp.push(r);
                }
            }
        }
        let kbm = median(kb.clone());
        let tpm = median(tp.clone());
        println!("net_{vdev}: kubypass {kbm:.2} Mpps (rounds {kb:.2?})");
        if tp.is_empty() {
            println!(
                "net_{vdev}: dpdk-testpmd gave no figure (installed? sudo scripts/setup-host.sh)"
            );
        } else {
            println!("net_{vdev}: testpmd  {tpm:.2} Mpps (rounds {tp:.2?})");
            println!("net_{vdev}: ratio kubypass/testpmd {:.3}", kbm / tpm);
        }
    }
}
