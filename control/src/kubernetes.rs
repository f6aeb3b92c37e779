//! The Kubernetes source: watchers and reflector stores on v1 Services and
//! discovery.k8s.io/v1 EndpointSlices, objects trimmed to what translation reads.
//!
//! kube-runtime's watcher lists, then watches from the list's resourceVersion, relists on
//! 410 Gone, and (with `default_backoff`) retries failures with exponential backoff. The
//! stores swap in a relist only when it is complete, so while the API server is
//! unreachable the last good objects (and table) stay. Health: the source is in sync once
//! both kinds have listed, out of sync from the first watcher error until the next event
//! or until a probe (a one-item list of each kind, every `probe_interval` while failing)
//! succeeds, since a re-established watch is silent until something changes.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::source::{Changes, Objects, Source, SourceHealth};
use crate::translate::{LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME};

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Kubernetes configuration (kubeconfig or in-cluster)")]
    Config(#[source] kube::config::InferConfigError),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the watchers run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often a failing source probes the API server (default 1 s).
    pub probe_interval: Duration,
    /// Objects per page of a list (default 500, as kube-runtime's).
    pub page_size: u32,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            probe_interval: Duration::from_secs(1),
            page_size: 500,
        }
    }
}

/// A client from kubeconfig or the in-cluster service account.
pub async fn infer_client() -> Result<Client> {
    let config = kube::Config::infer().await.map_err(Error::Config)?;
    Client::try_from(config).map_err(Error::Client)
}

/// A client for `config` (tests point one at a local server).
pub fn client(config: kube::Config) -> Result<Client> {
    Client::try_from(config).map_err(Error::Client)
}

/// Reflector stores of Services and EndpointSlices, as a [`Source`].
#[derive(Clone)]
pub struct KubeSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    services_listed: Arc<AtomicBool>,
    slices_listed: Arc<AtomicBool>,
}

impl Source for KubeSource {
    fn snapshot(&self) -> Option<Objects> {
        if !(self.services_listed.load(Ordering::Acquire)
            && self.slices_listed.load(Ordering::Acquire))
        {
            return None;
        }
        Some(Objects {
            services: self.services.state(),
            slices: self.slices.state(),
        })
    }
}

impl KubeSource {
    /// Starts nothing: returns the source and the future that runs its watchers (until
    /// dropped), marking `changes` on every change and keeping `health` up to date.
    pub fn new(
        client: Client,
        changes: Changes,
        health: SourceHealth,
        options: &WatchOptions,
    ) -> (
        KubeSource,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (services, services_writer) = reflector::store();
        let (slices, slices_writer) = reflector::store();
        let source = KubeSource {
            services,
            slices,
            services_listed: Arc::default(),
            slices_listed: Arc::default(),
        };
        let both = [source.services_listed.clone(), source.slices_listed.clone()];
        let svc = reflect(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().page_size(options.page_size),
            services_writer,
            trim_service,
            Listed {
                mine: both[0].clone(),
                other: both[1].clone(),
            },
            changes.clone(),
            health.clone(),
        );
        let eps = reflect(
            Api::<EndpointSlice>::all(client.clone()),
            // Headless Services' slices are never proxied: do not hold them.
            watcher::Config::default()
                .page_size(options.page_size)
                .labels(&format!("!{LABEL_HEADLESS}")),
            slices_writer,
            trim_slice,
            Listed {
                mine: both[1].clone(),
                other: both[0].clone(),
            },
            changes,
            health.clone(),
        );
        let probe = probe(client, health, options.probe_interval);
        let run = async move {
            tokio::join!(svc, eps, probe);
        };
        (source, run)
    }
}

struct Listed {
    mine: Arc<AtomicBool>,
    other: Arc<AtomicBool>,
}

async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
    listed: Listed,
    changes: Changes,
    health: SourceHealth,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                listed.mine.store(true, Ordering::Release);
                tracing::info!(%kind, "listed");
                if listed.other.load(Ordering::Acquire) {
                    health.synced();
                } else {
                    health.ok();
                }
                changes.mark();
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                health.ok();
                changes.mark();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => health.ok(),
            Err(e) => {
                let msg = crate::manifests::error_chain(&e);
                tracing::warn!(%kind, error = %msg, "watch failed; retrying with backoff, last good objects kept");
                health.failed(format!("{kind}: {msg}"));
            }
        }
    }
}

/// While the source is failing, checks every `interval` whether both kinds can be listed
/// again (a re-established watch says nothing until an object changes).
async fn probe(client: Client, health: SourceHealth, interval: Duration) {
    let services = Api::<Service>::all(client.clone());
    let slices = Api::<EndpointSlice>::all(client);
    let params = ListParams::default().limit(1);
    loop {
        tokio::time::sleep(interval).await;
        if !health.is_failing() || !health.snapshot().synced_once {
            continue;
        }
        let ok = services.list_metadata(&params).await.is_ok()
            && slices.list_metadata(&params).await.is_ok();
        if ok {
            tracing::info!("API server reachable again");
            health.ok();
        }
    }
}

fn keep_labels(meta: &mut kube::api::ObjectMeta, keep: &[&str]) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| keep.contains(&k.as_str()));
    }
    meta.annotations = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

/// Drops what translation never reads from a Service.
pub fn trim_service(s: &mut Service) {
    keep_labels(&mut s.metadata, &[LABEL_SERVICE_PROXY_NAME, LABEL_HEADLESS]);
    if let Some(spec) = s.spec.as_mut() {
        spec.selector = None;
        spec.external_name = None;
    }
    if let Some(status) = s.status.as_mut() {
        status.conditions = None;
    }
}

/// Drops what translation never reads from an EndpointSlice: most of all the per-endpoint
/// target references and hostnames that dominate its size. Hints stay: they decide
/// topology-aware routing.
pub fn trim_slice(s: &mut EndpointSlice) {
    keep_labels(&mut s.metadata, &[LABEL_SERVICE_NAME, LABEL_HEADLESS]);
    for ep in &mut s.endpoints {
        ep.target_ref = None;
        ep.hostname = None;
        ep.deprecated_topology = None;
        ep.addresses.truncate(1);
    }
}
