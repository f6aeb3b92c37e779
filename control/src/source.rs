//! The interface every object source (Kubernetes API, manifest files) offers the
//! publication loop: the current objects on demand, a change signal, and health.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;

/// A consistent set of objects to translate.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// A source of Services and EndpointSlices.
pub trait Source: Send + Sync {
    /// The current objects, or `None` until the source has completed its first sync (so
    /// an empty table is never published for a source that simply has not loaded yet).
    fn snapshot(&self) -> Option<Objects>;
}

/// The "objects changed" signal from a source to the publication loop. Marks coalesce:
/// the loop learns the time of the earliest change it has not yet built.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    inner: Arc<ChangesInner>,
}

#[derive(Debug, Default)]
struct ChangesInner {
    notify: Notify,
    pending_since: Mutex<Option<Instant>>,
}

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the objects changed now.
    pub fn mark(&self) {
        let mut pending = self
            .inner
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.get_or_insert_with(Instant::now);
        drop(pending);
        self.inner.notify.notify_one();
    }

    /// Waits until a change is marked (returns at once if one is pending).
    pub async fn wait(&self) {
        if self.peek().is_some() {
            return;
        }
        self.inner.notify.notified().await;
    }

    /// The time of the earliest unconsumed change, clearing it.
    pub fn take(&self) -> Option<Instant> {
        self.inner
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn peek(&self) -> Option<Instant> {
        *self
            .inner
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a source is in sync with where its objects come from. Cheap to clone; the
/// admin server reads it for `/healthz` without locks.
#[derive(Clone, Debug, Default)]
pub struct SourceHealth {
    inner: Arc<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    synced_once: AtomicBool,
    /// Unix ms of the last successful contact (0: never).
    last_sync_ms: AtomicU64,
    /// Unix ms since which the source has been failing (0: not failing).
    failing_since_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of a source's health at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// The source has loaded a complete set of objects at least once.
    pub synced_once: bool,
    /// Synced once and not failing now.
    pub in_sync: bool,
    /// Last successful list, watch event, reload or contact.
    pub last_sync: Option<SystemTime>,
    /// Since when the source has been failing, if it is.
    pub failing_since: Option<SystemTime>,
    pub last_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .max(1)
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

impl SourceHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// A complete set of objects was loaded.
    pub fn synced(&self) {
        self.inner.synced_once.store(true, Ordering::Release);
        self.ok();
    }

    /// A successful contact: the source is in sync again.
    pub fn ok(&self) {
        self.inner.last_sync_ms.store(now_ms(), Ordering::Release);
        self.inner.failing_since_ms.store(0, Ordering::Release);
    }

    /// A failure: the source is out of sync until the next success.
    pub fn failed(&self, error: impl Into<String>) {
        let _ = self.inner.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.into());
    }

    pub fn is_failing(&self) -> bool {
        self.inner.failing_since_ms.load(Ordering::Acquire) != 0
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let synced_once = self.inner.synced_once.load(Ordering::Acquire);
        let failing = self.inner.failing_since_ms.load(Ordering::Acquire);
        HealthSnapshot {
            synced_once,
            in_sync: synced_once && failing == 0,
            last_sync: from_ms(self.inner.last_sync_ms.load(Ordering::Acquire)),
            failing_since: from_ms(failing),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// What `/healthz` should answer: synced once, and not failing for `max_out_of_sync`
    /// or longer. (While failing, the last good table keeps serving.)
    pub fn is_healthy(&self, max_out_of_sync: Duration) -> bool {
        let s = self.snapshot();
        s.synced_once
            && match s.failing_since {
                None => true,
                Some(t) => SystemTime::now()
                    .duration_since(t)
                    .map_or(true, |d| d < max_out_of_sync),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_coalesce_to_the_earliest_mark() {
        let c = Changes::new();
        assert_eq!(c.take(), None);
        c.mark();
        let first = c.peek().unwrap();
        c.mark();
        assert_eq!(c.take(), Some(first));
        assert_eq!(c.take(), None);
    }

    #[test]
    fn health_follows_failures_and_recovery() {
        let h = SourceHealth::new();
        assert!(!h.is_healthy(Duration::from_secs(60)));
        h.synced();
        assert!(h.snapshot().in_sync);
        assert!(h.is_healthy(Duration::from_secs(60)));
        h.failed("connection refused");
        let s = h.snapshot();
        assert!(!s.in_sync);
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        assert!(
            h.is_healthy(Duration::from_secs(60)),
            "within the grace period"
        );
        assert!(!h.is_healthy(Duration::ZERO), "past the grace period");
        h.ok();
        assert!(h.snapshot().in_sync);
        assert!(h.is_healthy(Duration::ZERO));
    }
}
