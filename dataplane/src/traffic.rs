//! Per-Service and per-backend traffic counters: packets, bytes and new flows, counted by
//! the workers and summed by the control thread, without locks.
//!
//! Layout. Every counter set of a table lives in one [`CounterBank`], in rows indexed by
//! a slot number: per worker, the rows are dense arrays (chunks of [`CHUNK_ROWS`] slots,
//! allocated when a slot in them is first issued), so a worker counting a packet reads
//! one chunk pointer and writes one row, close to the rows of other Services, and never
//! writes a cache line another worker writes. A flow remembers the slots of its Service and
//! backend, so counting needs no lookup, however many Services the table has.
//!
//! Lifetime. A [`TrafficSlots`] is a handle of one slot; tables hold clones of it (the
//! bank keeps a count of a slot's handles, so a handle costs no allocation) for as long as
//! the Service or backend it counts exists, so counts survive table changes. When
//! the last handle goes (no table can still count into it) the slot is released: marked in
//! a bitmap with one atomic operation (a worker may drop the last table), and issued again,
//! zeroed, once the bank has no fresh slot left.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::pipeline::counters::bump;

/// Slots per chunk: a chunk holds, per worker, this many rows (32 KiB).
pub const CHUNK_ROWS: usize = 1024;
/// Chunks per bank: at most 1M slots (Services plus listed backends).
pub const MAX_CHUNKS: usize = 1024;
/// The slot number of no slot (a bank that ran out): counting into it does nothing.
pub const NO_SLOT: u32 = u32::MAX;

/// Packets, bytes and new flows of one Service or backend, counted by one worker only
/// (relaxed load + store, no locked add).
#[derive(Debug, Default)]
#[repr(align(32))]
pub struct TrafficCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub new_flows: AtomicU64,
}

/// A sum of [`TrafficCounters`] over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// The counter rows of a control plane's tables. See the module documentation.
#[derive(Debug)]
pub struct CounterBank {
    workers: usize,
    chunks: Box<[OnceLock<Chunk>]>,
    /// Slots never issued start here.
    fresh: AtomicU32,
    /// Released slots taken from the chunks' bitmaps, to issue again (issuing is the
    /// builder's, on the control thread; a worker never takes this lock).
    recycled: Mutex<Vec<u32>>,
}

/// [`CHUNK_ROWS`] slots: every worker's rows (worker-major: worker `w`'s rows are
/// `rows[w * CHUNK_ROWS..][..CHUNK_ROWS]`, far from the others'), each slot's handle
/// count, and one bit per released slot.
#[derive(Debug)]
struct Chunk {
    rows: Box<[TrafficCounters]>,
    handles: Box<[AtomicU32]>,
    released: Box<[AtomicU64]>,
}

impl CounterBank {
    /// An empty bank for `workers` workers (at least one); rows are allocated as slots are
    /// issued.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(CounterBank {
            workers: workers.max(1),
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            fresh: AtomicU32::new(0),
            recycled: Mutex::new(Vec::new()),
        })
    }

    /// How many workers have rows.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A new slot, every worker's row zeroed. [`NO_SLOT`] when all are in use.
    pub fn issue(self: &Arc<Self>) -> TrafficSlots {
        let slot = self.take_slot();
        if let Some(chunk) = self.chunks.get(slot as usize / CHUNK_ROWS) {
            let chunk = chunk.get_or_init(|| Chunk {
                rows: (0..self.workers * CHUNK_ROWS)
                    .map(|_| TrafficCounters::default())
                    .collect(),
                handles: (0..CHUNK_ROWS).map(|_| AtomicU32::new(0)).collect(),
                released: (0..CHUNK_ROWS / 64).map(|_| AtomicU64::new(0)).collect(),
            });
            if let Some(h) = chunk.handles.get(slot as usize % CHUNK_ROWS) {
                h.store(1, Ordering::Relaxed);
            }
            for w in 0..self.workers {
                if let Some(r) = chunk.rows.get(w * CHUNK_ROWS + slot as usize % CHUNK_ROWS) {
                    r.packets.store(0, Ordering::Relaxed);
                    r.bytes.store(0, Ordering::Relaxed);
                    r.new_flows.store(0, Ordering::Relaxed);
                }
            }
        }
        TrafficSlots {
            bank: Arc::clone(self),
            slot,
        }
    }

    fn take_slot(&self) -> u32 {
        let capacity = (CHUNK_ROWS * MAX_CHUNKS) as u32;
        let fresh = self
            .fresh
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                (f < capacity).then_some(f + 1)
            });
        if let Ok(slot) = fresh {
            return slot;
        }
        let mut recycled = self.recycled.lock().unwrap_or_else(|e| e.into_inner());
        if recycled.is_empty() {
            for (c, chunk) in self.chunks.iter().enumerate() {
                let Some(chunk) = chunk.get() else { continue };
                for (i, word) in chunk.released.iter().enumerate() {
                    let mut bits = word.swap(0, Ordering::Acquire);
                    while bits != 0 {
                        recycled.push((c * CHUNK_ROWS + i * 64) as u32 + bits.trailing_zeros());
                        bits &= bits - 1;
                    }
                }
            }
        }
        recycled.pop().unwrap_or(NO_SLOT)
    }

    /// The handle count of an issued `slot`.
    fn handles(&self, slot: u32) -> Option<&AtomicU32> {
        let chunk = self.chunks.get(slot as usize / CHUNK_ROWS)?.get()?;
        chunk.handles.get(slot as usize % CHUNK_ROWS)
    }

    fn release(&self, slot: u32) {
        let chunk = self
            .chunks
            .get(slot as usize / CHUNK_ROWS)
            .and_then(|c| c.get());
        if let Some(word) = chunk.and_then(|c| c.released.get(slot as usize % CHUNK_ROWS / 64)) {
            word.fetch_or(1 << (slot % 64), Ordering::Release);
        }
    }

    /// `worker`'s row of `slot`, if issued.
    #[inline]
    pub fn row(&self, worker: usize, slot: u32) -> Option<&TrafficCounters> {
        let chunk = self.chunks.get(slot as usize / CHUNK_ROWS)?.get()?;
        chunk
            .rows
            .get(worker * CHUNK_ROWS + slot as usize % CHUNK_ROWS)
    }

    /// Counts one packet of `bytes` (and a new flow if `new_flow`) in `worker`'s row of
    /// `slot`. Only that worker may count into its rows. Out-of-range arguments are
    /// ignored.
    #[inline(always)]
    pub fn count(&self, worker: usize, slot: u32, bytes: u64, new_flow: bool) {
        if worker >= self.workers {
            return;
        }
        if let Some(c) = self.row(worker, slot) {
            bump(&c.packets, 1);
            bump(&c.bytes, bytes);
            if new_flow {
                bump(&c.new_flows, 1);
            }
        }
    }

    /// Adds `packets` packets of `bytes` bytes in all (packets a flow counted, see
    /// [`crate::conntrack::COUNT_EVERY`]) to `worker`'s row of `slot`, as [`Self::count`].
    #[inline]
    pub fn add(&self, worker: usize, slot: u32, packets: u64, bytes: u64) {
        if worker >= self.workers {
            return;
        }
        if let Some(c) = self.row(worker, slot) {
            bump(&c.packets, packets);
            bump(&c.bytes, bytes);
        }
    }

    /// The sums of `slot` over every worker's row.
    pub fn totals(&self, slot: u32) -> TrafficTotals {
        let mut t = TrafficTotals::default();
        for w in 0..self.workers {
            if let Some(c) = self.row(w, slot) {
                t.packets += c.packets.load(Ordering::Relaxed);
                t.bytes += c.bytes.load(Ordering::Relaxed);
                t.new_flows += c.new_flows.load(Ordering::Relaxed);
            }
        }
        t
    }
}

/// The counters of one Service or backend: a handle of a slot of a [`CounterBank`].
/// Clones count into the same slot; the slot is released when the last handle is dropped.
#[derive(Debug)]
pub struct TrafficSlots {
    bank: Arc<CounterBank>,
    slot: u32,
}

impl TrafficSlots {
    /// How many workers count into it.
    pub fn workers(&self) -> usize {
        self.bank.workers
    }

    /// Its slot in its bank (what a flow remembers to count without a lookup).
    #[inline]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The bank its rows are in.
    pub fn bank(&self) -> &Arc<CounterBank> {
        &self.bank
    }

    /// Whether its rows are in `bank`.
    #[inline]
    pub fn is_in(&self, bank: &Arc<CounterBank>) -> bool {
        Arc::ptr_eq(&self.bank, bank)
    }

    /// Counts one packet of `bytes` (and a new flow if `new_flow`) in `worker`'s row. Only
    /// that worker may call this for it. Out-of-range workers are ignored.
    #[inline]
    pub fn count(&self, worker: usize, bytes: u64, new_flow: bool) {
        self.bank.count(worker, self.slot, bytes, new_flow);
    }

    /// The sums over every worker's row.
    pub fn totals(&self) -> TrafficTotals {
        self.bank.totals(self.slot)
    }
}

impl Clone for TrafficSlots {
    fn clone(&self) -> Self {
        if let Some(h) = self.bank.handles(self.slot) {
            // As `Arc::clone`: the caller's handle keeps the slot alive, so no ordering.
            h.fetch_add(1, Ordering::Relaxed);
        }
        TrafficSlots {
            bank: Arc::clone(&self.bank),
            slot: self.slot,
        }
    }
}

impl Drop for TrafficSlots {
    fn drop(&mut self) {
        // As `Arc`'s drop: the last handle sees every count made through the others
        // before it releases the slot for reuse.
        let last = self
            .bank
            .handles(self.slot)
            .is_some_and(|h| h.fetch_sub(1, Ordering::Release) == 1);
        if last {
            std::sync::atomic::fence(Ordering::Acquire);
            self.bank.release(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_count_into_their_rows_and_totals_sum_them() {
        let bank = CounterBank::new(3);
        let a = bank.issue();
        let b = bank.issue();
        assert_ne!(a.slot(), b.slot());
        a.count(0, 100, true);
        a.count(2, 50, false);
        a.count(7, 1, false); // no such worker: ignored
        b.count(1, 10, false);
        assert_eq!(
            a.totals(),
            TrafficTotals {
                packets: 2,
                bytes: 150,
                new_flows: 1
            }
        );
        assert_eq!(b.totals().bytes, 10);
        bank.count(0, NO_SLOT, 1, false); // ignored, no panic
    }

    #[test]
    fn a_slot_is_released_when_its_last_handle_goes() {
        let bank = CounterBank::new(1);
        let first = bank.issue();
        let slot = first.slot();
        let copy = first.clone();
        assert_eq!(copy.slot(), slot);
        copy.count(0, 5, false);
        assert_eq!(first.totals().bytes, 5);
        drop(first);
        // Still held by `copy`: not released, so not issued again.
        bank.fresh
            .store((CHUNK_ROWS * MAX_CHUNKS) as u32, Ordering::Relaxed);
        assert_eq!(bank.issue().slot(), NO_SLOT);
        drop(copy);
        let again = bank.issue();
        assert_eq!(again.slot(), slot);
        assert_eq!(again.totals(), TrafficTotals::default());
        // A clone of no slot counts nothing and releases nothing.
        let none = bank.issue();
        assert_eq!(none.slot(), NO_SLOT);
        drop(none.clone());
    }

    #[test]
    fn released_slots_are_issued_again_zeroed_once_fresh_ones_run_out() {
        let bank = CounterBank::new(2);
        let first = bank.issue();
        let slot = first.slot();
        first.count(1, 9, true);
        drop(first);
        // Fresh slots first: the released one is not reused while any is left.
        let next = bank.issue();
        assert_ne!(next.slot(), slot);
        // Exhaust the fresh slots (cheaply: move the cursor), then the released slot
        // comes back, counting from zero.
        bank.fresh
            .store((CHUNK_ROWS * MAX_CHUNKS) as u32, Ordering::Relaxed);
        let again = bank.issue();
        assert_eq!(again.slot(), slot);
        assert_eq!(again.totals(), TrafficTotals::default());
        let none = bank.issue();
        assert_eq!(none.slot(), NO_SLOT);
        none.count(0, 1, false);
        assert_eq!(none.totals(), TrafficTotals::default());
    }
}
