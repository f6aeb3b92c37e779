//! The appliance runtime: brings up EAL, pool and ports from a [`Config`], runs one
//! [`Worker`] per worker lcore with a [`FrameProcessor`], prints counters, and tears
//! everything down in order when told to stop.

pub mod counters;
pub mod forwarder;
pub mod offload;
pub mod processor;
pub mod worker;

pub use crate::dpdk::ChecksumCaps;
pub use counters::{CounterSnapshot, RuntimeDrop, WorkerCounters};
pub use forwarder::{PairedForwarder, SteerByHashForwarder};
pub use offload::{finish_checksums, prepare_tx, OffloadError, TxPrepared};
pub use processor::{Action, FrameProcessor, L4Checksum, TxOffload, MAX_PROCESSOR_DROP_REASONS};
pub use worker::{SteeredFrame, Worker};

use crate::config::{
    hugepages_free, ChecksumOffloadMode, Config, ConfigError, Device, KNOWN_VDEV_DRIVERS,
};
use crate::dpdk::{self, Eal, Mempool, Port};
use crossbeam_queue::ArrayQueue;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the appliance could not start; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Hugepages requested but none free.
    #[error("no free hugepages ({detail}): reserve some with `sudo scripts/setup-host.sh --hugepages 512`, or set eal.no_huge: true (--no-huge)")]
    NoHugepages {
        /// What was found.
        detail: String,
    },
    /// A vdev's driver is not installed.
    #[error("port {port:?}: no PMD for vdev {device:?} (driver {driver} not found in {dir}): use one of {known} or install DPDK's PMDs (sudo scripts/setup-host.sh)")]
    MissingPmd {
        /// Port name.
        port: String,
        /// Device string.
        device: String,
        /// Driver name.
        driver: String,
        /// Where we looked.
        dir: String,
        /// Known drivers.
        known: String,
    },
    /// EAL initialisation failed.
    #[error("DPDK EAL initialisation failed ({0}): check eal.lcores (this machine has {cpus} CPUs), eal.memory_mb, device names, and run as root", cpus = num_cpus())]
    Eal(dpdk::Error),
    /// Not enough lcores for the workers asked for.
    #[error("too few lcores: {0}")]
    Lcores(String),
    /// A port did not appear or could not be set up.
    #[error("port {port:?} ({device}): {problem}")]
    Port {
        /// Port name.
        port: String,
        /// Device.
        device: String,
        /// What went wrong and the fix.
        problem: String,
    },
    /// Another DPDK failure.
    #[error("{0}")]
    Dpdk(#[from] dpdk::Error),
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run-time knobs that are not part of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print counters this often.
    pub stats_interval: Option<Duration>,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Frames each worker sends on each port before polling (like testpmd --tx-first).
    pub tx_first: u16,
    /// `/proc/meminfo` stand-in for the hugepage check (tests).
    pub meminfo_path: Option<PathBuf>,
}

/// Position of a worker, handed to the processor factory.
#[derive(Debug, Clone)]
pub struct WorkerSlot {
    /// Index among workers.
    pub index: usize,
    /// Number of workers.
    pub workers: usize,
    /// Number of ports.
    pub ports: u16,
    /// Each port's MAC address, in configuration order.
    pub macs: Arc<[[u8; 6]]>,
    /// Each port's enabled tx checksum offloads, in configuration order: what a
    /// processor may leave to the NIC on that port without the software fallback.
    pub tx_checksum: Arc<[ChecksumCaps]>,
}

/// What the appliance looks like once ports are up and processors made, just before
/// the workers start: handed to the `on_ready` hook of [`run_with`], on the main lcore's
/// thread (threads it spawns inherit that CPU).
pub struct Ready<'a> {
    /// Each port's MAC address, in configuration order.
    pub macs: &'a [[u8; 6]],
    /// Each port's enabled tx checksum offloads, in configuration order.
    pub tx_checksum: &'a [ChecksumCaps],
    /// Every worker's runtime counters.
    pub counters: &'a Arc<Vec<WorkerCounters>>,
    /// The CPU each worker is pinned to, in worker order.
    pub worker_cpus: &'a [usize],
    /// The main lcore's CPU, where the calling thread now runs.
    pub main_cpu: usize,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Totals over all workers.
    pub totals: CounterSnapshot,
    /// Per worker.
    pub per_worker: Vec<CounterSnapshot>,
    /// Mbufs still out of the pool after everything was torn down (0 = none leaked).
    pub mempool_in_use: u32,
    /// Pool size.
    pub mempool_size: u32,
    /// Time from the stop request to workers joined and ports closed.
    pub shutdown: Duration,
    /// Time spent forwarding.
    pub elapsed: Duration,
}

/// Checks hugepages unless `--no-huge`.
fn check_hugepages(config: &Config, opts: &RunOptions) -> Result<(), RunError> {
    if config.eal.no_huge {
        return Ok(());
    }
    let meminfo_path = opts
        .meminfo_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/meminfo"));
    let meminfo = std::fs::read_to_string(&meminfo_path).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let (free, mounted) = hugepages_free(&meminfo, &mounts);
    if free == 0 {
        return Err(RunError::NoHugepages {
            detail: format!("HugePages_Free is 0 in {}", meminfo_path.display()),
        });
    }
    if !mounted && !config.eal.in_memory {
        return Err(RunError::NoHugepages {
            detail: "no hugetlbfs is mounted".into(),
        });
    }
    Ok(())
}

/// The PMD plugin directory to pass to the EAL, if any.
fn pmd_dir(config: &Config) -> Option<PathBuf> {
    if let Some(d) = &config.eal.pmd_dir {
        return Some(d.clone());
    }
    let built = Path::new(dpdk::BUILD_PMD_DIR);
    (!dpdk::BUILD_PMD_DIR.is_empty() && built.is_dir()).then(|| built.to_owned())
}

/// Checks that each vdev's driver exists as a plugin in `dir`.
fn check_pmds(config: &Config, devices: &[Device], dir: Option<&Path>) -> Result<(), RunError> {
    let Some(dir) = dir else { return Ok(()) };
    for (p, d) in config.ports.iter().zip(devices) {
        let Device::Vdev { name, .. } = d else {
            continue;
        };
        let driver = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let lib = dir.join(format!("librte_{driver}.so"));
        let lib_versioned = std::fs::read_dir(dir).ok().is_some_and(|mut it| {
            it.any(|e| {
                e.ok().is_some_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("librte_{driver}.so"))
                })
            })
        });
        if !lib.exists() && !lib_versioned {
            return Err(RunError::MissingPmd {
                port: p.name.clone(),
                device: p.device.clone(),
                driver: driver.to_owned(),
                dir: dir.display().to_string(),
                known: KNOWN_VDEV_DRIVERS.join(", "),
            });
        }
    }
    Ok(())
}

/// Runs the appliance until `stop` is set (or `opts.duration` passes), with a processor
/// from `make_processor` on each worker. Prints counters to stdout every
/// `opts.stats_interval`.
pub fn run<P, F>(
    config: &Config,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    make_processor: F,
) -> Result<RunSummary, RunError>
where
    P: FrameProcessor + 'static,
    F: FnMut(WorkerSlot) -> P,
{
    run_with(config, opts, stop, make_processor, |_| {})
}

/// As [`run`], calling `on_ready` once every processor is made and before any worker
/// starts.
pub fn run_with<P, F, R>(
    config: &Config,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    mut make_processor: F,
    on_ready: R,
) -> Result<RunSummary, RunError>
where
    P: FrameProcessor + 'static,
    F: FnMut(WorkerSlot) -> P,
    R: FnOnce(&Ready),
{
    let devices = config.validate()?;
    check_hugepages(config, opts)?;
    let pmd_dir = pmd_dir(config);
    check_pmds(config, &devices, pmd_dir.as_deref())?;
    let tag = format!("{}", std::process::id());
    let args = config.eal_args(&devices, pmd_dir.as_deref(), &tag);
    let eal = Eal::init(&args).map_err(RunError::Eal)?;

    // The control thread (and, later, the tokio runtime it starts) stays on the main
    // lcore's CPU.
    let main_cpu = eal.lcore_cpu(eal.main_lcore()) as usize;
    core_affinity::set_for_current(core_affinity::CoreId { id: main_cpu });

    let lcores = worker_lcores(config, &eal)?;
    let nworkers = lcores.len();
    let pool = Arc::new(
        Mempool::new(
            &eal,
            "kubypass_mbufs",
            config.mempool.size,
            config.mempool.cache,
            config.mempool.data_room,
            eal.socket_id(),
        )
        .map_err(|e| {
            RunError::Dpdk(dpdk::Error {
                reason: format!("{}: lower mempool.size or raise eal.memory_mb", e.reason),
                ..e
            })
        })?,
    );
    let nports = u16::try_from(devices.len()).unwrap_or(u16::MAX);
    let mut ports = Vec::with_capacity(devices.len());
    let mut macs: Vec<[u8; 6]> = Vec::with_capacity(devices.len());
    let mut tx_checksum: Vec<ChecksumCaps> = Vec::with_capacity(devices.len());
    let mut queues_by_worker: Vec<(Vec<dpdk::RxQueue>, Vec<dpdk::TxQueue>)> =
        (0..nworkers).map(|_| (Vec::new(), Vec::new())).collect();
    for (pc, d) in config.ports.iter().zip(&devices) {
        let perr = |problem: String| RunError::Port {
            port: pc.name.clone(),
            device: pc.device.clone(),
            problem,
        };
        let mut port = Port::by_name(&eal, d.ethdev_name()).map_err(|_| {
            perr(match d {
                Device::Pci(a) => format!(
                    "PCI device {a} not found: check the address with `dpdk-devbind.py --status` and bind it to vfio-pci"
                ),
                Device::Vdev { name, .. } => format!(
                    "vdev {name} did not create a port: check its driver name and arguments (see the EAL messages above)"
                ),
            })
        })?;
        let info = port.info()?;
        let need = u16::try_from(nworkers).unwrap_or(u16::MAX);
        if info.max_rx_queues < need || info.max_tx_queues < need {
            return Err(perr(format!(
                "driver {} offers {} rx / {} tx queues but {nworkers} workers need {nworkers} each: use fewer workers or a device with more queues",
                info.driver, info.max_rx_queues, info.max_tx_queues
            )));
        }
        let want_checksum = match pc.checksum_offload {
            ChecksumOffloadMode::Auto => ChecksumCaps::ALL,
            ChecksumOffloadMode::Off => ChecksumCaps::NONE,
        };
        let pairs = port
            .configure(
                need,
                config.queues.rx_size,
                config.queues.tx_size,
                &pool,
                want_checksum,
            )
            .map_err(|e| perr(e.to_string()))?;
        tx_checksum.push(port.tx_checksum_offloads());
        // Not every PMD supports promiscuous mode; forwarding works without it on vdevs.
        let _ = port.set_promiscuous(true);
        port.start().map_err(|e| perr(e.to_string()))?;
        macs.push(port.mac().unwrap_or([0; 6]));
        let mac = port.mac().map_or_else(
            |_| "?".to_owned(),
            |m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            },
        );
        let link = port.link().map_or_else(
            |_| "?".to_owned(),
            |l| {
                format!(
                    "{} speed_mbps={}",
                    if l.up { "up" } else { "down" },
                    l.speed_mbps
                )
            },
        );
        println!(
            "kubypass: port {} id={} driver={} queues={need} mac={mac} link={link} tx_checksum_offload={}",
            pc.name,
            port.id(),
            info.driver,
            port.tx_checksum_offloads()
        );
        for ((rx, tx), slot) in pairs.into_iter().zip(queues_by_worker.iter_mut()) {
            slot.0.push(rx);
            slot.1.push(tx);
        }
        ports.push(port);
    }

    let rings: Arc<Vec<ArrayQueue<SteeredFrame>>> = Arc::new(
        (0..nworkers)
            .map(|_| ArrayQueue::new(config.workers.steer_ring_size))
            .collect(),
    );
    let counters: Arc<Vec<WorkerCounters>> =
        Arc::new((0..nworkers).map(|_| WorkerCounters::default()).collect());
    let drop_names = P::drop_reason_names();
    let tsc_hz = dpdk::tsc_hz();
    let drain_cycles = (tsc_hz / 10_000).max(1); // 100 µs
    let macs: Arc<[[u8; 6]]> = macs.into();
    let tx_checksum: Arc<[ChecksumCaps]> = tx_checksum.into();
    let mut workers = Vec::with_capacity(nworkers);
    for (index, (rx, tx)) in queues_by_worker.into_iter().enumerate() {
        workers.push(Worker {
            index,
            rx,
            tx,
            rings: Arc::clone(&rings),
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            processor: make_processor(WorkerSlot {
                index,
                workers: nworkers,
                ports: nports,
                macs: Arc::clone(&macs),
                tx_checksum: Arc::clone(&tx_checksum),
            }),
            tx_checksum: tx_checksum.to_vec(),
            drain_cycles,
            tsc_hz,
            tx_first: (opts.tx_first > 0).then(|| (opts.tx_first, Arc::clone(&pool))),
            pool: Arc::clone(&pool),
            idle_yield_after: config.workers.idle_yield_after,
        });
    }
    let worker_cpus: Vec<usize> = lcores.iter().map(|&l| eal.lcore_cpu(l) as usize).collect();
    on_ready(&Ready {
        macs: &macs,
        tx_checksum: &tx_checksum,
        counters: &counters,
        worker_cpus: &worker_cpus,
        main_cpu,
    });
    let mut launched = Vec::with_capacity(nworkers);
    let started = Instant::now();
    for (worker, &lcore) in workers.into_iter().zip(&lcores) {
        match dpdk::launch(&eal, lcore, move || worker.run()) {
            Ok(l) => launched.push(l),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                for l in launched {
                    let _ = l.wait();
                }
                return Err(e.into());
            }
        }
    }
    println!(
        "kubypass: running {nworkers} worker(s) on lcores {lcores:?}, {} port(s): {}",
        ports.len(),
        config
            .ports
            .iter()
            .map(|p| format!("{}={}", p.name, p.device))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = std::io::stdout().flush();

    let mut last_print = Instant::now();
    let mut last_totals = CounterSnapshot::default();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some(iv) = opts.stats_interval {
            if last_print.elapsed() >= iv {
                let secs = last_print.elapsed().as_secs_f64();
                last_print = Instant::now();
                last_totals = print_stats(
                    "stats",
                    started.elapsed(),
                    &counters,
                    &lcores,
                    drop_names,
                    &ports,
                    Some((&last_totals, secs)),
                );
            }
        }
    }
    let stop_asked = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    for l in launched {
        let _ = l.wait();
    }
    // Frames pushed to a ring after its owner drained it at exit.
    for (i, ring) in rings.iter().enumerate() {
        let mut n = 0;
        while let Some(frame) = ring.pop() {
            drop(frame);
            n += 1;
        }
        if let Some(c) = counters.get(i) {
            c.drop_runtime(RuntimeDrop::Shutdown, n);
        }
    }
    print_stats(
        "exit", elapsed, &counters, &lcores, drop_names, &ports, None,
    );
    drop(ports); // stop + close: releases the queues' mbufs
    let shutdown = stop_asked.elapsed();
    let per_worker: Vec<CounterSnapshot> = counters.iter().map(|c| c.snapshot()).collect();
    let mut totals = CounterSnapshot::default();
    for s in &per_worker {
        totals.add(s);
    }
    let summary = RunSummary {
        totals,
        per_worker,
        mempool_in_use: pool.in_use(),
        mempool_size: pool.size(),
        shutdown,
        elapsed,
    };
    println!(
        "exit mempool size={} in_use={} available={}",
        pool.size(),
        pool.in_use(),
        pool.available()
    );
    println!(
        "exit shutdown_ms={} elapsed_ms={}",
        shutdown.as_millis(),
        elapsed.as_millis()
    );
    let _ = std::io::stdout().flush();
    drop(pool);
    drop(eal);
    Ok(summary)
}

/// The worker lcores: configured ones (checked) or every non-main EAL lcore.
fn worker_lcores(config: &Config, eal: &Eal) -> Result<Vec<u32>, RunError> {
    let main = eal.main_lcore();
    if config.workers.lcores.is_empty() {
        let all = eal.worker_lcores();
        if all.is_empty() {
            return Err(RunError::Lcores(format!(
                "eal.lcores {:?} has only the main lcore {main}: list at least one worker lcore too, e.g. \"0-1\"",
                config.eal.lcores
            )));
        }
        return Ok(all);
    }
    for &l in &config.workers.lcores {
        if l == main {
            return Err(RunError::Lcores(format!(
                "worker lcore {l} is the main lcore: remove it from workers.lcores or pick another eal.main_lcore"
            )));
        }
        if !eal.lcore_enabled(l) {
            return Err(RunError::Lcores(format!(
                "worker lcore {l} is not in eal.lcores {:?}: add it there or remove it from workers.lcores",
                config.eal.lcores
            )));
        }
    }
    let mut v = config.workers.lcores.clone();
    v.dedup();
    Ok(v)
}

/// Prints one block of counters; returns the totals.
fn print_stats(
    tag: &str,
    at: Duration,
    counters: &[WorkerCounters],
    lcores: &[u32],
    drop_names: &[&str],
    ports: &[Port],
    rate_base: Option<(&CounterSnapshot, f64)>,
) -> CounterSnapshot {
    let t = at.as_secs_f64();
    let mut totals = CounterSnapshot::default();
    let mut out = String::new();
    for (i, (c, l)) in counters.iter().zip(lcores).enumerate() {
        let s = c.snapshot();
        totals.add(&s);
        out.push_str(&format!(
            "{tag} t={t:.2} worker={i} lcore={l} rx={} tx={} injected={} drops={} bursts={} empty_polls={} idle_yields={} steered_in={} steered_out={} offload_fallback={}{}\n",
            s.rx, s.tx, s.injected, s.drops(), s.bursts, s.empty_polls, s.idle_yields, s.steered_in, s.steered_out, s.offload_fallback,
            s.drop_breakdown(drop_names)
        ));
    }
    for p in ports {
        if let Ok(ps) = p.stats() {
            out.push_str(&format!(
                "{tag} t={t:.2} port={} id={} ipackets={} opackets={} imissed={} ierrors={} oerrors={} rx_nombuf={}\n",
                p.name(), p.id(), ps.ipackets, ps.opackets, ps.imissed, ps.ierrors, ps.oerrors, ps.rx_nombuf
            ));
        }
    }
    let rate = rate_base
        .map(|(prev, secs)| {
            let pps = (totals.rx.saturating_sub(prev.rx)) as f64 / secs.max(1e-9);
            format!(" rx_mpps={:.3}", pps / 1e6)
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "{tag} t={t:.2} total rx={} tx={} injected={} drops={} steered_in={} steered_out={} offload_fallback={}{}{rate}\n",
        totals.rx,
        totals.tx,
        totals.injected,
        totals.drops(),
        totals.steered_in,
        totals.steered_out,
        totals.offload_fallback,
        totals.drop_breakdown(drop_names)
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
    totals
}
