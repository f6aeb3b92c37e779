//! The established-flow fast path.
//!
//! Most packets belong to a flow the worker already tracks, and for those the full
//! pipeline's decisions repeat themselves: the same frontend, the same backend, the same
//! route and next hop. The first packets of a flow take the full pipeline, which then
//! caches in the flow, per direction, the port and next-hop MAC it resolved and the slots
//! of its Service's and backend's counters ([`ConnTrack::cache_egress`]). A later packet
//! that is
//! - an untagged IPv4 frame to the receiving port's MAC (or any, when promiscuous),
//! - with a 20-byte header whose checksum verifies, not a fragment, TTL > 1,
//! - TCP without SYN (a SYN may open a new connection or retry a backend) or UDP, with a
//!   well-formed header,
//! - of a tracked flow whose cache is valid (the flow was checked against this table
//!   generation, and the next hop was resolved under this neighbour snapshot's version,
//!   which snapshots that only add neighbours keep),
//!
//! is rewritten here with one conntrack lookup and no other: addresses, port, TTL and
//! both checksums in a single fold each, MACs from the cache. The flow counts the packet
//! itself and adds its packets to the counter rows every [`COUNT_EVERY`] packets, so a
//! packet writes no line but its flow's. Anything else returns
//! `None` before changing any state, and the frame takes the full pipeline, which gives
//! the same result (the pipeline tests run both ways and compare).
//!
//! The look-ahead ([`super::lookahead`]) hands the fast path the index entry it found for
//! the frame, so the lookup starts there.

use super::{Context, Worker};
#[cfg(doc)]
use crate::conntrack::{ConnTrack, COUNT_EVERY};
use crate::conntrack::{Direction, TcpFlags};
use crate::flow::FlowKey;
use crate::pipeline::counters::bump;
use crate::pipeline::verdict::Verdict;

/// An untagged Ethernet header, and an IPv4 header without options.
pub(super) const ETH: usize = 14;
pub(super) const IP: usize = 20;

// Checksum arithmetic below is done on 16-bit words loaded in the machine's byte
// order: a one's-complement sum commutes with byte swapping (RFC 1071, "byte order
// independence"), so a sum of native words stored back natively is the wire checksum,
// with no swaps.

/// Two bytes as a 16-bit word, in the machine's byte order.
#[inline(always)]
fn ne16(b: &[u8; 2]) -> u32 {
    u32::from(u16::from_ne_bytes(*b))
}

/// Whether an IPv4 header without options verifies: its words sum to 0xffff. A
/// ones'-complement sum is the plain sum modulo 0xffff (2^16 ≡ 1), with 0xffff standing
/// for a non-zero multiple; so the header verifies when the plain sum of its 32-bit words
/// is a non-zero multiple of 0xffff, which a multiply tests faster than folding.
#[inline(always)]
fn header_verifies(ip: &[u8; IP]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]));
    let sum = w(0) + w(4) + w(8) + w(12) + w(16);
    sum != 0 && sum % 0xffff == 0
}

/// The RFC 1624 (eqn. 3) terms of a 4-byte field changing from `old` to `new`: `~old +
/// new`, word by word. Term sums here stay far below 2^32 (a handful of 16-bit words).
#[inline(always)]
fn delta4(old: [u8; 4], new: [u8; 4]) -> u32 {
    let (o, n) = (u32::from_ne_bytes(old), u32::from_ne_bytes(new));
    (!o >> 16) + (!o & 0xffff) + (n >> 16) + (n & 0xffff)
}

/// The terms of a 2-byte field changing from `old` to `new`.
#[inline(always)]
fn delta2(old: [u8; 2], new: [u8; 2]) -> u32 {
    (!ne16(&old) & 0xffff) + ne16(&new)
}

/// The terms of the TTL going down by one: its word (TTL, protocol) loses 0x0100, so
/// `~old + new` is `0xffff - 0x0100` whatever the TTL (> 0) and protocol, as a native
/// word.
const TTL_TERMS: u32 = u16::from_ne_bytes([0xfe, 0xff]) as u32;

/// `check` updated by `terms` (RFC 1624 eqn. 3: `~(~check + terms)`), native order. A
/// sum below 2^32 folds to 16 bits in two rounds: the first leaves at most 0x1fffe, and
/// when that carries its low half is at most 0xfffe.
#[inline(always)]
fn updated(check: [u8; 2], terms: u32) -> [u8; 2] {
    let mut acc = (!ne16(&check) & 0xffff) + terms;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    (!(acc as u16)).to_ne_bytes()
}

/// The ports, TCP flags and checksum offset of a TCP or UDP header `l4` (the IP payload),
/// if well formed and fit for the fast path (no SYN).
#[inline(always)]
fn transport(proto: u8, l4: &[u8]) -> Option<(u16, u16, Option<TcpFlags>, usize)> {
    let ports = |l4: &[u8]| {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    };
    match proto {
        6 => {
            if l4.len() < 20 {
                return None;
            }
            let doff = usize::from(l4[12] >> 4) * 4;
            let flags = l4[13];
            if doff < 20 || doff > l4.len() || flags & TcpFlags::SYN != 0 {
                return None;
            }
            let (s, d) = ports(l4);
            Some((s, d, Some(TcpFlags(flags)), 16))
        }
        17 => {
            if l4.len() < 8 {
                return None;
            }
            let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if ulen < 8 || ulen > l4.len() {
                return None;
            }
            let (s, d) = ports(l4);
            Some((s, d, None, 6))
        }
        _ => None,
    }
}

/// The IPv4 header and transport payload of a frame fit for the fast path: untagged
/// IPv4, 20-byte header, total length within the frame, not a fragment.
#[inline(always)]
fn ipv4_parts(frame: &mut [u8]) -> Option<(&mut [u8; ETH], &mut [u8; IP], &mut [u8])> {
    if frame.len() < ETH + IP {
        return None;
    }
    let (eth, rest) = frame.split_at_mut(ETH);
    let eth: &mut [u8; ETH] = eth.try_into().ok()?;
    if eth[12] != 0x08 || eth[13] != 0x00 {
        return None;
    }
    let (ip, payload) = rest.split_at_mut(IP);
    let ip: &mut [u8; IP] = ip.try_into().ok()?;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] != 0x45 || frag != 0 || total < IP {
        return None;
    }
    let l4 = payload.get_mut(..total - IP)?;
    Some((eth, ip, l4))
}

impl Worker {
    /// The fast path (see the module documentation): `Some(verdict)` when it handled the
    /// frame, `None`, with nothing changed, when the full pipeline must. `hint`: the
    /// look-ahead's index entry for the frame, if any.
    #[inline]
    pub(super) fn fast_v4(
        &mut self,
        frame: &mut [u8],
        len: usize,
        rx_port: u16,
        now: u64,
        ctx: &Context,
        hint: Option<u32>,
    ) -> Option<Verdict> {
        let frame = frame.get_mut(..len)?;
        let (eth, ip, l4) = ipv4_parts(frame)?;
        let rx_mac = self.config.ports.get(usize::from(rx_port))?.mac;
        if eth[..6] != rx_mac && !self.config.promiscuous {
            return None;
        }
        let ttl = ip[8];
        let proto = ip[9];
        if ttl <= 1 || !header_verifies(ip) {
            return None;
        }
        let (sport, dport, flags, check_at) = transport(proto, l4)?;
        let src = [ip[12], ip[13], ip[14], ip[15]];
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        let key = FlowKey::v4(
            u32::from_be_bytes(src),
            u32::from_be_bytes(dst),
            sport,
            dport,
            proto,
        );
        let total = u16::from_be_bytes([ip[2], ip[3]]);
        let hit = self.conntrack.fast_hit(
            &key,
            flags,
            now,
            ctx.table.generation(),
            ctx.neighbours.version(),
            hint,
            total,
        )?;

        // Rewrite: the destination (forward) or the source (reverse) address and port,
        // the TTL, and both checksums incrementally, each folded once.
        let nat_addr = hit.nat_addr.v4_bits().to_be_bytes();
        let nat_port = hit.nat_port.to_be_bytes();
        let (addr_terms, port_terms) = match hit.dir {
            Direction::Forward => {
                ip[16..20].copy_from_slice(&nat_addr);
                let old_port = [l4[2], l4[3]];
                l4[2..4].copy_from_slice(&nat_port);
                (delta4(dst, nat_addr), delta2(old_port, nat_port))
            }
            Direction::Reverse => {
                ip[12..16].copy_from_slice(&nat_addr);
                let old_port = [l4[0], l4[1]];
                l4[0..2].copy_from_slice(&nat_port);
                (delta4(src, nat_addr), delta2(old_port, nat_port))
            }
        };
        ip[8] = ttl - 1;
        let ip_check = updated([ip[10], ip[11]], addr_terms + TTL_TERMS);
        ip[10..12].copy_from_slice(&ip_check);
        if let Some(c) = l4.get_mut(check_at..check_at + 2) {
            let check = [c[0], c[1]];
            let terms = addr_terms + port_terms;
            match flags {
                // TCP.
                Some(_) => c.copy_from_slice(&updated(check, terms)),
                // UDP: a zero checksum means "none" and stays zero; a computed zero is
                // sent as 0xffff.
                None if check != [0, 0] => {
                    let new = updated(check, terms);
                    c.copy_from_slice(if new == [0, 0] { &[0xff, 0xff] } else { &new });
                }
                None => {}
            }
        }

        eth[..6].copy_from_slice(&hit.egress.mac);
        if let Some(out) = self.config.ports.get(usize::from(hit.egress.port)) {
            eth[6..12].copy_from_slice(&out.mac);
        }

        let c = &self.counters;
        bump(
            match hit.dir {
                Direction::Forward => &c.dnat,
                Direction::Reverse => &c.reverse_nat,
            },
            1,
        );
        bump(&c.fast_path, 1);
        // The flow counts the packet; every COUNT_EVERY packets it hands them over.
        if let Some(p) = hit.counts {
            let (bank, w) = (ctx.table.bank(), self.config.index);
            let (packets, bytes) = (u64::from(p.packets), p.bytes);
            bank.add(w, p.service_slot, packets, bytes);
            bank.add(w, p.backend_slot, packets, bytes);
        }
        Some(Verdict::Forward(hit.egress.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{accumulate, fold};

    /// The checksum of `header` (a 20-byte IPv4 header) computed from scratch.
    fn full(header: &[u8; IP]) -> [u8; 2] {
        let mut h = *header;
        h[10..12].fill(0);
        (!fold(accumulate(&h))).to_be_bytes()
    }

    /// The modulo test agrees with folding on headers whose sum is near the edges (all
    /// zero, all ones, one word off) and on many others.
    #[test]
    fn header_verification_agrees_with_folding() {
        let folds_to_ffff = |h: &[u8; IP]| fold(accumulate(h)) == 0xffff;
        let mut headers: Vec<[u8; IP]> = vec![[0; IP], [0xff; IP]];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut h = [0u8; IP];
            for b in h.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 24) as u8;
            }
            h[10..12].fill(0);
            let check = (!fold(accumulate(&h))).to_be_bytes();
            let mut good = h;
            good[10..12].copy_from_slice(&check);
            let mut off = good;
            off[(x % 20) as usize] ^= 1 << (x % 8);
            headers.extend([h, good, off]);
        }
        let mut verified = 0;
        for h in &headers {
            assert_eq!(header_verifies(h), folds_to_ffff(h), "{h:02x?}");
            verified += usize::from(header_verifies(h));
        }
        assert!(verified >= 20_000, "the good headers verify: {verified}");
    }

    #[test]
    fn ttl_and_address_updates_match_a_full_recomputation() {
        let mut header: [u8; IP] = [
            0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 1, 10,
        ];
        let seeds = [0u32, 1, 0xffff_ffff, 0x0a00_0001, 0xc612_010a, 0x8000_0000];
        for ttl in 2..=255u8 {
            for proto in [1u8, 6, 17, 132, 255] {
                for (i, &seed) in seeds.iter().enumerate() {
                    header[8] = ttl;
                    header[9] = proto;
                    header[4] = ttl ^ proto;
                    let check = full(&header);
                    header[10..12].copy_from_slice(&check);
                    let old = [header[16], header[17], header[18], header[19]];
                    let new = (seed ^ u32::from(ttl).rotate_left(i as u32 * 5)).to_be_bytes();
                    header[16..20].copy_from_slice(&new);
                    header[8] = ttl - 1;
                    let got = updated(check, delta4(old, new) + TTL_TERMS);
                    assert_eq!(got, full(&header), "ttl {ttl} proto {proto} {new:?}");
                    header[10..12].copy_from_slice(&got);
                    assert!(header_verifies(&header));
                }
            }
        }
    }
}
