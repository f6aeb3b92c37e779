//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights: the lookup table
//! that maps a flow hash to a backend of one service, the same in every process that
//! builds it from the same backend identities.
//!
//! Table size. A prime from a fixed ladder ([`TABLE_SIZES`]): the smallest one that is at
//! least 100 × the number of backends with weight > 0 (minimum 251, capped at 131,071).
//! A ladder rather than "the smallest prime ≥ 100·N" because Maglev's low disruption only
//! holds when the table size stays the same: with a ladder, adding or removing one backend
//! keeps the size (and so moves ~1/N of the slots, plus Maglev's extra reshuffle, see the
//! `disruption` test) except when N crosses a rung, where the whole table is redrawn.
//! Rungs are ~2× apart, so a table has between 100·N and ~200·N slots and a ±1 change
//! crosses a rung with probability ≈ 1/(0.7·N) (1.4 % at N = 100). Finer rungs (~12 %
//! apart) were measured: they make large tables up to 1.8× smaller and their fill that
//! much cheaper, but a ±1 change then redraws the whole table with probability ≈
//! 1/(0.12·N) (8 % at N = 100), and at a size closer to 100·N even a change that keeps
//! the size moves more keys (see the `disruption` test). Consistency was preferred.
//!
//! Fill. NSDI 2016's Pseudocode 1: backends take turns, each taking the first free slot of
//! its permutation `offset + k·skip mod M`. Two shortcuts give the same table: with equal
//! weights the turns need no credits, and once at most √M/2 slots are free a turn picks,
//! among those, the one earliest in its permutation (its rank `(slot − offset)·skip⁻¹ mod
//! M`) instead of walking past ~M/free taken slots. Slots are 16 bits wide while backend
//! indexes fit. Measured and left out (no faster, mostly slower, on 1,021- and
//! 32,749-slot tables): walking a taken-slot bitmap instead of the slots; testing 2–8
//! permutation entries at once without a branch each, in every phase of the fill or in
//! one; walking 2–8 turns in lock-step; a rank pick in small tables. A walk step costs
//! ~3 cycles (the `pos + skip mod M` chain, a conditional move); half the time goes to
//! the first 75 % of the slots, where whether a slot is free is a coin toss.
//!
//! Weights. The fill proceeds in rounds; in each round every backend earns `weight`
//! credits and takes one turn (one slot, by its permutation) per `max_weight` credits it
//! holds. The heaviest backend takes a turn every round; a backend of half its weight
//! every other round. Slot shares are therefore proportional to weight up to ±1 slot.

use std::sync::Arc;

/// One backend as Maglev sees it: a stable identity hash and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// A hash of the backend's identity (address, port) under the table seed: the same in
    /// every process, so every appliance fills the same lookup table.
    pub id: u64,
    /// Relative weight; 0 means the backend gets no slots.
    pub weight: u32,
}

/// The table sizes Maglev chooses from: primes roughly doubling, each ≥ 100 × the backend
/// counts it serves, capped at 131,071.
pub const TABLE_SIZES: [u32; 10] = [
    251, 509, 1_021, 2_039, 4_093, 8_191, 16_381, 32_749, 65_521, 131_071,
];

/// Slots per backend the size is chosen for (at least).
pub const SLOTS_PER_BACKEND: u32 = 100;

/// A Maglev lookup table: slot `fastrange(hash, len)` holds an index into the backend list
/// it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    slots: Slots,
}

/// The slot array, 16 bits a slot when every backend index fits (half the memory and
/// cache footprint of 32 bits), 32 bits otherwise. Shared by reference count: a Service
/// whose backends did not change keeps its table from one `ServiceTable` to the next, and
/// holds the `Maglev` itself, so a lookup goes from the Service straight to its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slots {
    Narrow(Arc<[u16]>),
    Wide(Arc<[u32]>),
}

/// The table size for `n` backends of weight > 0 (0 when `n == 0`).
pub fn table_size(n: usize) -> u32 {
    if n == 0 {
        return 0;
    }
    let want = (n as u64).saturating_mul(u64::from(SLOTS_PER_BACKEND));
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| u64::from(m) >= want)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

impl Maglev {
    /// Builds the lookup table for `backends` (index order is the index space returned by
    /// [`Maglev::lookup`]), with the size [`table_size`] gives for the backends of weight
    /// > 0. Backends of weight 0 get no slot.
    pub fn new(backends: &[MaglevBackend]) -> Self {
        let n = backends.iter().filter(|b| b.weight > 0).count();
        Self::with_size(backends, table_size(n))
    }

    /// Builds the lookup table with exactly `size` slots (a prime, for the permutations to
    /// cover every slot; a non-prime size is rounded up to the next prime). Empty when no
    /// backend has weight > 0 or `size` is 0.
    pub fn with_size(backends: &[MaglevBackend], size: u32) -> Self {
        let live = backends.iter().filter(|b| b.weight > 0).count();
        if live == 0 || size == 0 || backends.len() > u32::MAX as usize {
            return Maglev {
                slots: Slots::Narrow(Arc::new([])),
            };
        }
        let m = next_prime(size.max(2));
        let slots = if backends.len() < usize::from(u16::MAX) {
            Slots::Narrow(Arc::from(fill::<u16>(backends, m)))
        } else {
            Slots::Wide(Arc::from(fill::<u32>(backends, m)))
        };
        Maglev { slots }
    }

    /// The backend index for a flow hash, or `None` when the table has no backend.
    /// The slot is `(hash × len) >> 64` (Lemire's fast range: a multiply, not a division),
    /// so it is the high bits of a well-mixed hash that choose.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        let at = |len: usize| ((u128::from(hash) * len as u128) >> 64) as usize;
        match &self.slots {
            Slots::Narrow(s) => s.get(at(s.len())).map(|&i| u32::from(i)),
            Slots::Wide(s) => s.get(at(s.len())).copied(),
        }
    }

    /// The address of the slot [`Maglev::lookup`] reads for `hash`, for a caller that
    /// prefetches it (`None` when the table is empty).
    #[inline]
    pub fn slot_addr(&self, hash: u64) -> Option<*const u8> {
        let at = |len: usize| ((u128::from(hash) * len as u128) >> 64) as usize;
        match &self.slots {
            Slots::Narrow(s) => s.get(at(s.len())).map(|x| (x as *const u16).cast()),
            Slots::Wide(s) => s.get(at(s.len())).map(|x| (x as *const u32).cast()),
        }
    }

    /// Number of slots in the lookup table (a prime ≥ 100 × backends, see [`table_size`]).
    pub fn len(&self) -> usize {
        match &self.slots {
            Slots::Narrow(s) => s.len(),
            Slots::Wide(s) => s.len(),
        }
    }

    /// Whether `other` is this very table (a clone of it), not only an equal one: how a
    /// reused table is told from a rebuilt one.
    pub fn shares_slots(&self, other: &Maglev) -> bool {
        match (&self.slots, &other.slots) {
            (Slots::Narrow(a), Slots::Narrow(b)) => Arc::ptr_eq(a, b),
            (Slots::Wide(a), Slots::Wide(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Whether the table has no slot (no usable backend).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend index in slot `i`, for tests and status.
    pub fn slot(&self, i: usize) -> Option<u32> {
        match &self.slots {
            Slots::Narrow(s) => s.get(i).map(|&x| u32::from(x)),
            Slots::Wide(s) => s.get(i).copied(),
        }
    }

    /// The slots in order: backend indexes, for tests and status.
    pub fn slots(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        (0..self.len()).map(|i| self.slot(i).unwrap_or(u32::MAX))
    }
}

/// A slot entry: a backend index, with the all-ones value marking a free slot.
trait SlotIndex: Copy + Eq {
    const FREE: Self;
    /// `i`, which the caller keeps below `FREE`.
    fn from_index(i: u32) -> Self;
}

impl SlotIndex for u16 {
    const FREE: Self = u16::MAX;
    #[inline]
    fn from_index(i: u32) -> Self {
        i as u16
    }
}

impl SlotIndex for u32 {
    const FREE: Self = u32::MAX;
    #[inline]
    fn from_index(i: u32) -> Self {
        i
    }
}

/// One backend's walk through its permutation `offset + k·skip mod m`.
struct Cursor {
    index: u32,
    offset: u32,
    /// The next permutation entry to try.
    pos: u32,
    skip: u32,
    /// `m - skip`: `pos + skip mod m` is `pos - wrap` when `pos >= wrap`.
    wrap: u32,

    /// `skip⁻¹ mod m` once the tail needs it (0: not yet computed).
    inverse: u32,
    weight: u64,
    credit: u64,
}

/// Remaining free slots at or below which a turn stops walking its permutation and instead
/// picks, among the free slots left, the one earliest in its permutation (the same slot a
/// walk would reach): a walk then costs ~m/free probes, the pick `free` cheap steps, so the
/// switch pays from about √m/2 free slots on (measured), and not at all in small tables.
fn tail_threshold(m: u32) -> u32 {
    if m < 2_048 {
        0
    } else {
        (f64::from(m).sqrt() / 2.0) as u32
    }
}

/// Fills a table of `m` slots (a prime) by Maglev's rule: backends take turns (weighted as
/// the module doc says), each taking the first free slot of its permutation.
fn fill<S: SlotIndex>(backends: &[MaglevBackend], m: u32) -> Box<[S]> {
    let mut cursors: Vec<Cursor> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .map(|(i, b)| {
            // Two independent words of the (already mixed) identity, remixed so that
            // offset and skip are uncorrelated.
            let h1 = crate::hash::mix64(b.id ^ 0x6d61_676c_6576_6f66);
            let h2 = crate::hash::mix64(b.id.rotate_left(32) ^ 0x736b_6970_7365_6564);
            let offset = (h1 % u64::from(m)) as u32;
            let skip = (h2 % u64::from(m - 1)) as u32 + 1;
            Cursor {
                index: i as u32,
                offset,
                pos: offset,
                skip,
                wrap: m - skip,
                inverse: 0,
                weight: u64::from(b.weight),
                credit: 0,
            }
        })
        .collect();
    let mut table = Table {
        slots: vec![S::FREE; m as usize].into_boxed_slice(),
        m,
        free: m,
        tail_at: tail_threshold(m),
        tail: Vec::new(),
    };
    let max_weight = cursors.iter().map(|c| c.weight).max().unwrap_or(1);
    let mut turns = Turns {
        at: cursors.len(),
        equal: cursors.iter().all(|c| c.weight == max_weight),
        max_weight,
    };
    while table.free > table.tail_at {
        let Some(c) = turns.next(&mut cursors) else {
            break;
        };
        let taken = walk(&table.slots, c);
        table.set(taken, c.index);
    }
    while table.free > 0 {
        let Some(c) = turns.next(&mut cursors) else {
            break;
        };
        let taken = match table.pick(c) {
            Some(slot) => slot,
            None => walk(&table.slots, c),
        };
        table.set(taken, c.index);
    }
    table.slots
}

/// The order backends take turns in: rounds over the backends; with equal weights every
/// backend takes a turn every round, otherwise each earns `weight` credits a round and
/// takes a turn per `max_weight` credits.
struct Turns {
    /// The cursor that took the last turn (`len` before the first).
    at: usize,
    equal: bool,
    max_weight: u64,
}

impl Turns {
    /// The cursor whose turn is next (`None` only for an empty list).
    #[inline]
    fn next<'c>(&mut self, cursors: &'c mut [Cursor]) -> Option<&'c mut Cursor> {
        let n = cursors.len();
        if !self.equal {
            // Some backend has the largest weight, so this ends within a round.
            for _ in 0..n {
                self.at = if self.at + 1 >= n { 0 } else { self.at + 1 };
                let c = cursors.get_mut(self.at)?;
                c.credit += c.weight;
                if c.credit >= self.max_weight {
                    c.credit -= self.max_weight;
                    break;
                }
            }
        } else {
            self.at = if self.at + 1 >= n { 0 } else { self.at + 1 };
        }
        cursors.get_mut(self.at)
    }
}

/// Walks `c`'s permutation to its next free slot and returns it. Positions stay below `m`
/// (see [`advance`]); a prime `m` makes the walk visit every slot, and the caller only
/// walks while some slot is free.
#[inline(always)]
fn walk<S: SlotIndex>(slots: &[S], c: &mut Cursor) -> u32 {
    let mut pos = c.pos;
    loop {
        let here = pos;
        pos = advance(pos, c.skip, c.wrap);
        if slots.get(here as usize) == Some(&S::FREE) {
            c.pos = pos;
            return here;
        }
    }
}

/// `pos + step mod m` for `pos < m`, `step < m`, given `wrap = m - step`.
#[inline(always)]
fn advance(pos: u32, step: u32, wrap: u32) -> u32 {
    if pos >= wrap {
        pos - wrap
    } else {
        pos + step
    }
}

/// A table being filled.
struct Table<S> {
    slots: Box<[S]>,
    m: u32,
    /// Free slots left.
    free: u32,
    /// [`tail_threshold`] of `m`.
    tail_at: u32,
    /// The free slots, once `free <= tail_at` (in no particular order).
    tail: Vec<u32>,
}

impl<S: SlotIndex> Table<S> {
    /// Gives slot `taken` to backend `index`.
    #[inline(always)]
    fn set(&mut self, taken: u32, index: u32) {
        if let Some(slot) = self.slots.get_mut(taken as usize) {
            *slot = S::from_index(index);
        }
        self.free -= 1;
    }

    /// The free slot that comes first in `c`'s permutation: the one of least rank
    /// `(slot - offset) · skip⁻¹ mod m` (every slot before `c.pos` in the permutation is
    /// taken, so that is where the walk would stop).
    /// `None` only if no slot is free (the caller stops before that).
    fn pick(&mut self, c: &mut Cursor) -> Option<u32> {
        let m = self.m;
        if self.tail.is_empty() {
            self.tail = (0..m)
                .filter(|&i| self.slots.get(i as usize) == Some(&S::FREE))
                .collect();
        }
        if c.inverse == 0 {
            c.inverse = inverse_mod(c.skip, m);
        }
        let (offset, inverse) = (u64::from(c.offset), u64::from(c.inverse));
        let (m64, per_m) = (u64::from(m), 1.0 / f64::from(m));
        let mut best = (u64::MAX, 0usize);
        for (at, &slot) in self.tail.iter().enumerate() {
            let slot = u64::from(slot);
            let d = if slot >= offset {
                slot - offset
            } else {
                slot + m64 - offset
            };
            let rank = mul_mod(d, inverse, m64, per_m);
            if rank < best.0 {
                best = (rank, at);
            }
        }
        (best.1 < self.tail.len()).then(|| self.tail.swap_remove(best.1))
    }
}

/// `a · b mod m` for `a, b < m ≤ 2^26` without a division: `a · b` is exact in an `f64`,
/// the quotient estimated from it is off by at most one, and the remainder is corrected.
#[inline]
fn mul_mod(a: u64, b: u64, m: u64, per_m: f64) -> u64 {
    let x = a * b;
    let q = ((x as f64) * per_m) as u64;
    let r = x.wrapping_sub(q.wrapping_mul(m)) as i64;
    if r < 0 {
        (r + m as i64) as u64
    } else if r as u64 >= m {
        r as u64 - m
    } else {
        r as u64
    }
}

/// `a⁻¹ mod m` for `0 < a < m`, `m` prime: `a^(m-2) mod m` (Fermat), by squaring with
/// [`mul_mod`] (no division on the way).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (m64, per_m) = (u64::from(m), 1.0 / f64::from(m));
    let (mut base, mut exp, mut acc) = (u64::from(a), m.saturating_sub(2), 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m64, per_m);
        }
        base = mul_mod(base, base, m64, per_m);
        exp >>= 1;
    }
    acc as u32
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while d.saturating_mul(d) <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(mut n: u32) -> u32 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_words;
    use proptest::prelude::*;

    fn backends(ids: &[u64], weight: u32) -> Vec<MaglevBackend> {
        ids.iter()
            .map(|&i| MaglevBackend {
                id: hash_words(42, &[i]),
                weight,
            })
            .collect()
    }

    fn counts(t: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for s in t.slots() {
            c[s as usize] += 1;
        }
        c
    }

    /// The fill as NSDI 2016's Pseudocode 1 writes it, with the weighted turns of the
    /// module doc and no shortcut: every turn walks its permutation to a free slot.
    fn textbook(backends: &[MaglevBackend], m: u32) -> Vec<u32> {
        let mut walks: Vec<(u32, u64, u64, u64, u64)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.weight > 0)
            .map(|(i, b)| {
                let h1 = crate::hash::mix64(b.id ^ 0x6d61_676c_6576_6f66);
                let h2 = crate::hash::mix64(b.id.rotate_left(32) ^ 0x736b_6970_7365_6564);
                let (offset, skip) = (h1 % u64::from(m), h2 % u64::from(m - 1) + 1);
                (i as u32, offset, skip, u64::from(b.weight), 0)
            })
            .collect();
        let max_weight = walks.iter().map(|w| w.3).max().unwrap();
        let mut next = vec![0u64; walks.len()];
        let mut entry = vec![u32::MAX; m as usize];
        let mut filled = 0;
        'fill: loop {
            for (j, (index, offset, skip, weight, credit)) in walks.iter_mut().enumerate() {
                *credit += *weight;
                if *credit < max_weight {
                    continue;
                }
                *credit -= max_weight;
                let mut c = ((*offset + next[j] * *skip) % u64::from(m)) as usize;
                while entry[c] != u32::MAX {
                    next[j] += 1;
                    c = ((*offset + next[j] * *skip) % u64::from(m)) as usize;
                }
                entry[c] = *index;
                next[j] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        entry
    }

    #[test]
    fn modular_inverse_and_product() {
        for &m in &TABLE_SIZES {
            for a in [1, 2, 3, 1_000, m / 2, m - 2, m - 1] {
                let inv = inverse_mod(a, m);
                let (m64, per_m) = (u64::from(m), 1.0 / f64::from(m));
                assert_eq!(
                    mul_mod(u64::from(a), u64::from(inv), m64, per_m),
                    1,
                    "{a} mod {m}"
                );
                assert_eq!((u64::from(a) * u64::from(inv)) % m64, 1);
            }
        }
    }

    #[test]
    fn wide_slots_when_indexes_exceed_16_bits() {
        let b = backends(&(0..70_000).collect::<Vec<u64>>(), 1);
        let t = Maglev::with_size(&b, 131_071);
        assert_eq!(t.len(), 131_071);
        assert!(matches!(t.slots, Slots::Wide(_)));
        assert!(t.slots().any(|s| s >= 65_535));
        assert!(t.slots().eq(textbook(&b, 131_071)));
        let narrow = Maglev::with_size(&b[..65_534], 131_071);
        assert!(matches!(narrow.slots, Slots::Narrow(_)));
        assert!(narrow.slots().eq(textbook(&b[..65_534], 131_071)));
    }

    #[test]
    fn ladder_is_prime_and_sizes_follow_backend_count() {
        for &m in &TABLE_SIZES {
            assert!(is_prime(m), "{m}");
        }
        assert_eq!(table_size(0), 0);
        assert_eq!(table_size(1), 251);
        assert_eq!(table_size(2), 251);
        assert_eq!(table_size(3), 509);
        assert_eq!(table_size(10), 1_021);
        assert_eq!(table_size(41), 8_191);
        assert_eq!(table_size(250), 32_749);
        assert_eq!(table_size(1_310), 131_071);
        assert_eq!(table_size(100_000), 131_071);
        for n in 1..1_310 {
            assert!(table_size(n) as usize >= 100 * n);
        }
        // Rungs about 2× apart: a table has fewer than ~200·N slots.
        for n in 3..1_310 {
            assert!((table_size(n) as usize) < 205 * n, "{n}");
        }
    }

    #[test]
    fn empty_and_zero_weight() {
        let t = Maglev::new(&[]);
        assert!(t.is_empty());
        assert_eq!(t.lookup(7), None);
        let mut b = backends(&[1, 2, 3], 1);
        b[1].weight = 0;
        let t = Maglev::new(&b);
        assert_eq!(t.len(), 251);
        assert!(t.slots().all(|s| s == 0 || s == 2));
        b.iter_mut().for_each(|b| b.weight = 0);
        assert!(Maglev::new(&b).is_empty());
    }

    #[test]
    fn every_slot_filled_and_lookup_covers_the_range() {
        let t = Maglev::new(&backends(&[1, 2, 3, 4, 5], 1));
        assert_eq!(t.len(), 509);
        assert!(t.slots().all(|s| s < 5));
        assert_eq!(t.lookup(0), t.slot(0));
        assert_eq!(t.lookup(u64::MAX), t.slot(508));
        assert_eq!(t.slot(509), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Equal weights: max/min slots per backend ≤ 1.1 (M ≥ 100·N).
        #[test]
        fn balance(n in 1usize..200, seed in any::<u64>()) {
            let ids: Vec<u64> = (0..n as u64).map(|i| i ^ seed).collect();
            let t = Maglev::new(&backends(&ids, 1));
            prop_assert!(t.len() >= 100 * n);
            let c = counts(&t, n);
            let (min, max) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
            prop_assert!(min > 0);
            prop_assert!(max as f64 / min as f64 <= 1.1, "{min}..{max}");
        }

        /// Weights: each backend's share of slots is its share of the total weight,
        /// within 2 slots plus 5 % of its expected count.
        #[test]
        fn weights_honoured(weights in prop::collection::vec(1u32..8, 1..40), seed in any::<u64>()) {
            let b: Vec<MaglevBackend> = weights.iter().enumerate()
                .map(|(i, &w)| MaglevBackend { id: hash_words(seed, &[i as u64]), weight: w })
                .collect();
            let t = Maglev::new(&b);
            let c = counts(&t, b.len());
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            for (i, &w) in weights.iter().enumerate() {
                let expect = t.len() as f64 * f64::from(w) / total as f64;
                let err = (c[i] as f64 - expect).abs();
                prop_assert!(err <= 2.0 + 0.05 * expect, "backend {i} w {w}: {} vs {expect}", c[i]);
            }
        }

        /// Disruption: removing one of N backends at an unchanged table size. Measured:
        /// the fraction of all slots whose backend identity differs between the two
        /// tables, *including* the slots the removed backend held (ideal: 1/N).
        /// Maglev's extra movement grows with N at a given slots-per-backend ratio, and
        /// shrinks as that ratio grows: roughly 1/N plus 1.5–2.5 % of all keys. Measured
        /// (40 trials each, worst/mean in units of 1/N, this ladder): N=5 (101·N slots)
        /// 1.21/1.10, N=12 (169·N) 2.05/1.24, N=30 (136·N) 1.72/1.57, N=45 (182·N)
        /// 1.79/1.65, N=60 (136·N) 2.20/1.99, N=81 (101·N) 2.63/2.42, N=99 (165·N)
        /// 2.91/2.32; beyond the tested range N=150 (109·N) 3.57/3.34, N=250 (130·N)
        /// 4.76/4.18. The worst a random search found below N=100 is 3.45/N (N=80, 101·N).
        /// A ~12 % ladder (tables of 100–113·N) measured worse: N=99 3.11/2.57, N=250
        /// 4.97/4.54. The bound asserted is (2 + N/40)/N (and ≥ the removed backend's
        /// share): a guard against regressions, not the 1.2/N, which Maglev does
        /// not reach at these sizes.
        #[test]
        fn disruption(n in 2usize..100, removed in any::<prop::sample::Index>(), seed in any::<u64>()) {
            let ids: Vec<u64> = (0..n as u64).map(|i| i.wrapping_add(seed)).collect();
            let before_b = backends(&ids, 1);
            let gone = removed.index(n);
            let mut after_b = before_b.clone();
            after_b.remove(gone);
            let m = table_size(n);
            let before = Maglev::with_size(&before_b, m);
            let after = Maglev::with_size(&after_b, m);
            let changed = before.slots().zip(after.slots())
                .filter(|&(a, b)| before_b[a as usize].id != after_b[b as usize].id)
                .count();
            let frac = changed as f64 / m as f64;
            let bound = (2.0 + n as f64 / 40.0) / n as f64;
            prop_assert!(frac <= bound, "n={n}: {changed}/{m} = {frac}");
            let held = before.slots().filter(|&a| a as usize == gone).count();
            prop_assert!(changed >= held);
        }

        /// The table is the textbook fill's, slot for slot, with or without weights, in
        /// small tables and in large ones (where the last free slots are picked by rank).
        #[test]
        fn same_as_textbook(
            weights in prop::collection::vec(1u32..4, 1..300),
            equal in any::<bool>(),
            rung in 0usize..8,
            seed in any::<u64>(),
        ) {
            let b: Vec<MaglevBackend> = weights.iter().enumerate()
                .map(|(i, &w)| MaglevBackend {
                    id: hash_words(seed, &[i as u64]),
                    weight: if equal { 1 } else { w },
                })
                .collect();
            let m = TABLE_SIZES[rung];
            let t = Maglev::with_size(&b, m);
            prop_assert!(t.slots().eq(textbook(&b, m)));
        }

        /// Same input, same table (backend order is canonical in the `ServiceTable`).
        #[test]
        fn deterministic(n in 1usize..50, seed in any::<u64>()) {
            let ids: Vec<u64> = (0..n as u64).map(|i| i ^ seed).collect();
            prop_assert_eq!(Maglev::new(&backends(&ids, 1)), Maglev::new(&backends(&ids, 1)));
        }
    }
}
