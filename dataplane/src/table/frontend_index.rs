//! The frontends of a [`ServiceTable`](super::ServiceTable), by (address, port,
//! protocol): open addressing with linear probing over a power-of-two array of
//! cache-line slots, at most half full. A lookup usually reads one line, whose address
//! follows from the key alone, so a worker's look-ahead can prefetch it before the
//! lookup. Frontends name their Service by id, so tables whose frontends did not change
//! share one index.

use super::{Frontend, FrontendKey};
use crate::hash::{addr_word, mix64};

/// One slot: a frontend or nothing. A cache line each.
#[derive(Clone, Debug, Default)]
#[repr(align(64))]
struct Slot(Option<Frontend>);

/// Where a frontend is in its table's index ([`ServiceTable::find_frontend`]): reading
/// it from there ([`ServiceTable::frontend_at`]) costs no hashing or probing.
///
/// [`ServiceTable::find_frontend`]: super::ServiceTable::find_frontend
/// [`ServiceTable::frontend_at`]: super::ServiceTable::frontend_at
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendRef(u32);

/// See the module documentation.
#[derive(Clone, Debug)]
pub(super) struct FrontendIndex {
    slots: Box<[Slot]>,
    mask: usize,
    len: usize,
    /// One more than the largest service id a frontend names (0 when empty).
    services_named: usize,
}

/// The key's hash: an IPv4 address, port and protocol fill distinct bits of one word
/// (IPv6 addresses are folded first), then mixed so the low bits pick the slot.
#[inline]
fn hash(key: &FrontendKey) -> u64 {
    let rest = (u64::from(key.port) << 32) | (u64::from(key.protocol.ip_number()) << 48);
    mix64(addr_word(key.addr) ^ rest)
}

impl FrontendIndex {
    /// An index of `frontends` (keys distinct: the builder refuses duplicates; a repeated
    /// key keeps its first entry).
    pub(super) fn new(frontends: impl ExactSizeIterator<Item = Frontend>) -> Self {
        let size = (frontends.len() * 2).max(1).next_power_of_two();
        let mut index = FrontendIndex {
            slots: vec![Slot::default(); size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
            services_named: 0,
        };
        for frontend in frontends {
            let mut at = hash(&frontend.key) as usize & index.mask;
            while let Some(slot) = index.slots.get_mut(at) {
                match &slot.0 {
                    Some(f) if f.key == frontend.key => break,
                    Some(_) => at = (at + 1) & index.mask,
                    None => {
                        let named = frontend.service.0 as usize + 1;
                        index.services_named = index.services_named.max(named);
                        slot.0 = Some(frontend);
                        index.len += 1;
                        break;
                    }
                }
            }
        }
        index
    }

    /// Whether every frontend names a service id below `services`.
    pub(super) fn names_only_below(&self, services: usize) -> bool {
        self.services_named <= services
    }

    /// Where `key`'s frontend is, if the table has it. Probes from the key's home slot
    /// to the first empty one (there is always one: the index is at most half full).
    #[inline]
    pub(super) fn find(&self, key: &FrontendKey) -> Option<FrontendRef> {
        let mut at = hash(key) as usize & self.mask;
        for _ in 0..self.slots.len() {
            match &self.slots.get(at)?.0 {
                Some(f) if f.key == *key => return Some(FrontendRef(at as u32)),
                Some(_) => at = (at + 1) & self.mask,
                None => return None,
            }
        }
        None
    }

    /// The frontend `find` found.
    #[inline]
    pub(super) fn at(&self, r: FrontendRef) -> Option<&Frontend> {
        self.slots.get(r.0 as usize)?.0.as_ref()
    }

    /// The slot a lookup of `key` reads first, for a caller that prefetches it.
    #[inline]
    pub(super) fn home_line(&self, key: &FrontendKey) -> Option<&impl Sized> {
        self.slots.get(hash(key) as usize & self.mask)
    }

    /// Every frontend, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Frontend> {
        self.slots.iter().filter_map(|s| s.0.as_ref())
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{FrontendKind, L4Protocol, ServiceId};
    use std::net::IpAddr;
    use std::sync::Arc;

    fn key(i: u32, port: u16, protocol: L4Protocol) -> FrontendKey {
        let addr = if i % 3 == 0 {
            IpAddr::V6(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(0x0a60_0000 + i))
        };
        FrontendKey {
            addr,
            port,
            protocol,
        }
    }

    /// Frontends over four service ids.
    fn entries(n: u32) -> Vec<Frontend> {
        (0..n)
            .map(|i| Frontend {
                key: key(i, 80 + (i % 7) as u16, L4Protocol::Tcp),
                kind: FrontendKind::ClusterIp,
                service: ServiceId(i % 4),
                source_ranges: Arc::from(Vec::new()),
            })
            .collect()
    }

    #[test]
    fn finds_every_frontend_with_its_service_and_nothing_else() {
        for n in [0u32, 1, 2, 3, 100, 5_000] {
            let e = entries(n);
            let index = FrontendIndex::new(e.clone().into_iter());
            assert_eq!(index.len(), n as usize);
            assert!(index.slots.len() >= 2 * n as usize, "at most half full");
            assert!(index.names_only_below(n.min(4) as usize));
            assert_eq!(index.names_only_below(3), n < 4);
            for f in &e {
                let r = index.find(&f.key).expect("present");
                assert_eq!(index.at(r), Some(f));
            }
            // Same address, other port or protocol; other addresses: absent.
            for i in 0..n.max(50) {
                assert_eq!(
                    index.find(&key(i, 80 + (i % 7) as u16, L4Protocol::Udp)),
                    None
                );
                assert_eq!(
                    index.find(&key(i, 8 + (i % 7) as u16, L4Protocol::Tcp)),
                    None
                );
                assert_eq!(index.find(&key(n + i, 80, L4Protocol::Tcp)), None);
            }
            assert_eq!(index.iter().count(), n as usize);
        }
    }

    #[test]
    fn the_home_line_is_where_a_lookup_starts() {
        let e = entries(1_000);
        let index = FrontendIndex::new(e.clone().into_iter());
        let mut home = 0;
        for f in &e {
            let line = index.home_line(&f.key).unwrap() as *const _ as usize;
            let r = index.find(&f.key).unwrap();
            let slot = &index.slots[r.0 as usize] as *const _ as usize;
            assert_eq!(line % 64, 0, "a slot is a cache line");
            home += usize::from(line == slot);
        }
        // At most half full: most frontends sit in their home slot.
        assert!(home >= 700, "{home} of 1000 at home");
    }
}
