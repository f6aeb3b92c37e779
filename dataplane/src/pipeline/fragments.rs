//! What a worker remembers about fragmented datagrams so that later fragments, which carry
//! no transport header, follow their first fragment: a bounded per-worker table keyed by
//! (source, destination, identification, protocol) of the datagram as received.
//!
//! Allocated once; set-associative buckets of 4 entries; a full bucket replaces the entry
//! that expires first. Entries live [`FRAGMENT_TIMEOUT_NS`] (Linux's `ipfrag_time`).

use std::net::IpAddr;

use crate::flow::{keyed_fold, FlowAddr, TableHashKey};
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

    /// The bucket hash under `key`: the source (which the sender chooses, with the
    /// identification) is folded by a keyed multiply, so that no choice of source bits and
    /// identifications lands a sender's datagrams in a bucket it picked.
    #[inline]
    fn hash(&self, key: TableHashKey) -> u64 {
        let (c, d) = self.dst.words();
        mix64(
            keyed_fold(self.src, key.0[0], key.0[1])
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
    /// The bucket hash's secret, random per table (see [`FragmentKey::hash`]).
    key: TableHashKey,
}

impl FragmentTable {
    /// Room for `capacity` datagrams (rounded up to a power of two, at least 4).
    pub fn new(capacity: usize) -> Self {
        let slots = capacity.clamp(WAYS, 1 << 24).next_power_of_two();
        FragmentTable {
            entries: vec![FREE; slots].into_boxed_slice(),
            mask: slots / WAYS - 1,
            cursor: 0,
            key: TableHashKey::random(),
        }
    }

    #[inline]
    fn ways(&mut self, key: &FragmentKey) -> &mut [Entry] {
        let start = (key.hash(self.key) as usize & self.mask) * WAYS;
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

    /// 65,536 datagrams from one /48 whose senders vary their subnet bits with the
    /// interface bits the old unkeyed fold (`hi ^ lo.rotate_left(21)`) put on them: one
    /// word, so one bucket of 4, whatever the table. Keyed, they spread over 4,096
    /// buckets as random ones would (16 a bucket on average; none above 40).
    #[test]
    fn senders_cannot_fold_their_datagrams_into_one_bucket() {
        let dst: IpAddr = "2001:db8::a".parse().unwrap();
        let key = |i: u64| {
            let hi = 0x2001_0db8_0000_0000 ^ i;
            let lo = 0x0000_0000_0000_0007 ^ i.rotate_right(21);
            let src = IpAddr::from(std::net::Ipv6Addr::from(
                u128::from(hi) << 64 | u128::from(lo),
            ));
            (hi ^ lo.rotate_left(21), FragmentKey::new(src, dst, 77, 17))
        };
        let (word, _) = key(0);
        for hash_key in crate::flow::tests::test_keys() {
            let mut load = vec![0u32; 4_096];
            for i in 0..65_536 {
                let (w, k) = key(i);
                assert_eq!(w, word, "one old word");
                load[k.hash(hash_key) as usize & 4_095] += 1;
            }
            let max = load.iter().copied().max().unwrap_or(0);
            assert!(max <= 40, "{hash_key:?}: fullest bucket {max}");
        }
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
