//! kubypass: the appliance's command line (`kubypass run --config FILE`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use kubypass::appliance::{
    build_pool, error_chain, start_control, Plan, ServiceProcessor, Shared, WorkerViews,
};
use kubypass::config::{Config, PortConfig, ProcessorKind};
use kubypass::runtime::{self, PairedForwarder, RunOptions, SteerByHashForwarder};
use kubypass_control::replay;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kubypass",
    version,
    about = "DPDK kernel-bypass Kubernetes service proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Run a capture through the Service pipeline with tables from manifests: no DPDK,
    /// no NIC, no root. Every next hop counts as resolved.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Manifest files or directories (Services and EndpointSlices, YAML).
    #[arg(long, required = true, num_args = 1..)]
    manifests: Vec<PathBuf>,
    /// The capture to replay (pcap, Ethernet).
    #[arg(long)]
    input: PathBuf,
    /// Where to write every frame the pipeline transmits or generates.
    #[arg(long)]
    output: PathBuf,
    /// A node address NodePorts are captured on (repeatable).
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<std::net::IpAddr>,
    /// The node replay stands for: endpoints on it are local (Local traffic policies)
    /// and node hints for it are followed.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The zone replay stands for: zone hints for it are followed (topology-aware
    /// routing).
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// Simulated workers; frames are steered between them as on the appliance.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The YAML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Print counters every N seconds.
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<f64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Send N generated frames on every port and queue at start (like testpmd --tx-first).
    #[arg(long, value_name = "N", default_value_t = 0)]
    tx_first: u16,
    /// Override eal.lcores.
    #[arg(long)]
    lcores: Option<String>,
    /// Override workers.lcores (comma-separated).
    #[arg(long, value_delimiter = ',')]
    workers: Option<Vec<u32>>,
    /// Override eal.no_huge to true.
    #[arg(long)]
    no_huge: bool,
    /// Override eal.memory_mb.
    #[arg(long)]
    memory_mb: Option<u32>,
    /// Override workers.processor.
    #[arg(long, value_enum)]
    processor: Option<ProcessorKind>,
    /// Override mempool.size.
    #[arg(long)]
    mempool_size: Option<u32>,
    /// Replace the ports: NAME=DEVICE, repeatable.
    #[arg(long = "port", value_name = "NAME=DEVICE")]
    ports: Vec<String>,
    /// Override services.manifests (repeatable; a file or a directory).
    #[arg(long = "manifests", value_name = "PATH")]
    manifests: Vec<PathBuf>,
    /// Override admin.listen (ADDRESS:PORT).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Override services.build_threads: threads that fill Maglev tables at a build.
    #[arg(long, value_name = "N")]
    build_threads: Option<usize>,
    /// Read this file instead of /proc/meminfo for the hugepage check.
    #[arg(long, hide = true)]
    meminfo: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("kubypass: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let a = match cli.command {
        Command::Run(a) => a,
        Command::Replay(r) => return replay(r),
    };
    let mut config = Config::load(&a.config)?;
    if let Some(l) = a.lcores {
        config.eal.lcores = l;
    }
    if let Some(w) = a.workers {
        config.workers.lcores = w;
    }
    if a.no_huge {
        config.eal.no_huge = true;
    }
    if let Some(m) = a.memory_mb {
        config.eal.memory_mb = Some(m);
    }
    if let Some(p) = a.processor {
        config.workers.processor = p;
    }
    if let Some(s) = a.mempool_size {
        config.mempool.size = s;
    }
    if !a.manifests.is_empty() {
        let services = config.services.get_or_insert_with(Default::default);
        // Relative to the working directory, unlike paths in the file.
        let cwd = std::env::current_dir()?;
        services.manifests = a.manifests.iter().map(|p| cwd.join(p)).collect();
        services.kubernetes = None;
    }
    if let Some(addr) = a.admin_listen {
        config.admin.listen = Some(addr);
    }
    if let Some(n) = a.build_threads {
        let Some(services) = config.services.as_mut() else {
            anyhow::bail!(
                "--build-threads sets how Service tables are built, and {} has no services: \
                 section (add one, or --manifests)",
                a.config.display()
            );
        };
        services.build_threads = Some(n);
    }
    if !a.ports.is_empty() {
        config.ports = a
            .ports
            .iter()
            .map(|s| {
                let (name, device) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--port {s:?}: write it as NAME=DEVICE"))?;
                Ok(PortConfig {
                    name: name.to_owned(),
                    device: device.to_owned(),
                    addresses: Vec::new(),
                    checksum_offload: Default::default(),
                })
            })
            .collect::<Result<_>>()?;
    }
    let secs = |v: f64, what: &str| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(anyhow::anyhow!(
                "--{what} must be a positive number of seconds"
            ))
        }
    };
    let opts = RunOptions {
        stats_interval: a
            .stats_interval
            .map(|v| secs(v, "stats-interval"))
            .transpose()?,
        duration: a.duration.map(|v| secs(v, "duration")).transpose()?,
        tx_first: a.tx_first,
        meminfo_path: a.meminfo,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once (code 1) instead of waiting.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    match config.workers.processor.resolve(&config) {
        ProcessorKind::Service | ProcessorKind::Auto => {
            run_service(&config, &a.config, &opts, stop)?
        }
        ProcessorKind::Paired => {
            runtime::run(&config, &opts, stop, |s| PairedForwarder::new(s.ports))?;
        }
        ProcessorKind::SteerByHash => {
            runtime::run(&config, &opts, stop, |s| {
                SteerByHashForwarder::new(s.index, s.workers, s.ports)
            })?;
        }
    }
    Ok(())
}

/// `kubypass run` with the Service pipeline: control thread, admin server, workers.
fn run_service(
    config: &Config,
    config_path: &std::path::Path,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let dir = config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let plan = Plan::new(config, dir)?;
    let thp = std::fs::read_to_string(kubypass::dpdk::THP_SETTING).ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if let Some(w) = kubypass::dpdk::huge_page_warning(thp.as_deref(), tunables.as_deref()) {
        eprintln!("kubypass: warning: {w}");
    }
    // The CPUs this process may use, read before EAL pins this thread to one.
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let shared = Shared::new(plan.neighbours.clone());
    // Filled by the processor factory, read by the ready hook: both run on this thread.
    let pipeline_counters = std::cell::RefCell::new(Vec::new());
    let mut control = None;
    let control_stop = Arc::clone(&stop);
    let result = runtime::run_with(
        config,
        opts,
        Arc::clone(&stop),
        |slot| {
            let p = ServiceProcessor::new(
                plan.worker_config(slot.index, slot.workers, &slot.macs, &slot.tx_checksum),
                &shared,
            );
            pipeline_counters.borrow_mut().push(p.counters());
            p
        },
        |ready| {
            let mut plan = plan.clone();
            plan.control.settings.workers = ready.counters.len();
            let (threads, start) =
                build_pool(plan.build_threads, &cpus, ready.worker_cpus, ready.main_cpu);
            plan.control.settings.build_threads = threads;
            plan.control.settings.build_thread_start = start;
            let views = WorkerViews {
                runtime: Arc::clone(ready.counters),
                pipeline: pipeline_counters.take(),
            };
            match start_control(&plan, shared.clone(), views, control_stop) {
                Ok(handle) => control = Some(handle),
                Err(e) => eprintln!("kubypass: cannot start the control thread: {e}"),
            }
        },
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(handle) = control {
        let _ = handle.join();
    }
    result?;
    Ok(())
}

/// `kubypass replay`.
fn replay(r: ReplayArgs) -> Result<()> {
    let mut settings = replay::settings_with_nodes(&r.node_ips);
    settings.workers = r.workers;
    settings.node_name = r.node_name;
    settings.zone = r.zone;
    let translation = kubypass_control::load_manifests(&r.manifests, &settings)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    for w in &translation.warnings {
        eprintln!("kubypass: warning: {w}");
    }
    let summary = replay::replay_file(
        Arc::new(translation.table),
        &settings,
        r.workers,
        &r.input,
        &r.output,
    )
    .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_threads_option_parses() {
        let cli = Cli::try_parse_from(["kubypass", "run", "-c", "k.yaml", "--build-threads", "3"])
            .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("want run");
        };
        assert_eq!(a.build_threads, Some(3));
        assert!(
            Cli::try_parse_from(["kubypass", "run", "-c", "k.yaml", "--build-threads", "x"])
                .is_err()
        );
    }
}
