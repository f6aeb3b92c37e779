//! One worker: polls its rx queue on every port, runs the frame processor, steers and
//! buffers tx, drains tx on a TSC deadline, and counts everything.

use super::counters::{bump, RuntimeDrop, WorkerCounters};
use super::offload::prepare_tx;
use super::processor::{Action, FrameProcessor, TxOffload};
use crate::dpdk::{
    tsc_now, ChecksumCaps, Mbuf, MbufBurst, Mempool, RxQueue, TxOutcome, TxQueue, BURST_SIZE,
};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// A frame handed between workers, with the index of the port it arrived on.
pub type SteeredFrame = (Mbuf, u16);

/// How often (loop turns) the processor's slow job runs.
pub const SLOW_JOB_EVERY: u32 = 1024;

/// Most frames a processor originates per slow job.
pub const ORIGINATE_PER_SLOW_JOB: usize = 4;

/// Everything a worker owns or shares, moved onto its lcore.
pub struct Worker<P: FrameProcessor> {
    /// This worker's index among workers.
    pub index: usize,
    /// Its rx queue on each port, by port index.
    pub rx: Vec<RxQueue>,
    /// Its tx queue on each port, by port index.
    pub tx: Vec<TxQueue>,
    /// Each port's enabled tx checksum offloads, by port index; checksums a frame leaves
    /// to a port without their offload are finished in software.
    pub tx_checksum: Vec<ChecksumCaps>,
    /// Every worker's steering ring, by worker index.
    pub rings: Arc<Vec<ArrayQueue<SteeredFrame>>>,
    /// Every worker's counters, by worker index.
    pub counters: Arc<Vec<WorkerCounters>>,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// The frame processor.
    pub processor: P,
    /// TSC cycles between tx drains.
    pub drain_cycles: u64,
    /// TSC frequency, for `now_ns`.
    pub tsc_hz: u64,
    /// Frames to send on each tx queue before polling (`--tx-first`), and the pool.
    pub tx_first: Option<(u16, Arc<Mempool>)>,
    /// Where originated frames come from.
    pub pool: Arc<Mempool>,
    /// After this many consecutive turns without a frame, each idle turn yields the CPU
    /// (0: never; busy polling, for workers on cores of their own).
    pub idle_yield_after: u32,
}

/// Frames the shutdown drain takes at most from each rx queue (bounded for live NICs).
const SHUTDOWN_DRAIN_BURSTS: usize = 256;

impl<P: FrameProcessor> Worker<P> {
    /// Runs until `stop` is set, then flushes and drains what it owns. Returns 0.
    pub fn run(mut self) -> i32 {
        // Local clones: borrowing these does not hold `self`, and cloning once here keeps
        // the shared reference counts off the per-iteration path.
        let counters = Arc::clone(&self.counters);
        let rings = Arc::clone(&self.rings);
        let (Some(my), Some(my_ring)) = (counters.get(self.index), rings.get(self.index)) else {
            return -1;
        };
        if let Some((n, pool)) = self.tx_first.take() {
            self.inject(my, n, &pool);
        }
        let mut burst = MbufBurst::new();
        let mut last_drain = tsc_now();
        let mut turns: u32 = 0;
        let mut idle_turns: u32 = 0;
        // ns = tsc * mult >> 32
        let mult: u128 = (1_000_000_000u128 << 32) / u128::from(self.tsc_hz.max(1));
        // With one worker nobody steers: its ring stays empty, so it is not polled.
        let steering = rings.len() > 1;
        while !self.stop.load(Relaxed) {
            // The clock is read at most once per turn, and only when something needs it:
            // io forwarding of whole bursts with nothing buffered never does.
            let mut clock = TurnClock::unread(mult);
            let mut any = false;
            for port in 0..self.rx.len() {
                let n = match self.rx.get_mut(port) {
                    Some(q) => q.rx(&mut burst),
                    None => 0,
                };
                if n == 0 {
                    continue;
                }
                any = true;
                bump(&my.bursts, 1);
                bump(&my.rx, n as u64);
                let port = port as u16;
                if let Some(out) = self.processor.forward_whole_burst(port) {
                    match self.tx.get_mut(usize::from(out)) {
                        Some(q) => account(my, q.send_burst(&mut burst)),
                        None => {
                            // Dropping the frames frees them.
                            my.drop_runtime(RuntimeDrop::BadPort, burst.remaining() as u64);
                            burst.by_ref().for_each(drop);
                        }
                    }
                    continue;
                }
                let now_ns = clock.ns();
                self.processor.begin_burst(now_ns);
                if self.processor.wants_prefetch() {
                    let processor = &mut self.processor;
                    burst.peek_frames(|f| processor.prefetch(f));
                }
                for m in &mut burst {
                    self.handle(my, m, port, now_ns, false);
                }
                for q in &mut self.tx {
                    if q.buffered() >= BURST_SIZE {
                        account(my, q.flush());
                    }
                }
            }
            if steering && !my_ring.is_empty() {
                any |= self.take_steered(my, my_ring, clock.ns());
            }
            if any {
                idle_turns = 0;
            } else {
                bump(&my.empty_polls, 1);
                idle_turns = idle_turns.saturating_add(1);
                if self.idle_yield_after > 0 && idle_turns >= self.idle_yield_after {
                    // A worker sharing its CPU (a lab, a small VM) lets the other run.
                    std::thread::yield_now();
                    bump(&my.idle_yields, 1);
                }
            }
            // Partial bursts wait in the tx buffers at most `drain_cycles`; with nothing
            // buffered there is no deadline to check.
            if self.tx.iter().any(|q| q.buffered() > 0) {
                let now_tsc = clock.tsc();
                if now_tsc.wrapping_sub(last_drain) >= self.drain_cycles {
                    for q in &mut self.tx {
                        account(my, q.flush());
                    }
                    last_drain = now_tsc;
                }
            }
            turns = turns.wrapping_add(1);
            if turns % SLOW_JOB_EVERY == 0 {
                let now_ns = clock.ns();
                self.processor.slow_job(now_ns);
                self.originate(my, now_ns);
            }
        }
        self.shutdown(my, &mut burst);
        0
    }

    /// Processes up to a burst of frames other workers steered here (the caller has
    /// seen the ring non-empty).
    #[inline]
    fn take_steered(
        &mut self,
        my: &WorkerCounters,
        ring: &ArrayQueue<SteeredFrame>,
        now_ns: u64,
    ) -> bool {
        self.processor.begin_burst(now_ns);
        let mut n = 0u64;
        while n < BURST_SIZE as u64 {
            let Some((m, port)) = ring.pop() else { break };
            n += 1;
            self.handle(my, m, port, now_ns, true);
        }
        bump(&my.steered_in, n);
        n > 0
    }

    #[inline]
    fn handle(&mut self, my: &WorkerCounters, mut m: Mbuf, port: u16, now_ns: u64, steered: bool) {
        if m.is_segmented() {
            my.drop_runtime(RuntimeDrop::Segmented, 1);
            return;
        }
        let old = m.len();
        let mut len = old;
        let action = self
            .processor
            .process(m.frame_and_tailroom(), &mut len, port, now_ns);
        if len != old && m.set_len(len).is_err() {
            my.drop_runtime(RuntimeDrop::BadLength, 1);
            return;
        }
        match action {
            Action::Forward { port, offload } => {
                let Some(q) = self.tx.get_mut(usize::from(port)) else {
                    my.drop_runtime(RuntimeDrop::BadPort, 1);
                    return;
                };
                if !offload.is_none() {
                    let caps = self
                        .tx_checksum
                        .get(usize::from(port))
                        .copied()
                        .unwrap_or(ChecksumCaps::NONE);
                    if !offload_for_tx(my, &mut m, &offload, caps) {
                        return;
                    }
                }
                account(my, q.push(m));
            }
            Action::Drop { reason } => my.drop_processor(reason),
            Action::Steer { worker } => {
                if steered || worker == self.index {
                    my.drop_runtime(RuntimeDrop::SteerInvalid, 1);
                    return;
                }
                match self.rings.get(worker) {
                    Some(ring) => match ring.push((m, port)) {
                        Ok(()) => bump(&my.steered_out, 1),
                        // The rejected frame is dropped here, which frees it.
                        Err(_rejected) => my.drop_runtime(RuntimeDrop::SteerRingFull, 1),
                    },
                    None => my.drop_runtime(RuntimeDrop::SteerInvalid, 1),
                }
            }
        }
    }

    /// Sends what the processor originates, at most `ORIGINATE_PER_SLOW_JOB` frames.
    fn originate(&mut self, my: &WorkerCounters, now_ns: u64) {
        for _ in 0..ORIGINATE_PER_SLOW_JOB {
            let Some(mut m) = self.pool.alloc() else {
                return;
            };
            let mut len = 0;
            // Without a frame to send, `m` goes back to the pool when dropped.
            let Some(port) = self
                .processor
                .originate(m.frame_and_tailroom(), &mut len, now_ns)
            else {
                return;
            };
            if m.set_len(len).is_err() {
                my.drop_runtime(RuntimeDrop::BadLength, 1);
                return;
            }
            match self.tx.get_mut(usize::from(port)) {
                Some(q) => {
                    bump(&my.originated, 1);
                    account(my, q.push(m));
                }
                None => my.drop_runtime(RuntimeDrop::BadPort, 1),
            }
        }
    }

    /// Sends `n` generated frames on each tx queue (testpmd's --tx-first).
    fn inject(&mut self, my: &WorkerCounters, n: u16, pool: &Mempool) {
        for (port, q) in self.tx.iter_mut().enumerate() {
            for i in 0..n {
                let Some(mut m) = pool.alloc() else { break };
                let frame = test_frame(self.index as u16, port as u16, i);
                if m.write_frame(&frame).is_err() {
                    continue;
                }
                bump(&my.injected, 1);
                account(my, q.push(m));
            }
            account(my, q.flush());
        }
    }

    /// Flushes tx, then frees what is left on its rx queues and steering ring.
    fn shutdown(&mut self, my: &WorkerCounters, burst: &mut MbufBurst) {
        for q in &mut self.tx {
            account(my, q.flush());
        }
        for q in &mut self.rx {
            for _ in 0..SHUTDOWN_DRAIN_BURSTS {
                let n = q.rx(burst);
                if n == 0 {
                    break;
                }
                my.drop_runtime(RuntimeDrop::Shutdown, n as u64);
                burst.for_each(drop);
            }
        }
        if let Some(ring) = self.rings.get(self.index) {
            let mut n = 0;
            while let Some(frame) = ring.pop() {
                drop(frame);
                n += 1;
            }
            my.drop_runtime(RuntimeDrop::Shutdown, n);
        }
    }
}

/// The TSC, read on first use within one loop turn and reused for the rest of it.
struct TurnClock {
    tsc: Option<u64>,
    mult: u128,
}

impl TurnClock {
    /// A clock not yet read; `mult` converts TSC cycles to ns (`ns = tsc * mult >> 32`).
    #[inline]
    fn unread(mult: u128) -> Self {
        TurnClock { tsc: None, mult }
    }

    /// The turn's TSC value.
    #[inline]
    fn tsc(&mut self) -> u64 {
        *self.tsc.get_or_insert_with(tsc_now)
    }

    /// The turn's time in ns.
    #[inline]
    fn ns(&mut self) -> u64 {
        ((u128::from(self.tsc()) * self.mult) >> 32) as u64
    }
}

/// Readies a frame that leaves checksums to the NIC (see [`prepare_tx`]), counting the
/// software fallback; false (the frame counted as dropped) if the frame does not match
/// its offload.
#[inline]
fn offload_for_tx(
    my: &WorkerCounters,
    m: &mut Mbuf,
    offload: &TxOffload,
    caps: ChecksumCaps,
) -> bool {
    match prepare_tx(m, offload, caps) {
        Ok(done) => {
            if done.fell_back() {
                bump(&my.offload_fallback, 1);
            }
            true
        }
        Err(_) => {
            my.drop_runtime(RuntimeDrop::BadOffload, 1);
            false
        }
    }
}

#[inline]
fn account(my: &WorkerCounters, o: TxOutcome) {
    if o.sent > 0 {
        bump(&my.tx, u64::from(o.sent));
    }
    if o.dropped > 0 {
        my.drop_runtime(RuntimeDrop::TxFull, u64::from(o.dropped));
    }
}

/// A 64-byte Ethernet/IPv4/UDP frame (198.18.0.1 → 198.19.0.1, RFC 2544 range), its UDP
/// source port varied by worker, port and sequence so frames hash apart.
pub fn test_frame(worker: u16, port: u16, seq: u16) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 19, 0, 1]);
    let mut sum: u32 = 0;
    for pair in ip.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let sport = 1024u16
        .wrapping_add(seq)
        .wrapping_add(worker.wrapping_mul(4096))
        .wrapping_add(port.wrapping_mul(512));
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_frame_has_valid_ipv4_checksum_and_distinct_ports() {
        let f = test_frame(1, 0, 7);
        let mut sum: u32 = 0;
        for p in f[14..34].chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([p[0], p[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_ne!(test_frame(0, 0, 1)[34..36], test_frame(0, 0, 2)[34..36]);
    }
}
