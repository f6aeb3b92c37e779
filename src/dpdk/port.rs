//! Ethernet ports: configuration (queues, RSS), start/stop, link, counters, and the
//! per-queue rx/tx handles workers own.

use super::{ffi, Eal, Error, Mbuf, MbufBurst, Mempool, Result, BURST_SIZE};
use std::ffi::{c_char, CStr, CString};

/// An ethdev port kubypass configured. Stopped and closed on drop; drop it before its
/// [`Mempool`] and after every worker using its queues has been joined.
pub struct Port {
    id: u16,
    name: String,
    started: bool,
    tx_checksum: ChecksumCaps,
}

/// Tx checksum offloads, by checksum: what a device offers, what is asked for, or what a
/// configured port enabled (`RTE_ETH_TX_OFFLOAD_{IPV4,TCP,UDP,SCTP}_CKSUM`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksumCaps {
    /// IPv4 header checksum.
    pub ipv4: bool,
    /// TCP checksum (IPv4 and IPv6).
    pub tcp: bool,
    /// UDP checksum (IPv4 and IPv6).
    pub udp: bool,
    /// SCTP CRC32c.
    pub sctp: bool,
}

impl ChecksumCaps {
    /// No checksum offloaded.
    pub const NONE: ChecksumCaps = ChecksumCaps {
        ipv4: false,
        tcp: false,
        udp: false,
        sctp: false,
    };
    /// Every checksum offloaded.
    pub const ALL: ChecksumCaps = ChecksumCaps {
        ipv4: true,
        tcp: true,
        udp: true,
        sctp: true,
    };

    /// The checksums of a `RTE_ETH_TX_OFFLOAD_*` bit set.
    pub fn from_tx_offloads(bits: u64) -> ChecksumCaps {
        let [ipv4, tcp, udp, sctp] = tx_checksum_bits();
        ChecksumCaps {
            ipv4: bits & ipv4 != 0,
            tcp: bits & tcp != 0,
            udp: bits & udp != 0,
            sctp: bits & sctp != 0,
        }
    }

    /// The `RTE_ETH_TX_OFFLOAD_*` bits of these checksums.
    pub fn tx_offloads(self) -> u64 {
        let [ipv4, tcp, udp, sctp] = tx_checksum_bits();
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        bit(self.ipv4, ipv4) | bit(self.tcp, tcp) | bit(self.udp, udp) | bit(self.sctp, sctp)
    }

    /// Checksums in both sets.
    pub fn intersect(self, other: ChecksumCaps) -> ChecksumCaps {
        ChecksumCaps {
            ipv4: self.ipv4 && other.ipv4,
            tcp: self.tcp && other.tcp,
            udp: self.udp && other.udp,
            sctp: self.sctp && other.sctp,
        }
    }

    /// Whether none is set.
    pub fn is_none(self) -> bool {
        self == ChecksumCaps::NONE
    }
}

impl std::fmt::Display for ChecksumCaps {
    /// `ipv4,tcp,udp,sctp` (those set), or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.ipv4, "ipv4"),
            (self.tcp, "tcp"),
            (self.udp, "udp"),
            (self.sctp, "sctp"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// `RTE_ETH_TX_OFFLOAD_{IPV4,TCP,UDP,SCTP}_CKSUM`.
fn tx_checksum_bits() -> [u64; 4] {
    // SAFETY: plain C functions returning constants.
    unsafe {
        [
            ffi::kubypass_tx_offload_ipv4_cksum(),
            ffi::kubypass_tx_offload_tcp_cksum(),
            ffi::kubypass_tx_offload_udp_cksum(),
            ffi::kubypass_tx_offload_sctp_cksum(),
        ]
    }
}

/// Link state as the PMD reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
}

/// The port's basic hardware counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames transmitted.
    pub opackets: u64,
    /// Frames the NIC dropped because rx queues were full.
    pub imissed: u64,
    /// Erroneous received frames.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// What a port's driver allows.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// PMD name, e.g. "net_ring".
    pub driver: String,
    /// Most rx queues.
    pub max_rx_queues: u16,
    /// Most tx queues.
    pub max_tx_queues: u16,
    /// RSS hash functions the port supports (`RTE_ETH_RSS_*`).
    pub rss_offloads: u64,
    /// Tx offloads the port supports (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
}

impl PortInfo {
    /// The tx checksum offloads the device offers.
    pub fn tx_checksum_capa(&self) -> ChecksumCaps {
        ChecksumCaps::from_tx_offloads(self.tx_offload_capa)
    }
}

impl Port {
    /// The port the EAL created for device `name` (a vdev name such as `net_ring0`, or a
    /// PCI address such as `0000:01:00.0`).
    pub fn by_name(_eal: &Eal, name: &str) -> Result<Port> {
        let cname = CString::new(name).map_err(|_| Error {
            what: "rte_eth_dev_get_port_by_name".into(),
            reason: "name contains a NUL byte".into(),
            code: libc::EINVAL,
        })?;
        let mut id = 0u16;
        // SAFETY: EAL initialised; valid C string and out-pointer.
        let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_get_port_by_name({name})"),
                ret,
            ));
        }
        Ok(Port {
            id,
            name: name.to_owned(),
            started: false,
            tx_checksum: ChecksumCaps::NONE,
        })
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name it was found by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Driver limits.
    pub fn info(&self) -> Result<PortInfo> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: valid port id; info is a writable rte_eth_dev_info.
        let ret = unsafe { ffi::rte_eth_dev_info_get(self.id, &mut info) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_info_get(port {})", self.id),
                ret,
            ));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: non-null NUL-terminated driver name owned by the PMD (static).
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            tx_offload_capa: info.tx_offload_capa,
        })
    }

    /// Configures `queues` rx and tx queues (RSS over IP/TCP/UDP when there are several
    /// and the PMD supports it) with `rx_desc`/`tx_desc` descriptors, rx buffers from
    /// `pool`, and returns one (rx, tx) handle pair per queue index. Enables the tx
    /// checksum offloads in `tx_checksum` that the device offers; see
    /// [`tx_checksum_offloads`](Self::tx_checksum_offloads).
    pub fn configure(
        &mut self,
        queues: u16,
        rx_desc: u16,
        tx_desc: u16,
        pool: &Mempool,
        tx_checksum: ChecksumCaps,
    ) -> Result<Vec<(RxQueue, TxQueue)>> {
        let info = self.info()?;
        let mut conf = ffi::rte_eth_conf::default();
        let enabled = tx_checksum.intersect(info.tx_checksum_capa());
        conf.txmode.offloads = enabled.tx_offloads();
        // SAFETY: plain C function returning a constant.
        let wanted_rss = unsafe { ffi::kubypass_rss_hf_ip_tcp_udp() };
        let rss = wanted_rss & info.rss_offloads;
        if queues > 1 && rss != 0 {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss;
        }
        // SAFETY: valid port id; conf is a fully initialised rte_eth_conf.
        let ret = unsafe { ffi::rte_eth_dev_configure(self.id, queues, queues, &conf) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_configure(port {}, {queues} queues)", self.id),
                ret,
            ));
        }
        self.tx_checksum = enabled;
        let (mut nrx, mut ntx) = (rx_desc, tx_desc);
        // SAFETY: valid, configured port; out-pointers to locals.
        let ret = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nrx, &mut ntx) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {})", self.id),
                ret,
            ));
        }
        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        let socket = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY (-1)
        let mut pairs = Vec::with_capacity(usize::from(queues));
        for q in 0..queues {
            // SAFETY: configured port, q < queues; null rxconf = PMD defaults; the pool
            // outlives the port (documented contract of Port/Mempool drop order).
            let ret = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if ret != 0 {
                return Err(Error::from_code(
                    format!("rte_eth_rx_queue_setup(port {}, queue {q})", self.id),
                    ret,
                ));
            }
            // SAFETY: as above; null txconf = PMD defaults.
            let ret =
                unsafe { ffi::rte_eth_tx_queue_setup(self.id, q, ntx, socket, std::ptr::null()) };
            if ret != 0 {
                return Err(Error::from_code(
                    format!("rte_eth_tx_queue_setup(port {}, queue {q})", self.id),
                    ret,
                ));
            }
            pairs.push((
                RxQueue {
                    port: self.id,
                    queue: q,
                },
                TxQueue::new(self.id, q),
            ));
        }
        Ok(pairs)
    }

    /// The tx checksum offloads enabled by [`configure`](Self::configure) (none before):
    /// a frame sent here may leave exactly these checksums to the NIC.
    pub fn tx_checksum_offloads(&self) -> ChecksumCaps {
        self.tx_checksum
    }

    /// Starts the port.
    pub fn start(&mut self) -> Result<()> {
        // SAFETY: valid, configured port.
        let ret = unsafe { ffi::rte_eth_dev_start(self.id) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_start(port {})", self.id),
                ret,
            ));
        }
        self.started = true;
        Ok(())
    }

    /// Stops the port (idempotent). No worker may be polling its queues.
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: valid started port; callers join workers first.
            unsafe {
                ffi::rte_eth_dev_stop(self.id);
            }
            self.started = false;
        }
    }

    /// Enables promiscuous mode (not every PMD supports it).
    pub fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        // SAFETY: valid port id.
        let ret = unsafe {
            if on {
                ffi::rte_eth_promiscuous_enable(self.id)
            } else {
                ffi::rte_eth_promiscuous_disable(self.id)
            }
        };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_promiscuous_*(port {})", self.id),
                ret,
            ));
        }
        Ok(())
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: valid port id; writable out-struct.
        let ret = unsafe { ffi::rte_eth_macaddr_get(self.id, &mut addr) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_macaddr_get(port {})", self.id),
                ret,
            ));
        }
        Ok(addr.addr_bytes)
    }

    /// Current link state, without waiting.
    pub fn link(&self) -> Result<LinkStatus> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid port id; writable out-struct.
        let ret = unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut link) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_link_get_nowait(port {})", self.id),
                ret,
            ));
        }
        Ok(LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
        })
    }

    /// Basic counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port id; writable out-struct.
        let ret = unsafe { ffi::rte_eth_stats_get(self.id, &mut s) };
        if ret != 0 {
            return Err(Error::from_code(
                format!("rte_eth_stats_get(port {})", self.id),
                ret,
            ));
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Extended counters as (name, value).
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let what = || format!("rte_eth_xstats_get(port {})", self.id);
        // SAFETY: valid port id; a null array with size 0 asks for the count.
        let n = unsafe { ffi::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        let count = u32::try_from(n).map_err(|_| Error::from_code(what(), n))?;
        let mut names = vec![ffi::rte_eth_xstat_name::default(); count as usize];
        let mut values = vec![ffi::rte_eth_xstat::default(); count as usize];
        // SAFETY: arrays hold `count` elements each.
        let n1 = unsafe { ffi::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), count) };
        // SAFETY: as above.
        let n2 = unsafe { ffi::rte_eth_xstats_get(self.id, values.as_mut_ptr(), count) };
        if n1 < 0 || n2 < 0 {
            return Err(Error::from_code(what(), n1.min(n2)));
        }
        let used = usize::try_from(n1.min(n2)).unwrap_or(0).min(names.len());
        Ok(values
            .iter()
            .take(used)
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                Some((c_chars_to_string(&name.name), v.value))
            })
            .collect())
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: stopped port, no worker polls it (joined first); closing releases its
        // queues and the mbufs they hold.
        unsafe {
            ffi::rte_eth_dev_close(self.id);
        }
    }
}

/// One rx queue of one port; owned by exactly one worker.
pub struct RxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Receives up to [`BURST_SIZE`] frames into `burst` (which must have been emptied
    /// by taking all its frames; leftovers are freed first). Returns how many arrived.
    #[inline]
    pub fn rx(&mut self, burst: &mut MbufBurst) -> usize {
        burst.reset();
        // SAFETY: this handle is the queue's only user (one owner, not Clone); the array
        // holds BURST_SIZE slots; DPDK fills the first `n` with mbufs we then own. After
        // port stop the ethdev fast-path ops are dummies returning 0.
        let n = unsafe {
            ffi::rte_eth_rx_burst(
                self.port,
                self.queue,
                burst.ptrs.as_mut_ptr(),
                BURST_SIZE as u16,
            )
        };
        burst.len = usize::from(n).min(BURST_SIZE);
        burst.len
    }
}

/// What a tx flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames the PMD took.
    pub sent: u16,
    /// Frames it did not take, which were freed.
    pub dropped: u16,
}

const TX_BUFFER: usize = 2 * BURST_SIZE;

/// One tx queue of one port with its buffer; owned by exactly one worker. Frames queue
/// up in the buffer until [`flush`](Self::flush) (or a full buffer) sends them.
pub struct TxQueue {
    port: u16,
    queue: u16,
    buf: [*mut ffi::rte_mbuf; TX_BUFFER],
    len: usize,
}

// SAFETY: owns the buffered mbufs and the queue exclusively; moved to its worker once.
unsafe impl Send for TxQueue {}

impl TxQueue {
    fn new(port: u16, queue: u16) -> Self {
        TxQueue {
            port,
            queue,
            buf: [std::ptr::null_mut(); TX_BUFFER],
            len: 0,
        }
    }

    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Frames waiting in the buffer.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Buffers `m`; flushes first if the buffer is full. Returns the flush outcome (all
    /// zero if none was needed).
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> TxOutcome {
        let mut outcome = TxOutcome::default();
        if self.len >= TX_BUFFER {
            outcome = self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = m.into_raw();
            self.len += 1;
        }
        outcome
    }

    /// Transmits every frame left in `burst` as one tx burst, in order, after whatever
    /// is buffered here (flushed first so frames keep their order). Frames the PMD does
    /// not take are freed; `burst` is empty afterwards. The frames are not looked at:
    /// this is the zero-touch path of io forwarding.
    #[inline]
    pub fn send_burst(&mut self, burst: &mut MbufBurst) -> TxOutcome {
        let mut outcome = self.flush();
        let taken = burst.take_raw();
        if taken.is_empty() {
            return outcome;
        }
        let n = taken.len() as u16;
        // SAFETY: `take_raw` handed us ownership of these non-null mbufs (the burst no
        // longer frees them); the PMD takes ownership of the first `sent`; this handle is
        // the queue's only user.
        let sent = unsafe { ffi::rte_eth_tx_burst(self.port, self.queue, taken.as_mut_ptr(), n) };
        let sent = sent.min(n);
        let dropped = n - sent;
        if dropped > 0 {
            let rest = taken.get_mut(usize::from(sent)..).unwrap_or(&mut []);
            // SAFETY: the PMD did not take these; we own them and free each once.
            unsafe { ffi::rte_pktmbuf_free_bulk(rest.as_mut_ptr(), rest.len() as u32) };
        }
        outcome.sent += sent;
        outcome.dropped += dropped;
        outcome
    }

    /// Sends everything buffered; frames the PMD does not take are freed.
    #[inline]
    pub fn flush(&mut self) -> TxOutcome {
        if self.len == 0 {
            return TxOutcome::default();
        }
        let n = self.len as u16;
        // SAFETY: buf[..len] are mbufs we own; the PMD takes ownership of the first
        // `sent`; this handle is the queue's only user.
        let sent =
            unsafe { ffi::rte_eth_tx_burst(self.port, self.queue, self.buf.as_mut_ptr(), n) };
        let sent = sent.min(n);
        let dropped = n - sent;
        if dropped > 0 {
            let rest = &mut self.buf[usize::from(sent)..self.len];
            // SAFETY: the PMD did not take these; we still own them and free each once.
            unsafe { ffi::rte_pktmbuf_free_bulk(rest.as_mut_ptr(), u32::from(dropped)) };
        }
        self.len = 0;
        TxOutcome { sent, dropped }
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: buf[..len] are mbufs we own and nobody else frees.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.buf.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}
