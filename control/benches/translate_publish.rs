//! translate + build + publish at scale: a full build, and one endpoint changing (the
//! work between a change and its visibility to workers, without the debounce wait).
//!
//! cargo bench -p kubypass-control --bench translate_publish

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubypass_control::translate::LABEL_SERVICE_NAME;
use kubypass_control::{ProxySettings, Publisher, Translator};
use kubypass_dataplane::table::ServiceTable;

/// Endpoints per EndpointSlice, as the EndpointSlice controller caps them.
const PER_SLICE: usize = 100;

fn addr(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ips: Some(vec![format!("198.18.{}.{}", i >> 8, i & 255)]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(i: usize, part: usize, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc{i}-{part}")),
            labels: Some([(LABEL_SERVICE_NAME.to_string(), format!("svc{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
        endpoints,
    }
}

fn endpoint(n: usize) -> Endpoint {
    Endpoint {
        addresses: vec![addr(n)],
        ..Default::default()
    }
}

/// `services` Services with `per` endpoints each, as reflector stores hold them.
fn cluster(services: usize, per: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let mut next = 1;
    let mut slices = Vec::new();
    for i in 0..services {
        let eps: Vec<Endpoint> = (0..per)
            .map(|_| {
                next += 1;
                endpoint(next)
            })
            .collect();
        for (part, chunk) in eps.chunks(PER_SLICE).enumerate() {
            slices.push(Arc::new(slice(i, part, chunk.to_vec())));
        }
    }
    (
        (0..services).map(|i| Arc::new(service(i))).collect(),
        slices,
    )
}

fn bench(c: &mut Criterion) {
    let settings = ProxySettings::default();
    let mut group = c.benchmark_group("translate_publish");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (services, per) in [(10_000, 10), (1_000, 250)] {
        let id = format!("{services}x{per}");
        let (svcs, mut slices) = cluster(services, per);
        let publisher = Publisher::new();

        group.bench_function(BenchmarkId::new("full_build", &id), |b| {
            // No previous table: every Maglev table is built, as at start or after a
            // resync, from the objects to the table visible to workers. What the control
            // thread then keeps (its Translator, the status for /status) is dropped after
            // the timing, as is the table.
            b.iter_with_large_drop(|| {
                let start = Instant::now();
                let mut translator = Translator::new(settings.clone());
                let t = translator.translate(&svcs, &slices, None);
                let fresh = Publisher::new();
                fresh
                    .publish(t.table, Some(start), start.elapsed())
                    .unwrap();
                (fresh, translator, t.status, t.warnings)
            })
        });

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
