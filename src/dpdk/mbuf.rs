//! Owned packet buffers ([`Mbuf`]) and fixed-size bursts of them ([`MbufBurst`]).

use super::ffi;
use std::ptr::NonNull;

/// Frames per rx/tx burst.
pub const BURST_SIZE: usize = 32;

/// The tx offload request flags (`RTE_MBUF_F_TX_*`) kubypass sets with
/// [`Mbuf::set_ol_flags`] to leave checksums to the NIC.
pub mod tx_flags {
    use super::ffi;

    /// The packet is IPv4 (`RTE_MBUF_F_TX_IPV4`).
    pub const IPV4: u64 = ffi::RTE_MBUF_F_TX_IPV4;
    /// The packet is IPv6 (`RTE_MBUF_F_TX_IPV6`).
    pub const IPV6: u64 = ffi::RTE_MBUF_F_TX_IPV6;
    /// Compute the IPv4 header checksum (`RTE_MBUF_F_TX_IP_CKSUM`).
    pub const IP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_IP_CKSUM;
    /// Compute the TCP checksum (`RTE_MBUF_F_TX_TCP_CKSUM`).
    pub const TCP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_TCP_CKSUM;
    /// Compute the UDP checksum (`RTE_MBUF_F_TX_UDP_CKSUM`).
    pub const UDP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_UDP_CKSUM;
    /// Compute the SCTP CRC32c (`RTE_MBUF_F_TX_SCTP_CKSUM`).
    pub const SCTP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_SCTP_CKSUM;
    /// The two bits that name the transport checksum (`RTE_MBUF_F_TX_L4_MASK`).
    pub const L4_MASK: u64 = ffi::RTE_MBUF_F_TX_L4_MASK;
}

/// One owned packet buffer. Single owner: it is transmitted (ownership passes to the
/// PMD) or freed on drop, exactly once.
pub struct Mbuf {
    ptr: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an mbuf has one owner at a time; moving that ownership to another thread is
// how DPDK hands packets between lcores (rings). Freeing from any lcore is allowed.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf that nobody else owns or will free.
    pub(crate) unsafe fn from_raw(ptr: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Gives up ownership without freeing.
    pub(crate) fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    fn raw(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf; shared borrow tied to &self.
        unsafe { self.ptr.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf; exclusive borrow tied to &mut self.
        unsafe { self.ptr.as_mut() }
    }

    /// Length of the frame in this (first) segment.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.raw().data_len)
    }

    /// Whether the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the frame spans more than one segment (kubypass handles single-segment
    /// frames only).
    #[inline]
    pub fn is_segmented(&self) -> bool {
        // nb_segs (first cache line) says it; `next` lives on the second cache line and
        // is null whenever nb_segs is 1, so it is not read on this per-frame path.
        self.raw().nb_segs != 1
    }

    /// The port the frame was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Bytes from the frame's start to the end of the buffer (frame + tailroom).
    #[inline]
    pub fn capacity(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len.saturating_sub(m.data_off))
    }

    /// The frame (first segment).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        let len = usize::from(m.data_len).min(self.capacity());
        // SAFETY: buf_addr + data_off is the frame start (rte_pktmbuf_mtod); the buffer
        // holds buf_len bytes, so data_off + len <= buf_len is inside it. Borrow of self.
        unsafe {
            std::slice::from_raw_parts(m.buf_addr.cast::<u8>().add(usize::from(m.data_off)), len)
        }
    }

    /// The writable area from the frame's start to the end of the buffer: the frame
    /// (`..len()`) followed by tailroom.
    #[inline]
    pub fn frame_and_tailroom(&mut self) -> &mut [u8] {
        let cap = self.capacity();
        let m = self.raw_mut();
        // SAFETY: [data_off, buf_len) lies inside the mbuf's buffer, which we own
        // exclusively (&mut self, refcnt 1 for mbufs from rx or alloc).
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                cap,
            )
        }
    }

    /// Sets the frame length (data_len and pkt_len together). Fails, changing nothing,
    /// if `len` exceeds [`capacity`](Self::capacity) or the frame is segmented.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), usize> {
        if len > self.capacity() || self.is_segmented() {
            return Err(len);
        }
        let Ok(len16) = u16::try_from(len) else {
            return Err(len);
        };
        let m = self.raw_mut();
        m.data_len = len16;
        m.pkt_len = u32::from(len16);
        Ok(())
    }

    /// Replaces the frame with `bytes`. Fails if they do not fit.
    pub fn write_frame(&mut self, bytes: &[u8]) -> Result<(), usize> {
        let buf = self.frame_and_tailroom();
        let Some(dst) = buf.get_mut(..bytes.len()) else {
            return Err(bytes.len());
        };
        dst.copy_from_slice(bytes);
        self.set_len(bytes.len())
    }

    /// The offload flags (`RTE_MBUF_F_*`).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.raw().ol_flags
    }

    /// Replaces the offload flags.
    #[inline]
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.raw_mut().ol_flags = flags;
    }

    /// Sets the header lengths that tx checksum/segmentation offloads read.
    #[inline]
    pub fn set_tx_header_lens(&mut self, l2: u16, l3: u16, l4: u16) {
        // SAFETY: valid mbuf we own exclusively; the C helper writes its bitfields.
        unsafe { ffi::kubypass_mbuf_set_tx_lens(self.ptr.as_ptr(), l2, l3, l4) }
    }

    /// The (l2, l3) header lengths for tx offloads.
    #[inline]
    pub fn tx_header_lens(&self) -> (u16, u16) {
        let p = self.ptr.as_ptr();
        // SAFETY: valid mbuf; read-only helpers.
        unsafe { (ffi::kubypass_mbuf_l2_len(p), ffi::kubypass_mbuf_l3_len(p)) }
    }

    /// The NIC's RSS hash of the frame (0 if the PMD gave none).
    #[inline]
    pub fn rss_hash(&self) -> u32 {
        let m = self.raw();
        if m.ol_flags & u64::from(ffi::RTE_MBUF_F_RX_RSS_HASH) == 0 {
            return 0;
        }
        // SAFETY: with RTE_MBUF_F_RX_RSS_HASH set the `hash.rss` member is the one the
        // PMD wrote; reading a u32 of a plain-data union is always defined.
        unsafe { m.__bindgen_anon_2.hash.rss }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nobody else will free it.
        unsafe { ffi::rte_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// Up to [`BURST_SIZE`] owned mbufs, as filled by an rx burst; iterate to take them.
/// Mbufs not taken are freed on drop.
pub struct MbufBurst {
    pub(crate) ptrs: [*mut ffi::rte_mbuf; BURST_SIZE],
    pub(crate) len: usize,
    next: usize,
}

// SAFETY: owns the mbufs it points to (see Mbuf's Send).
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    /// An empty burst.
    pub fn new() -> Self {
        MbufBurst {
            ptrs: [std::ptr::null_mut(); BURST_SIZE],
            len: 0,
            next: 0,
        }
    }

    /// Frames left to take.
    pub fn remaining(&self) -> usize {
        self.len - self.next
    }

    /// Calls `f` with each frame not yet taken, leaving it in the burst: a look ahead
    /// across the burst (to start its cache misses early) before frames are handled.
    #[inline]
    pub fn peek_frames(&self, mut f: impl FnMut(&[u8])) {
        for &p in self.ptrs.get(self.next..self.len).unwrap_or(&[]) {
            if let Some(p) = NonNull::new(p) {
                // SAFETY: ptrs[next..len] are mbufs this burst owns and has not handed
                // out; ManuallyDrop keeps the temporary view from freeing it, and the
                // slice it lends does not outlive this call.
                let m = std::mem::ManuallyDrop::new(unsafe { Mbuf::from_raw(p) });
                f(m.data());
            }
        }
    }

    /// Hands over the frames not yet taken as raw pointers, leaving the burst empty:
    /// the caller owns every pointer in the returned slice (all non-null, as rx filled
    /// them) and must transmit or free each exactly once.
    #[inline]
    pub(crate) fn take_raw(&mut self) -> &mut [*mut ffi::rte_mbuf] {
        let (from, to) = (self.next, self.len);
        self.next = self.len;
        self.ptrs.get_mut(from..to).unwrap_or(&mut [])
    }

    /// Frees anything left and empties the burst, ready for the next rx.
    pub(crate) fn reset(&mut self) {
        while self.next < self.len {
            // Dropping the Mbuf frees it.
            drop(self.next());
        }
        self.len = 0;
        self.next = 0;
    }
}

impl Iterator for MbufBurst {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        while self.next < self.len {
            let p = *self.ptrs.get(self.next)?;
            self.next += 1;
            if let Some(p) = NonNull::new(p) {
                // SAFETY: the rx burst handed us ownership of ptrs[..len]; each index is
                // taken once (next only grows).
                return Some(unsafe { Mbuf::from_raw(p) });
            }
        }
        None
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.reset();
    }
}
