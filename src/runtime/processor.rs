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

    /// Whether the current burst's frames go through [`FrameProcessor::prefetch`] (asked
    /// after `begin_burst`). No (the default) spares the loop reading every frame twice.
    #[inline]
    fn wants_prefetch(&self) -> bool {
        false
    }

    /// Looks at a frame of the current burst before any of the burst is processed, so its
    /// state can be brought into cache while earlier frames are handled. Called for every
    /// frame of the burst, in order, or for none (see `wants_prefetch`).
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
    /// Transmit it on the port with this index (configuration order), leaving the
    /// checksums `offload` names to the NIC (or to the runtime's software fallback on a
    /// port without those offloads).
    Forward {
        /// Port index.
        port: u16,
        /// Checksums left unfinished for the NIC; [`TxOffload::NONE`] when the frame is
        /// complete.
        offload: TxOffload,
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

/// A transport checksum a transmitted frame can leave to the NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Checksum {
    /// TCP: the checksum field holds the pseudo-header sum.
    Tcp,
    /// UDP: the checksum field holds the pseudo-header sum.
    Udp,
    /// SCTP: the CRC32c field is left as it is (stale).
    Sctp,
}

/// Checksums a transmitted frame leaves to the NIC. The processor has already written
/// what DPDK requires in the header fields (IPv4 header checksum 0; TCP/UDP checksum =
/// pseudo-header sum, as rte_ipv4_phdr_cksum / rte_ipv6_phdr_cksum give it; SCTP CRC left
/// as is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOffload {
    /// The IPv4 header checksum is left to the NIC.
    pub ipv4_header: bool,
    /// The transport checksum left to the NIC, if any.
    pub l4: Option<L4Checksum>,
    /// The packet is IPv6 (else IPv4), for the TX_IPV4/TX_IPV6 flag.
    pub ipv6: bool,
    /// Ethernet header length (14, or 18 with one 802.1Q tag).
    pub l2_len: u8,
    /// IP header length (IPv4 with options; IPv6 with extension headers).
    pub l3_len: u16,
}

impl TxOffload {
    /// Nothing left to the NIC: the frame is complete.
    pub const NONE: TxOffload = TxOffload {
        ipv4_header: false,
        l4: None,
        ipv6: false,
        l2_len: 0,
        l3_len: 0,
    };

    /// Whether no checksum is left to the NIC (header lengths and family do not matter).
    #[inline]
    pub fn is_none(&self) -> bool {
        !self.ipv4_header && self.l4.is_none()
    }
}
