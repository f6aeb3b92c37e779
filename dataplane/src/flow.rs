//! Flow identity: the compact [`FlowKey`] that connection tracking is keyed by, the flow
//! hashes backend selection and session affinity use, and [`owner_worker`], the one place
//! that decides which worker owns a flow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::hash::hash_words;

/// An IPv4 or IPv6 address in 16 bytes, aligned to 8: IPv4 is held in its IPv4-mapped
/// IPv6 form (`::ffff:a.b.c.d`). The family is carried next to it (see [`FlowKey`]), so an
/// IPv6 packet that uses a mapped address never meets an IPv4 flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FlowAddr {
    hi: u64,
    lo: u64,
}

impl FlowAddr {
    /// The all-zero address (`::`); also an IPv4 `0.0.0.0` when read as IPv4.
    pub const ZERO: FlowAddr = FlowAddr { hi: 0, lo: 0 };

    /// The address's 128 bits (IPv4 mapped).
    #[inline]
    pub fn from_ip(ip: IpAddr) -> Self {
        let v = match ip {
            IpAddr::V4(a) => 0xffff_0000_0000 | u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        FlowAddr {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// An IPv4 address (host byte order value of its four bytes), mapped.
    #[inline]
    pub const fn from_v4(a: u32) -> Self {
        FlowAddr {
            hi: 0,
            lo: 0xffff_0000_0000 | a as u64,
        }
    }

    /// The low 32 bits: the IPv4 address of a mapped address.
    #[inline]
    pub const fn v4_bits(self) -> u32 {
        self.lo as u32
    }

    /// The address back, in the given family.
    #[inline]
    pub fn to_ip(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(self.hi) << 64) | u128::from(self.lo),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.lo as u32))
        }
    }

    /// The two 64-bit words, for hashing.
    #[inline]
    pub fn words(self) -> (u64, u64) {
        (self.hi, self.lo)
    }
}

/// The 5-tuple of one direction of a flow, 40 bytes. Both addresses are of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: FlowAddr,
    pub dst: FlowAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1/58 ICMP echo with the identifier as
    /// both ports).
    pub protocol: u8,
    /// Whether the addresses are IPv6.
    pub v6: bool,
}

impl FlowKey {
    /// A key from addresses of the packet. A mixed-family pair takes its family from `src`
    /// (packets never carry one; the caller parses one IP header).
    #[inline]
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FlowKey {
            src: FlowAddr::from_ip(src),
            dst: FlowAddr::from_ip(dst),
            src_port,
            dst_port,
            protocol,
            v6: src.is_ipv6(),
        }
    }

    /// An IPv4 key from the header fields' values.
    #[inline]
    pub const fn v4(src: u32, dst: u32, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FlowKey {
            src: FlowAddr::from_v4(src),
            dst: FlowAddr::from_v4(dst),
            src_port,
            dst_port,
            protocol,
            v6: false,
        }
    }

    #[inline]
    pub fn src_ip(&self) -> IpAddr {
        self.src.to_ip(self.v6)
    }

    #[inline]
    pub fn dst_ip(&self) -> IpAddr {
        self.dst.to_ip(self.v6)
    }

    /// The key of the other direction (source and destination swapped).
    #[inline]
    pub fn reversed(&self) -> Self {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
            v6: self.v6,
        }
    }

    /// A keyed hash of the whole key, for table indexes (connection tracking): which
    /// bucket and tag a key gets depends on `key`, which each table draws at random
    /// ([`TableHashKey::random`]), so a client choosing its tuples cannot aim them at
    /// buckets it has computed in advance. The key is folded into two words, one per
    /// side; each is XORed with a word of `key` and the two are combined by one
    /// 64×64→128-bit multiply whose halves are added (a "folded multiply", as in wyhash and
    /// foldhash): every output bit depends on every input bit, in about a third of the
    /// instructions and latency of two rounds of `mix64`, and this hash is on every
    /// packet's critical path (it chooses the bucket the lookup waits for).
    ///
    /// What the key buys: a client cannot compute which bucket a tuple lands in.
    ///
    /// The words. An IPv4 address is folded into its side's word by XOR and a rotation:
    /// the source address's bits land on bits 29–60 of the word, above the source port
    /// (bits 0–15); tuples can fold alike only if they also differ in the destination
    /// port or the protocol (bits 16–39), which a client can only choose among the ports
    /// and protocols the Services offer. An IPv6 client holds 2^64 addresses (2^80 with a
    /// /48), enough to cancel any such fold of its address against its port: tuples that
    /// varied the address's bits with the port would fold to one word and collide under
    /// every key, all in one bucket. So an IPv6 address is first folded by a keyed
    /// multiply of its halves (`keyed_fold`), which a client cannot cancel without
    /// knowing the key; two more multiplies, on IPv6 packets only.
    ///
    /// What it does not buy: one multiply under a random key spreads a structured key
    /// set poorly for about 1 key in 75 (the tests measure it). Adding the halves rather
    /// than XORing them costs the same and is what keeps that rare: XORed, 1 key in 5
    /// spreads one client's sequential ports poorly.
    #[inline(always)]
    pub fn table_hash(&self, key: TableHashKey) -> u64 {
        let ports = u64::from(self.src_port)
            | (u64::from(self.dst_port) << 16)
            | (u64::from(self.protocol) << 32)
            | (u64::from(self.v6) << 40);
        let (src, dst) = if self.v6 {
            (
                keyed_fold(self.src, key.0[1], key.0[0]),
                keyed_fold(self.dst, key.0[0].rotate_left(32), key.0[1].rotate_left(32)),
            )
        } else {
            (
                self.src.hi ^ self.src.lo.rotate_left(29),
                self.dst.hi ^ self.dst.lo.rotate_left(17),
            )
        };
        let p = u128::from(src ^ ports ^ key.0[0]) * u128::from(dst ^ key.0[1]);
        (p as u64).wrapping_add((p >> 64) as u64)
    }
}

/// An address folded into one word under key words `k1`, `k2`: the folded multiply
/// `(hi ^ k1) × (lo ^ k2)` (halves added). Which addresses fold alike depends on the key:
/// no choice of address bits cancels without it. For the tables whose keys a client
/// chooses (connection tracking, affinity, fragments).
#[inline(always)]
pub(crate) fn keyed_fold(addr: FlowAddr, k1: u64, k2: u64) -> u64 {
    let p = u128::from(addr.hi ^ k1) * u128::from(addr.lo ^ k2);
    (p as u64).wrapping_add((p >> 64) as u64)
}

/// The secret of a table's [`FlowKey::table_hash`]: two words, XORed into the hash's two
/// multiplicands. Every value is a valid key (see [`TableHashKey::random`] on why none is
/// excluded); [`TableHashKey::FIXED`] is the one benches and tests use when placement
/// must be the same in every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableHashKey(pub [u64; 2]);

impl TableHashKey {
    /// A fixed key (the digits of π the unkeyed hash used), for reproducible placement.
    pub const FIXED: TableHashKey = TableHashKey([0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344]);

    /// A key from std's per-process randomness (`RandomState`: seeded from the OS once per
    /// thread, and different for each call). Not for the per-packet path (it hashes with
    /// SipHash); a table draws its key once, when it is built.
    ///
    /// No key is rejected: a multiplicand is zero only when a flow key's folded word equals
    /// the key word, which a client cannot aim at without knowing the key; and no key word
    /// is weaker than another against a client that does not know it (a random word is 0,
    /// or any other particular value, with probability 2⁻⁶⁴).
    pub fn random() -> TableHashKey {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        TableHashKey([state.hash_one(0u64), state.hash_one(1u64)])
    }
}

/// The flow hash Maglev selects a backend by, for a packet from the client to a frontend:
/// seeded, over client address and port and frontend address, port and protocol. Every
/// appliance with the same seed gets the same hash for the same flow.
#[inline]
pub fn flow_hash(seed: u64, forward: &FlowKey) -> u64 {
    let (sh, sl) = forward.src.words();
    let (dh, dl) = forward.dst.words();
    let rest = u64::from(forward.src_port)
        | (u64::from(forward.dst_port) << 16)
        | (u64::from(forward.protocol) << 32)
        | (u64::from(forward.v6) << 40);
    hash_words(seed, &[sh, sl, dh, dl, rest])
}

/// The hash of a client address alone, for `sessionAffinity: ClientIP` when a backend is
/// chosen by hash rather than remembered: every flow of a client gets the same value.
#[inline]
pub fn client_hash(seed: u64, client: IpAddr) -> u64 {
    let (h, l) = FlowAddr::from_ip(client).words();
    hash_words(seed, &[h, l, u64::from(client.is_ipv6())])
}

/// A fixed seed for flow ownership: ownership must not change when a table is published.
const OWNER_SEED: u64 = 0x6f77_6e65_7273_6869;

/// THE flow-ownership rule: the worker (0..n_workers) that owns the flows of this client
/// address and port, and holds their connection-tracking state.
///
/// Why these two fields: after DNAT, a forward packet is client→backend and a reply is
/// backend→client (before reverse NAT). The frontend address disappears from replies and
/// the backend address from forward packets, but the client's address and port are in
/// both: source of forward packets, destination of replies. So a worker given either
/// direction computes `owner_worker(forward.src, forward.src_port)` or
/// `owner_worker(reply.dst, reply.dst_port)` and reaches the same answer, without any
/// shared state. The NIC's RSS spreads packets by its own hash, so a frame may arrive on
/// another worker's queue; it is then handed to its owner (`Steer`).
///
/// Pure, deterministic across processes (a fixed seed, independent of the table), and
/// `n_workers == 0` is treated as 1 (returns 0).
#[inline]
pub fn owner_worker(client_addr: IpAddr, client_port: u16, n_workers: usize) -> usize {
    if n_workers <= 1 {
        return 0;
    }
    let (h, l) = FlowAddr::from_ip(client_addr).words();
    let x = hash_words(
        OWNER_SEED,
        &[
            h,
            l,
            u64::from(client_port) | (u64::from(client_addr.is_ipv6()) << 16),
        ],
    );
    let n = n_workers.max(1) as u128;
    ((u128::from(x) * n) >> 64) as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` hash keys from a splitmix64 sequence started at `seed`: random-looking, and the
    /// same in every run.
    pub(crate) fn pseudo_random_keys(seed: u64, n: usize) -> Vec<TableHashKey> {
        let mut state = seed;
        let mut word = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            crate::hash::mix64(state)
        };
        (0..n).map(|_| TableHashKey([word(), word()])).collect()
    }

    /// The keys the tables' spread tests try: the fixed one and 8 pseudo-random ones.
    pub(crate) fn test_keys() -> Vec<TableHashKey> {
        let mut keys = vec![TableHashKey::FIXED];
        keys.extend(pseudo_random_keys(0x6166_6669_6e69_7479, 8));
        keys
    }

    #[test]
    fn key_is_compact_and_round_trips() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 40);
        let v4 = FlowKey::new(
            "10.0.0.1".parse().unwrap(),
            "198.18.0.10".parse().unwrap(),
            40000,
            80,
            6,
        );
        assert_eq!(v4.src_ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v4.dst_ip(), "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(v4.reversed().reversed(), v4);
        let mapped = FlowKey::new(
            "::ffff:10.0.0.1".parse().unwrap(),
            "::ffff:198.18.0.10".parse().unwrap(),
            40000,
            80,
            6,
        );
        assert_ne!(v4, mapped);
        assert_ne!(
            v4.table_hash(TableHashKey::FIXED),
            mapped.table_hash(TableHashKey::FIXED)
        );
        let v6 = FlowKey::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            1,
            2,
            17,
        );
        assert_eq!(v6.src_ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hashes_depend_on_seed_and_fields() {
        let k = FlowKey::new(
            "10.0.0.1".parse().unwrap(),
            "198.18.0.10".parse().unwrap(),
            40000,
            80,
            6,
        );
        assert_eq!(flow_hash(1, &k), flow_hash(1, &k));
        assert_ne!(flow_hash(1, &k), flow_hash(2, &k));
        let mut other = k;
        other.src_port = 40001;
        assert_ne!(flow_hash(1, &k), flow_hash(1, &other));
        for key in [TableHashKey::FIXED, TableHashKey::random()] {
            assert_ne!(k.table_hash(key), other.table_hash(key));
        }
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_hash(3, c), client_hash(3, c));
        assert_ne!(
            client_hash(3, c),
            client_hash(3, "10.0.0.2".parse().unwrap())
        );
    }

    type KeySet = (&'static str, Box<dyn Fn(u32) -> FlowKey>);

    /// The key sets traffic produces: one client's ports, many clients of one frontend,
    /// IPv6 clients.
    fn traffic_key_sets() -> [KeySet; 3] {
        let vip: IpAddr = "198.18.0.10".parse().unwrap();
        [
            (
                "one client's ports",
                Box::new(move |i| FlowKey::new("10.0.0.1".parse().unwrap(), vip, i as u16, 80, 6)),
            ),
            (
                "clients of one frontend",
                Box::new(move |i| {
                    FlowKey::new(
                        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                        vip,
                        40000,
                        80,
                        6,
                    )
                }),
            ),
            (
                "IPv6 clients",
                Box::new(|i| {
                    let c = Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
                    FlowKey::new(
                        IpAddr::V6(c),
                        "2001:db8::a".parse().unwrap(),
                        40000,
                        443,
                        17,
                    )
                }),
            ),
        ]
    }

    const SPREAD_KEYS: u32 = 65_536;

    /// Whether 65,536 keys of a set spread under `hash_key` as a random function would:
    /// over 4,096 buckets (Poisson(16): the fullest holds ~30) none holds more than 40,
    /// and their 65,536 32-bit tags (~0.5 collisions) collide at most 8 times.
    fn spreads_evenly(key: &dyn Fn(u32) -> FlowKey, hash_key: TableHashKey) -> Result<(), String> {
        const BUCKETS: usize = 4_096;
        let mut load = vec![0u32; BUCKETS];
        let mut tags = Vec::with_capacity(SPREAD_KEYS as usize);
        for i in 0..SPREAD_KEYS {
            let h = key(i).table_hash(hash_key);
            load[(h as usize) & (BUCKETS - 1)] += 1;
            tags.push((h >> 32) as u32);
        }
        tags.sort_unstable();
        tags.dedup();
        let max = load.iter().copied().max().unwrap();
        if max > 40 || (tags.len() as u32) < SPREAD_KEYS - 8 {
            return Err(format!("fullest bucket {max}, {} tags", tags.len()));
        }
        Ok(())
    }

    /// The table hash spreads traffic's key sets evenly over buckets (its low bits) and
    /// tags (its high 32 bits), with the fixed key and other explicit keys.
    #[test]
    fn table_hash_spreads_sequential_keys_over_buckets_and_tags() {
        let hash_keys = [
            TableHashKey::FIXED,
            TableHashKey([0x9c1d_4b7e_03a5_f261, 0x5e2b_8f40_c7d3_1a96]),
            TableHashKey([0x0000_0000_0000_0001, 0xffff_ffff_ffff_fffe]),
            TableHashKey([0x71b3_e905_2cd8_46af, 0xd40a_6c1f_93e7_582b]),
        ];
        for (name, key) in &traffic_key_sets() {
            for &hash_key in &hash_keys {
                if let Err(e) = spreads_evenly(key, hash_key) {
                    panic!("{name} {hash_key:?}: {e}");
                }
            }
        }
    }

    /// Random keys spread as well, but for a few: one 64×64-bit multiply under a random
    /// key is a weak hash of a key set for about 1 key in 70 to 170 depending on the set
    /// (measured over 1,500 `TableHashKey::random` keys per set; with the halves XORed
    /// instead of added, 1 in 5 for one client's ports). Of 64 keys, at most 5 per set
    /// may be weak (expected: under 1). The keys are a fixed pseudo-random sequence, so
    /// the test gives the same answer in every run.
    #[test]
    fn table_hash_spreads_under_almost_every_random_key() {
        let keys = pseudo_random_keys(0x6b75_6279_7061_7373, 64);
        for (name, key) in &traffic_key_sets() {
            let weak: Vec<String> = keys
                .iter()
                .copied()
                .filter_map(|k| spreads_evenly(key, k).err().map(|e| format!("{k:?}: {e}")))
                .collect();
            assert!(
                weak.len() <= 5,
                "{name}: {} weak keys: {weak:#?}",
                weak.len()
            );
        }
    }

    /// IPv6 clients that vary address bits together with their port: folded by XOR, each
    /// set's 65,536 tuples made one word, so one bucket under every key. A client with a
    /// /48 varies the subnet bits (the high word's low 16) with its port; any IPv6 client
    /// varies the interface bits that the rotation put on the port's (35–50). Keyed, they
    /// spread like any other set, under the fixed key and random ones.
    #[test]
    fn ipv6_clients_cannot_fold_their_tuples_together() {
        let vip: IpAddr = "2001:db8::a".parse().unwrap();
        let sets: [KeySet; 2] = [
            (
                "subnet bits with the port",
                Box::new(move |i| {
                    let c = Ipv6Addr::from(0x2001_0db8_0000_u128 << 80 | u128::from(i) << 64 | 1);
                    FlowKey::new(IpAddr::V6(c), vip, i as u16, 443, 6)
                }),
            ),
            (
                "interface bits with the port",
                Box::new(move |i| {
                    let c = Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 35 | 7);
                    FlowKey::new(IpAddr::V6(c), vip, i as u16, 443, 6)
                }),
            ),
        ];
        let keys = test_keys();
        for (name, key) in &sets {
            // Distinct tuples.
            assert_ne!(key(1), key(2), "{name}");
            let weak = keys
                .iter()
                .filter(|&&k| spreads_evenly(key, k).is_err())
                .count();
            assert!(
                weak <= 1,
                "{name}: {weak} of {} keys spread it poorly",
                keys.len()
            );
        }
    }

    #[test]
    fn owner_spread_is_roughly_even() {
        for n in [1usize, 2, 3, 4, 8, 16] {
            let mut count = vec![0usize; n];
            let per = 4_000;
            for i in 0..(per * n) as u32 {
                let addr = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + (i >> 8)));
                count[owner_worker(addr, 30000 + (i & 0xff) as u16, n)] += 1;
            }
            for &c in &count {
                assert!(c > per * 9 / 10 && c < per * 11 / 10, "n={n} {count:?}");
            }
        }
        assert_eq!(owner_worker("10.0.0.1".parse().unwrap(), 1, 0), 0);
    }

    proptest! {
        /// A forward packet (client→frontend), the same flow after DNAT (client→backend)
        /// and its reply (backend→client) all name the same owner.
        #[test]
        fn both_directions_same_owner(
            client in any::<[u8; 4]>(), cport in any::<u16>(),
            frontend in any::<[u8; 4]>(), backend in any::<[u8; 4]>(),
            fport in any::<u16>(), bport in any::<u16>(), n in 1usize..64,
            client6 in any::<[u8; 16]>(),
        ) {
            for c in [IpAddr::from(client), IpAddr::from(client6)] {
                let (f, b) = if c.is_ipv4() {
                    (IpAddr::from(frontend), IpAddr::from(backend))
                } else {
                    (IpAddr::from(client6.map(|x| x ^ 1)), IpAddr::from(client6.map(|x| x ^ 2)))
                };
                let fwd = FlowKey::new(c, f, cport, fport, 6);
                let reply = FlowKey::new(b, c, bport, cport, 6);
                let o = owner_worker(fwd.src_ip(), fwd.src_port, n);
                prop_assert!(o < n);
                prop_assert_eq!(o, owner_worker(reply.dst_ip(), reply.dst_port, n));
            }
        }
    }
}
