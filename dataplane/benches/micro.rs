//! Micro-benches of the pieces the per-packet path is made of: copying a burst in (the
//! baseline every frame bench includes), parsing, Maglev table builds and lookups,
//! frontend lookup in the `ServiceTable`, and connection-tracking lookups; and what a
//! cold cache line and a cold page cost on the machine (`cold_pages`), the baseline the
//! many-Service and many-flow rows are read against.
//!
//! Per-packet groups report throughput in elements of one frame (a burst is 32), so
//! criterion's "thrpt" reads as packets per second and "time" / 32 as ns per packet.

mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kubypass_dataplane::conntrack::{ConnTrack, Direction, NatTarget, TcpFlags, Timeouts};
use kubypass_dataplane::flow::{flow_hash, FlowKey, TableHashKey};
use kubypass_dataplane::hash::mix64;
use kubypass_dataplane::maglev::{Maglev, MaglevBackend};
use kubypass_dataplane::table::{backend_id, ServiceId};
use kubypass_dataplane::wire::{
    EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket,
};

use common::*;

/// Frames in a pool: 2,048 bursts (65,536 frames, 4 MiB), so that copying a burst in
/// reads memory a NIC would have just written, not lines left in L1 by the last burst.
const POOL: usize = 2_048 * BURST;

fn forward_pool(flows: u64, services: usize) -> FramePool {
    FramePool::new(
        scattered(flows, POOL)
            .into_iter()
            .map(|k| forward_ack(k, services)),
    )
}

/// Copying a burst of 32 frames (54 bytes each) into the receive buffer, alone.
fn copy(c: &mut Criterion) {
    let pool = forward_pool(1 << 20, 1);
    let mut burst = Burst::new();
    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut n = 0;
    g.bench_function("burst", |b| {
        b.iter(|| {
            pool.copy_burst(n, &mut burst);
            n += 1;
            black_box(&mut burst);
        })
    });
    g.finish();
}

/// Ethernet + IPv4 + TCP views with their checks, reading the 5-tuple and flags.
#[inline]
fn parse_one(frame: &[u8]) -> u64 {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return 0;
    };
    if eth.ethertype() != EtherType::Ipv4 {
        return 0;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return 0;
    };
    if ip.protocol() != IpProtocol::Tcp || ip.is_later_fragment() {
        return 0;
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return 0;
    };
    u64::from(u32::from(ip.src_addr()))
        ^ u64::from(u32::from(ip.dst_addr())).rotate_left(32)
        ^ u64::from(tcp.src_port())
        ^ (u64::from(tcp.dst_port()) << 16)
        ^ (u64::from(tcp.flags().0) << 40)
}

fn parse(c: &mut Criterion) {
    let pool = forward_pool(1 << 20, 1);
    let mut burst = Burst::new();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut n = 0;
    g.bench_function("eth_ipv4_tcp", |b| {
        b.iter(|| {
            pool.copy_burst(n, &mut burst);
            n += 1;
            let mut acc = 0u64;
            for (frame, &len) in burst.frames.iter().zip(&burst.lens) {
                acc ^= parse_one(&frame[..len]);
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn maglev_backends(service: usize, seed: u64) -> Vec<MaglevBackend> {
    (0..BACKENDS_PER_SERVICE)
        .map(|j| MaglevBackend {
            id: backend_id(
                seed,
                &kubypass_dataplane::table::Backend {
                    addr: IpAddr::V4(backend_addr(service, j)),
                    port: BACKEND_PORT,
                    weight: 1,
                    conditions: kubypass_dataplane::table::Conditions::READY,
                },
            ),
            weight: 1,
        })
        .collect()
}

/// Building Maglev tables for 10,000 Services × 10 backends (1,021 slots each) and for
/// 1,000 Services × 250 backends (32,749 slots each): the tables alone, and the whole
/// `ServiceTable` of 10,000 × 10 through its builder (what the control plane pays to
/// publish a table from nothing). Throughput is per Service.
fn maglev_build(c: &mut Criterion) {
    const SERVICES: usize = 10_000;
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SERVICES as u64));
    let lists: Vec<Vec<MaglevBackend>> = (0..SERVICES).map(|i| maglev_backends(i, 7)).collect();
    // Fills every list's table; the slot total keeps the work from being optimised away.
    let fill_all = |lists: &[Vec<MaglevBackend>]| {
        black_box(lists.iter().map(|l| Maglev::new(l).len()).sum::<usize>())
    };
    g.bench_function("tables_10000x10", |b| b.iter(|| fill_all(&lists)));
    // Backend identities straight from the hash: 250 addresses do not fit the 16 per
    // Service that `backend_addr` numbers.
    let large: Vec<Vec<MaglevBackend>> = (0..1_000u64)
        .map(|i| {
            (0..250u64)
                .map(|j| MaglevBackend {
                    id: kubypass_dataplane::hash::hash_words(7, &[i, j]),
                    weight: 1,
                })
                .collect()
        })
        .collect();
    g.throughput(Throughput::Elements(large.len() as u64));
    g.bench_function("tables_1000x250", |b| b.iter(|| fill_all(&large)));
    g.throughput(Throughput::Elements(SERVICES as u64));
    g.bench_function("service_table_10000x10", |b| {
        // The builder is consumed by `build`; making it is setup, not measured.
        b.iter_batched(
            || service_table_builder(SERVICES),
            |builder| builder.build(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Backend selection for a burst of 32 flows: flow hash + Maglev slot read, in one
/// Service's table, or each flow in its own Service of 10,000 (tables spread over 40 MB).
fn maglev_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_lookup");
    g.throughput(Throughput::Elements(BURST as u64));
    for services in [1usize, 10_000] {
        let table = service_table(services);
        let flows: Vec<(ServiceId, FlowKey)> = scattered(1 << 20, POOL)
            .into_iter()
            .map(|k| {
                let s = service_of(k, services);
                let (c, cport) = client(k);
                let key = FlowKey::new(
                    IpAddr::V4(c),
                    IpAddr::V4(frontend_addr(s)),
                    cport,
                    FRONTEND_PORT,
                    6,
                );
                let id = table.frontend(&frontend_key(s)).expect("frontend").service;
                (id, key)
            })
            .collect();
        let seed = table.seed();
        let mut n = 0usize;
        g.bench_function(format!("{services}_services"), |b| {
            b.iter(|| {
                let first = (n * BURST) % flows.len();
                n += 1;
                let mut acc = 0usize;
                for (id, key) in &flows[first..first + BURST] {
                    let pick = table
                        .service(*id)
                        .and_then(|s| s.maglev_pick(flow_hash(seed, key)));
                    acc = acc.wrapping_add(pick.unwrap_or(usize::MAX));
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

/// `ServiceTable::frontend` for a burst of 32 destinations, at 1 and 10,000 Services.
fn frontend_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("frontend_lookup");
    g.throughput(Throughput::Elements(BURST as u64));
    for services in [1usize, 10_000] {
        let table = service_table(services);
        let keys: Vec<_> = scattered(1 << 20, POOL)
            .into_iter()
            .map(|k| frontend_key(service_of(k, services)))
            .collect();
        let mut n = 0usize;
        g.bench_function(format!("{services}_services"), |b| {
            b.iter(|| {
                let first = (n * BURST) % keys.len();
                n += 1;
                let mut acc = 0u32;
                for k in &keys[first..first + BURST] {
                    acc ^= table.frontend(k).map_or(u32::MAX, |f| f.service.0);
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

/// Services the conntrack benches spread their flows over.
const CONNTRACK_SERVICES: usize = 10_000;
/// The bench clock during lookups (ns); flows are inserted at 0.
const T_NOW: u64 = 1_000_000_000;

/// The forward key of flow `k` (client `k` to its Service's frontend).
fn conntrack_key(k: u64) -> FlowKey {
    let (c, cport) = client(k);
    let s = service_of(k, CONNTRACK_SERVICES);
    FlowKey::new(
        IpAddr::V4(c),
        IpAddr::V4(frontend_addr(s)),
        cport,
        FRONTEND_PORT,
        6,
    )
}

/// A table of exactly `flows` established TCP flows (capacity `flows`), inserted with
/// `ConnTrack::insert` as the pipeline would: forward key, backend from the flow's Service.
fn tracked(flows: u64) -> ConnTrack {
    // A fixed hash key: the same bucket placement in every run, so figures compare.
    let mut ct = ConnTrack::with_key(flows as usize, Timeouts::default(), TableHashKey::FIXED);
    for k in 0..flows {
        let key = conntrack_key(k);
        let s = service_of(k, CONNTRACK_SERVICES);
        let nat = NatTarget {
            backend: IpAddr::V4(backend_addr(s, k as usize % BACKENDS_PER_SERVICE)),
            backend_port: BACKEND_PORT,
            service: ServiceId(s as u32),
            generation: 1,
        };
        ct.insert(&key, nat, 0).expect("room for every flow");
        let (h, _) = ct.lookup(&key, 0).expect("just inserted");
        ct.update_tcp(h, Direction::Forward, TcpFlags(TcpFlags::ACK), 0);
    }
    assert_eq!(ct.len(), flows as usize, "{:?}", ct.stats());
    ct
}

/// Connection tracking: lookup + TCP state update of an established flow's forward key,
/// 32 per burst in a scattered order, at 1k and 1M tracked flows; `_touch` first
/// prefetches each key's bucket across the burst before the lookups.
fn conntrack_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_lookup");
    g.throughput(Throughput::Elements(BURST as u64));
    for flows in [1_000u64, 1_000_000] {
        let mut ct = tracked(flows);
        let order: Vec<FlowKey> = scattered(flows, 1 << 16)
            .into_iter()
            .map(conntrack_key)
            .collect();
        let label = if flows >= 1_000_000 { "1M" } else { "1k" };
        for touch in [false, true] {
            let mut n = 0usize;
            let now = T_NOW;
            let name = format!("{label}_flows{}", if touch { "_touch" } else { "" });
            g.bench_function(name, |b| {
                b.iter(|| {
                    let first = (n * BURST) % order.len();
                    n += 1;
                    let burst = &order[first..first + BURST];
                    if touch {
                        for k in burst {
                            let (b, _) = ct.bucket_and_tag(k);
                            if let Some(line) = ct.bucket_line(b) {
                                prefetch((line as *const _) as *const u8);
                            }
                        }
                    }
                    let mut found = 0u32;
                    for k in burst {
                        if let Some((h, dir)) = ct.lookup(k, now) {
                            ct.update_tcp(h, dir, TcpFlags(TcpFlags::ACK), now);
                            found += 1;
                        }
                    }
                    assert_eq!(found, BURST as u32, "every flow is tracked");
                })
            });
        }
    }
    g.finish();
}

/// The DNAT work of an established flow composed directly from the crate's pieces:
/// checked Ethernet/IPv4/TCP views (IPv4 header checksum verified), conntrack lookup and
/// TCP state update, destination address and port rewrite with incremental checksums,
/// TTL, MACs. None of the pipeline's other steps (flow ownership, frontend lookup,
/// revalidation, per-Service counters, route and neighbour lookup). A floor to compare
/// `established_dnat` with, not a substitute for it.
#[inline]
fn dnat_floor_one(ct: &mut ConnTrack, frame: &mut [u8], now: u64) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
        return false;
    };
    if eth.ethertype() != EtherType::Ipv4 {
        return false;
    }
    let l3 = eth.header_len();
    let Some(l3_buf) = frame.get_mut(l3..) else {
        return false;
    };
    let Ok(mut ip) = Ipv4Packet::new_checked(l3_buf) else {
        return false;
    };
    if ip.protocol() != IpProtocol::Tcp || ip.is_later_fragment() || !ip.verify_checksum() {
        return false;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return false;
    };
    let key = FlowKey::new(
        IpAddr::V4(src),
        IpAddr::V4(dst),
        tcp.src_port(),
        tcp.dst_port(),
        6,
    );
    let flags = TcpFlags(tcp.flags().0 as u8);
    let Some((h, dir)) = ct.lookup(&key, now) else {
        return false;
    };
    ct.update_tcp(h, dir, flags, now);
    let Some(f) = ct.flow(h) else {
        return false;
    };
    let (IpAddr::V4(backend), bport) = (f.backend(), f.backend_port()) else {
        return false;
    };
    let old = ip.rewrite_dst_addr(backend);
    ip.decrement_ttl();
    let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
        return false;
    };
    tcp.update_checksum_v4_addr(old, backend);
    tcp.rewrite_dst_port(bport);
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    eth.set_src_addr(EthernetAddress(PORT1_MAC));
    eth.set_dst_addr(EthernetAddress(GATEWAY1_MAC));
    true
}

fn dnat_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("dnat_floor");
    g.throughput(Throughput::Elements(BURST as u64));
    for flows in [1_000u64, 1_000_000] {
        let mut ct = tracked(flows);
        let pool = FramePool::new(
            scattered(flows, POOL)
                .into_iter()
                .map(|k| forward_ack(k, CONNTRACK_SERVICES)),
        );
        let mut burst = Burst::new();
        let mut n = 0usize;
        let label = if flows >= 1_000_000 { "1M" } else { "1k" };
        g.bench_function(format!("{label}_flows"), |b| {
            b.iter(|| {
                pool.copy_burst(n, &mut burst);
                n += 1;
                let mut done = 0u32;
                for (f, &len) in burst.frames.iter_mut().zip(&burst.lens) {
                    done += u32::from(dnat_floor_one(&mut ct, &mut f[..len], T_NOW));
                }
                assert_eq!(done, BURST as u32, "every frame translated");
            })
        });
    }
    g.finish();
}

/// What a page the TLB does not hold costs here, prefetched well ahead: the baseline the
/// 10,000-Service rows are read against (a new flow to one of 10,000 Services touches
/// pages of the frontend index, its Service, Maglev table, backends and counter rows,
/// which 10,000 Services spread over tens of MiB; one Service keeps them all in the TLB).
/// Each step does a fixed ~0.4 µs of arithmetic (most of a new flow's time), prefetches 8
/// lines of a 64 MiB region for the step 8 steps later, and reads the 8 lines the step 8
/// steps earlier prefetched: `none` does the arithmetic alone, `1_page` takes the 8
/// lines from one random page, `8_pages` from 8. A line is as cold in both; a page walk
/// is per page, so `(8_pages - 1_page) / 7` is what one more page costs a step.
fn cold_pages(c: &mut Criterion) {
    const REGION: usize = 64 << 20;
    const LINES: usize = 8;
    const STEPS: usize = 1 << 16;
    const AHEAD: usize = 8;
    let region = vec![1u8; REGION];
    let pages = REGION / 4096;
    let mut g = c.benchmark_group("cold_pages");
    g.throughput(Throughput::Elements(1));
    for (name, spread) in [("none", 0usize), ("1_page", 1), ("8_pages", LINES)] {
        // For each step, LINES offsets: line `k` of page `k % spread` of the step's pages.
        let offsets: Vec<usize> = (0..STEPS * LINES)
            .map(|i| {
                let (step, k) = (i / LINES, i % LINES);
                let page = mix64((step * LINES + k % spread.max(1)) as u64) as usize % pages;
                let line = mix64(i as u64 ^ 0x6c69_6e65) as usize % 64;
                page * 4096 + line * 64
            })
            .collect();
        let mut step = 0usize;
        let mut x = 1u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                let at = |s: usize| &offsets[(s % STEPS) * LINES..][..LINES];
                if spread > 0 {
                    for &o in at(step + AHEAD) {
                        prefetch(region[o..].as_ptr());
                    }
                }
                for i in 0..160u64 {
                    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i) ^ (x >> 29);
                }
                if spread > 0 {
                    for &o in at(step) {
                        x = x.wrapping_add(u64::from(region[o]));
                    }
                }
                step += 1;
                black_box(x)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    cold_pages,
    copy,
    parse,
    maglev_build,
    maglev_lookup,
    frontend_lookup,
    conntrack_lookup,
    dnat_floor
);
criterion_main!(benches);
