//! kubypass: the appliance's command line (`kubypass run --config FILE`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use kubypass::config::{Config, PortConfig, ProcessorKind};
use kubypass::runtime::{self, PairedForwarder, RunOptions, SteerByHashForwarder};
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
    let Command::Run(a) = cli.command;
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
    match config.workers.processor {
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
