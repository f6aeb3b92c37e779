//! Link-layer addresses of next hops.
//!
//! The table workers read is a snapshot, published like the Service table: workers never
//! write shared state. What a worker learns from ARP and ND (senders of requests and
//! replies on connected prefixes) goes into its own bounded [`Learned`] buffer; the
//! runtime drains it after each burst to the control thread, which merges it and
//! publishes the next snapshot. Static neighbours from the configuration seed the table.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::FastMap;
use crate::pipeline::config::MacAddr;

/// An immutable map from next-hop address to MAC, with a version: what a flow's cached
/// next hop is checked against.
///
/// A snapshot derived from another by adding entries alone
/// ([`NeighbourTable::with_changes`]) keeps its version: every address the older
/// resolves, the newer resolves the same. A changed MAC or a forgotten entry takes a new
/// version, which sends every flow's next packet through the full pipeline once. So along
/// the chain the control thread publishes (each snapshot derived from the one published
/// before), a next hop cached under one snapshot is right under any later one of the same
/// version, and learning new neighbours (each new on-link client) leaves the fast path's
/// caches alone. (Two snapshots derived side by side from one may share a version and
/// disagree: only a chain is published.)
#[derive(Debug)]
pub struct NeighbourTable {
    entries: FastMap<IpAddr, MacAddr>,
    version: u64,
}

/// The last version issued; versions start at 1 (0 is never valid).
static VERSIONS: AtomicU64 = AtomicU64::new(0);

fn next_version() -> u64 {
    VERSIONS.fetch_add(1, Ordering::Relaxed) + 1
}

impl Default for NeighbourTable {
    fn default() -> Self {
        NeighbourTable::new([])
    }
}

impl Clone for NeighbourTable {
    /// A copy is another snapshot: same entries, a new version.
    fn clone(&self) -> Self {
        NeighbourTable {
            entries: self.entries.clone(),
            version: next_version(),
        }
    }
}

/// Tables are equal when their entries are (versions aside).
impl PartialEq for NeighbourTable {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for NeighbourTable {}

impl NeighbourTable {
    pub fn new(entries: impl IntoIterator<Item = (IpAddr, MacAddr)>) -> Self {
        NeighbourTable {
            entries: entries.into_iter().collect(),
            version: next_version(),
        }
    }

    /// This snapshot's version, never 0: kept by the snapshots derived from it by
    /// additions alone, never taken by a snapshot built from scratch.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    #[inline]
    pub fn get(&self, addr: IpAddr) -> Option<MacAddr> {
        self.entries.get(&addr).copied()
    }

    /// A copy with `learned` merged in (the control thread's update).
    pub fn with(&self, learned: impl IntoIterator<Item = (IpAddr, MacAddr)>) -> Self {
        self.with_changes(learned, &[])
    }

    /// A copy without the entries of `forgotten`, then with `learned` merged in. It keeps
    /// this snapshot's version when it only adds entries (an entry learned again with the
    /// same MAC adds nothing), and takes a new one when an entry goes or changes its MAC.
    pub fn with_changes(
        &self,
        learned: impl IntoIterator<Item = (IpAddr, MacAddr)>,
        forgotten: &[IpAddr],
    ) -> Self {
        let mut entries = self.entries.clone();
        let mut changed = false;
        for a in forgotten {
            changed |= entries.remove(a).is_some();
        }
        for (a, mac) in learned {
            changed |= entries.insert(a, mac).is_some_and(|old| old != mac);
        }
        NeighbourTable {
            entries,
            version: if changed {
                next_version()
            } else {
                self.version
            },
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &MacAddr)> {
        self.entries.iter()
    }
}

/// Capacity of a worker's [`Learned`] buffer between two drains.
pub const LEARNED_CAPACITY: usize = 64;

/// Neighbours a worker saw since the last drain: fixed capacity, no allocation; what
/// does not fit is dropped (and will be learned again from the next ARP/ND frame).
///
/// It also remembers the last [`RECENT_CAPACITY`] neighbours it learned after handing
/// them out, so the worker can use a MAC in the milliseconds before the control thread
/// publishes it (a SYN-ACK to a client whose SYN taught us its MAC).
#[derive(Clone, Debug)]
pub struct Learned {
    entries: [(IpAddr, MacAddr); LEARNED_CAPACITY],
    len: usize,
    overflowed: u64,
    recent: [(IpAddr, MacAddr); RECENT_CAPACITY],
    recent_next: usize,
}

/// Neighbours a worker remembers locally until the published snapshot has them.
pub const RECENT_CAPACITY: usize = 16;

impl Default for Learned {
    fn default() -> Self {
        let unset = (IpAddr::from([0u8, 0, 0, 0]), [0; 6]);
        Learned {
            entries: [unset; LEARNED_CAPACITY],
            len: 0,
            overflowed: 0,
            recent: [unset; RECENT_CAPACITY],
            recent_next: 0,
        }
    }
}

impl Learned {
    /// Records a neighbour unless it is already in the buffer or the snapshot agrees.
    #[inline]
    pub fn record(&mut self, known: &NeighbourTable, addr: IpAddr, mac: MacAddr) {
        if known.get(addr) == Some(mac) || self.entries[..self.len].contains(&(addr, mac)) {
            return;
        }
        if self.len == LEARNED_CAPACITY {
            self.overflowed += 1;
            return;
        }
        self.entries[self.len] = (addr, mac);
        self.len += 1;
        self.recent[self.recent_next % RECENT_CAPACITY] = (addr, mac);
        self.recent_next = self.recent_next.wrapping_add(1);
    }

    /// A MAC learned lately and perhaps not yet in the published snapshot (newest first).
    /// A scan of a few entries: for the miss path only.
    pub fn recent(&self, addr: IpAddr) -> Option<MacAddr> {
        (1..=RECENT_CAPACITY.min(self.recent_next))
            .map(|back| self.recent[self.recent_next.wrapping_sub(back) % RECENT_CAPACITY])
            .find(|(a, _)| *a == addr)
            .map(|(_, mac)| mac)
    }

    /// Hands out and forgets what was learned.
    pub fn drain(&mut self) -> impl Iterator<Item = (IpAddr, MacAddr)> + '_ {
        let len = std::mem::take(&mut self.len);
        self.entries[..len].iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries that did not fit since the worker started.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_buffer_dedups_skips_known_and_bounds() {
        let a: IpAddr = "198.18.1.2".parse().unwrap();
        let known = NeighbourTable::new([(a, [1; 6])]);
        let mut l = Learned::default();
        l.record(&known, a, [1; 6]);
        assert!(l.is_empty());
        l.record(&known, a, [2; 6]);
        l.record(&known, a, [2; 6]);
        assert_eq!(l.drain().collect::<Vec<_>>(), vec![(a, [2; 6])]);
        assert!(l.is_empty());
        // Drained entries stay usable locally until the snapshot has them.
        assert_eq!(l.recent(a), Some([2; 6]));
        assert_eq!(l.recent(IpAddr::from([198, 18, 9, 9])), None);
        for i in 0..(LEARNED_CAPACITY as u8 + 5) {
            l.record(&known, IpAddr::from([198, 18, 3, i]), [3; 6]);
        }
        assert_eq!(l.drain().count(), LEARNED_CAPACITY);
        assert_eq!(l.overflowed(), 5);
        let merged = known.with([(a, [9; 6])]);
        assert_eq!(merged.get(a), Some([9; 6]));
        let b = IpAddr::from([198, 18, 3, 1]);
        let changed = merged.with_changes([(b, [4; 6])], &[a]);
        assert_eq!((changed.get(a), changed.get(b)), (None, Some([4; 6])));
        assert_ne!(changed.version(), merged.version());
    }

    /// A snapshot keeps its predecessor's version while it only adds entries, and takes a
    /// new one when an entry changes its MAC or is forgotten.
    #[test]
    fn only_changed_or_forgotten_entries_take_a_new_version() {
        let (a, b, c) = (
            IpAddr::from([198, 18, 1, 1]),
            IpAddr::from([198, 18, 1, 2]),
            IpAddr::from([198, 18, 1, 3]),
        );
        let first = NeighbourTable::new([(a, [1; 6])]);
        assert_ne!(first.version(), 0);
        assert_ne!(
            first.version(),
            NeighbourTable::new([(a, [1; 6])]).version()
        );
        let added = first.with([(b, [2; 6]), (a, [1; 6])]);
        assert_eq!(added.version(), first.version());
        assert_eq!((added.get(a), added.get(b)), (Some([1; 6]), Some([2; 6])));
        // Forgetting an address the table does not have changes nothing either.
        let same = added.with_changes([(c, [3; 6])], &[IpAddr::from([198, 18, 9, 9])]);
        assert_eq!(same.version(), first.version());
        let moved = same.with([(b, [7; 6])]);
        assert_ne!(moved.version(), same.version());
        assert_eq!(moved.get(b), Some([7; 6]));
        let forgot = moved.with_changes([], &[c]);
        assert_ne!(forgot.version(), moved.version());
        assert_eq!(forgot.get(c), None);
    }
}
