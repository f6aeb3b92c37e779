//! `sessionAffinity: ClientIP` for one worker: a bounded table from (client address,
//! service) to the backend that client was last sent to, forgotten after the service's
//! timeout (counted from the client's last new flow, as kube-proxy's `recent` match does).
//!
//! Same style as connection tracking: allocated once at [`AffinityTable::new`],
//! set-associative buckets of 8 entries, no allocation afterwards, the caller's clock.
//! When a bucket is full, an insert replaces the entry that expires first.
//!
//! Services are named by a stable key ([`service_key`] of the service name) rather than by
//! `ServiceId`, which is only meaningful inside one `ServiceTable` generation.

use std::net::IpAddr;

use crate::flow::{keyed_fold, FlowAddr, TableHashKey};
use crate::hash::{hash_words, mix64};

/// A stable key for a service: a hash of its name (e.g. `default/web:http`), the same in
/// every table generation and every process.
pub fn service_key(name: &str) -> u64 {
    let mut h = hash_words(0x6166_6669_6e69_7479, &[name.len() as u64]);
    for chunk in name.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = hash_words(h, &[u64::from_le_bytes(w)]);
    }
    h
}

/// The backend a client is pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityTarget {
    pub backend: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    client: FlowAddr,
    backend: FlowAddr,
    service: u64,
    /// Expiry instant (ns, caller's clock); 0 marks a free entry.
    expires: u64,
    port: u16,
    v6: bool,
}

const FREE: Entry = Entry {
    client: FlowAddr::ZERO,
    backend: FlowAddr::ZERO,
    service: 0,
    expires: 0,
    port: 0,
    v6: false,
};

const WAYS: usize = 8;

/// A worker's ClientIP affinity table. See the module documentation.
pub struct AffinityTable {
    entries: Box<[Entry]>,
    mask: usize,
    len: usize,
    /// The bucket hash's secret (see [`AffinityTable::new`]).
    key: TableHashKey,
}

impl AffinityTable {
    /// A table for at most `capacity` entries (rounded up to a power of two, at least 8,
    /// at most 2³⁰), all memory allocated now (56 bytes per entry). Its bucket hash is
    /// keyed by a random [`TableHashKey`], as connection tracking's is: clients choose
    /// their addresses (an IPv6 client, 2^64 of them), and with a hash they could compute
    /// they could fill the bucket of another client's pin and push it out.
    pub fn new(capacity: usize) -> Self {
        Self::with_key(capacity, TableHashKey::random())
    }

    /// [`AffinityTable::new`] with a given hash key (tests and benches that need the same
    /// placement in every run).
    pub fn with_key(capacity: usize, key: TableHashKey) -> Self {
        let slots = capacity.clamp(WAYS, 1 << 30).next_power_of_two();
        AffinityTable {
            entries: vec![FREE; slots].into_boxed_slice(),
            mask: slots / WAYS - 1,
            len: 0,
            key,
        }
    }

    /// Entries held (expired ones count until replaced or looked up).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries the table holds; fixed at `new`.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn bucket(&self, client: &FlowAddr, v6: bool, service: u64) -> usize {
        let client = keyed_fold(*client, self.key.0[0], self.key.0[1]);
        let x = mix64(client ^ service ^ u64::from(v6));
        (x as usize & self.mask) * WAYS
    }

    #[inline]
    fn ways(&mut self, start: usize) -> &mut [Entry] {
        self.entries.get_mut(start..start + WAYS).unwrap_or(&mut [])
    }

    /// The backend `client` is pinned to for `service`, if the pin has not expired at
    /// `now`. An expired entry is freed.
    #[inline]
    pub fn lookup(&mut self, client: IpAddr, service: u64, now: u64) -> Option<AffinityTarget> {
        let c = FlowAddr::from_ip(client);
        let v6 = client.is_ipv6();
        let start = self.bucket(&c, v6, service);
        let mut freed = false;
        let mut found = None;
        for e in self.ways(start) {
            if e.expires != 0 && e.client == c && e.v6 == v6 && e.service == service {
                if now >= e.expires {
                    *e = FREE;
                    freed = true;
                } else {
                    found = Some(AffinityTarget {
                        backend: e.backend.to_ip(v6),
                        port: e.port,
                    });
                }
                break;
            }
        }
        if freed {
            self.len -= 1;
        }
        found
    }

    /// Pins `client` to `target` for `service` until `now + timeout_ns` (replacing any
    /// pin it had). When the bucket is full, the entry that expires first is replaced.
    /// A zero timeout stores nothing.
    pub fn insert(
        &mut self,
        client: IpAddr,
        service: u64,
        target: AffinityTarget,
        timeout_ns: u64,
        now: u64,
    ) {
        if timeout_ns == 0 {
            return;
        }
        let c = FlowAddr::from_ip(client);
        let v6 = client.is_ipv6();
        let start = self.bucket(&c, v6, service);
        let entry = Entry {
            client: c,
            backend: FlowAddr::from_ip(target.backend),
            service,
            expires: now.saturating_add(timeout_ns).max(1),
            port: target.port,
            v6,
        };
        let ways = self.ways(start);
        // The same key, else a free entry, else the one expiring first.
        let pick = ways
            .iter()
            .position(|e| e.expires != 0 && e.client == c && e.v6 == v6 && e.service == service)
            .map(|i| (i, false))
            .or_else(|| ways.iter().position(|e| e.expires == 0).map(|i| (i, true)))
            .or_else(|| {
                (0..ways.len())
                    .min_by_key(|&i| ways[i].expires)
                    .map(|i| (i, false))
            });
        if let Some((i, was_free)) = pick {
            if let Some(e) = ways.get_mut(i) {
                *e = entry;
            }
            if was_free {
                self.len += 1;
            }
        }
    }

    /// Forgets the pin of `client` for `service` (e.g. its backend disappeared).
    pub fn remove(&mut self, client: IpAddr, service: u64) -> bool {
        let c = FlowAddr::from_ip(client);
        let v6 = client.is_ipv6();
        let start = self.bucket(&c, v6, service);
        let mut hit = false;
        for e in self.ways(start) {
            if e.expires != 0 && e.client == c && e.v6 == v6 && e.service == service {
                *e = FREE;
                hit = true;
                break;
            }
        }
        if hit {
            self.len -= 1;
        }
        hit
    }

    /// The slow job: frees expired entries among up to `budget` entries from `cursor`;
    /// returns the next cursor and how many it freed. (Expired entries are also
    /// replaced lazily, so this only keeps `len` honest.)
    pub fn expire(&mut self, cursor: usize, now: u64, budget: usize) -> (usize, usize) {
        let n = self.entries.len();
        let mut i = cursor % n;
        let mut freed = 0;
        for _ in 0..budget.min(n) {
            if let Some(e) = self.entries.get_mut(i) {
                if e.expires != 0 && now >= e.expires {
                    *e = FREE;
                    freed += 1;
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        self.len -= freed;
        (i, freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const S: u64 = 1_000_000_000;

    fn target(last: u8) -> AffinityTarget {
        AffinityTarget {
            backend: IpAddr::from([10, 1, 0, last]),
            port: 8080,
        }
    }

    /// 65,536 clients of one /48 that vary their subnet bits with the interface bits the
    /// old unkeyed fold (`hi ^ lo.rotate_left(23)`) put on them: one word, so one bucket,
    /// whatever the table. Keyed, they spread over the table's 1,024 buckets as random
    /// clients would (64 a bucket on average; none above 128).
    #[test]
    fn clients_cannot_fold_their_pins_into_one_bucket() {
        let client = |i: u64| {
            let hi = 0x2001_0db8_0000_0000 ^ i;
            let lo = 0x0000_0000_0000_0007 ^ i.rotate_right(23);
            (
                hi,
                lo,
                IpAddr::from(Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo))),
            )
        };
        let (h0, l0, _) = client(0);
        let svc = service_key("default/web:http");
        for key in crate::flow::tests::test_keys() {
            let t = AffinityTable::with_key(8_192, key);
            let mut load = vec![0u32; t.mask + 1];
            for i in 0..65_536 {
                let (h, l, c) = client(i);
                assert_eq!(
                    h ^ l.rotate_left(23),
                    h0 ^ l0.rotate_left(23),
                    "one old word"
                );
                load[t.bucket(&FlowAddr::from_ip(c), true, svc) / WAYS] += 1;
            }
            let max = load.iter().copied().max().unwrap_or(0);
            assert!(max <= 128, "{key:?}: fullest bucket {max}");
        }
    }

    #[test]
    fn pins_until_timeout() {
        let mut t = AffinityTable::new(64);
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let svc = service_key("default/web:http");
        assert_eq!(t.lookup(c, svc, 0), None);
        t.insert(c, svc, target(1), 10_800 * S, 0);
        assert_eq!(t.lookup(c, svc, 10_799 * S), Some(target(1)));
        // Another service, another client, the IPv6 form: not pinned.
        assert_eq!(t.lookup(c, service_key("default/other:http"), 1), None);
        assert_eq!(t.lookup("10.0.0.2".parse().unwrap(), svc, 1), None);
        assert_eq!(t.lookup("::ffff:10.0.0.1".parse().unwrap(), svc, 1), None);
        // A new flow refreshes the pin.
        t.insert(c, svc, target(1), 10_800 * S, 100 * S);
        assert_eq!(t.lookup(c, svc, 10_801 * S), Some(target(1)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(c, svc, 10_900 * S), None);
        assert_eq!(t.len(), 0);
        // Re-pinning replaces the backend.
        t.insert(c, svc, target(1), S, 0);
        t.insert(c, svc, target(2), S, 0);
        assert_eq!(t.lookup(c, svc, 0), Some(target(2)));
        assert_eq!(t.len(), 1);
        assert!(t.remove(c, svc));
        assert!(!t.remove(c, svc));
        t.insert(c, svc, target(1), 0, 0);
        assert_eq!(t.lookup(c, svc, 0), None);
    }

    #[test]
    fn full_bucket_replaces_earliest_expiry_and_capacity_is_fixed() {
        let mut t = AffinityTable::new(8); // one bucket
        assert_eq!(t.capacity(), 8);
        let svc = 1;
        for i in 0..8u8 {
            t.insert(
                IpAddr::from([10, 0, 0, i]),
                svc,
                target(i),
                (100 + u64::from(i)) * S,
                0,
            );
        }
        assert_eq!(t.len(), 8);
        t.insert(IpAddr::from([10, 0, 0, 99]), svc, target(99), 1_000 * S, 0);
        assert_eq!(t.len(), 8);
        assert_eq!(t.capacity(), 8);
        assert_eq!(t.lookup(IpAddr::from([10, 0, 0, 0]), svc, 1), None);
        assert_eq!(
            t.lookup(IpAddr::from([10, 0, 0, 1]), svc, 1),
            Some(target(1))
        );
        assert_eq!(
            t.lookup(IpAddr::from([10, 0, 0, 99]), svc, 1),
            Some(target(99))
        );
        for i in 0..10_000u32 {
            t.insert(IpAddr::from(i.to_be_bytes()), svc, target(0), S, 0);
            assert!(t.len() <= t.capacity());
        }
    }

    #[test]
    fn expire_is_bounded_and_frees() {
        let mut t = AffinityTable::new(1024);
        for i in 0..200u32 {
            t.insert(IpAddr::from(i.to_be_bytes()), 7, target(1), S, 0);
        }
        let held = t.len();
        assert!(held > 150);
        let (mut cursor, mut total) = (0, 0);
        for _ in 0..(1024 / 64) {
            let (c, n) = t.expire(cursor, 2 * S, 64);
            assert!(n <= 64);
            cursor = c;
            total += n;
        }
        assert_eq!(total, held);
        assert!(t.is_empty());
    }

    #[test]
    fn service_key_is_stable_and_distinct() {
        assert_eq!(
            service_key("default/web:http"),
            service_key("default/web:http")
        );
        assert_ne!(
            service_key("default/web:http"),
            service_key("default/web:https")
        );
        assert_ne!(service_key(""), service_key("\0"));
    }
}
