//! Deterministic hashing: the same input hashes to the same value in every process, so
//! that appliances behind ECMP (and the workers of one appliance) agree on backend
//! selection and flow ownership without sharing state. `std`'s `RandomState` is seeded
//! per process and is therefore never used on the per-packet path.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// A `HashMap` keyed with [`FastHasher`]: deterministic, and a few cycles per key.
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A `HashSet` keyed with [`FastHasher`].
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// A multiply-rotate hasher in the style of rustc's FxHasher, finished with a 64-bit
/// mixer so that low bits (used as bucket indexes) depend on every input bit.
/// Not collision-resistant against an adversary choosing keys; the tables that take
/// attacker-chosen keys (connection tracking) are bounded and evict, so a flood of
/// colliding keys costs capacity, not time.
#[derive(Clone, Copy, Default)]
pub struct FastHasher {
    state: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        mix64(self.state)
    }
}

/// The 64-bit finaliser of MurmurHash3 (fmix64): a bijection whose output bits each depend
/// on every input bit.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Folds an address into 64 bits (IPv4 and IPv6 never collide by construction of the tag).
#[inline]
pub fn addr_word(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => u64::from(u32::from(a)) | (4 << 56),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            mix64(v as u64) ^ (v >> 64) as u64
        }
    }
}

/// A seeded hash of a sequence of 64-bit words: the building block of flow hashes and
/// backend identities. Equal seeds and words give equal hashes in every process.
#[inline]
pub fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = mix64(seed ^ MULTIPLIER);
    for &w in words {
        h = mix64(h ^ w).wrapping_add(MULTIPLIER);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn deterministic_across_hasher_instances() {
        let b = BuildHasherDefault::<FastHasher>::default();
        let key = ("10.0.0.1".parse::<IpAddr>().unwrap(), 80u16);
        let one = b.hash_one(key);
        let two = BuildHasherDefault::<FastHasher>::default().hash_one(key);
        assert_eq!(one, two);
        assert_eq!(hash_words(1, &[2, 3]), hash_words(1, &[2, 3]));
        assert_ne!(hash_words(1, &[2, 3]), hash_words(2, &[2, 3]));
        assert_ne!(hash_words(1, &[2, 3]), hash_words(1, &[3, 2]));
    }

    #[test]
    fn v4_and_v6_words_differ() {
        let v4: IpAddr = "1.2.3.4".parse().unwrap();
        let v6: IpAddr = "::102:304".parse().unwrap();
        assert_ne!(addr_word(v4), addr_word(v6));
    }
}
