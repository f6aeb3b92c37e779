//! Built-in frame processors, used until the service pipeline is wired in and to test
//! the runtime: port-pair forwarding, and the same with hash steering between workers.

use super::processor::{Action, FrameProcessor, TxOffload};

/// The paired port of `port` among `ports`: 0↔1, 2↔3, …; a lone last port maps to itself.
#[inline]
pub fn paired_port(port: u16, ports: u16) -> u16 {
    let peer = port ^ 1;
    if peer < ports {
        peer
    } else {
        port
    }
}

/// Sends each frame out of the paired port, unchanged.
#[derive(Debug, Clone)]
pub struct PairedForwarder {
    ports: u16,
}

impl PairedForwarder {
    /// A forwarder over `ports` ports.
    pub fn new(ports: u16) -> Self {
        PairedForwarder { ports }
    }
}

impl FrameProcessor for PairedForwarder {
    /// Every burst goes whole to the paired port, like testpmd's io mode.
    #[inline]
    fn forward_whole_burst(&mut self, rx_port: u16) -> Option<u16> {
        Some(paired_port(rx_port, self.ports))
    }

    #[inline]
    fn process(&mut self, _buf: &mut [u8], _len: &mut usize, rx_port: u16, _now: u64) -> Action {
        Action::Forward {
            port: paired_port(rx_port, self.ports),
            offload: TxOffload::NONE,
        }
    }
}

/// Like [`PairedForwarder`], but each frame is owned by the worker that an FNV-1a hash of
/// its first 64 bytes (mixed) names; frames received elsewhere are steered to their owner.
#[derive(Debug, Clone)]
pub struct SteerByHashForwarder {
    me: usize,
    workers: usize,
    ports: u16,
}

impl SteerByHashForwarder {
    /// The processor of worker `me` among `workers`, over `ports` ports.
    pub fn new(me: usize, workers: usize, ports: u16) -> Self {
        SteerByHashForwarder {
            me,
            workers: workers.max(1),
            ports,
        }
    }
}

/// The worker owning a frame: FNV-1a over its first 64 bytes, modulo `workers`.
pub fn owner_by_hash(frame: &[u8], workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in frame.iter().take(64) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV-1a's low bits are weak (bit 0 is the parity of the input's bit 0s): mix the
    // high bits down before taking the modulus.
    let mixed = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32;
    (mixed % workers.max(1) as u64) as usize
}

impl FrameProcessor for SteerByHashForwarder {
    #[inline]
    fn process(&mut self, buf: &mut [u8], len: &mut usize, rx_port: u16, _now: u64) -> Action {
        let frame = buf.get(..*len).unwrap_or(&[]);
        let owner = owner_by_hash(frame, self.workers);
        if owner != self.me {
            return Action::Steer { worker: owner };
        }
        Action::Forward {
            port: paired_port(rx_port, self.ports),
            offload: TxOffload::NONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_pair_up() {
        assert_eq!(paired_port(0, 2), 1);
        assert_eq!(paired_port(1, 2), 0);
        assert_eq!(paired_port(2, 3), 2);
        assert_eq!(paired_port(0, 1), 0);
    }

    #[test]
    fn steering_sends_foreign_frames_to_their_owner_only() {
        let frames: Vec<Vec<u8>> = (0u8..64).map(|i| vec![i; 60]).collect();
        let mut w0 = SteerByHashForwarder::new(0, 2, 2);
        let mut w1 = SteerByHashForwarder::new(1, 2, 2);
        let mut seen = [0; 2];
        for f in &frames {
            let owner = owner_by_hash(f, 2);
            seen[owner] += 1;
            let mut buf = f.clone();
            let mut len = buf.len();
            let a0 = w0.process(&mut buf, &mut len, 0, 0);
            let a1 = w1.process(&mut buf, &mut len, 0, 0);
            let (on_owner, on_other) = if owner == 0 { (a0, a1) } else { (a1, a0) };
            assert_eq!(
                on_owner,
                Action::Forward {
                    port: 1,
                    offload: TxOffload::NONE
                }
            );
            assert_eq!(on_other, Action::Steer { worker: owner });
        }
        assert!(seen[0] > 10 && seen[1] > 10, "hash spreads: {seen:?}");
    }
}
