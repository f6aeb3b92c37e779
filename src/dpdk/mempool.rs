//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use super::{ffi, Eal, Error, Mbuf, Result};
use std::ffi::CString;
use std::ptr::NonNull;

/// A pool of packet buffers with a per-lcore cache. Freed on drop, which must come after
/// every port using it has been closed.
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
    size: u32,
}

// SAFETY: an rte_mempool is built for concurrent use from many lcores (ring + per-lcore
// caches); the handle is a pointer that stays valid until drop.
unsafe impl Send for Mempool {}
// SAFETY: see Send; the only &self operations are thread-safe DPDK calls.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with `cache` per lcore and `data_room` bytes each
    /// (headroom included).
    pub fn new(
        _eal: &Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| Error {
            what: "rte_pktmbuf_pool_create".into(),
            reason: "pool name contains a NUL byte".into(),
            code: libc::EINVAL,
        })?;
        // SAFETY: EAL initialised (witnessed by `_eal`); cname is a valid C string.
        let ptr = unsafe {
            ffi::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::from_errno(format!(
                "rte_pktmbuf_pool_create({name}, {size} mbufs, cache {cache})"
            ))
        })?;
        Ok(Mempool { ptr, size })
    }

    /// The raw pool, for port queue set-up.
    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs free in the pool (ring and lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool pointer; the count is a racy-but-safe read by design.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as in `available`.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Takes one mbuf (empty frame), or `None` if the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: valid pool; a non-null result is an mbuf we now own.
        let m = unsafe { ffi::rte_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: freshly allocated, single owner.
        NonNull::new(m).map(|p| unsafe { Mbuf::from_raw(p) })
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // An mbuf still out would be freed into released memory later: leak the pool
        // instead (only happens if ports or mbufs outlive it, which `run` never does).
        if self.in_use() != 0 {
            return;
        }
        // SAFETY: every mbuf is back (in_use 0) and ports using the pool were closed
        // before it is dropped, so nothing refers to the pool any more.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
