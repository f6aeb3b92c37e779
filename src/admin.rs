//! The admin HTTP server (localhost unless configured): `/healthz` (like kube-proxy's
//! :10256/healthz), `/metrics` (Prometheus text) and `/status` (JSON: Services, their
//! frontends and backends, ignored Services and why).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kubypass_control::translate::{IgnoreReason, Outcome};
use kubypass_dataplane::pipeline::DropReason;
use kubypass_dataplane::table::NoBackendAction;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::appliance::{Shared, WorkerViews};
use crate::runtime::RuntimeDrop;

/// What the admin server reads; everything is lock-free or a snapshot.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Shared,
    pub workers: WorkerViews,
    /// `/healthz` answers 503 once the source has been out of sync this long.
    pub max_out_of_sync: Duration,
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, state, shutdown).await
}

/// Serves on a bound listener until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, for `serve` and for tests.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(Arc::new(state))
}

fn unix_secs(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    let healthy = s.shared.health.is_healthy(s.max_out_of_sync);
    let h = s.shared.health.snapshot();
    let body = json!({
        "healthy": healthy,
        "synced": h.synced_once,
        "inSync": h.in_sync,
        "lastUpdated": unix_secs(h.last_sync),
        "currentTime": unix_secs(Some(SystemTime::now())),
        "lastError": h.last_error,
        "generation": s.shared.publisher.metrics().generation,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(s): State<Arc<AdminState>>) -> Response {
    let report = s.shared.publisher.report();
    let table = s.shared.publisher.current();
    let services: Vec<_> = report
        .status
        .iter()
        .map(|svc| match &svc.outcome {
            Outcome::Served(pools) => json!({
                "namespace": svc.namespace,
                "name": svc.name,
                "proxied": true,
                "pools": pools.iter().map(|p| {
                    let backends: Vec<_> = table
                        .service(p.id)
                        .map(|t| t.usable_backends().iter()
                            .map(|b| format!("{}", std::net::SocketAddr::new(b.addr, b.port)))
                            .collect())
                        .unwrap_or_default();
                    json!({
                        "name": p.name,
                        "frontends": p.frontends.iter().map(|(k, kind)| json!({
                            "address": k.addr.to_string(),
                            "port": k.port,
                            "protocol": k.protocol.to_string(),
                            "kind": format!("{kind:?}"),
                        })).collect::<Vec<_>>(),
                        "endpoints": p.backends,
                        "usable": backends,
                        "whenNoBackend": match p.no_backend {
                            NoBackendAction::Reject => "reject",
                            NoBackendAction::Drop => "drop",
                        },
                    })
                }).collect::<Vec<_>>(),
            }),
            Outcome::Ignored(why) => json!({
                "namespace": svc.namespace,
                "name": svc.name,
                "proxied": false,
                "reason": match why {
                    IgnoreReason::ExternalName => "ExternalName".to_owned(),
                    IgnoreReason::Headless => "Headless".to_owned(),
                    IgnoreReason::OtherProxy(_) => "OtherProxy".to_owned(),
                    IgnoreReason::Invalid(_) => "Invalid".to_owned(),
                },
                "detail": why.to_string(),
            }),
        })
        .collect();
    let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
    axum::Json(json!({
        "generation": report.generation,
        "services": services,
        "warnings": warnings,
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::take(&s)));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One sample: (metric, help, is_counter, labels, value).
type Sample = (
    &'static str,
    &'static str,
    bool,
    Vec<(&'static str, String)>,
    f64,
);

/// Every figure of one scrape, read once from the lock-free counters.
#[derive(Debug, Default)]
struct Snapshot {
    samples: Vec<Sample>,
}

impl Snapshot {
    fn take(s: &AdminState) -> Snapshot {
        let mut out = Snapshot::default();
        let r = Ordering::Relaxed;
        for (i, w) in s.workers.runtime.iter().enumerate() {
            let worker = vec![("worker", i.to_string())];
            let c = |name, help, v: u64| (name, help, true, worker.clone(), v as f64);
            out.samples.extend([
                c(
                    "kubypass_rx_frames",
                    "Frames received from rx queues.",
                    w.rx.load(r),
                ),
                c(
                    "kubypass_tx_frames",
                    "Frames the tx queues took.",
                    w.tx.load(r),
                ),
                c(
                    "kubypass_rx_bursts",
                    "Non-empty rx bursts.",
                    w.bursts.load(r),
                ),
                c(
                    "kubypass_empty_polls",
                    "Loop turns that found no frame.",
                    w.empty_polls.load(r),
                ),
                c(
                    "kubypass_idle_yields",
                    "Idle loop turns that yielded the CPU (workers.idle_yield_after).",
                    w.idle_yields.load(r),
                ),
                c(
                    "kubypass_steered_in_frames",
                    "Frames received from other workers.",
                    w.steered_in.load(r),
                ),
                c(
                    "kubypass_steered_out_frames",
                    "Frames handed to their owning worker.",
                    w.steered_out.load(r),
                ),
                c(
                    "kubypass_originated_frames",
                    "Frames the appliance originated (ARP/ND probes).",
                    w.originated.load(r),
                ),
                c(
                    "kubypass_offload_fallback_frames",
                    "Frames whose checksums were left to a NIC without that offload, finished in software.",
                    w.offload_fallback.load(r),
                ),
            ]);
            for why in RuntimeDrop::ALL {
                out.samples.push((
                    "kubypass_runtime_drops",
                    "Frames the runtime dropped, by reason.",
                    true,
                    vec![("worker", i.to_string()), ("reason", why.name().to_owned())],
                    w.runtime_drops[why as usize].load(r) as f64,
                ));
            }
        }
        for (i, p) in s.workers.pipeline.iter().enumerate() {
            let worker = vec![("worker", i.to_string())];
            let c = |name, help, v: u64| (name, help, true, worker.clone(), v as f64);
            out.samples.extend([
                c(
                    "kubypass_pipeline_frames",
                    "Frames the pipeline processed.",
                    p.frames.load(r),
                ),
                c(
                    "kubypass_dnat_frames",
                    "Frames translated client to backend.",
                    p.dnat.load(r),
                ),
                c(
                    "kubypass_reverse_nat_frames",
                    "Frames translated backend to client.",
                    p.reverse_nat.load(r),
                ),
                c(
                    "kubypass_fast_path_frames",
                    "Frames of established flows translated by the fast path (a part of the DNAT and reverse NAT frames).",
                    p.fast_path.load(r),
                ),
                c(
                    "kubypass_replies",
                    "ARP/ND replies, RSTs and ICMP messages generated.",
                    p.replies.load(r),
                ),
                c(
                    "kubypass_new_flows",
                    "Flows created in connection tracking.",
                    p.new_flows.load(r),
                ),
                c(
                    "kubypass_stateless_flows",
                    "New flows served without a tracking entry.",
                    p.stateless_flows.load(r),
                ),
                c(
                    "kubypass_icmp_translated",
                    "ICMP errors translated for a tracked flow.",
                    p.icmp_translated.load(r),
                ),
                c(
                    "kubypass_fragments_followed",
                    "Later fragments translated from their first fragment.",
                    p.fragments_followed.load(r),
                ),
                c(
                    "kubypass_neighbour_requests",
                    "ARP/ND requests sent for unresolved next hops.",
                    p.neighbour_requests.load(r),
                ),
                c(
                    "kubypass_conntrack_expired",
                    "Tracked flows removed when their timeout passed.",
                    p.conntrack_expired.load(r),
                ),
                c(
                    "kubypass_conntrack_evicted",
                    "Live tracked flows removed to admit new ones (the table was full).",
                    p.conntrack_evicted.load(r),
                ),
                c(
                    "kubypass_flow_counts_dropped",
                    "Packets of removed flows that never reached their Service's and backend's counters.",
                    p.flow_counts_dropped.load(r),
                ),
            ]);
            out.samples.push((
                "kubypass_conntrack_entries",
                "Flows tracked now.",
                false,
                worker.clone(),
                p.conntrack_entries.load(r) as f64,
            ));
            for why in DropReason::ALL {
                out.samples.push((
                    "kubypass_pipeline_drops",
                    "Frames the pipeline dropped, by reason.",
                    true,
                    vec![
                        ("worker", i.to_string()),
                        ("reason", why.label().to_owned()),
                    ],
                    p.drops(*why) as f64,
                ));
            }
        }
        let table = s.shared.visible.load_full();
        for svc in table.services() {
            let t = svc.counters().totals();
            let labels = vec![("service", svc.name().to_owned())];
            out.samples.extend([
                (
                    "kubypass_service_packets",
                    "Packets translated to a Service's backends (a tracked flow adds its packets every 64, and at its worker's next conntrack sweep).",
                    true,
                    labels.clone(),
                    t.packets as f64,
                ),
                (
                    "kubypass_service_bytes",
                    "Bytes translated to a Service's backends (added with the packets).",
                    true,
                    labels.clone(),
                    t.bytes as f64,
                ),
                (
                    "kubypass_service_new_flows",
                    "New flows a Service received.",
                    true,
                    labels,
                    t.new_flows as f64,
                ),
            ]);
        }
        for (id, addr, port, counters) in table.backend_counters_iter() {
            let Some(svc) = table.service(id) else {
                continue;
            };
            let t = counters.totals();
            let labels = vec![
                ("service", svc.name().to_owned()),
                ("backend", std::net::SocketAddr::new(addr, port).to_string()),
            ];
            out.samples.extend([
                (
                    "kubypass_backend_packets",
                    "Packets translated to a backend (a tracked flow adds its packets every 64, and at its worker's next conntrack sweep).",
                    true,
                    labels.clone(),
                    t.packets as f64,
                ),
                (
                    "kubypass_backend_new_flows",
                    "New flows sent to a backend.",
                    true,
                    labels,
                    t.new_flows as f64,
                ),
            ]);
        }
        let m = s.shared.publisher.metrics();
        let g = |name, help, v: f64| (name, help, false, Vec::new(), v);
        out.samples.extend([
            g(
                "kubypass_table_generation",
                "Generation of the latest table built.",
                m.generation as f64,
            ),
            g(
                "kubypass_table_build_seconds",
                "Translate and build time of the last table.",
                m.last_build.as_secs_f64(),
            ),
            g(
                "kubypass_table_publish_latency_seconds",
                "From a change to the table that includes it being visible, last table.",
                m.last_change_to_visible.as_secs_f64(),
            ),
            g(
                "kubypass_table_publish_latency_max_seconds",
                "Largest change-to-visible latency since start.",
                m.max_change_to_visible.as_secs_f64(),
            ),
            g(
                "kubypass_source_in_sync",
                "1 while the object source is in sync.",
                f64::from(u8::from(s.shared.health.snapshot().in_sync)),
            ),
            g(
                "kubypass_neighbours",
                "Neighbours known.",
                s.shared.neighbours.load().len() as f64,
            ),
            g(
                "kubypass_table_gate_wait_seconds",
                "How long the last table waited for its new backends' next hops before workers saw it.",
                s.shared.gate_wait_ns.load(r) as f64 / 1e9,
            ),
            g(
                "kubypass_table_visible_generation",
                "Generation of the table workers read.",
                s.shared.visible.load().generation() as f64,
            ),
        ]);
        out.samples.push((
            "kubypass_tables_published",
            "Tables published since start.",
            true,
            Vec::new(),
            m.published as f64,
        ));
        out.samples.push((
            "kubypass_neighbours_ignored",
            "Learned neighbours ignored because the table was full of needed ones.",
            true,
            Vec::new(),
            s.shared.neighbours_ignored.load(r) as f64,
        ));
        out.samples.push((
            "kubypass_neighbours_evicted",
            "Learned neighbours forgotten to make room for new ones.",
            true,
            Vec::new(),
            s.shared.neighbours_evicted.load(r) as f64,
        ));
        out
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Samples of one metric are adjacent (pushed in family order per worker); group
        // them so each family gets one descriptor.
        let mut order: Vec<&'static str> = Vec::new();
        for s in &self.samples {
            if !order.contains(&s.0) {
                order.push(s.0);
            }
        }
        for name in order {
            let mut family = self.samples.iter().filter(|s| s.0 == name).peekable();
            let Some(first) = family.peek() else { continue };
            let (help, counter) = (first.1, first.2);
            if first.3.is_empty() {
                // A single unlabelled sample.
                let v = first.4;
                if counter {
                    let c = ConstCounter::new(v as u64);
                    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
                } else {
                    let g = ConstGauge::new(v);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
                continue;
            }
            if counter {
                let t = ConstCounter::new(0u64).metric_type();
                let mut desc = encoder.encode_descriptor(name, help, None, t)?;
                for (_, _, _, labels, v) in family {
                    let m = desc.encode_family(labels)?;
                    ConstCounter::new(*v as u64).encode(m)?;
                }
            } else {
                let t = ConstGauge::new(0f64).metric_type();
                let mut desc = encoder.encode_descriptor(name, help, None, t)?;
                for (_, _, _, labels, v) in family {
                    let m = desc.encode_family(labels)?;
                    ConstGauge::new(*v).encode(m)?;
                }
            }
        }
        Ok(())
    }
}

/// A short human summary of one scrape, for logs.
pub fn describe(s: &AdminState) -> String {
    let mut out = String::new();
    let snap = Snapshot::take(s);
    for (name, _, _, labels, v) in &snap.samples {
        if *v != 0.0 {
            let _ = write!(out, "{name}");
            for (k, val) in labels {
                let _ = write!(out, " {k}={val}");
            }
            let _ = writeln!(out, " {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::Shared;
    use crate::runtime::WorkerCounters;
    use kubypass_control::{load_manifests, ProxySettings, Report};
    use kubypass_dataplane::pipeline::counters::bump;
    use kubypass_dataplane::pipeline::{NeighbourTable, PipelineCounters};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn state(max_out_of_sync: Duration) -> AdminState {
        AdminState {
            shared: Shared::new(NeighbourTable::default()),
            workers: WorkerViews {
                runtime: Arc::new(vec![WorkerCounters::default()]),
                pipeline: vec![Arc::new(PipelineCounters::default())],
            },
            max_out_of_sync,
        }
    }

    /// GET `path` from a server on an ephemeral localhost port: (status, body).
    async fn get(state: &AdminState, path: &str) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.unwrap();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let code = raw[9..12].parse().unwrap();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn healthz_follows_the_source() {
        let s = state(Duration::from_secs(60));
        assert_eq!(get(&s, "/healthz").await.0, 503, "never synced");
        s.shared.health.synced();
        let (code, body) = get(&s, "/healthz").await;
        assert_eq!(code, 200);
        assert!(body.contains("\"healthy\":true"), "{body}");
        // Out of sync for longer than allowed (0 s here): unhealthy.
        let strict = state(Duration::ZERO);
        strict.shared.health.synced();
        strict.shared.health.failed("connection refused");
        let (code, body) = get(&strict, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("connection refused"), "{body}");
    }

    #[tokio::test]
    async fn metrics_expose_worker_pipeline_and_table_figures() {
        let s = state(Duration::from_secs(60));
        bump(&s.workers.runtime[0].rx, 7);
        s.workers.pipeline[0].count_drop(DropReason::NoFlow);
        s.workers.pipeline[0].count_drop(DropReason::NoFlow);
        bump(&s.workers.pipeline[0].dnat, 5);
        bump(&s.workers.pipeline[0].conntrack_evicted, 3);
        s.shared.neighbours_evicted.fetch_add(4, Ordering::Relaxed);
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/manifests");
        let t = load_manifests(&[dir], &ProxySettings::default()).unwrap();
        let web = t
            .table
            .services()
            .iter()
            .find(|s| s.name().starts_with("default/web:"))
            .unwrap();
        web.counters().count(0, 60, true);
        web.counters().count(0, 40, false);
        let b = web.usable_backends()[0];
        let web_name = web.name().to_owned();
        let id = t
            .table
            .frontends()
            .find(|f| f.key.port == 80 && f.key.addr.to_string() == "198.18.100.10")
            .unwrap()
            .service;
        t.table
            .backend_counters(id, b.addr, b.port)
            .unwrap()
            .count(0, 60, true);
        s.shared.visible.store(Arc::new(t.table));
        let (code, body) = get(&s, "/metrics").await;
        assert_eq!(code, 200);
        for line in [
            "kubypass_rx_frames_total{worker=\"0\"} 7",
            "kubypass_dnat_frames_total{worker=\"0\"} 5",
            "kubypass_conntrack_evicted_total{worker=\"0\"} 3",
            "kubypass_flow_counts_dropped_total{worker=\"0\"} 0",
            "kubypass_pipeline_drops_total{worker=\"0\",reason=\"no_flow\"} 2",
            "kubypass_pipeline_drops_total{worker=\"0\",reason=\"ttl_exceeded\"} 0",
            "kubypass_table_generation 0.0",
            "kubypass_neighbours_evicted_total 4",
            "kubypass_neighbours_ignored_total 0",
            "# TYPE kubypass_conntrack_entries gauge",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        let backend = std::net::SocketAddr::new(b.addr, b.port);
        for line in [
            format!("kubypass_service_packets_total{{service=\"{web_name}\"}} 2"),
            format!("kubypass_service_bytes_total{{service=\"{web_name}\"}} 100"),
            format!("kubypass_service_new_flows_total{{service=\"{web_name}\"}} 1"),
            format!("kubypass_backend_new_flows_total{{service=\"{web_name}\",backend=\"{backend}\"}} 1"),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
    }

    #[tokio::test]
    async fn status_lists_services_with_frontends_and_backends() {
        let s = state(Duration::from_secs(60));
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/manifests");
        let settings = ProxySettings {
            node_addresses: vec!["198.18.1.1".parse().unwrap()],
            ..ProxySettings::default()
        };
        let t = load_manifests(&[dir], &settings).unwrap();
        let generation = t.table.generation();
        s.shared
            .publisher
            .publish(t.table, None, Duration::ZERO)
            .unwrap();
        s.shared.publisher.set_report(Report {
            generation,
            status: t.status,
            warnings: t.warnings,
        });
        let (code, body) = get(&s, "/status").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let services = v["services"].as_array().unwrap();
        let web = services
            .iter()
            .find(|s| s["name"] == "web")
            .unwrap_or_else(|| panic!("no web in {body}"));
        assert_eq!(web["proxied"], true);
        let pool = &web["pools"][0];
        assert_eq!(pool["usable"].as_array().unwrap().len(), 3, "{pool}");
        assert!(pool["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["address"] == "198.18.100.10" && f["port"] == 80));
        let empty = services.iter().find(|s| s["name"] == "empty").unwrap();
        assert_eq!(empty["pools"][0]["whenNoBackend"], "reject");
    }
}
