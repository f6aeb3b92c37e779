//! The DPDK boundary: generated bindings (`ffi`) and the safe types kubypass uses over
//! them: [`Eal`], [`Mempool`], [`Mbuf`], [`Port`] with its [`RxQueue`]/[`TxQueue`], and
//! lcore launch. Nothing outside this module calls DPDK. It also holds the memory hints
//! the hot path relies on (`memory`: the prefetch, which needs `unsafe` too, and the
//! check that the worker tables get huge pages).
// This is the one module allowed to use `unsafe` (the crate denies it everywhere else):
// every FFI call lives here, each block with a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod eal;
pub mod ffi;
mod lcore;
mod mbuf;
mod memory;
mod mempool;
mod port;

pub use eal::{tsc_hz, tsc_now, Eal};
pub use lcore::{launch, LaunchedLcore};
pub use mbuf::tx_flags;
pub use mbuf::{Mbuf, MbufBurst, BURST_SIZE};
pub use memory::{huge_page_warning, prefetch, THP_SETTING};
pub use mempool::Mempool;
pub use port::{ChecksumCaps, LinkStatus, Port, PortInfo, PortStats, RxQueue, TxOutcome, TxQueue};

use std::ffi::CStr;

/// A failed DPDK call: what was attempted, and DPDK's own explanation.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Error {
    /// The operation that failed, e.g. "rte_eth_dev_configure(port 0)".
    pub what: String,
    /// `rte_strerror` of the error code.
    pub reason: String,
    /// The error code (positive errno or DPDK's own `E_RTE_*`).
    pub code: i32,
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error for `what` from DPDK's thread-local `rte_errno`.
    pub(crate) fn from_errno(what: impl Into<String>) -> Self {
        // SAFETY: reads the calling thread's rte_errno through the C accessor; no
        // preconditions.
        let code = unsafe { ffi::kubypass_rte_errno() };
        Self::from_code(what, code)
    }

    /// An error for `what` from a returned error code (negative or positive errno).
    pub(crate) fn from_code(what: impl Into<String>, code: i32) -> Self {
        let code = code.saturating_abs();
        Self {
            what: what.into(),
            reason: strerror(code),
            code,
        }
    }
}

/// DPDK's message for an error code.
fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a NUL-terminated
    // string that stays valid at least until the next call on this thread; it is copied
    // at once.
    let ptr = unsafe { ffi::rte_strerror(code) };
    if ptr.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null pointer to a NUL-terminated string (see above).
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The directory holding this DPDK's PMD plugins, found at build time (empty if unknown).
pub const BUILD_PMD_DIR: &str = env!("KUBYPASS_DPDK_PMD_DIR");
