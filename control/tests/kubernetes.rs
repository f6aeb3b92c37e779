//! The Kubernetes source against a fake API server over real HTTP: the real kube client
//! lists (in pages), watches chunked streams from a resourceVersion, sees bookmarks,
//! relists on 410 Gone, survives a dropped connection and 500s, and health follows.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kubypass_control::{ControlConfig, ProxySettings, Publisher, SourceConfig, SourceHealth};
use kubypass_dataplane::table::{FrontendKey, L4Protocol, ServiceTable};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Slice,
}

#[derive(Clone, Debug)]
enum Feed {
    Event(Kind, u64, Value),
    /// Close every open watch stream.
    Drop,
}

#[derive(Default)]
struct FakeState {
    rv: u64,
    objects: BTreeMap<(Kind, String), Value>,
    history: Vec<(Kind, u64, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    /// Answer every request with 500 while set.
    failing: bool,
    /// Requests seen: (kind, is_watch, resourceVersion).
    requests: Vec<(Kind, bool, String)>,
}

struct Fake {
    state: Mutex<FakeState>,
    feed: broadcast::Sender<Feed>,
}

fn name_of(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            state: Mutex::new(FakeState {
                rv: 1,
                ..Default::default()
            }),
            feed: broadcast::channel(1024).0,
        })
    }

    /// Adds, replaces or (with `deleted`) removes an object, recording a watch event.
    fn change(&self, kind: Kind, mut obj: Value, deleted: bool) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (kind, name_of(&obj));
        let ty = if deleted {
            s.objects.remove(&key);
            "DELETED"
        } else if s.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let event = json!({"type": ty, "object": obj});
        s.history.push((kind, rv, event.clone()));
        let _ = self.feed.send(Feed::Event(kind, rv, event));
    }

    /// Forgets history: watches from before now get 410 Gone. Changes made while
    /// compacted are only seen by a relist.
    fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted_below = s.rv;
        s.history.clear();
    }

    fn bookmark(&self, kind: Kind) {
        let rv = self.state.lock().unwrap().rv;
        let (api, k) = api_kind(kind);
        let event = json!({"type": "BOOKMARK", "object": {"apiVersion": api, "kind": k, "metadata": {"resourceVersion": rv.to_string()}}});
        let _ = self.feed.send(Feed::Event(kind, rv, event));
    }

    fn drop_watches(&self) {
        let _ = self.feed.send(Feed::Drop);
    }

    fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    fn lists(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| !r.1)
            .count()
    }

    fn watches_from(&self, rv: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.1 && r.2 == rv)
            .count()
    }

    fn rv(&self) -> u64 {
        self.state.lock().unwrap().rv
    }
}

fn api_kind(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("v1", "Service"),
        Kind::Slice => ("discovery.k8s.io/v1", "EndpointSlice"),
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn query(raw: &Option<String>) -> BTreeMap<String, String> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn services(State(f): State<Arc<Fake>>, RawQuery(q): RawQuery) -> Response {
    serve(f, Kind::Service, q).await
}

async fn slices(State(f): State<Arc<Fake>>, RawQuery(q): RawQuery) -> Response {
    serve(f, Kind::Slice, q).await
}

async fn serve(f: Arc<Fake>, kind: Kind, raw: Option<String>) -> Response {
    let q = query(&raw);
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut s = f.state.lock().unwrap();
    s.requests.push((kind, watch, rv.clone()));
    if s.failing {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError"),
        );
    }
    let (api, k) = api_kind(kind);
    if !watch {
        // A page of `limit` items from offset `continue`.
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((kk, _), _)| *kk == kind)
            .map(|(_, v)| v.clone())
            .collect();
        let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let end = offset.saturating_add(limit).min(items.len());
        let mut meta = json!({"resourceVersion": s.rv.to_string()});
        if end < items.len() {
            meta["continue"] = json!(end.to_string());
        }
        let body = json!({"apiVersion": api, "kind": format!("{k}List"), "metadata": meta,
                          "items": items[offset.min(end)..end]});
        return json_response(StatusCode::OK, body);
    }
    let from: u64 = rv.parse().unwrap_or(0);
    let (tx, rx) = mpsc::channel::<String>(64);
    if from < s.compacted_below {
        let event = json!({"type": "ERROR", "object": status(410, "Expired")});
        let _ = tx.try_send(format!("{event}\n"));
        drop(tx);
    } else {
        // Subscribe under the lock so no event falls between history and live feed.
        let mut live = f.feed.subscribe();
        let backlog: Vec<(u64, Value)> = s
            .history
            .iter()
            .filter(|(kk, r, _)| *kk == kind && *r > from)
            .map(|(_, r, e)| (*r, e.clone()))
            .collect();
        tokio::spawn(async move {
            let mut last = from;
            for (r, e) in backlog {
                last = r;
                if tx.send(format!("{e}\n")).await.is_err() {
                    return;
                }
            }
            while let Ok(item) = live.recv().await {
                match item {
                    Feed::Drop => return,
                    Feed::Event(kk, r, e)
                        if kk == kind && (r > last || e["type"] == "BOOKMARK") =>
                    {
                        last = last.max(r);
                        if tx.send(format!("{e}\n")).await.is_err() {
                            return;
                        }
                    }
                    Feed::Event(..) => {}
                }
            }
        });
    }
    drop(s);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn start(fake: Arc<Fake>) -> SocketAddr {
    let app = Router::new()
        .route("/api/v1/services", get(services))
        .route("/apis/discovery.k8s.io/v1/endpointslices", get(slices))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default",
                        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
           "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}})
}

fn slice(svc: &str, addrs: &[&str]) -> Value {
    let eps: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true},
                        "targetRef": {"kind": "Pod", "name": format!("pod-{a}"), "namespace": "default"}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{svc}-abc"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": eps})
}

fn backends(t: &ServiceTable, ip: &str) -> Option<Vec<String>> {
    let f = t.frontend(&FrontendKey {
        addr: ip.parse().unwrap(),
        port: 80,
        protocol: L4Protocol::Tcp,
    })?;
    let mut b: Vec<String> = t
        .service(f.service)?
        .usable_backends()
        .iter()
        .map(|b| format!("{}:{}", b.addr, b.port))
        .collect();
    b.sort();
    Some(b)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_a_fake_api_server_through_failures() {
    let fake = Fake::new();
    for i in 0..7 {
        // More Services than the watcher's page size below, so the list is paged.
        fake.change(
            Kind::Service,
            service(&format!("filler{i}"), &format!("198.18.0.{}", 100 + i)),
            false,
        );
    }
    fake.change(Kind::Service, service("web", "198.18.0.10"), false);
    fake.change(Kind::Slice, slice("web", &["10.0.0.1"]), false);
    // The first requests fail: the watcher must back off and retry.
    fake.set_failing(true);
    let addr = start(fake.clone()).await;

    let publisher = Publisher::new();
    let reader = publisher.reader();
    let health = SourceHealth::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ControlConfig {
        source: SourceConfig::Kubernetes {
            config: Some(Box::new(kube::Config::new(
                format!("http://{addr}").parse().unwrap(),
            ))),
            options: kubypass_control::kubernetes::WatchOptions {
                probe_interval: Duration::from_millis(100),
                page_size: 3,
            },
        },
        settings: ProxySettings::default(),
        debounce: Duration::from_millis(10),
    };
    let control = tokio::spawn(kubypass_control::run(
        config,
        publisher.clone(),
        health.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reader.load().generation() == 0,
        "nothing published before a sync"
    );
    assert!(!health.snapshot().synced_once);
    assert!(
        health.snapshot().last_error.unwrap().contains("500"),
        "500s reported"
    );
    fake.set_failing(false);

    eventually("initial list", || {
        backends(&reader.load(), "198.18.0.10") == Some(vec!["10.0.0.1:8080".into()])
    })
    .await;
    assert!(health.snapshot().in_sync);
    assert!(
        backends(&reader.load(), "198.18.0.106").is_some(),
        "all pages listed"
    );

    // A watch event: a second endpoint.
    fake.change(Kind::Slice, slice("web", &["10.0.0.1", "10.0.0.2"]), false);
    eventually("MODIFIED seen", || {
        backends(&reader.load(), "198.18.0.10").is_some_and(|b| b.len() == 2)
    })
    .await;
    assert!(publisher.metrics().last_change_to_visible > Duration::ZERO);

    // A bookmark moves the resourceVersion without changing anything.
    let before = reader.load().generation();
    fake.bookmark(Kind::Service);
    fake.bookmark(Kind::Slice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        reader.load().generation(),
        before,
        "bookmarks publish nothing"
    );

    // A dropped connection: the watcher re-watches from its last resourceVersion
    // (no relist), and events made meanwhile arrive from the history.
    let lists = fake.lists();
    fake.drop_watches();
    fake.change(Kind::Service, service("api", "198.18.0.11"), false);
    fake.change(Kind::Slice, slice("api", &["10.0.1.1"]), false);
    eventually("events after a dropped watch", || {
        backends(&reader.load(), "198.18.0.11").is_some()
    })
    .await;
    assert_eq!(fake.lists(), lists, "a dropped watch does not relist");
    assert!(
        fake.watches_from(&(fake.rv() - 2).to_string())
            + fake.watches_from(&(fake.rv() - 1).to_string())
            > 0
    );

    // 410 Gone: history compacted, a change only a relist can see.
    {
        let mut s = fake.state.lock().unwrap();
        s.rv += 1;
        s.objects
            .remove(&(Kind::Service, "default/api".to_string()));
    }
    fake.compact();
    fake.drop_watches();
    eventually("relist after 410 Gone", || {
        backends(&reader.load(), "198.18.0.11").is_none()
    })
    .await;
    assert!(fake.lists() > lists, "410 Gone relists");
    assert!(backends(&reader.load(), "198.18.0.10").is_some());

    // The API server fails: the last good table keeps serving, health says out of sync.
    fake.set_failing(true);
    fake.drop_watches();
    eventually("health reports the outage", || !health.snapshot().in_sync).await;
    assert!(!health.is_healthy(Duration::ZERO));
    assert!(
        health.is_healthy(Duration::from_secs(3600)),
        "within the grace period"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        backends(&reader.load(), "198.18.0.10").map(|b| b.len()),
        Some(2),
        "last good table kept"
    );

    // Back again: in sync, and changes flow.
    fake.set_failing(false);
    eventually("health recovers", || health.snapshot().in_sync).await;
    fake.change(Kind::Slice, slice("web", &["10.0.0.3"]), false);
    eventually("changes after recovery", || {
        backends(&reader.load(), "198.18.0.10") == Some(vec!["10.0.0.3:8080".into()])
    })
    .await;

    let _ = stop_tx.send(());
    control.await.unwrap().unwrap();
}

/// The trim step keeps what translate needs and drops the rest.
#[test]
fn trimming_keeps_what_translation_reads() {
    let mut s: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(service("web", "198.18.0.10")).unwrap();
    kubypass_control::kubernetes::trim_service(&mut s);
    assert!(s.metadata.managed_fields.is_none() && s.metadata.annotations.is_none());
    assert_eq!(
        s.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("198.18.0.10")
    );
    let mut json = slice("web", &["10.0.0.1"]);
    json["endpoints"][0]["hints"] =
        serde_json::json!({"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-a"}]});
    json["endpoints"][0]["targetRef"] = serde_json::json!({"kind": "Pod", "name": "web-0"});
    let mut e: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(json).unwrap();
    assert!(e.endpoints[0].target_ref.is_some());
    kubypass_control::kubernetes::trim_slice(&mut e);
    assert!(e.endpoints[0].target_ref.is_none());
    assert_eq!(e.endpoints[0].addresses, vec!["10.0.0.1"]);
    // Hints decide topology-aware routing.
    let hints = e.endpoints[0].hints.as_ref();
    let zones = hints.and_then(|h| h.for_zones.as_ref());
    assert_eq!(zones.map(|z| z[0].name.as_str()), Some("zone-a"));
    let nodes = hints.and_then(|h| h.for_nodes.as_ref());
    assert_eq!(nodes.map(|n| n[0].name.as_str()), Some("node-a"));
    assert_eq!(
        e.metadata
            .labels
            .unwrap()
            .get("kubernetes.io/service-name")
            .map(String::as_str),
        Some("web")
    );
}
