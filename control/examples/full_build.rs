//! One full translate + build + publish of a synthetic cluster, repeated, for profilers
//! (`valgrind --tool=callgrind`, `perf record`) that want the work without criterion.
//!
//! cargo run --release -p kubypass-control --example full_build -- SERVICES PER_SERVICE [RUNS [THREADS]]
//!
//! THREADS is `ProxySettings::build_threads` (default 1). After each run it also times
//! the Maglev fills alone, one after the other on this thread (the same tables, from the
//! built services' usable backends): the part of a one-thread full build no other work
//! can remove.

use std::time::Instant;

use kubypass_control::ProxySettings;
use kubypass_dataplane::maglev::{Maglev, MaglevBackend};
use kubypass_dataplane::table::backend_id;

#[path = "../benches/cluster/mod.rs"]
mod cluster;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERVICES PER_SERVICE [RUNS [THREADS]]"))
        .collect();
    let (services, per) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
    );
    let runs = args.get(2).copied().unwrap_or(1);
    let threads = args.get(3).copied().unwrap_or(1);
    let (svcs, slices) = cluster::cluster(services, per);
    let settings = ProxySettings {
        build_threads: threads,
        ..ProxySettings::default()
    };
    for _ in 0..runs {
        let built = cluster::full_build(&settings, &svcs, &slices);
        let took = built.took;
        let table = built.publisher.current();
        let seed = table.seed();
        let ids: Vec<Vec<MaglevBackend>> = table
            .services()
            .iter()
            .map(|s| {
                s.usable_backends()
                    .iter()
                    .map(|b| MaglevBackend {
                        id: backend_id(seed, b),
                        weight: b.weight,
                    })
                    .collect()
            })
            .collect();
        let fill_start = Instant::now();
        let fills: Vec<Maglev> = ids.iter().map(|b| Maglev::new(b)).collect();
        let fill = fill_start.elapsed();
        assert!(fills
            .iter()
            .zip(table.services())
            .all(|(f, s)| f == s.maglev()));
        drop((table, built, fills));
        println!(
            "{services}x{per}, {threads} build thread(s): full build {took:?}, Maglev fills alone (one thread) {fill:?}"
        );
    }
}
