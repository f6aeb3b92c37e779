//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.
//!
//! PLACEHOLDER: the interface is fixed; the lb work item replaces the body with the real
//! permutation-filling algorithm and its property tests.

/// One backend as Maglev sees it: a stable identity hash and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// A hash of the backend's identity (address, port) under the table seed: the same in
    /// every process, so every appliance fills the same lookup table.
    pub id: u64,
    /// Relative weight; 0 means the backend gets no slots.
    pub weight: u32,
}

/// A Maglev lookup table: `slots[hash % len]` is an index into the backend list it was
/// built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u32]>,
}

impl Maglev {
    /// Builds the lookup table for `backends` (index order is the index space returned by
    /// [`Maglev::lookup`]).
    pub fn new(backends: &[MaglevBackend]) -> Self {
        let n = backends.iter().filter(|b| b.weight > 0).count();
        if n == 0 {
            return Maglev {
                slots: Box::new([]),
            };
        }
        let live: Vec<u32> = (0..backends.len() as u32)
            .filter(|&i| backends[i as usize].weight > 0)
            .collect();
        Maglev {
            slots: live.into_boxed_slice(),
        }
    }

    /// The backend index for a flow hash, or `None` when the table has no backend.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[(hash % self.slots.len() as u64) as usize])
    }

    /// Number of slots in the lookup table (a prime ≥ 100 × backends once built).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slot (no usable backend).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
