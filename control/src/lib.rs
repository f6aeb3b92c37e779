//! kubypass control plane: turns Kubernetes Services and EndpointSlices (from the API
//! server or from manifest files) into the dataplane's `ServiceTable`, and publishes each
//! new table to the workers with one lock-free pointer swap.
//!
//! The appliance calls [`run`] with a [`Publisher`] whose [`TableReader`]s it hands to
//! the workers; `kubypass replay` calls [`load_manifests`].
#![forbid(unsafe_code)]

pub mod kubernetes;
pub mod manifests;
pub mod publish;
pub mod replay;
pub mod source;
pub mod translate;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use manifests::error_chain;
pub use publish::{PublishMetrics, Publisher, Report, TableCache, TableReader};
pub use source::{Changes, HealthSnapshot, Objects, Source, SourceHealth};
pub use translate::{translate, ProxySettings, Translation, Translator};

/// Why the control plane stopped or could not load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes source")]
    Kubernetes(#[source] kubernetes::Error),
    #[error("loading manifests")]
    Manifests(#[source] manifests::Error),
    #[error("building a table")]
    Build(#[source] tokio::task::JoinError),
    #[error("publishing a table")]
    Publish(#[source] publish::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default time the publication loop waits after a change before building, so a burst
/// of changes becomes one table.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(10);

/// The task that keeps a source's objects current.
type SourceFeed = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where objects come from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// The Kubernetes API; `None` infers the configuration (kubeconfig, then in-cluster).
    Kubernetes {
        config: Option<Box<kube::Config>>,
        options: kubernetes::WatchOptions,
    },
    /// Manifest files and directories, checked every `poll_interval`.
    Manifests {
        paths: Vec<PathBuf>,
        poll_interval: Duration,
    },
}

/// Everything [`run`] needs besides its handles.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub source: SourceConfig,
    pub settings: ProxySettings,
    /// See [`DEFAULT_DEBOUNCE`].
    pub debounce: Duration,
}

/// Runs the control plane until `shutdown` completes: watches the source, and on every
/// burst of changes translates, builds (reusing unchanged Maglev tables) and publishes a
/// new table through `publisher`. `health` tracks the source for `/healthz`.
pub async fn run(
    config: ControlConfig,
    publisher: Publisher,
    health: SourceHealth,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let changes = Changes::new();
    let (source, feed): (Arc<dyn Source>, SourceFeed) = match config.source {
        SourceConfig::Kubernetes {
            config: kube_config,
            options,
        } => {
            let client = match kube_config {
                Some(c) => kubernetes::client(*c),
                None => kubernetes::infer_client().await,
            }
            .map_err(Error::Kubernetes)?;
            let (source, feed) =
                kubernetes::KubeSource::new(client, changes.clone(), health.clone(), &options);
            (Arc::new(source), Box::pin(feed))
        }
        SourceConfig::Manifests {
            paths,
            poll_interval,
        } => {
            let source = Arc::new(manifests::ManifestSource::new(paths));
            let feed = source
                .clone()
                .watch(poll_interval, changes.clone(), health.clone());
            (source, Box::pin(feed))
        }
    };
    let publish = publish_changes(source, changes, config.settings, config.debounce, publisher);
    tokio::select! {
        () = shutdown => Ok(()),
        () = feed => Ok(()),
        r = publish => r,
    }
}

/// The publication loop: waits for a change, lets the burst settle for `debounce`
/// (measured from the first change, so a steady stream of changes still publishes every
/// `debounce`), then builds and publishes one table with everything seen so far.
pub async fn publish_changes(
    source: Arc<dyn Source>,
    changes: Changes,
    settings: ProxySettings,
    debounce: Duration,
    publisher: Publisher,
) -> Result<()> {
    let mut translator = Some(translate::Translator::new(settings));
    loop {
        changes.wait().await;
        tokio::time::sleep(debounce).await;
        let Some(changed_at) = changes.take() else {
            continue; // A wake-up whose change an earlier build already took.
        };
        let Some(objects) = source.snapshot() else {
            continue; // Not synced yet: keep the current table.
        };
        let previous = publisher.current();
        let previous_report = publisher.report();
        let Some(mut t) = translator.take() else {
            return Ok(()); // A build panicked earlier (reported then).
        };
        let (translation, build_time, t) = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let translation = t.translate(&objects.services, &objects.slices, Some(&previous));
            (translation, start.elapsed(), t)
        })
        .await
        .map_err(Error::Build)?;
        translator = Some(t);
        // Log each warning once, not again on every later table.
        let known: std::collections::HashSet<&translate::Warning> =
            previous_report.warnings.iter().collect();
        for w in translation.warnings.iter().filter(|w| !known.contains(w)) {
            tracing::warn!(%w, "object skipped");
        }
        let generation = translation.table.generation();
        tracing::debug!(generation, ?build_time, "table built");
        publisher
            .publish(translation.table, Some(changed_at), build_time)
            .map_err(Error::Publish)?;
        publisher.set_report(Report {
            generation,
            status: translation.status,
            warnings: translation.warnings,
        });
    }
}

/// Loads manifest files and directories once and translates them (for `kubypass replay`
/// and tests): every file must parse.
pub fn load_manifests(paths: &[PathBuf], settings: &ProxySettings) -> Result<Translation> {
    let objects = manifests::load(paths).map_err(Error::Manifests)?;
    Ok(translate(
        &objects.services,
        &objects.slices,
        settings,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A source whose objects the test sets directly.
    struct Fixed(Mutex<Option<Objects>>);

    impl Source for Fixed {
        fn snapshot(&self) -> Option<Objects> {
            self.0.lock().unwrap().clone()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_changes_becomes_one_table() {
        let source = Arc::new(Fixed(Mutex::new(None)));
        let changes = Changes::new();
        let publisher = Publisher::new();
        let task = tokio::spawn(publish_changes(
            source.clone(),
            changes.clone(),
            ProxySettings::default(),
            Duration::from_millis(50),
            publisher.clone(),
        ));

        // Not synced: a change publishes nothing.
        changes.mark();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(publisher.metrics().published, 0);

        *source.0.lock().unwrap() = Some(Objects::default());
        for _ in 0..100 {
            changes.mark();
        }
        // Waits (bounded) for the n-th table, so a loaded machine only makes it slower.
        let published = |n: u64| {
            let publisher = publisher.clone();
            async move {
                for _ in 0..500 {
                    if publisher.metrics().published >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        published(1).await;
        // Longer than the debounce again: a second table would have come by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = publisher.metrics();
        assert_eq!(m.published, 1, "100 marks in one burst, one table");
        assert_eq!(m.generation, 1);
        assert!(
            m.last_change_to_visible >= Duration::from_millis(50),
            "{m:?}"
        );

        changes.mark();
        published(2).await;
        assert_eq!(publisher.metrics().published, 2);
        assert_eq!(publisher.reader().load().generation(), 2);
        task.abort();
    }
}
