//! The contract between the worker loop and whatever decides each frame's fate.

/// Per-frame decision logic run by a worker. The worker loop is generic over it, so the
/// service pipeline replaces the built-in forwarders without touching the loop.
/// Implementations must not allocate, lock, block or panic in `process`.
pub trait FrameProcessor: Send {
    /// Names of this processor's drop reasons, indexed by [`Action::Drop`]'s `reason`
    /// (at most [`MAX_PROCESSOR_DROP_REASONS`]); used for counters and stats.
    fn drop_reason_names() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }

    /// The burst-level fast path, asked first for every rx burst: `Some(port)` means
    /// "send this whole burst, untouched, out of port index `port`" (io forwarding). The
    /// runtime then hands the burst to that port's tx queue without reading any frame
    /// or mbuf: no `begin_burst`, `prefetch` or `process` for it, multi-segment frames
    /// included. `None` (the default) processes the burst frame by frame. Not asked for
    /// steered-in frames.
    #[inline]
    fn forward_whole_burst(&mut self, _rx_port: u16) -> Option<u16> {
        None
    }

    /// Called once per burst processed frame by frame (and per batch of steered-in
    /// frames) before its frames.
    fn begin_burst(&mut self, _now_ns: u64) {}

    /// Handles one frame in place. `buf` runs from the frame's first byte to the end of
    /// the mbuf (tailroom included); `*len` is the frame length on entry and may be set
    /// to any value `<= buf.len()` to grow or shrink the frame. `rx_port` is the index of
    /// the port (in configuration order) the frame arrived on.
    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, now_ns: u64) -> Action;

    /// Looks at a frame of the current burst before any of the burst is processed, so its
    /// state can be brought into cache while earlier frames are handled.
    #[inline]
    fn prefetch(&mut self, _frame: &[u8]) {}

    /// Periodic slow work (expiry and the like), called every few hundred loop turns.
    fn slow_job(&mut self, _now_ns: u64) {}

    /// A frame the processor originates (an ARP request for a next hop it will need…),
    /// asked for on the slow-job cadence with a fresh buffer: returns the port to send it
    /// on with `*len` set, or `None` when there is nothing to send.
    fn originate(&mut self, _buf: &mut [u8], _len: &mut usize, _now_ns: u64) -> Option<u16> {
        None
    }
}

/// Most distinct processor drop reasons a worker counts; larger indices share the last.
pub const MAX_PROCESSOR_DROP_REASONS: usize = 16;

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit it on the port with this index (configuration order).
    Forward {
        /// Port index.
        port: u16,
    },
    /// Free it, counting `reason` (an index into `drop_reason_names()`).
    Drop {
        /// Processor drop reason index.
        reason: u8,
    },
    /// Hand it to worker `worker` (index among workers), which processes it as if it had
    /// received it. A frame that arrived by steering cannot be steered again.
    Steer {
        /// Worker index.
        worker: usize,
    },
}
