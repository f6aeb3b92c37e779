//! `kubypass replay`: runs a capture through the appliance's pipeline, with tables from
//! manifests, and no DPDK, NIC or root.
//!
//! Frames are taken whatever their destination MAC (as on a dedicated NIC in promiscuous
//! mode) and every next hop counts as resolved, so the output depends only on the L3/L4
//! logic. Every frame the pipeline transmits or generates is written, in order, with the
//! timestamp of the frame that caused it; dropped frames produce nothing. The capture's
//! timestamps are the clock. With several workers, each frame first reaches the worker a
//! hash of its headers names (as a NIC's RSS would) and is steered from there to the
//! flow's owner, as on the appliance.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubypass_dataplane::hash::hash_words;
use kubypass_dataplane::pipeline::{
    Context, DropReason, MacAddr, NeighbourTable, PipelineCounters, PortConfig, Route, Verdict,
    Worker, WorkerConfig,
};
use kubypass_dataplane::table::{IpCidr, ServiceTable};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;

use crate::translate::ProxySettings;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a pcap capture (pcapng is not read: convert it with `editcap -F pcap`)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: frame {number} cannot be read (is the capture cut short?)")]
    Frame {
        path: PathBuf,
        /// 1-based, as Wireshark numbers frames.
        number: u64,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: link type {link:?} is not Ethernet")]
    LinkType { path: PathBuf, link: DataLink },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("--workers must be at least 1")]
    NoWorkers,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The MAC every next hop resolves to in a replay.
pub const RESOLVED_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0xfe];
/// The MAC of the replay's single port.
pub const PORT_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
/// The frame buffer's initial size: a full-size frame and the room it may grow into.
const FRAME_ROOM: usize = 2048 + GROWTH_ROOM;
/// Room beyond a received frame that the pipeline may need to turn it into another (an
/// ICMP error quotes at most 1232 bytes of the frame under 62 bytes of headers).
const GROWTH_ROOM: usize = 128;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub frames_in: u64,
    pub frames_out: u64,
    pub forwarded: u64,
    pub replies: u64,
    pub to_host: u64,
    pub steered: u64,
    /// Drops by reason label, reasons with no drop left out.
    pub drops: Vec<(&'static str, u64)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "frames in {}, out {} (forwarded {}, replies {}), to host {}, steered {}",
            self.frames_in,
            self.frames_out,
            self.forwarded,
            self.replies,
            self.to_host,
            self.steered
        )?;
        let dropped: u64 = self.drops.iter().map(|(_, n)| n).sum();
        write!(f, "dropped {dropped}")?;
        for (label, n) in &self.drops {
            write!(f, "\n  {label}: {n}")?;
        }
        Ok(())
    }
}

/// A pipeline of `workers` simulated workers over one port.
pub struct Replayer {
    workers: Vec<Worker>,
    counters: Vec<Arc<PipelineCounters>>,
    table: Arc<ServiceTable>,
    neighbours: NeighbourTable,
    buf: Vec<u8>,
    summary: Summary,
    /// Frames whose owner steered them again (a pipeline bug), reported as `steer_loop`.
    steer_loops: u64,
}

impl Replayer {
    /// Workers whose single port owns `settings.node_addresses` (so NodePorts, ARP and
    /// pings to them work) and routes everything else out of the same port.
    pub fn new(table: Arc<ServiceTable>, settings: &ProxySettings, workers: usize) -> Result<Self> {
        if workers == 0 {
            return Err(Error::NoWorkers);
        }
        let port = PortConfig {
            mac: PORT_MAC,
            addrs: settings
                .node_addresses
                .iter()
                .map(|a| (*a, if a.is_ipv4() { 32 } else { 128 }))
                .collect(),
            // No NIC: every checksum is finished in software.
            tx_offloads: Default::default(),
        };
        let default_routes = ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|s| s.parse::<IpCidr>().ok())
            .map(|prefix| Route {
                prefix,
                port: 0,
                via: None,
            })
            .collect::<Vec<_>>();
        let workers: Vec<Worker> = (0..workers)
            .map(|index| {
                Worker::new(WorkerConfig {
                    index,
                    workers,
                    ports: vec![port.clone()],
                    routes: default_routes.clone(),
                    promiscuous: true,
                    assume_resolved: Some(RESOLVED_MAC),
                    fast_path: true,
                    ..WorkerConfig::default()
                })
            })
            .collect();
        let counters = workers.iter().map(Worker::counters).collect();
        Ok(Replayer {
            workers,
            counters,
            table,
            neighbours: NeighbourTable::default(),
            buf: vec![0; FRAME_ROOM],
            summary: Summary::default(),
            steer_loops: 0,
        })
    }

    /// Runs one frame received at `ts`; returns the frame to transmit, if any.
    pub fn frame(&mut self, ts: Duration, data: &[u8]) -> Option<&[u8]> {
        self.summary.frames_in += 1;
        let now = u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX);
        // Captures hold frames larger than a NIC's mbuf (jumbo frames, or the host's
        // TSO/GRO segments): the buffer grows so they are translated whole rather than
        // cut and dropped as malformed.
        if self.buf.len() < data.len() + GROWTH_ROOM {
            self.buf.resize(data.len() + GROWTH_ROOM, 0);
        }
        let len_in = data.len();
        self.buf[..len_in].copy_from_slice(data);
        let mut len = len_in;
        let ctx = Context {
            table: &self.table,
            neighbours: &self.neighbours,
        };
        let n = self.workers.len();
        let mut worker = rss_worker(&self.buf[..len_in], n);
        let mut verdict = self.workers[worker].process(&mut self.buf, &mut len, 0, now, &ctx);
        if let Verdict::Steer(owner) = verdict {
            self.summary.steered += 1;
            worker = owner.min(n - 1);
            len = len_in;
            verdict = self.workers[worker].process(&mut self.buf, &mut len, 0, now, &ctx);
        }
        // Expiry as the appliance's slow job would run it: here once per frame, cheap.
        self.workers[worker].slow_job(now, &ctx);
        match verdict {
            Verdict::Forward(_) => self.summary.forwarded += 1,
            Verdict::Reply => self.summary.replies += 1,
            Verdict::ToHost => {
                self.summary.to_host += 1;
                return None;
            }
            // A frame steered twice would be a pipeline bug; it is counted, not looped.
            Verdict::Steer(_) => {
                self.steer_loops += 1;
                return None;
            }
            Verdict::Drop(_) => return None,
        }
        self.summary.frames_out += 1;
        Some(&self.buf[..len.min(self.buf.len())])
    }

    /// Totals so far, drop reasons summed over workers.
    pub fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        s.drops = DropReason::ALL
            .iter()
            .map(|r| (r.label(), self.counters.iter().map(|c| c.drops(*r)).sum()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if self.steer_loops > 0 {
            s.drops.push(("steer_loop", self.steer_loops));
        }
        s
    }
}

/// The worker a NIC's RSS would deliver a frame to: a hash of the bytes that hold the
/// addresses and ports of the usual headers. Any spread will do; steering corrects it.
fn rss_worker(frame: &[u8], workers: usize) -> usize {
    let head = &frame[..frame.len().min(14 + 40 + 4)];
    let words: Vec<u64> = head
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    (hash_words(0x5eed, &words) % workers as u64) as usize
}

/// Replays `input` into `output` through `workers` workers with `table`.
pub fn replay_file(
    table: Arc<ServiceTable>,
    settings: &ProxySettings,
    workers: usize,
    input: &Path,
    output: &Path,
) -> Result<Summary> {
    let file = File::open(input).map_err(|source| Error::Open {
        path: input.into(),
        source,
    })?;
    let mut reader = PcapReader::new(BufReader::new(file)).map_err(|source| Error::Read {
        path: input.into(),
        source,
    })?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(Error::LinkType {
            path: input.into(),
            link,
        });
    }
    let out = File::create(output).map_err(|source| Error::Open {
        path: output.into(),
        source,
    })?;
    let write_err = |source| Error::Write {
        path: output.into(),
        source,
    };
    // The input's timestamp resolution, so nanosecond captures keep their clock; a
    // snapshot length that fits any input frame grown by the pipeline.
    let input_header = reader.header();
    let default = PcapHeader::default();
    let header = PcapHeader {
        ts_resolution: input_header.ts_resolution,
        snaplen: input_header
            .snaplen
            .max(default.snaplen)
            .saturating_add(GROWTH_ROOM as u32),
        ..default
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(out), header).map_err(write_err)?;
    let mut replayer = Replayer::new(table, settings, workers)?;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|source| Error::Frame {
            path: input.into(),
            number: replayer.summary.frames_in + 1,
            source,
        })?;
        if let Some(frame) = replayer.frame(packet.timestamp, &packet.data) {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            writer
                .write_packet(&PcapPacket::new(packet.timestamp, len, frame))
                .map_err(write_err)?;
        }
    }
    let mut inner = writer.into_writer();
    std::io::Write::flush(&mut inner).map_err(|e| write_err(pcap_file::PcapError::IoError(e)))?;
    Ok(replayer.summary())
}

/// Node addresses for a replay: the ones given, as `--node-ip` would.
pub fn settings_with_nodes(nodes: &[IpAddr]) -> ProxySettings {
    ProxySettings {
        node_addresses: nodes.to_vec(),
        ..ProxySettings::default()
    }
}
