//! What a worker remembers about fragmented datagrams so that later fragments, which carry
//! no transport header, follow their first fragment: a bounded per-worker table keyed by
//! (source, destination, identification, protocol) of the datagram as received.
//!
//! Allocated once; set-associative buckets of 4 entries; a full bucket replaces the entry
//! that expires first. Entries live [`FRAGMENT_TIMEOUT_NS`] (Linux's `ipfrag_time`).

use std::net::IpAddr;

use crate::flow::FlowAddr;
use crate::hash::mix64;

/// How long after its first fragment a datagram's later fragments are followed.
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

const WAYS: usize = 4;

/// Identifies one datagram: its addresses as received, its IPv4 identification or IPv6
/// fragment-header identification, and its upper-layer protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentKey {
    pub src: FlowAddr,
    pub dst: FlowAddr,
    pub ident: u32,
    pub protocol: u8,
    pub v6: bool,
}

impl FragmentKey {
    pub fn new(src: IpAddr, dst: IpAddr, ident: u32, protocol: u8) -> Self {
        FragmentKey {
            src: FlowAddr::from_ip(src),
            dst: FlowAddr::from_ip(dst),
            ident,
            protocol,
            v6: src.is_ipv6(),
        }
    }

    #[inline]
    fn hash(&self) -> u64 {
        let (a, b) = self.src.words();
        let (c, d) = self.dst.words();
        mix64(
            a ^ b.rotate_left(21)
                ^ c.rotate_left(7)
                ^ mix64(d)
                ^ (u64::from(self.ident) << 16)
                ^ (u64::from(self.protocol) << 8)
                ^ u64::from(self.v6),
        )
    }
}

/// What to do with the later fragments of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentAction {
    /// The first fragment went to this worker (the flow's owner): hand them over too.
    Steer(usize),
    /// Rewrite the addresses the first fragment's translation rewrote.
    Rewrite {
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FragmentKey,
    action: FragmentAction,
    /// 0 marks a free entry.
    expires: u64,
}

const FREE: Entry = Entry {
    key: FragmentKey {
        src: FlowAddr::ZERO,
        dst: FlowAddr::ZERO,
        ident: 0,
        protocol: 0,
        v6: false,
    },
    action: FragmentAction::Steer(0),
    expires: 0,
};

/// A worker's fragment table. See the module documentation.
pub struct FragmentTable {
    entries: Box<[Entry]>,
    mask: usize,
    cursor: usize,
}

impl FragmentTable {
    /// Room for `capacity` datagrams (rounded up to a power of two, at least 4).
    pub fn new(capacity: usize) -> Self {
        let slots = capacity.clamp(WAYS, 1 << 24).next_power_of_two();
        FragmentTable {
            entries: vec![FREE; slots].into_boxed_slice(),
            mask: slots / WAYS - 1,
            cursor: 0,
        }
    }

    #[inline]
    fn ways(&mut self, key: &FragmentKey) -> &mut [Entry] {
        let start = (key.hash() as usize & self.mask) * WAYS;
        self.entries.get_mut(start..start + WAYS).unwrap_or(&mut [])
    }

    /// The action recorded for `key`, unless it expired by `now`.
    #[inline]
    pub fn lookup(&mut self, key: &FragmentKey, now: u64) -> Option<FragmentAction> {
        for e in self.ways(key) {
            if e.expires != 0 && e.key == *key {
                if now >= e.expires {
                    *e = FREE;
                    return None;
                }
                return Some(e.action);
            }
        }
        None
    }

    /// Records (or replaces) the action for `key` until `now + FRAGMENT_TIMEOUT_NS`.
    #[inline]
    pub fn insert(&mut self, key: FragmentKey, action: FragmentAction, now: u64) {
        let entry = Entry {
            key,
            action,
            expires: now.saturating_add(FRAGMENT_TIMEOUT_NS).max(1),
        };
        let ways = self.ways(&key);
        let pick = ways
            .iter()
            .position(|e| e.expires != 0 && e.key == key)
            .or_else(|| ways.iter().position(|e| e.expires == 0))
            .or_else(|| (0..ways.len()).min_by_key(|&i| ways[i].expires));
        if let Some(e) = pick.and_then(|i| ways.get_mut(i)) {
            *e = entry;
        }
    }

    /// The slow job: frees expired entries among `budget` slots from a rotating cursor.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let n = self.entries.len();
        let mut freed = 0;
        for _ in 0..budget.min(n) {
            let i = self.cursor;
            self.cursor = if i + 1 == n { 0 } else { i + 1 };
            if let Some(e) = self.entries.get_mut(i) {
                if e.expires != 0 && now >= e.expires {
                    *e = FREE;
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Datagrams currently remembered (for tests and status; scans the table).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.expires != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragmentKey {
        FragmentKey::new(
            "198.18.0.1".parse().unwrap(),
            "198.19.0.10".parse().unwrap(),
            id,
            17,
        )
    }

    #[test]
    fn remembers_until_timeout_and_stays_bounded() {
        let mut t = FragmentTable::new(8);
        let a = FragmentAction::Rewrite {
            src: None,
            dst: Some("10.0.0.1".parse().unwrap()),
        };
        t.insert(key(1), a, 10);
        assert_eq!(t.lookup(&key(1), 11), Some(a));
        assert_eq!(t.lookup(&key(2), 11), None);
        assert_eq!(t.lookup(&key(1), 10 + FRAGMENT_TIMEOUT_NS), None);
        for i in 0..100 {
            t.insert(key(i), FragmentAction::Steer(1), 20);
        }
        assert!(t.len() <= 8);
        assert_eq!(t.expire(20 + FRAGMENT_TIMEOUT_NS, 100), 8);
        assert!(t.is_empty());
    }
}
