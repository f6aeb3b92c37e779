//! Per-worker counters: written only by their worker (relaxed load + store, no atomic
//! read-modify-write), read by the control thread without locks.

use super::processor::MAX_PROCESSOR_DROP_REASONS;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the runtime itself dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum RuntimeDrop {
    /// The tx queue did not take it.
    TxFull = 0,
    /// The target worker's steering ring was full.
    SteerRingFull,
    /// Steered to a worker that does not exist, to itself, or a second time.
    SteerInvalid,
    /// A multi-segment mbuf (unsupported).
    Segmented,
    /// The processor set a length beyond the buffer.
    BadLength,
    /// Forwarded to a port index that does not exist.
    BadPort,
    /// Still queued when the appliance stopped.
    Shutdown,
    /// Forwarded with a [`TxOffload`](super::TxOffload) the frame does not match, so its
    /// checksums could not be finished.
    BadOffload,
}

impl RuntimeDrop {
    /// Number of variants.
    pub const COUNT: usize = 8;
    /// All variants, in index order.
    pub const ALL: [RuntimeDrop; Self::COUNT] = [
        RuntimeDrop::TxFull,
        RuntimeDrop::SteerRingFull,
        RuntimeDrop::SteerInvalid,
        RuntimeDrop::Segmented,
        RuntimeDrop::BadLength,
        RuntimeDrop::BadPort,
        RuntimeDrop::Shutdown,
        RuntimeDrop::BadOffload,
    ];

    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeDrop::TxFull => "tx_full",
            RuntimeDrop::SteerRingFull => "steer_ring_full",
            RuntimeDrop::SteerInvalid => "steer_invalid",
            RuntimeDrop::Segmented => "segmented",
            RuntimeDrop::BadLength => "bad_length",
            RuntimeDrop::BadPort => "bad_port",
            RuntimeDrop::Shutdown => "shutdown",
            RuntimeDrop::BadOffload => "bad_offload",
        }
    }
}

/// One worker's counters, alone on their cache lines.
#[repr(align(64))]
#[derive(Default)]
pub struct WorkerCounters {
    /// Frames received from rx queues.
    pub rx: AtomicU64,
    /// Frames the tx queues took.
    pub tx: AtomicU64,
    /// Frames generated at start (`--tx-first`).
    pub injected: AtomicU64,
    /// Frames the processor originated (ARP/ND probes).
    pub originated: AtomicU64,
    /// Non-empty rx bursts.
    pub bursts: AtomicU64,
    /// Loop turns that found no frame anywhere.
    pub empty_polls: AtomicU64,
    /// Idle turns that yielded the CPU (`workers.idle_yield_after`).
    pub idle_yields: AtomicU64,
    /// Frames taken from this worker's steering ring.
    pub steered_in: AtomicU64,
    /// Frames this worker handed to another.
    pub steered_out: AtomicU64,
    /// Frames whose checksums the processor left to the NIC but the tx port does not
    /// offload, so the runtime finished them in software.
    pub offload_fallback: AtomicU64,
    /// Runtime drops by [`RuntimeDrop`] index.
    pub runtime_drops: [AtomicU64; RuntimeDrop::COUNT],
    /// Processor drops by reason index.
    pub processor_drops: [AtomicU64; MAX_PROCESSOR_DROP_REASONS],
}

/// Adds `n` to a counter only the calling worker writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounters {
    /// Counts a runtime drop.
    #[inline]
    pub fn drop_runtime(&self, why: RuntimeDrop, n: u64) {
        if let Some(c) = self.runtime_drops.get(why as usize) {
            bump(c, n);
        }
    }

    /// Counts a processor drop (indices past the table share the last slot).
    #[inline]
    pub fn drop_processor(&self, reason: u8) {
        let i = usize::from(reason).min(MAX_PROCESSOR_DROP_REASONS - 1);
        if let Some(c) = self.processor_drops.get(i) {
            bump(c, 1);
        }
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        let load = |a: &AtomicU64| a.load(Relaxed);
        CounterSnapshot {
            rx: load(&self.rx),
            tx: load(&self.tx),
            injected: load(&self.injected),
            bursts: load(&self.bursts),
            empty_polls: load(&self.empty_polls),
            idle_yields: load(&self.idle_yields),
            steered_in: load(&self.steered_in),
            steered_out: load(&self.steered_out),
            offload_fallback: load(&self.offload_fallback),
            runtime_drops: std::array::from_fn(|i| self.runtime_drops.get(i).map_or(0, load)),
            processor_drops: std::array::from_fn(|i| self.processor_drops.get(i).map_or(0, load)),
        }
    }
}

/// Plain copy of [`WorkerCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// See [`WorkerCounters::rx`].
    pub rx: u64,
    /// See [`WorkerCounters::tx`].
    pub tx: u64,
    /// See [`WorkerCounters::injected`].
    pub injected: u64,
    /// See [`WorkerCounters::bursts`].
    pub bursts: u64,
    /// See [`WorkerCounters::empty_polls`].
    pub empty_polls: u64,
    /// See [`WorkerCounters::idle_yields`].
    pub idle_yields: u64,
    /// See [`WorkerCounters::steered_in`].
    pub steered_in: u64,
    /// See [`WorkerCounters::steered_out`].
    pub steered_out: u64,
    /// See [`WorkerCounters::offload_fallback`].
    pub offload_fallback: u64,
    /// See [`WorkerCounters::runtime_drops`].
    pub runtime_drops: [u64; RuntimeDrop::COUNT],
    /// See [`WorkerCounters::processor_drops`].
    pub processor_drops: [u64; MAX_PROCESSOR_DROP_REASONS],
}

impl CounterSnapshot {
    /// All drops, runtime and processor.
    pub fn drops(&self) -> u64 {
        self.runtime_drops
            .iter()
            .chain(self.processor_drops.iter())
            .sum()
    }

    /// Field-wise sum.
    pub fn add(&mut self, o: &CounterSnapshot) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.injected += o.injected;
        self.bursts += o.bursts;
        self.empty_polls += o.empty_polls;
        self.idle_yields += o.idle_yields;
        self.steered_in += o.steered_in;
        self.steered_out += o.steered_out;
        self.offload_fallback += o.offload_fallback;
        for (a, b) in self.runtime_drops.iter_mut().zip(o.runtime_drops) {
            *a += b;
        }
        for (a, b) in self.processor_drops.iter_mut().zip(o.processor_drops) {
            *a += b;
        }
    }

    /// `name=value` pairs of the non-zero drop counters.
    pub fn drop_breakdown(&self, processor_names: &[&str]) -> String {
        let mut out = String::new();
        for (d, &n) in RuntimeDrop::ALL.iter().zip(&self.runtime_drops) {
            if n > 0 {
                out.push_str(&format!(" {}={n}", d.name()));
            }
        }
        for (i, &n) in self.processor_drops.iter().enumerate() {
            if n > 0 {
                let name = processor_names.get(i).copied().unwrap_or("other");
                out.push_str(&format!(" {name}={n}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 64);
        assert_eq!(std::mem::size_of::<WorkerCounters>() % 64, 0);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = WorkerCounters::default();
        c.drop_runtime(RuntimeDrop::TxFull, 3);
        c.drop_processor(1);
        c.drop_processor(200);
        let s = c.snapshot();
        assert_eq!(s.drops(), 5);
        assert_eq!(s.runtime_drops[RuntimeDrop::TxFull as usize], 3);
        assert_eq!(s.processor_drops[MAX_PROCESSOR_DROP_REASONS - 1], 1);
        assert_eq!(s.drop_breakdown(&["a", "b"]), " tx_full=3 b=1 other=1");
    }
}
