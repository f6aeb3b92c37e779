//! The synthetic cluster the control plane's bench and `examples/full_build` build tables
//! from: Services with one port and a ClusterIP each, and their endpoints in
//! EndpointSlices of at most [`PER_SLICE`], as reflector stores hold them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubypass_control::translate::{ServiceStatus, Warning, LABEL_SERVICE_NAME};
use kubypass_control::{ProxySettings, Publisher, Translator};

/// Endpoints per EndpointSlice, as the EndpointSlice controller caps them.
pub const PER_SLICE: usize = 100;

pub fn addr(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

pub fn service(i: usize) -> Service {
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

pub fn slice(i: usize, part: usize, endpoints: Vec<Endpoint>) -> EndpointSlice {
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

pub fn endpoint(n: usize) -> Endpoint {
    Endpoint {
        addresses: vec![addr(n)],
        ..Default::default()
    }
}

/// `services` Services with `per` endpoints each, as reflector stores hold them.
pub fn cluster(services: usize, per: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
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

/// What a full build made, handed back so that dropping it is not part of a timing (the
/// bench only drops it; the example reads the publisher and the time).
#[allow(dead_code)]
pub struct FullBuild {
    pub publisher: Publisher,
    /// From the start of the translation to the table being published.
    pub took: Duration,
    made: (Translator, Vec<Arc<ServiceStatus>>, Vec<Warning>),
}

/// A full build, as after a restart: a fresh translator turns every Service into a table,
/// and a fresh publisher publishes it.
pub fn full_build(
    settings: &ProxySettings,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> FullBuild {
    let start = Instant::now();
    let mut translator = Translator::new(settings.clone());
    let t = translator.translate(services, slices, None);
    let publisher = Publisher::new();
    publisher
        .publish(t.table, Some(start), start.elapsed())
        .expect("a first publication succeeds");
    FullBuild {
        took: start.elapsed(),
        publisher,
        made: (translator, t.status, t.warnings),
    }
}
