//! Internet checksums: RFC 1071 full sums, IPv4/IPv6 pseudo-header sums, and RFC 1624
//! incremental updates for NAT rewrites of 16-bit words (ports), 32-bit words (IPv4
//! addresses) and 128-bit IPv6 addresses.
//!
//! Sums here are ones'-complement sums folded to 16 bits and *not* complemented; the
//! checksum field holds `!sum`. Incremental updates take and return the field value.
//!
//! UDP over IPv4: a checksum field of 0 means "no checksum" and stays 0 through a
//! rewrite; a computed checksum of 0 is transmitted as 0xffff (RFC 768). See [`udp_field`]
//! and [`update16_udp`].

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator to a 16-bit ones'-complement sum.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Unfolded accumulation of `data` as big-endian 16-bit words (an odd last byte is the
/// high byte of a zero-padded word). Adds 32-bit words into a u64, so no carry is lost.
#[inline]
pub fn accumulate(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    acc
}

/// RFC 1071 ones'-complement sum of `data`, folded, not complemented.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    fold(accumulate(data))
}

/// Ones'-complement addition of two folded sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// IPv4 pseudo-header sum (source, destination, zero, protocol, transport length).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u16 {
    let acc = u64::from(u32::from(src))
        + u64::from(u32::from(dst))
        + u64::from(protocol)
        + u64::from(len);
    fold(acc)
}

/// IPv6 pseudo-header sum (source, destination, 32-bit length, zeros, next header).
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u16 {
    let acc = accumulate(&src.octets())
        + accumulate(&dst.octets())
        + u64::from(next_header)
        + u64::from(len);
    fold(acc)
}

/// The addresses a transport checksum covers, for either IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl PseudoHeader {
    /// Pseudo-header sum for `protocol` and a transport segment of `len` bytes.
    #[inline]
    pub fn sum(&self, protocol: u8, len: u32) -> u16 {
        match *self {
            PseudoHeader::V4 { src, dst } => pseudo_header_v4(src, dst, protocol, len),
            PseudoHeader::V6 { src, dst } => pseudo_header_v6(src, dst, protocol, len),
        }
    }

    /// True for the IPv4 family (where a zero UDP checksum means "none").
    #[inline]
    pub fn is_v4(&self) -> bool {
        matches!(self, PseudoHeader::V4 { .. })
    }
}

/// Checksum field value for a transport segment: `!(pseudo + sum(segment))`, where the
/// segment's own checksum field is taken as it is (zero it first when computing).
#[inline]
pub fn transport(pseudo: &PseudoHeader, protocol: u8, segment: &[u8]) -> u16 {
    !add(pseudo.sum(protocol, segment.len() as u32), sum(segment))
}

/// Maps a computed UDP checksum to its field value: 0 is sent as 0xffff.
#[inline]
pub fn udp_field(computed: u16) -> u16 {
    if computed == 0 {
        0xffff
    } else {
        computed
    }
}

/// RFC 1624 eqn. 3: the checksum field after one 16-bit word changes from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// RFC 1624 update for a 32-bit word (an IPv4 address) changing.
#[inline]
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let o = u32::from_be_bytes(old);
    let n = u32::from_be_bytes(new);
    let acc = u64::from(!check)
        + u64::from(!(o >> 16) & 0xffff)
        + u64::from(!o & 0xffff)
        + u64::from(n >> 16)
        + u64::from(n & 0xffff);
    !fold(acc)
}

/// RFC 1624 update for a 128-bit IPv6 address changing.
#[inline]
pub fn update128(check: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    // ~old summed word by word equals ~(sum(old)) in ones'-complement arithmetic.
    let acc = u64::from(!check) + u64::from(!sum(&old)) + accumulate(&new);
    !fold(acc)
}

/// [`update16`] under the UDP-over-IPv4 rule: a zero field stays zero (no checksum), and
/// a result of zero is written as 0xffff.
#[inline]
pub fn update16_udp(check: u16, old: u16, new: u16) -> u16 {
    if check == 0 {
        0
    } else {
        udp_field(update16(check, old, new))
    }
}

/// [`update32`] under the UDP zero-checksum rule (see [`update16_udp`]).
#[inline]
pub fn update32_udp(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    if check == 0 {
        0
    } else {
        udp_field(update32(check, old, new))
    }
}

/// [`update128`] under the UDP zero-checksum rule (see [`update16_udp`]).
#[inline]
pub fn update128_udp(check: u16, old: [u8; 16], new: [u8; 16]) -> u16 {
    if check == 0 {
        0
    } else {
        udp_field(update128(check, old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 reference: 16-bit words into u32 with end-around carry.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn sum_matches_reference_for_every_length_and_odd_tail() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(sum(&data[..n]), reference_sum(&data[..n]), "len {n}");
        }
        let ones = vec![0xffu8; 1001];
        assert_eq!(sum(&ones), reference_sum(&ones));
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Classic example header, checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!sum(&h), 0xb861);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let s4 = Ipv4Addr::new(10, 0, 0, 1);
        let d4 = Ipv4Addr::new(192, 168, 7, 200);
        let mut b = Vec::new();
        b.extend_from_slice(&s4.octets());
        b.extend_from_slice(&d4.octets());
        b.extend_from_slice(&[0, 17, 0x01, 0x23]);
        assert_eq!(pseudo_header_v4(s4, d4, 17, 0x123), reference_sum(&b));

        let s6: Ipv6Addr = "fd00::ffff:1:2:3".parse().unwrap();
        let d6: Ipv6Addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&s6.octets());
        b.extend_from_slice(&d6.octets());
        b.extend_from_slice(&0x0001_0203u32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(pseudo_header_v6(s6, d6, 6, 0x0001_0203), reference_sum(&b));
    }

    #[test]
    fn incremental_updates_match_recompute() {
        let mut data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 3) as u8).collect();
        let check = !sum(&data);
        // 16-bit word at 10.
        let old = u16::from_be_bytes([data[10], data[11]]);
        data[10..12].copy_from_slice(&0xbeefu16.to_be_bytes());
        let c1 = update16(check, old, 0xbeef);
        assert_eq!(c1, !sum(&data));
        // 32-bit word at 20.
        let old4 = [data[20], data[21], data[22], data[23]];
        let new4 = [198, 18, 0, 9];
        data[20..24].copy_from_slice(&new4);
        let c2 = update32(c1, old4, new4);
        assert_eq!(c2, !sum(&data));
        // 128-bit at 32.
        let mut old16 = [0u8; 16];
        old16.copy_from_slice(&data[32..48]);
        let new16 = [0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
        data[32..48].copy_from_slice(&new16);
        assert_eq!(update128(c2, old16, new16), !sum(&data));
    }

    #[test]
    fn udp_zero_rule() {
        assert_eq!(update16_udp(0, 1, 2), 0);
        assert_eq!(update32_udp(0, [1; 4], [2; 4]), 0);
        assert_eq!(update128_udp(0, [1; 16], [2; 16]), 0);
        assert_eq!(udp_field(0), 0xffff);
        assert_eq!(udp_field(5), 5);
        // An update whose result is 0 is written as 0xffff: field f, word changes so the
        // new sum is all ones.
        let check = 0x0001; // sum = 0xfffe
        let r = update16_udp(check, 0x0000, 0x0001); // new sum 0xffff -> checksum 0
        assert_eq!(r, 0xffff);
    }
}
