//! The manifest source: Services and EndpointSlices read from YAML (or JSON) files and
//! directories, reloaded when they change.
//!
//! A file holds any number of YAML documents; each is a Service, an EndpointSlice, or a
//! list of them (`kind: List` as `kubectl get services,endpointslices -A -o yaml` prints
//! it, or `ServiceList` / `EndpointSliceList`). Other kinds are skipped. A directory
//! contributes its `*.yaml`, `*.yml` and `*.json` files, recursively, skipping names that
//! start with `.` (Kubernetes ConfigMap mounts keep their previous versions there).
//!
//! Changes are found by polling each file's metadata (modification time, size, inode)
//! every `poll_interval` rather than with inotify: a ConfigMap update swaps a symlink,
//! editors replace files by rename, and either leaves an inotify watch on the old inode;
//! a `stat` per file every 200 ms costs nothing measurable and sees all of them.
//!
//! A file that fails to read or parse keeps its last good objects (so the last good
//! table keeps serving), is logged with its path and the reason, and marks the source
//! as failing until it parses again.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::source::{Changes, Objects, Source, SourceHealth};

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: document {document} is not valid YAML")]
    Yaml {
        path: PathBuf,
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: document {document}: {what} is not a valid object")]
    Object {
        path: PathBuf,
        document: usize,
        /// `Service` or `EndpointSlice`, and the item index inside a list.
        what: String,
        #[source]
        source: serde_yaml::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default interval between two checks of the files.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The objects of one file.
#[derive(Clone, Debug, Default)]
pub struct FileObjects {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// Parses one manifest file's text. `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<FileObjects> {
    let mut out = FileObjects::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.to_owned(),
            document,
            source,
        })?;
        add_value(value, path, document, None, &mut out)?;
    }
    Ok(out)
}

fn add_value(
    value: serde_yaml::Value,
    path: &Path,
    document: usize,
    item: Option<usize>,
    out: &mut FileObjects,
) -> Result<()> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    let what = |k: &str| match item {
        Some(i) => format!("{k} (item {i})"),
        None => k.to_owned(),
    };
    let object_error = |k: &str, source| Error::Object {
        path: path.to_owned(),
        document,
        what: what(k),
        source,
    };
    match kind.as_str() {
        "Service" => {
            let s: Service =
                serde_yaml::from_value(value).map_err(|e| object_error("Service", e))?;
            out.services.push(Arc::new(s));
        }
        "EndpointSlice" => {
            let s: EndpointSlice =
                serde_yaml::from_value(value).map_err(|e| object_error("EndpointSlice", e))?;
            out.slices.push(Arc::new(s));
        }
        "List" | "ServiceList" | "EndpointSliceList" if item.is_none() => {
            let serde_yaml::Value::Mapping(mut map) = value else {
                return Ok(());
            };
            let items = match map.remove("items") {
                Some(serde_yaml::Value::Sequence(items)) => items,
                _ => Vec::new(),
            };
            // Items of typed lists may omit their own kind.
            let implied = kind.strip_suffix("List").filter(|k| !k.is_empty());
            for (i, mut v) in items.into_iter().enumerate() {
                if let (Some(k), serde_yaml::Value::Mapping(m)) = (implied, &mut v) {
                    if !m.contains_key("kind") {
                        m.insert("kind".into(), k.into());
                        let api = if k == "Service" {
                            "v1"
                        } else {
                            "discovery.k8s.io/v1"
                        };
                        m.entry("apiVersion".into()).or_insert(api.into());
                    }
                }
                add_value(v, path, document, Some(i), out)?;
            }
        }
        _ => {
            if !value.is_null() {
                tracing::debug!(path = %path.display(), document, kind, "manifest object skipped: not a Service or EndpointSlice");
            }
        }
    }
    Ok(())
}

/// Reads every file under `paths` and returns all their objects; the first error fails
/// the whole load (for `kubypass replay` and other one-shot uses).
pub fn load(paths: &[PathBuf]) -> Result<Objects> {
    let mut objects = Objects::default();
    for file in expand(paths)? {
        let text = fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        let o = parse(&text, &file)?;
        objects.services.extend(o.services);
        objects.slices.extend(o.slices);
    }
    Ok(objects)
}

/// The manifest files `paths` name, sorted: files as given, directories expanded.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|source| Error::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        // `metadata` follows symlinks, as ConfigMap mounts need.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(path);
        }
    }
    Ok(())
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// The last objects this file parsed to; kept while the file is broken.
    good: Option<FileObjects>,
    /// Why the current version failed, if it did.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Loaded {
    polled: bool,
    files: BTreeMap<PathBuf, FileState>,
    /// Files seen changed at the last poll, with the stamp they had: read once the stamp
    /// holds for a whole poll interval, so a file caught mid-write (truncated, half
    /// written) is not taken for its new version.
    settling: BTreeMap<PathBuf, Stamp>,
    /// A configured path that could not be listed, and why.
    path_error: Option<String>,
}

/// Manifest files as a [`Source`]: [`ManifestSource::poll`] rescans them.
#[derive(Debug)]
pub struct ManifestSource {
    paths: Vec<PathBuf>,
    state: Mutex<Loaded>,
}

impl ManifestSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        ManifestSource {
            paths,
            state: Mutex::new(Loaded::default()),
        }
    }

    /// Checks every file once, reloading those that changed. Returns whether the
    /// objects changed. Errors are logged and reported to `health`, never returned: a
    /// broken file keeps its last good objects.
    pub fn poll(&self, health: &SourceHealth) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !state.polled;
        let mut changed = first;
        state.polled = true;
        let files = match expand(&self.paths) {
            Ok(f) => {
                state.path_error = None;
                f
            }
            Err(e) => {
                let msg = error_chain(&e);
                if state.path_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "manifest path unreadable; keeping the last good objects");
                }
                state.path_error = Some(msg.clone());
                health.failed(msg);
                return changed;
            }
        };
        let before = state.files.len();
        state.files.retain(|p, _| files.binary_search(p).is_ok());
        state.settling.retain(|p, _| files.binary_search(p).is_ok());
        changed |= state.files.len() != before;
        for file in files {
            let stamp = match fs::metadata(&file) {
                Ok(m) => Stamp::of(&m),
                Err(_) => continue, // Vanished between listing and stat: next poll.
            };
            if state.files.get(&file).is_some_and(|f| f.stamp == stamp) {
                state.settling.remove(&file);
                continue;
            }
            // At start every file is read at once; later a changed file is read once it
            // has kept the same stamp for one interval (rename-into-place writers are
            // seen settled at the next poll).
            if !first && state.settling.get(&file) != Some(&stamp) {
                state.settling.insert(file, stamp);
                continue;
            }
            state.settling.remove(&file);
            let result = fs::read_to_string(&file)
                .map_err(|source| Error::Read {
                    path: file.clone(),
                    source,
                })
                .and_then(|text| parse(&text, &file));
            let entry = state.files.entry(file.clone()).or_insert(FileState {
                stamp,
                good: None,
                error: None,
            });
            entry.stamp = stamp;
            match result {
                Ok(objects) => {
                    tracing::info!(path = %file.display(), services = objects.services.len(), slices = objects.slices.len(), "manifest loaded");
                    entry.good = Some(objects);
                    entry.error = None;
                    changed = true;
                }
                Err(e) => {
                    let msg = error_chain(&e);
                    tracing::warn!(path = %file.display(), error = %msg, "manifest rejected; keeping its last good objects");
                    entry.error = Some(msg);
                }
            }
        }
        match state.files.values().find_map(|f| f.error.clone()) {
            Some(e) => health.failed(e),
            None => health.synced(),
        }
        changed
    }

    /// Polls every `interval` until dropped, marking `changes` when the objects change.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        changes: Changes,
        health: SourceHealth,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            let h = health.clone();
            let changed = tokio::task::spawn_blocking(move || this.poll(&h))
                .await
                .unwrap_or(false);
            if changed {
                changes.mark();
            }
        }
    }
}

impl Source for ManifestSource {
    fn snapshot(&self) -> Option<Objects> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.polled {
            return None;
        }
        let mut objects = Objects::default();
        for f in state.files.values() {
            if let Some(good) = &f.good {
                objects.services.extend(good.services.iter().cloned());
                objects.slices.extend(good.slices.iter().cloned());
            }
        }
        Some(objects)
    }
}

/// An error and its causes on one line (what logs, health and the CLI print).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec:
    clusterIP: 198.18.0.10
    ports: [{name: http, port: 80, targetPort: http}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abc
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  ports: [{name: http, port: 8080}]
  endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
"#;

    #[test]
    fn parses_lists_and_multiple_documents() {
        let o = parse(LIST, Path::new("x.yaml")).unwrap();
        assert_eq!(o.services.len(), 1);
        assert_eq!(o.slices.len(), 1);
        assert_eq!(o.slices[0].endpoints[0].addresses, vec!["10.0.0.1"]);
    }

    #[test]
    fn typed_lists_may_omit_item_kinds() {
        let text = "kind: ServiceList\napiVersion: v1\nitems:\n- metadata: {name: a}\n  spec: {clusterIP: 198.18.0.1}\n";
        let o = parse(text, Path::new("x.yaml")).unwrap();
        assert_eq!(o.services[0].metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn errors_name_the_file_and_document() {
        let bad = "kind: Service\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Service\napiVersion: v1\nspec: {ports: [{port: notanumber}]}\n";
        let e = parse(bad, Path::new("/etc/k/bad.yaml")).unwrap_err();
        let msg = error_chain(&e);
        assert!(
            msg.starts_with("/etc/k/bad.yaml: document 2: Service"),
            "{msg}"
        );
        let e = parse("a: [unclosed", Path::new("y.yaml")).unwrap_err();
        assert!(matches!(e, Error::Yaml { document: 1, .. }), "{e:?}");
    }

    #[test]
    fn a_file_caught_mid_write_is_not_taken_for_its_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        fs::write(&file, LIST).unwrap();
        let src = ManifestSource::new(vec![dir.path().to_owned()]);
        let health = SourceHealth::new();
        assert!(src.poll(&health));
        // An editor truncated the file and has not written it yet: an empty file parses
        // as no objects, which must not replace the Service.
        fs::write(&file, "").unwrap();
        assert!(!src.poll(&health));
        assert_eq!(src.snapshot().unwrap().services.len(), 1);
        // The write completes before the next poll: that version settles, then loads.
        fs::write(&file, format!("{LIST}\n")).unwrap();
        assert!(!src.poll(&health));
        assert_eq!(src.snapshot().unwrap().services.len(), 1);
        assert!(src.poll(&health));
        assert_eq!(src.snapshot().unwrap().services.len(), 1);
        assert!(health.snapshot().in_sync);
    }

    #[test]
    fn broken_file_keeps_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        fs::write(&file, LIST).unwrap();
        fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        fs::write(dir.path().join("notes.txt"), "garbage: [").unwrap();
        let src = ManifestSource::new(vec![dir.path().to_owned()]);
        let health = SourceHealth::new();
        assert!(src.snapshot().is_none());
        assert!(src.poll(&health));
        assert!(health.snapshot().in_sync);
        assert_eq!(src.snapshot().unwrap().services.len(), 1);
        assert!(!src.poll(&health), "nothing changed");

        fs::write(&file, "kind: Service\napiVersion: v1\nmetadata: [broken\n").unwrap();
        // The first poll sees the change and waits for the file to settle; the next
        // one, with the same stamp, reads it.
        assert!(!src.poll(&health));
        assert!(health.snapshot().in_sync, "not read while settling");
        assert!(!src.poll(&health));
        let h = health.snapshot();
        assert!(!h.in_sync);
        assert!(h.last_error.unwrap().contains("svc.yaml"));
        assert_eq!(src.snapshot().unwrap().services.len(), 1, "last good kept");

        fs::remove_file(&file).unwrap();
        assert!(src.poll(&health));
        assert!(health.snapshot().in_sync);
        assert_eq!(src.snapshot().unwrap().services.len(), 0);
    }
}
