//! The look-ahead across a burst: memory loads a burst's frames will need, started
//! before the frames are processed, so that they overlap the work on earlier frames.
//!
//! Flows. With many flows the conntrack lines a burst needs are not in cache, and each
//! packet would wait for two dependent memory loads (the index bucket, then the flow).
//! [`Worker::prefetch`] is called for every frame of a burst before the first is
//! processed: it computes the flow's bucket and asks the caller's prefetch function for
//! that line. Each `process` of the burst then reads the bucket of the frame
//! [`FLOW_DISTANCE`] places ahead (arrived by now) and prefetches the flow it points to;
//! the fast path then starts from the index entry found, without hashing the key or
//! reading the bucket again. Below [`PREFETCH_MIN_FLOWS`] tracked flows the lines are in
//! cache anyway and are not prefetched.
//!
//! New flows. A frame that opens a flow reads lines no earlier frame read, many more
//! with many Services: both conntrack buckets of its key (a new key is looked for in
//! both), its frontend, its Service, the Service's Maglev slot for the flow, the chosen
//! backend, the Service's and the backend's counter rows, and both buckets of the reply
//! key it is inserted under. Each address depends on a line before it, so they are taken
//! in stages, each a few frames behind the last. A frame that may open a flow (anything
//! but a TCP segment without SYN or with ACK, see [`may_open_flow`]) has its buckets and
//! its frontend's index line prefetched by `prefetch`. Then, if its primary bucket holds
//! no entry for it, its frontend is read and the table's pointer to its Service
//! prefetched ([`FRONTEND_DISTANCE`] frames ahead of the one processed); then the
//! Service's lines ([`SERVICE_DISTANCE`]); then its Maglev slot and the
//! Service's counter row ([`SLOT_DISTANCE`]); then the backend the slot names
//! ([`PICK_DISTANCE`]); then that backend's counter row and the reply key's buckets
//! ([`ROW_DISTANCE`]). A burst of frames of established TCP flows costs these stages
//! nothing but the test of each frame's flags.
//!
//! The look-ahead only reads and prefetches: the pipeline makes every decision again
//! from the frame, so a stale or wrong guess costs time, never a wrong verdict. The
//! prefetch function is the caller's ([`Worker::set_prefetcher`]): issuing a prefetch
//! needs `unsafe`, which this crate forbids.

use super::fast::{ETH, IP};
use super::{Context, Worker};
use crate::conntrack::{ConnTrack, Flow, TcpFlags};
use crate::flow::{client_hash, flow_hash, FlowAddr, FlowKey};
use crate::table::{FrontendKey, L4Protocol, Scheduler, ServiceId, ServiceTable};

/// Tracked flows from which conntrack lines are prefetched: below this, a burst's
/// conntrack lines (about 3 per flow) fit the core's L2 cache.
pub const PREFETCH_MIN_FLOWS: usize = 16_384;
/// Bursts after a frame took the new-flow path during which [`Worker::wants_lookahead`]
/// still says yes with fewer than [`PREFETCH_MIN_FLOWS`] tracked flows.
pub const OPENING_MEMORY: u32 = 16;
/// Frames remembered between [`Worker::prefetch`] and the burst's `process` calls.
pub const LOOKAHEAD: usize = 64;
/// How many frames ahead of the one being processed the flows are prefetched: far enough
/// for a memory load to complete, near enough that the buckets read to find them have
/// arrived.
pub const FLOW_DISTANCE: usize = 16;
/// How many frames ahead a frame that opens a flow has its frontend read;
pub const FRONTEND_DISTANCE: usize = 8;
/// its Service's lines prefetched;
pub const SERVICE_DISTANCE: usize = 6;
/// its Maglev slot and its Service's counter row prefetched;
pub const SLOT_DISTANCE: usize = 4;
/// the backend its slot names prefetched;
pub const PICK_DISTANCE: usize = 2;
/// that backend's counter row and its reply key's buckets prefetched.
pub const ROW_DISTANCE: usize = 1;

/// No Service or pick (yet) for a frame.
const NONE: u32 = u32::MAX;

/// A caller's prefetch: brings the cache line at the address into cache, without
/// faulting on any address (what `rte_prefetch0` or `_mm_prefetch` do).
pub type Prefetcher = fn(*const u8);

/// The burst look-ahead's state.
#[derive(Clone, Debug)]
pub(super) struct Lookahead {
    pub(super) prefetcher: Option<Prefetcher>,
    /// Whether this burst prefetches conntrack lines ([`PREFETCH_MIN_FLOWS`]).
    flow_lines: bool,
    /// (primary bucket, tag) of the burst's frames, as `prefetch` saw them.
    hints: [(usize, u32); LOOKAHEAD],
    /// Their flow keys (meaningful where the hint is not [`NO_HINT`]).
    keys: [FlowKey; LOOKAHEAD],
    /// The index entry (flow and direction) each resolved hint's bucket had for it.
    flows: [Option<u32>; LOOKAHEAD],
    /// Whether the frame may open a flow ([`may_open_flow`]) and has a key; and whether
    /// it surely does (a TCP SYN).
    opening: [bool; LOOKAHEAD],
    sure: [bool; LOOKAHEAD],
    /// For a frame that opens a flow: its Service's id, then its Maglev hash and pick.
    services: [u32; LOOKAHEAD],
    hashes: [u64; LOOKAHEAD],
    picks: [u32; LOOKAHEAD],
    len: usize,
    /// Frames `prefetch` saw before the first it had anything to look ahead for (while
    /// `len` is 0); they take their places when one comes.
    skipped: usize,
    /// Hints whose flows were prefetched.
    resolved: usize,
    /// Frames of the burst that may open a flow (see [`may_open_flow`]).
    openers: usize,
    /// Frames through each new-flow stage: frontend, Service, slot, pick, row.
    staged: [usize; 5],
    /// Frames of the burst processed.
    processed: usize,
    /// Bursts left before the look-ahead is no longer wanted for new flows: set to
    /// [`OPENING_MEMORY`] by a frame taking the new-flow path, down one a burst.
    recent_openings: u32,
}

impl Lookahead {
    /// Forgets the burst's look-ahead.
    #[inline]
    pub(super) fn reset(&mut self) {
        self.len = 0;
        self.skipped = 0;
        self.resolved = 0;
        self.openers = 0;
        self.staged = [0; 5];
        self.processed = 0;
    }

    /// Moves past the frame being processed; forgets the burst after its last frame.
    #[inline]
    fn advance(&mut self) {
        self.processed += 1;
        if self.processed >= self.len {
            self.reset();
        }
    }

    /// The next frame new-flow stage `stage` takes, if it is below `upto` and has been
    /// through the step before (the bucket read for the first stage, the stage before
    /// for the others).
    #[inline]
    fn next_for(&mut self, stage: usize, upto: usize) -> Option<usize> {
        let before = match stage.checked_sub(1) {
            None => self.resolved,
            Some(s) => *self.staged.get(s)?,
        };
        let at = self.staged.get_mut(stage)?;
        let j = *at;
        if j >= upto.min(before) {
            return None;
        }
        *at += 1;
        Some(j)
    }

    /// Whether a burst's look-ahead is under way. When not, the burst's frames need
    /// none: [`Lookahead::pass`] forgets the frames `prefetch` only counted.
    #[inline]
    pub(super) fn active(&self) -> bool {
        self.len > 0
    }

    /// A frame processed without the look-ahead.
    #[inline]
    pub(super) fn pass(&mut self) {
        self.skipped = 0;
    }
}

impl Default for Lookahead {
    fn default() -> Self {
        Lookahead {
            prefetcher: None,
            flow_lines: false,
            hints: [(0, 0); LOOKAHEAD],
            keys: [FlowKey::default(); LOOKAHEAD],
            flows: [None; LOOKAHEAD],
            opening: [false; LOOKAHEAD],
            sure: [false; LOOKAHEAD],
            services: [NONE; LOOKAHEAD],
            hashes: [0; LOOKAHEAD],
            picks: [NONE; LOOKAHEAD],
            len: 0,
            skipped: 0,
            resolved: 0,
            openers: 0,
            staged: [0; 5],
            processed: 0,
            recent_openings: 0,
        }
    }
}

/// A look-ahead entry for a frame without a fast-path key (tag 0 matches no entry).
const NO_HINT: (usize, u32) = (0, 0);

/// The conntrack key of an untagged IPv4 frame without options (the ports in place),
/// without the pipeline's checks: for looking ahead only.
fn fast_key(frame: &[u8]) -> Option<FlowKey> {
    let ip = frame.get(ETH..ETH + IP)?;
    let l4 = frame.get(ETH + IP..ETH + IP + 4)?;
    if frame[12..14] != [0x08, 0x00] || ip[0] != 0x45 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
    Some(FlowKey::v4(
        word(12),
        word(16),
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
        ip[9],
    ))
}

/// Whether a frame opens a flow, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// A TCP segment without SYN or with ACK: it only continues a flow.
    No,
    /// Not TCP (UDP, SCTP, other): it opens one if its flow is not tracked.
    Maybe,
    /// A TCP SYN without ACK.
    Surely,
}

/// See [`Opening`]. Frames of established TCP flows then cost the new-flow stages
/// nothing, and those of other flows one bucket read.
#[inline]
fn may_open_flow(frame: &[u8]) -> Opening {
    match (frame.get(ETH + 9), frame.get(ETH + IP + 13)) {
        (Some(6), Some(&flags)) if flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN => {
            Opening::Surely
        }
        (Some(6), Some(_)) => Opening::No,
        _ => Opening::Maybe,
    }
}

/// Prefetches the lines a new flow of `key` reads first: its second bucket (a new key
/// is looked for in both before it is inserted), its frontend's index line, and the
/// slab slot the `ahead`-th next insert fills, if given.
#[inline]
fn new_key_lines(
    conntrack: &ConnTrack,
    table: &ServiceTable,
    key: &FlowKey,
    (bucket, tag): (usize, u32),
    ahead: Option<usize>,
    prefetch: Prefetcher,
) {
    let secondary = conntrack.secondary_bucket(bucket, tag);
    if let Some(line) = conntrack.bucket_line(secondary) {
        prefetch(addr(line));
    }
    if let Some(line) = frontend_key(key).and_then(|k| table.frontend_line(&k)) {
        prefetch(addr(line));
    }
    if let Some(flow) = ahead.and_then(|k| conntrack.free_slot_ahead(k)) {
        flow_lines(flow, prefetch);
    }
}

/// Prefetches both lines of a tracked flow (128 bytes, line-aligned).
#[inline]
fn flow_lines(flow: &Flow, prefetch: Prefetcher) {
    let p = addr(flow);
    prefetch(p);
    prefetch(p.wrapping_add(64));
}

/// The frontend a flow key is addressed to, if its protocol can have one.
#[inline]
fn frontend_key(key: &FlowKey) -> Option<FrontendKey> {
    Some(FrontendKey {
        addr: key.dst_ip(),
        port: key.dst_port,
        protocol: L4Protocol::from_ip_number(key.protocol)?,
    })
}

/// The address of a value, for the prefetch function.
#[inline(always)]
fn addr<T>(r: &T) -> *const u8 {
    (r as *const T).cast()
}

impl Worker {
    /// Sets the function the burst look-ahead prefetches with (see the module
    /// documentation). Without one, [`Worker::prefetch`] does nothing.
    pub fn set_prefetcher(&mut self, prefetcher: Prefetcher) {
        self.lookahead.prefetcher = Some(prefetcher);
    }

    /// Starts a burst: forgets what is left of the last burst's look-ahead (frames the
    /// runtime dropped before processing them would otherwise shift it).
    #[inline]
    pub fn begin_burst(&mut self) {
        let la = &mut self.lookahead;
        la.reset();
        la.recent_openings = la.recent_openings.saturating_sub(1);
    }

    /// Whether this burst's frames are worth a [`Worker::prefetch`] each (asked after
    /// [`Worker::begin_burst`]): with a prefetcher set, when at least
    /// [`PREFETCH_MIN_FLOWS`] flows are tracked (their lines are not all in cache), or
    /// when a frame took the new-flow path in the last [`OPENING_MEMORY`] bursts (a new
    /// flow reads lines no earlier frame read). Otherwise every line a frame needs is
    /// in cache already, and looking ahead would only cost each frame a call and a parse
    /// (~5 ns of the ~75 ns an established frame takes). Skipping it never changes a
    /// verdict; the first burst of new flows after a quiet spell goes without it.
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        let la = &self.lookahead;
        la.prefetcher.is_some()
            && (la.recent_openings > 0 || self.conntrack.len() >= PREFETCH_MIN_FLOWS)
    }

    /// Notes that a frame took the new-flow path (see [`Worker::wants_lookahead`]).
    #[inline]
    pub(super) fn note_opening(&mut self) {
        self.lookahead.recent_openings = OPENING_MEMORY;
    }

    /// Looks ahead at a frame of the current burst, before any frame of the burst is
    /// processed (the burst's frames are then processed in this order), with a
    /// prefetcher set: prefetches the conntrack bucket its lookup will read, with at
    /// least [`PREFETCH_MIN_FLOWS`] tracked flows or when it may open a flow; for a TCP
    /// SYN, also the other lines a new flow reads first; and notes the key of a frame that
    /// may open a flow for the new-flow stages. Changes no flow state; a frame without a
    /// key only keeps its place in the burst.
    pub fn prefetch(&mut self, frame: &[u8], ctx: &Context) {
        let Some(prefetch) = self.lookahead.prefetcher else {
            return;
        };
        let la = &mut self.lookahead;
        if la.len == 0 && la.skipped == 0 {
            la.flow_lines = self.conntrack.len() >= PREFETCH_MIN_FLOWS;
        }
        let opening = may_open_flow(frame);
        let opens = opening != Opening::No;
        if !(opens || la.flow_lines) && la.len == 0 {
            // Nothing to look ahead for so far in this burst: the frame is only counted,
            // and the burst's `process` calls skip the look-ahead unless a later frame
            // starts it.
            la.skipped += 1;
            return;
        }
        if la.len == 0 && la.skipped > 0 {
            // The frames counted before this one keep their places.
            let n = la.skipped.min(LOOKAHEAD);
            la.hints[..n].fill(NO_HINT);
            la.opening[..n].fill(false);
            la.len = n;
            la.skipped = 0;
        }
        if la.len >= LOOKAHEAD {
            return;
        }
        let at = la.len;
        if !(opens || la.flow_lines) {
            // Only keeps its place: no line of its is prefetched.
            la.hints[at] = NO_HINT;
            la.opening[at] = false;
            la.len += 1;
            return;
        }
        la.openers += usize::from(opens);
        la.opening[at] = false;
        let hint = fast_key(frame).map_or(NO_HINT, |key| {
            let (bucket, tag) = self.conntrack.bucket_and_tag(&key);
            if la.flow_lines || opens {
                if let Some(line) = self.conntrack.bucket_line(bucket) {
                    prefetch(addr(line));
                }
            }
            if !opens {
                return (bucket, tag);
            }
            let sure = opening == Opening::Surely;
            if sure {
                // The lines a new flow reads first, for a frame sure to open one; a frame
                // that only may has them prefetched once its bucket says it does.
                let ahead = la.openers.checked_sub(1);
                new_key_lines(
                    &self.conntrack,
                    ctx.table,
                    &key,
                    (bucket, tag),
                    ahead,
                    prefetch,
                );
            }
            if let (Some(k), Some(s)) = (la.keys.get_mut(at), la.sure.get_mut(at)) {
                *k = key;
                *s = sure;
                la.opening[at] = true;
            }
            (bucket, tag)
        });
        la.hints[at] = hint;
        la.services[at] = NONE;
        la.picks[at] = NONE;
        la.len += 1;
    }

    /// The look-ahead's later steps, at each `process` of the burst: prefetches the flows
    /// that the buckets of the frames [`FLOW_DISTANCE`] ahead point to, and takes the
    /// frames that open flows through the new-flow stages. The frames are processed in
    /// the order `prefetch` saw them (the runtime's contract). Returns the index entry
    /// found for the frame being processed: the fast path's lookup starts from it,
    /// without hashing the key or reading the bucket again.
    #[inline]
    pub(super) fn prefetch_flows(&mut self, ctx: &Context) -> Option<u32> {
        let la = &mut self.lookahead;
        let Some(prefetch) = la.prefetcher else {
            la.reset();
            return None;
        };
        if !la.flow_lines && la.openers == 0 {
            // Nothing to prefetch in this burst (so far).
            la.advance();
            return None;
        }
        let upto = (la.processed + FLOW_DISTANCE).min(la.len);
        while la.resolved < upto {
            let j = la.resolved;
            let (bucket, tag) = la.hints[j];
            let entry = self.conntrack.primary_candidate(bucket, tag);
            la.flows[j] = entry;
            la.resolved += 1;
            if entry.is_none() && la.opening[j] && !la.sure[j] {
                new_key_lines(
                    &self.conntrack,
                    ctx.table,
                    &la.keys[j],
                    (bucket, tag),
                    None,
                    prefetch,
                );
            }
            if !la.flow_lines {
                continue;
            }
            if let Some(flow) = entry.and_then(|e| self.conntrack.flow_at(e)) {
                flow_lines(flow, prefetch);
            }
        }
        if la.openers > 0 {
            self.prepare_new_flows(ctx, prefetch);
        }
        let la = &mut self.lookahead;
        let current = la.flows.get(la.processed).copied().flatten();
        la.advance();
        current
    }

    /// The new-flow stages (see the module documentation), each taken as far as its
    /// distance ahead of the frame being processed, and never past the stage before it.
    fn prepare_new_flows(&mut self, ctx: &Context, prefetch: Prefetcher) {
        let table = ctx.table;
        let worker = self.config.index;
        let la = &mut self.lookahead;
        // Each stage takes frames up to and including the one its distance ahead.
        let next = la.processed + 1;

        // Frontend: a frame that may open a flow and has no entry in its primary bucket;
        // the table's pointer to its Service.
        while let Some(j) = la.next_for(0, next + FRONTEND_DISTANCE) {
            if la.flows[j].is_some() || !la.opening[j] {
                continue;
            }
            let found = frontend_key(&la.keys[j])
                .and_then(|k| table.find_frontend(&k))
                .and_then(|r| table.frontend_at(r));
            let Some(fe) = found else {
                continue;
            };
            if let Some(entry) = table.services().get(fe.service.0 as usize) {
                prefetch(addr(entry));
                la.services[j] = fe.service.0;
            }
        }

        // Service: its lines.
        while let Some(j) = la.next_for(1, next + SERVICE_DISTANCE) {
            if let Some(svc) = table.service(ServiceId(la.services[j])) {
                // A new flow reads the first two lines (see `Service`).
                let p = addr(svc);
                prefetch(p);
                prefetch(p.wrapping_add(64));
            }
        }

        // Slot: the flow's Maglev slot, and the Service's counter row.
        while let Some(j) = la.next_for(2, next + SLOT_DISTANCE) {
            let Some(svc) = table.service(ServiceId(la.services[j])) else {
                continue;
            };
            let key = &la.keys[j];
            let hash = if svc.affinity_timeout_secs().is_some() {
                client_hash(table.seed(), key.src_ip())
            } else if table.scheduler() == Scheduler::Maglev {
                flow_hash(table.seed(), key)
            } else {
                la.services[j] = NONE;
                continue;
            };
            la.hashes[j] = hash;
            if let Some(slot) = svc.maglev().slot_addr(hash) {
                prefetch(slot);
            }
            if let Some(row) = table.bank().row(worker, svc.counters().slot()) {
                prefetch(addr(row));
            }
        }

        // Pick: the backend the slot names, and its counters' slot.
        while let Some(j) = la.next_for(3, next + PICK_DISTANCE) {
            let Some(svc) = table.service(ServiceId(la.services[j])) else {
                continue;
            };
            let Some(i) = svc.maglev_pick(la.hashes[j]) else {
                continue;
            };
            if let Some(b) = svc.usable_backends().get(i) {
                // A backend may straddle two lines.
                let p = addr(b);
                prefetch(p);
                prefetch(p.wrapping_add(std::mem::size_of_val(b) - 1));
            }
            if let Some(c) = svc.usable_backend_counters(i) {
                prefetch(addr(c));
                la.picks[j] = i as u32;
            }
        }

        // Row: the backend's counter row, and the buckets of the flow's reply key.
        while let Some(j) = la.next_for(4, next + ROW_DISTANCE) {
            let Some(svc) = table.service(ServiceId(la.services[j])) else {
                continue;
            };
            let i = la.picks[j] as usize;
            if let Some(row) = svc
                .usable_backend_counters(i)
                .and_then(|c| table.bank().row(worker, c.slot()))
            {
                prefetch(addr(row));
            }
            let Some(b) = svc.usable_backends().get(i) else {
                continue;
            };
            let reply = FlowKey {
                dst: FlowAddr::from_ip(b.addr),
                dst_port: b.port,
                ..la.keys[j]
            }
            .reversed();
            let (bucket, tag) = self.conntrack.bucket_and_tag(&reply);
            let secondary = self.conntrack.secondary_bucket(bucket, tag);
            for b in [bucket, secondary] {
                if let Some(line) = self.conntrack.bucket_line(b) {
                    prefetch(addr(line));
                }
            }
        }
    }
}
