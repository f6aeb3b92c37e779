//! One full translate + build + publish of a synthetic cluster, repeated, for profilers
//! (`valgrind --tool=callgrind`, `perf record`) that want the work without criterion.
//!
//! cargo run --release -p kubypass-control --example full_build -- SERVICES PER_SERVICE [RUNS]
//!
//! After each run it also times the Maglev fills alone (the same tables, from the built
//! services' usable backends), the part of a full build no other work can remove.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubypass_control::translate::LABEL_SERVICE_NAME;
use kubypass_control::{ProxySettings, Publisher, Translator};
use kubypass_dataplane::maglev::{Maglev, MaglevBackend};
use kubypass_dataplane::table::backend_id;

/// Endpoints per EndpointSlice, as the EndpointSlice controller caps them.
const PER_SLICE: usize = 100;

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

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERVICES PER_SERVICE [RUNS]"))
        .collect();
    let (services, per) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
    );
    let runs = args.get(2).copied().unwrap_or(1);
    let mut next = 1usize;
    let mut slices = Vec::new();
    for i in 0..services {
        let eps: Vec<Endpoint> = (0..per)
            .map(|_| {
                next += 1;
                Endpoint {
                    addresses: vec![format!(
                        "10.{}.{}.{}",
                        (next >> 16) & 255,
                        (next >> 8) & 255,
                        next & 255
                    )],
                    ..Default::default()
                }
            })
            .collect();
        for (part, chunk) in eps.chunks(PER_SLICE).enumerate() {
            slices.push(Arc::new(slice(i, part, chunk.to_vec())));
        }
    }
    let svcs: Vec<Arc<Service>> = (0..services).map(|i| Arc::new(service(i))).collect();
    let settings = ProxySettings::default();
    for _ in 0..runs {
        let start = Instant::now();
        let mut translator = Translator::new(settings.clone());
        let t = translator.translate(&svcs, &slices, None);
        let publisher = Publisher::new();
        publisher
            .publish(t.table, Some(start), start.elapsed())
            .expect("first publication");
        let took = start.elapsed();
        let table = publisher.current();
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
        drop((table, publisher, translator, t.status, t.warnings, fills));
        println!("{services}x{per}: full build {took:?}, Maglev fills alone {fill:?}");
    }
}
