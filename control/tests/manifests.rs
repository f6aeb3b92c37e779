//! Manifests end to end: a kubectl-style YAML fixture translated, a YAML round trip, the
//! fixture damaged at random (parsed or refused, never a panic), and the manifest source
//! under `run` reloading, surviving a broken file and recovering.

use std::path::PathBuf;
use std::time::Duration;

use kubypass_control::manifests;
use kubypass_control::translate::{IgnoreReason, Outcome};
use kubypass_control::{
    error_chain, load_manifests, ControlConfig, ProxySettings, Publisher, SourceConfig,
    SourceHealth,
};
use kubypass_dataplane::table::{FrontendKey, FrontendKind, L4Protocol, ServiceTable};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster.yaml")
}

fn settings() -> ProxySettings {
    ProxySettings {
        node_addresses: vec!["198.18.1.1".parse().unwrap()],
        node_name: Some("node-a".into()),
        ..Default::default()
    }
}

fn key(addr: &str, port: u16, protocol: L4Protocol) -> FrontendKey {
    FrontendKey {
        addr: addr.parse().unwrap(),
        port,
        protocol,
    }
}

/// (kind, usable backends as `addr:port`, affinity) behind a frontend.
fn leads(t: &ServiceTable, k: FrontendKey) -> Option<(FrontendKind, Vec<String>, Option<u32>)> {
    let f = t.frontend(&k)?;
    let s = t.service(f.service)?;
    let mut b: Vec<String> = s
        .usable_backends()
        .iter()
        .map(|b| std::net::SocketAddr::new(b.addr, b.port).to_string())
        .collect();
    b.sort();
    Some((f.kind, b, s.affinity_timeout_secs()))
}

#[test]
fn kubectl_list_fixture_translates() {
    let t = load_manifests(&[fixture()], &settings()).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let tcp = L4Protocol::Tcp;
    let web_v4 = Some(vec!["10.0.0.1:8080".to_string()]);
    let table = [
        (
            key("198.18.0.10", 80, tcp),
            Some(FrontendKind::ClusterIp),
            web_v4.clone(),
        ),
        (
            key("fd00::10", 80, tcp),
            Some(FrontendKind::ClusterIp),
            Some(vec!["[fd00:1::1]:8080".to_string()]),
        ),
        (
            key("203.0.113.10", 80, tcp),
            Some(FrontendKind::LoadBalancer),
            web_v4.clone(),
        ),
        (
            key("198.18.1.1", 30080, tcp),
            Some(FrontendKind::NodePort),
            web_v4,
        ),
        // No EndpointSlice: served, no usable backend (rejects).
        (
            key("198.18.0.53", 53, L4Protocol::Udp),
            Some(FrontendKind::ClusterIp),
            Some(vec![]),
        ),
    ];
    for (k, kind, backends) in table {
        let got = leads(&t.table, k);
        assert_eq!(got.as_ref().map(|g| g.0), kind, "{k:?}");
        assert_eq!(got.as_ref().map(|g| g.1.clone()), backends, "{k:?}");
    }
    assert_eq!(
        leads(&t.table, key("198.18.0.10", 80, tcp)).unwrap().2,
        Some(600)
    );
    let lb = t.table.frontend(&key("203.0.113.10", 80, tcp)).unwrap();
    assert!(lb.admits("192.0.2.1".parse().unwrap()) && !lb.admits("192.0.3.1".parse().unwrap()));
    let alias = t.status.iter().find(|s| s.name == "alias").unwrap();
    assert_eq!(alias.outcome, Outcome::Ignored(IgnoreReason::ExternalName));
}

#[test]
fn yaml_round_trip_translates_the_same() {
    let objects = manifests::load(&[fixture()]).unwrap();
    let items: Vec<serde_yaml::Value> = objects
        .services
        .iter()
        .map(|s| serde_yaml::to_value(&**s).unwrap())
        .chain(
            objects
                .slices
                .iter()
                .map(|s| serde_yaml::to_value(&**s).unwrap()),
        )
        .collect();
    let mut list = serde_yaml::Mapping::new();
    list.insert("apiVersion".into(), "v1".into());
    list.insert("kind".into(), "List".into());
    list.insert("items".into(), serde_yaml::Value::Sequence(items));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("round-trip.yaml");
    std::fs::write(&file, serde_yaml::to_string(&list).unwrap()).unwrap();

    let direct = kubypass_control::translate(&objects.services, &objects.slices, &settings(), None);
    let reloaded = load_manifests(&[dir.path().to_owned()], &settings()).unwrap();
    assert_eq!(direct.status, reloaded.status);
    assert_eq!(direct.status.len(), 3);
    let mut a: Vec<_> = direct.table.frontends().map(|f| (f.key, f.kind)).collect();
    let mut b: Vec<_> = reloaded
        .table
        .frontends()
        .map(|f| (f.key, f.kind))
        .collect();
    a.sort_by_key(|x| x.0);
    b.sort_by_key(|x| x.0);
    assert_eq!(a, b);
    assert!(!a.is_empty());
}

#[test]
fn load_manifests_fails_on_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "kind: Service\napiVersion: v1\nspec: [\n",
    )
    .unwrap();
    let e = load_manifests(&[dir.path().to_owned()], &settings()).unwrap_err();
    let msg = error_chain(&e);
    assert!(msg.contains("bad.yaml"), "{msg}");
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

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 198.18.0.10\n  ports: [{name: http, port: 80}]\n";

fn slice(addrs: &[&str]) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("  - addresses: [{a}]\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}",
        eps.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reloads_manifests_and_keeps_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let svc_file = dir.path().join("svc.yaml");
    let eps_file = dir.path().join("eps.yaml");
    std::fs::write(&svc_file, SVC).unwrap();
    std::fs::write(&eps_file, slice(&["10.0.0.1"])).unwrap();

    let publisher = Publisher::new();
    let reader = publisher.reader();
    let health = SourceHealth::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ControlConfig {
        source: SourceConfig::Manifests {
            paths: vec![dir.path().to_owned()],
            poll_interval: Duration::from_millis(20),
        },
        settings: settings(),
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
    let web = key("198.18.0.10", 80, L4Protocol::Tcp);
    let backends = |r: &kubypass_control::TableReader| leads(&r.load(), web).map(|l| l.1);

    eventually("first load", || {
        backends(&reader) == Some(vec!["10.0.0.1:8080".into()])
    })
    .await;
    assert!(health.snapshot().in_sync);
    let generation = reader.load().generation();

    std::fs::write(&eps_file, slice(&["10.0.0.1", "10.0.0.2"])).unwrap();
    eventually("reload", || backends(&reader).is_some_and(|b| b.len() == 2)).await;
    assert!(reader.load().generation() > generation);
    assert!(publisher.metrics().last_change_to_visible > Duration::ZERO);

    // A broken file: the last good table stays, health says why.
    std::fs::write(&eps_file, "endpoints: [oops\n").unwrap();
    eventually("broken file reported", || !health.snapshot().in_sync).await;
    assert!(health.snapshot().last_error.unwrap().contains("eps.yaml"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backends(&reader).map(|b| b.len()), Some(2));

    // Fixed: reloaded, in sync again.
    std::fs::write(&eps_file, slice(&["10.0.0.3"])).unwrap();
    eventually("recovered", || {
        backends(&reader) == Some(vec!["10.0.0.3:8080".into()])
    })
    .await;
    assert!(health.snapshot().in_sync);

    // Removing the Service's file removes its frontend.
    std::fs::remove_file(&svc_file).unwrap();
    eventually("service removed", || backends(&reader).is_none()).await;
    assert_eq!(publisher.report().status.len(), 0);

    let _ = stop_tx.send(());
    control.await.unwrap().unwrap();
}

/// One damage done to a manifest's text: (what, where, how long, which character).
type Damage = (u8, usize, usize, u8);

/// Characters that mean something in YAML, and a few that do not.
const YAML_CHARS: &[u8] = b":-? \n\t[]{},\"'&*!#|>%@`0a.";

fn damaged(text: &str, damage: &[Damage]) -> String {
    let mut b = text.as_bytes().to_vec();
    for &(what, at, len, c) in damage {
        let at = at % (b.len() + 1);
        let end = (at + len).min(b.len());
        let c = YAML_CHARS[usize::from(c) % YAML_CHARS.len()];
        match what % 4 {
            0 => {
                b.drain(at..end);
            }
            1 => b.insert(at, c),
            2 => {
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
            _ => b.truncate(at),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// A damaged manifest (characters deleted, inserted or repeated, the file cut short)
    /// never panics: it parses, and its objects translate, or it fails with an error
    /// naming the file.
    #[test]
    fn a_damaged_manifest_parses_or_names_the_file(
        damage in proptest::collection::vec(
            (proptest::prelude::any::<u8>(), proptest::prelude::any::<usize>(),
             0usize..40, proptest::prelude::any::<u8>()),
            1..6),
    ) {
        let text = damaged(&std::fs::read_to_string(fixture()).unwrap(), &damage);
        let path = std::path::Path::new("cluster-damaged.yaml");
        match manifests::parse(&text, path) {
            Ok(objects) => {
                let t = kubypass_control::translate::translate(
                    &objects.services, &objects.slices, &settings(), None);
                // Only addresses written in the text, and the node's, are captured.
                let mut written: std::collections::HashSet<std::net::IpAddr> = text
                    .split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
                    .filter_map(|w| w.parse().ok())
                    .collect();
                written.extend(settings().node_addresses);
                for f in t.table.frontends() {
                    proptest::prop_assert!(written.contains(&f.key.addr), "{:?} captured", f.key);
                }
            }
            Err(e) => {
                let msg = error_chain(&e);
                proptest::prop_assert!(msg.contains("cluster-damaged.yaml"), "{}", msg);
            }
        }
    }
}
