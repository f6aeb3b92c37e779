//! Per-worker counters: written by their worker only, read by the control thread without
//! locks. Each block is cache-line aligned so two workers never share a line.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::verdict::DropReason;

/// Adds `n` to a counter that only one thread writes: a relaxed load and store (a plain
/// add on x86), not a locked read-modify-write.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// What one worker's pipeline did.
#[derive(Debug)]
#[repr(align(64))]
pub struct PipelineCounters {
    /// Frames handed to `process`.
    pub frames: AtomicU64,
    /// Frames translated client→backend.
    pub dnat: AtomicU64,
    /// Frames translated backend→client.
    pub reverse_nat: AtomicU64,
    /// Frames of either direction translated by the established-flow fast path (also
    /// counted in `dnat` / `reverse_nat`).
    pub fast_path: AtomicU64,
    /// ARP replies, ND advertisements, RSTs, ICMP errors and echo replies generated.
    pub replies: AtomicU64,
    /// Frames handed to their owning worker.
    pub steered: AtomicU64,
    /// Frames for the host.
    pub to_host: AtomicU64,
    /// Flows created in connection tracking.
    pub new_flows: AtomicU64,
    /// New flows served without a tracking entry (the table was full).
    pub stateless_flows: AtomicU64,
    /// ICMP errors whose embedded packet was translated.
    pub icmp_translated: AtomicU64,
    /// Non-first fragments translated from their first fragment's state.
    pub fragments_followed: AtomicU64,
    /// ARP/ND requests sent for unresolved next hops.
    pub neighbour_requests: AtomicU64,
    /// Tracked flows now (a gauge).
    pub conntrack_entries: AtomicU64,
    /// Tracked flows removed because their timeout passed (as of the last slow job).
    pub conntrack_expired: AtomicU64,
    /// Live tracked flows removed to admit new ones (as of the last slow job).
    pub conntrack_evicted: AtomicU64,
    /// Packets removed flows had counted that never reached their Service's and backend's
    /// counters (more removals between two hand-overs than the conntrack keeps; as of the
    /// last slow job).
    pub flow_counts_dropped: AtomicU64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl Default for PipelineCounters {
    fn default() -> Self {
        PipelineCounters {
            frames: AtomicU64::new(0),
            dnat: AtomicU64::new(0),
            reverse_nat: AtomicU64::new(0),
            fast_path: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            steered: AtomicU64::new(0),
            to_host: AtomicU64::new(0),
            new_flows: AtomicU64::new(0),
            stateless_flows: AtomicU64::new(0),
            icmp_translated: AtomicU64::new(0),
            fragments_followed: AtomicU64::new(0),
            neighbour_requests: AtomicU64::new(0),
            conntrack_entries: AtomicU64::new(0),
            conntrack_expired: AtomicU64::new(0),
            conntrack_evicted: AtomicU64::new(0),
            flow_counts_dropped: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PipelineCounters {
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        bump(&self.drops[reason.index()], 1);
    }

    /// The count for one drop reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    /// Every drop, all reasons together.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_count_per_reason() {
        let c = PipelineCounters::default();
        c.count_drop(DropReason::NoFlow);
        c.count_drop(DropReason::NoFlow);
        c.count_drop(DropReason::TtlExceeded);
        assert_eq!(c.drops(DropReason::NoFlow), 2);
        assert_eq!(c.drops(DropReason::TtlExceeded), 1);
        assert_eq!(c.total_drops(), 3);
        assert_eq!(std::mem::align_of::<PipelineCounters>(), 64);
    }
}
