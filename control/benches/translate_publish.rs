//! translate + build + publish at scale: a full build, and one endpoint changing (the
//! work between a change and its visibility to workers, without the debounce wait).
//!
//! cargo bench -p kubypass-control --bench translate_publish

mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kubypass_control::{ProxySettings, Publisher, Translator};
use kubypass_dataplane::table::ServiceTable;

use cluster::{cluster, endpoint, full_build};

fn bench(c: &mut Criterion) {
    let settings = ProxySettings::default();
    let mut group = c.benchmark_group("translate_publish");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (services, per) in [(10_000, 10), (1_000, 250)] {
        let id = format!("{services}x{per}");
        let (svcs, mut slices) = cluster(services, per);
        let publisher = Publisher::new();

        // No previous table: every Maglev table is built, as at start or after a resync,
        // from the objects to the table visible to workers. What the control thread then
        // keeps (its Translator, the status for /status) is dropped after the timing, as
        // is the table. `full_build` fills on the calling thread alone,
        // `full_build_2_threads` on it and one build thread.
        for (name, threads) in [("full_build", 1), ("full_build_2_threads", 2)] {
            let settings = ProxySettings {
                build_threads: threads,
                ..settings.clone()
            };
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter_with_large_drop(|| full_build(&settings, &svcs, &slices))
            });
        }

        // One endpoint of one slice flips between two addresses; everything else reused,
        // as in the publication loop: Translator's cache and the previous Maglev tables.
        let mut translator = Translator::new(settings.clone());
        let first = translator.translate(&svcs, &slices, None).table;
        let mut generation = first.generation();
        publisher.publish(first, None, Duration::ZERO).unwrap();
        let victim = slices.len() / 2;
        let original = (*slices[victim]).clone();
        let mut changed = original.clone();
        changed.endpoints[0] = endpoint(usize::MAX >> 40);
        let mut flip = false;
        // Timed: from the change until the new table is visible to workers (the pointer
        // swap); freeing the old table and the old status happens after that.
        group.bench_function(BenchmarkId::new("one_endpoint_change", &id), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    flip = !flip;
                    slices[victim] = Arc::new(if flip {
                        changed.clone()
                    } else {
                        original.clone()
                    });
                    let changed_at = Instant::now();
                    let previous = publisher.current();
                    let t = translator.translate(&svcs, &slices, Some(&previous));
                    generation = t.table.generation();
                    publisher
                        .publish(t.table, Some(changed_at), changed_at.elapsed())
                        .unwrap();
                    total += publisher.metrics().last_change_to_visible;
                    drop((previous, t.status, t.warnings));
                }
                total
            })
        });

        // The floor under a one-endpoint change: the dataplane's table build alone, from
        // ready specs, reusing every Maglev table (what translate cannot avoid).
        let current = publisher.current();
        let specs: Vec<_> = current
            .services()
            .iter()
            .map(|s| s.spec().clone())
            .collect();
        let frontends: Vec<_> = current.frontends().cloned().collect();
        group.bench_function(BenchmarkId::new("table_build_only", &id), |b| {
            b.iter_with_large_drop(|| {
                let mut builder = ServiceTable::builder().generation(current.generation() + 1);
                for spec in &specs {
                    builder.add_service(spec.clone());
                }
                for f in &frontends {
                    builder
                        .add_frontend(f.key, f.kind, f.service, f.source_ranges.to_vec())
                        .unwrap();
                }
                builder.build_reusing(Some(&current))
            })
        });

        let m = publisher.metrics();
        assert_eq!(m.generation, generation);
        eprintln!(
            "{id}: last change-to-visible {:?} (without debounce), max {:?}",
            m.last_change_to_visible, m.max_change_to_visible
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
