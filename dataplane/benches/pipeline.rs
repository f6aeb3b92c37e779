//! Per-packet cost of `Worker::process`, in bursts of 32 frames, at 1 and 10,000
//! Services and 1k and 1M tracked flows:
//!
//! - `established_dnat`: client→frontend ACKs of established flows (conntrack hit,
//!   DNAT rewrite, incremental checksums, TTL, next hop), each burst as the runtime
//!   takes it: `Worker::prefetch` across the burst first when `Worker::wants_lookahead`
//!   says so (with 1M flows; not with 1k, where every line is in cache); `_noprefetch`
//!   never. `_republished`: each burst twice, under two tables that alternate (two
//!   generations sharing every Service, as after a change to some other Service), so
//!   almost every frame's flow was last checked against the other table and takes the
//!   full pipeline to be revalidated: what a tracked flow's first packet after a
//!   publication costs.
//! - `reverse_nat`: backend→client ACKs of the same flows, translated back.
//! - `new_flow`: SYNs of never-seen 5-tuples (frontend lookup, Maglev selection,
//!   conntrack insert, DNAT).
//! - `prefetch_only`: `Worker::prefetch` across a burst and nothing else (diagnostic).
//!
//! Every measured burst first copies 32 prebuilt frames into the receive buffer (a NIC
//! hands a fresh frame each time); `copy/burst` (micro bench) and
//! `copy/burst_fresh_tuple` here measure that copy alone, to be subtracted.
//!
//! Tracked flows are created the way traffic creates them: each flow's SYN, the
//! backend's SYN-ACK and the client's ACK go through `process`, so the conntrack holds
//! exactly what the pipeline inserts, in the established state.
//!
//! New flows. Each new flow stays tracked (SYN-sent, 30 s) until expired, so an endless
//! stream of fresh tuples would fill any table and then measure eviction. The table has
//! room for the tracked flows plus [`NEW_FLOW_ROOM`]; after every [`PURGE_EVERY`] new
//! flows the clock is stopped, the bench's clock moves 31 s on (the SYN-sent flows
//! expire, the established ones — 24 h — do not) and `slow_job` sweeps the whole table.
//! So new flows are inserted into a table holding between N and N + `PURGE_EVERY`
//! flows, never full; the eviction count is printed and is expected to be 0.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kubypass_dataplane::flow::TableHashKey;
use kubypass_dataplane::pipeline::worker::{Context, Worker};
use kubypass_dataplane::pipeline::{NeighbourTable, PortConfig, Route, Verdict, WorkerConfig};
use kubypass_dataplane::table::ServiceTable;
use kubypass_dataplane::wire::{Ipv4Packet, TcpPacket};

use common::*;

/// Frames in each pool: 2,048 bursts. 65,536 distinct flows: at 1M tracked flows their
/// conntrack entries (~12 MiB) do not fit the 8 MiB last-level cache, as with real traffic.
const POOL: usize = 2_048 * BURST;
/// Conntrack room beyond the established flows, for the new-flow bench.
const NEW_FLOW_ROOM: usize = 1 << 16;
/// New flows between two purges (half the room).
const PURGE_EVERY: u64 = 1 << 15;
/// Client ports of fresh tuples start here; established flows use ports below 2,048.
const FRESH_PORT_BASE: u16 = 32_768;
/// Where the bench clock starts (ns).
const T0: u64 = 1_000_000_000;

const GATEWAY0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const GATEWAY1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);

/// Two ports: clients (198.18.128.0/17) behind a gateway on port 0, backends (10/8)
/// behind a gateway on port 1; one worker owning every flow.
fn worker_config(conntrack_capacity: usize) -> WorkerConfig {
    let cidr = |s: &str| s.parse().expect("bench prefix");
    WorkerConfig {
        ports: vec![
            PortConfig {
                mac: PORT0_MAC,
                addrs: vec![(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 24)],
                tx_offloads: Default::default(),
            },
            PortConfig {
                mac: PORT1_MAC,
                addrs: vec![(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 24)],
                tx_offloads: Default::default(),
            },
        ],
        routes: vec![
            Route {
                prefix: cidr("198.18.128.0/17"),
                port: 0,
                via: Some(IpAddr::V4(GATEWAY0)),
            },
            Route {
                prefix: cidr("10.0.0.0/8"),
                port: 1,
                via: Some(IpAddr::V4(GATEWAY1)),
            },
        ],
        conntrack_capacity,
        // The same bucket placement in every run, so that figures compare run to run.
        conntrack_hash_key: Some(TableHashKey::FIXED),
        ..WorkerConfig::default()
    }
}

fn neighbours() -> NeighbourTable {
    NeighbourTable::new([
        (IpAddr::V4(GATEWAY0), GATEWAY0_MAC),
        (IpAddr::V4(GATEWAY1), GATEWAY1_MAC),
    ])
}

/// A worker tracking `flows` established flows spread over the table's Services, and
/// each flow's backend (read from its translated SYN).
struct Populated {
    worker: Worker,
    backends: Vec<(Ipv4Addr, u16)>,
}

fn run(worker: &mut Worker, ctx: &Context, frame: Vec<u8>, rx: u16, now: u64) -> Vec<u8> {
    let mut len = frame.len();
    let mut buf = frame;
    buf.resize(FRAME_ROOM, 0);
    let v = worker.process(&mut buf, &mut len, rx, now, ctx);
    assert_eq!(v, Verdict::Forward(1 - rx), "set-up frame on port {rx}");
    buf.truncate(len);
    buf
}

fn populate(table: &ServiceTable, neighbours: &NeighbourTable, flows: u64) -> Populated {
    let services = table.services().len();
    let mut worker = Worker::new(worker_config(flows as usize + NEW_FLOW_ROOM));
    worker.set_prefetcher(prefetch);
    let ctx = Context { table, neighbours };
    let mut backends = Vec::with_capacity(flows as usize);
    for k in 0..flows {
        let out = run(&mut worker, &ctx, forward_syn(k, services), 0, T0);
        let ip = Ipv4Packet::new_checked(&out[14..]).expect("translated SYN");
        let tcp = TcpPacket::new_checked(ip.payload()).expect("translated SYN");
        let (b, bport) = (ip.dst_addr(), tcp.dst_port());
        backends.push((b, bport));
        run(&mut worker, &ctx, reverse(k, b, bport, true), 1, T0);
        run(&mut worker, &ctx, forward_ack(k, services), 0, T0);
    }
    assert_eq!(worker.conntrack().len(), flows as usize);
    Populated { worker, backends }
}

/// Copies burst `n` of `pool`, prefetches (when asked) and processes it; returns how
/// many verdicts were not `Forward(expect)`.
#[inline]
#[allow(clippy::too_many_arguments)] // the whole per-burst step, spelled out
fn burst_step(
    worker: &mut Worker,
    ctx: &Context,
    pool: &FramePool,
    burst: &mut Burst,
    n: usize,
    rx: u16,
    now: u64,
    prefetch: bool,
    expect: u16,
) -> u64 {
    pool.copy_burst(n, burst);
    process_burst(worker, ctx, burst, rx, now, prefetch, expect)
}

/// Processes the frames in `burst` as the runtime does: `begin_burst`, the look-ahead
/// across the burst when asked and the worker wants it, then each frame; returns how
/// many verdicts were not `Forward(expect)`.
#[inline]
fn process_burst(
    worker: &mut Worker,
    ctx: &Context,
    burst: &mut Burst,
    rx: u16,
    now: u64,
    prefetch: bool,
    expect: u16,
) -> u64 {
    worker.begin_burst();
    if prefetch && worker.wants_lookahead() {
        for (f, &len) in burst.frames.iter().zip(&burst.lens) {
            worker.prefetch(&f[..len], ctx);
        }
    }
    let mut bad = 0;
    for (f, len) in burst.frames.iter_mut().zip(burst.lens.iter_mut()) {
        if worker.process(f, len, rx, now, ctx) != Verdict::Forward(expect) {
            bad += 1;
        }
    }
    bad
}

/// Rewrites the client port of each fresh-tuple SYN in the burst for round `round` (the
/// pool is reused with new ports each time round): the port of pool frame `i` becomes
/// `FRESH_PORT_BASE + (i / CLIENT_ADDRS + 2·round) mod 32,768`, so no tuple repeats
/// within 16,384 rounds (1G flows).
#[inline]
fn freshen(burst: &mut Burst, first: usize, round: u64) {
    for (slot, f) in burst.frames.iter_mut().enumerate() {
        let i = (first + slot) as u64;
        let port = FRESH_PORT_BASE + ((i / CLIENT_ADDRS + 2 * round) % 32_768) as u16;
        // Untagged IPv4 without options: the TCP header is at 14 + 20.
        if let Some(seg) = f.get_mut(34..) {
            TcpPacket::new_unchecked(seg).rewrite_src_port(port);
        }
    }
}

/// SYNs of fresh tuples `i` in `0..POOL` (round 0), to Services spread like the
/// established flows'.
fn fresh_pool(services: usize) -> FramePool {
    FramePool::new((0..POOL as u64).map(|i| {
        let (c, _) = client(i);
        let port = FRESH_PORT_BASE + (i / CLIENT_ADDRS) as u16;
        let mut f = forward_syn(i, services);
        let mut ip = Ipv4Packet::new_checked(&mut f[14..]).expect("built frame");
        assert_eq!(ip.src_addr(), c);
        TcpPacket::new_checked(ip.payload_mut())
            .expect("built frame")
            .rewrite_src_port(port);
        f
    }))
}

fn copy_fresh(c: &mut Criterion) {
    let pool = fresh_pool(1);
    let mut burst = Burst::new();
    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut n = 0usize;
    g.bench_function("burst_fresh_tuple", |b| {
        b.iter(|| {
            pool.copy_burst(n, &mut burst);
            let first = (n * BURST) % pool.len();
            freshen(&mut burst, first, (n * BURST / pool.len()) as u64 + 1);
            n += 1;
            black_box(&mut burst);
        })
    });
    g.finish();
}

fn label(services: usize, flows: u64) -> String {
    let f = if flows >= 1_000_000 {
        format!("{}M", flows / 1_000_000)
    } else {
        format!("{}k", flows / 1_000)
    };
    format!("{services}svc_{f}flows")
}

/// Whether to set up this configuration: `KUBYPASS_BENCH_CONFIGS`, when set, lists the
/// labels to run (comma-separated, such as `1svc_1kflows,10000svc_1Mflows`). Setting up
/// 1M flows takes seconds, and criterion's own filter cannot skip a set-up.
fn selected(label: &str) -> bool {
    match std::env::var("KUBYPASS_BENCH_CONFIGS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|l| l.trim() == label),
        _ => true,
    }
}

fn per_packet(c: &mut Criterion) {
    let neighbours = neighbours();
    for services in [1usize, 10_000] {
        let table = service_table(services);
        for flows in [1_000u64, 1_000_000] {
            if !selected(&label(services, flows)) {
                continue;
            }
            let setup = Instant::now();
            let Populated {
                mut worker,
                backends,
            } = populate(&table, &neighbours, flows);
            let sample = scattered(flows, POOL);
            let fwd = FramePool::new(sample.iter().map(|&k| forward_ack(k, services)));
            let rev = FramePool::new(sample.iter().map(|&k| {
                let (b, bport) = backends[k as usize];
                reverse(k, b, bport, false)
            }));
            drop(backends);
            let fresh = fresh_pool(services);
            eprintln!(
                "{}: set up in {:.1?} ({} tracked flows, conntrack capacity {})",
                label(services, flows),
                setup.elapsed(),
                worker.conntrack().len(),
                worker.conntrack().capacity()
            );
            let ctx = Context {
                table: &table,
                neighbours: &neighbours,
            };
            // The next generation of the table for `_republished`, sharing every Service
            // and the frontend map, as the control plane publishes when some other
            // Service changed.
            let mut next = ServiceTable::builder()
                .generation(table.generation() + 1)
                .seed(table.seed());
            for s in table.services() {
                next.add_built_service(Arc::clone(s));
            }
            next.copy_frontends(&table);
            let republished = next.build_reusing(Some(&table));
            assert!(Arc::ptr_eq(
                &table.services()[0],
                &republished.services()[0]
            ));
            let ctx_next = Context {
                table: &republished,
                neighbours: &neighbours,
            };
            let mut burst = Burst::new();
            let name = label(services, flows);

            for (group, pool, rx, expect) in [
                ("established_dnat", &fwd, 0u16, 1u16),
                ("reverse_nat", &rev, 1, 0),
            ] {
                let mut g = c.benchmark_group(group);
                // (prefetch, republish before every burst)
                let variants: &[(bool, bool)] = if group == "established_dnat" {
                    &[(true, false), (false, false), (true, true)]
                } else {
                    &[(true, false)]
                };
                for &(prefetch, republish) in variants {
                    let mut n = 0usize;
                    let mut bad = 0u64;
                    let counters = worker.counters();
                    let new_before = counters.new_flows.load(Ordering::Relaxed);
                    let (frames_before, fast_before) = (
                        counters.frames.load(Ordering::Relaxed),
                        counters.fast_path.load(Ordering::Relaxed),
                    );
                    let id = match (prefetch, republish) {
                        (_, true) => format!("{name}_republished"),
                        (true, false) => name.clone(),
                        (false, false) => format!("{name}_noprefetch"),
                    };
                    let tables: &[&Context] = if republish {
                        &[&ctx, &ctx_next]
                    } else {
                        &[&ctx]
                    };
                    g.throughput(Throughput::Elements((BURST * tables.len()) as u64));
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            for ctx in tables {
                                bad += burst_step(
                                    &mut worker,
                                    ctx,
                                    pool,
                                    &mut burst,
                                    n,
                                    rx,
                                    T0,
                                    prefetch,
                                    expect,
                                );
                            }
                            n += 1;
                        })
                    });
                    assert_eq!(bad, 0, "{group}/{name}: frames not forwarded");
                    // Every frame took the tracked-flow path: no flow was created.
                    assert_eq!(
                        counters.new_flows.load(Ordering::Relaxed),
                        new_before,
                        "{group}/{name}: a frame missed its tracked flow"
                    );
                    // ... and the fast path; under alternating tables, almost none did
                    // (only a flow's second frame in one burst).
                    let fast = counters.fast_path.load(Ordering::Relaxed) - fast_before;
                    let frames = counters.frames.load(Ordering::Relaxed) - frames_before;
                    if republish {
                        assert!(
                            fast * 20 < frames,
                            "{group}/{name}: {fast} of {frames} frames kept the fast path"
                        );
                    } else {
                        assert_eq!(fast, frames, "{group}/{name}: a frame left the fast path");
                    }
                }
                g.finish();
            }

            // What `Worker::prefetch` alone costs across a burst (it parses each frame and
            // prefetches its bucket from 16,384 tracked flows on; below, it returns).
            let mut g = c.benchmark_group("prefetch_only");
            g.throughput(Throughput::Elements(BURST as u64));
            let mut n = 0usize;
            g.bench_function(name.clone(), |b| {
                b.iter(|| {
                    fwd.copy_burst(n, &mut burst);
                    n += 1;
                    for (f, &len) in burst.frames.iter().zip(&burst.lens) {
                        worker.prefetch(&f[..len], &ctx);
                    }
                })
            });
            g.finish();

            let mut g = c.benchmark_group("new_flow");
            g.throughput(Throughput::Elements(BURST as u64));
            let mut n = 0usize;
            let mut bad = 0u64;
            let mut now = T0;
            let mut since_purge = 0u64;
            let sweep = worker.conntrack().capacity().div_ceil(256);
            let evicted_before = worker.conntrack().stats().evicted;
            let counters = worker.counters();
            let new_before = counters.new_flows.load(Ordering::Relaxed);
            g.bench_function(name.clone(), |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    let mut start = Instant::now();
                    for _ in 0..iters {
                        if since_purge >= PURGE_EVERY {
                            took += start.elapsed();
                            now += 31_000_000_000;
                            // `slow_job` examines 512 slots per call: twice round.
                            for _ in 0..sweep {
                                worker.slow_job(now, &ctx);
                            }
                            since_purge = 0;
                            start = Instant::now();
                        }
                        let first = (n * BURST) % fresh.len();
                        fresh.copy_burst(n, &mut burst);
                        freshen(&mut burst, first, (n * BURST / fresh.len()) as u64 + 1);
                        bad += process_burst(&mut worker, &ctx, &mut burst, 0, now, true, 1);
                        n += 1;
                        since_purge += BURST as u64;
                    }
                    took + start.elapsed()
                })
            });
            g.finish();
            let stats = worker.conntrack().stats();
            eprintln!(
                "new_flow/{name}: {} flows inserted, {} evicted, {} without room; {} tracked now",
                stats.inserted,
                stats.evicted - evicted_before,
                stats.no_room,
                worker.conntrack().len()
            );
            assert_eq!(bad, 0, "new_flow/{name}: frames not forwarded");
            // Every frame opened a flow of its own (no tuple was seen twice).
            assert_eq!(
                counters.new_flows.load(Ordering::Relaxed) - new_before,
                (n * BURST) as u64,
                "new_flow/{name}: a fresh tuple was not new"
            );
        }
    }
}

criterion_group!(benches, copy_fresh, per_packet);
criterion_main!(benches);
