//! TCP headers (RFC 9293): ports, sequence numbers, flags, data offset, and the
//! checksum over the IPv4 or IPv6 pseudo-header, with incremental NAT updates.
//!
//! The view's buffer must be exactly the segment (the IP payload), since the checksum
//! covers all of it.

use super::checksum::{self, PseudoHeader};
use super::{be16, be32, put16, put32, Error};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
const PROTOCOL: u8 = 6;

/// TCP flag bits (the low 9 bits of the offset/flags word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    pub const FIN: Flags = Flags(0x001);
    pub const SYN: Flags = Flags(0x002);
    pub const RST: Flags = Flags(0x004);
    pub const PSH: Flags = Flags(0x008);
    pub const ACK: Flags = Flags(0x010);
    pub const URG: Flags = Flags(0x020);
    pub const ECE: Flags = Flags(0x040);
    pub const CWR: Flags = Flags(0x080);
    pub const NS: Flags = Flags(0x100);

    /// True if every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    #[inline]
    pub const fn syn(self) -> bool {
        self.0 & 0x002 != 0
    }
    #[inline]
    pub const fn ack(self) -> bool {
        self.0 & 0x010 != 0
    }
    #[inline]
    pub const fn fin(self) -> bool {
        self.0 & 0x001 != 0
    }
    #[inline]
    pub const fn rst(self) -> bool {
        self.0 & 0x004 != 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    #[inline]
    fn bitor(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
}

/// A view of a TCP segment. After `new_checked`: 20 ≤ data offset ≤ buffer length.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Checks the fixed header is present and the data offset is within 20..=len.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::OFF_FLAGS] >> 4) * 4;
        if hl < HEADER_LEN || hl > b.len() {
            return Err(Error::BadDataOffset);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> Flags {
        Flags(be16(self.buffer.as_ref(), field::OFF_FLAGS) & 0x01ff)
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Segment length as sequence space counts it (payload + SYN + FIN).
    #[inline]
    pub fn segment_len(&self) -> usize {
        let f = self.flags();
        self.payload().len() + usize::from(f.syn()) + usize::from(f.fin())
    }

    /// True when the checksum over `pseudo` and the whole segment verifies.
    #[inline]
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        let b = self.buffer.as_ref();
        checksum::add(pseudo.sum(PROTOCOL, b.len() as u32), checksum::sum(b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the data offset from a header length in bytes (multiple of 4, ≤ 60) and the
    /// flags, which share one word.
    /// Length setters can break what `new_checked` established: keep the value within
    /// the buffer, or re-check the view.
    #[inline]
    pub fn set_header_len_and_flags(&mut self, header_len: usize, flags: Flags) {
        let v = (((header_len / 4) as u16 & 0x0f) << 12) | (flags.0 & 0x01ff);
        put16(self.buffer.as_mut(), field::OFF_FLAGS, v);
    }

    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and writes the checksum over `pseudo` and the whole segment.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let c = checksum::transport(pseudo, PROTOCOL, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Rewrites the source port, updating the checksum incrementally.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let c = checksum::update16(self.checksum(), self.src_port(), port);
        self.set_src_port(port);
        self.set_checksum(c);
    }

    /// Rewrites the destination port, updating the checksum incrementally.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let c = checksum::update16(self.checksum(), self.dst_port(), port);
        self.set_dst_port(port);
        self.set_checksum(c);
    }

    /// Updates the checksum for a pseudo-header IPv4 address change (the IP header
    /// itself is rewritten by the IPv4 view).
    #[inline]
    pub fn update_checksum_v4_addr(&mut self, old: std::net::Ipv4Addr, new: std::net::Ipv4Addr) {
        let c = checksum::update32(self.checksum(), old.octets(), new.octets());
        self.set_checksum(c);
    }

    /// Updates the checksum for a pseudo-header IPv6 address change.
    #[inline]
    pub fn update_checksum_v6_addr(&mut self, old: std::net::Ipv6Addr, new: std::net::Ipv6Addr) {
        let c = checksum::update128(self.checksum(), old.octets(), new.octets());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// A TCP segment without options to emit (RSTs, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: Flags,
    pub window_len: u16,
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// The RST that refuses `segment` (RFC 9293 §3.10.7.1): if it had ACK, RST with
    /// seq = its ack; else RST|ACK with ack = its seq + segment length.
    pub fn rst_for<T: AsRef<[u8]>>(segment: &Packet<T>) -> Repr<'static> {
        let f = segment.flags();
        let (seq, ack, flags) = if f.ack() {
            (segment.ack_number(), 0, Flags::RST)
        } else {
            let ack = segment
                .seq_number()
                .wrapping_add(segment.segment_len() as u32);
            (0, ack, Flags::RST | Flags::ACK)
        };
        Repr {
            src_port: segment.dst_port(),
            dst_port: segment.src_port(),
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: 0,
            payload: &[],
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the segment with its checksum at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8], pseudo: &PseudoHeader) -> Result<usize, Error> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        b[HEADER_LEN..].copy_from_slice(self.payload);
        let mut p = Packet::new_unchecked(b);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len_and_flags(HEADER_LEN, self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(0);
        p.fill_checksum(pseudo);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> PseudoHeader {
        PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 19, 0, 2),
        }
    }

    /// SYN 40000 -> 80, seq 1, with one MSS option and 2 payload bytes.
    const SYN: [u8; 26] = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, //
        0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, //
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0xab, 0xcd,
    ];

    #[test]
    fn parse() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 1);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), Flags::SYN);
        assert!(p.flags().syn() && !p.flags().ack());
        assert_eq!(p.window_len(), 0xffff);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), &[0xab, 0xcd]);
        assert_eq!(p.segment_len(), 3);
    }

    #[test]
    fn checksum_v4_and_v6() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&v4());
        assert!(p.verify_checksum(&v4()));
        let v6 = PseudoHeader::V6 {
            src: "fd00::1".parse::<Ipv6Addr>().unwrap(),
            dst: "fd00::2".parse::<Ipv6Addr>().unwrap(),
        };
        assert!(!p.verify_checksum(&v6));
        p.fill_checksum(&v6);
        assert!(p.verify_checksum(&v6));
    }

    #[test]
    fn known_checksum_value() {
        // Independently computed: pseudo 198.18.0.1 -> 198.19.0.2, proto 6, len 26.
        let mut b = SYN;
        Packet::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(&v4());
        let mut words: u32 = 0xc612 + 0x0001 + 0xc613 + 0x0002 + 6 + 26;
        for c in SYN.chunks(2) {
            words += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while words > 0xffff {
            words = (words & 0xffff) + (words >> 16);
        }
        assert_eq!(u16::from_be_bytes([b[16], b[17]]), !(words as u16));
    }

    #[test]
    fn nat_rewrites_keep_checksum() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&v4());
        p.rewrite_dst_port(8080);
        p.rewrite_src_port(1);
        let new_dst = Ipv4Addr::new(10, 244, 3, 9);
        p.update_checksum_v4_addr(Ipv4Addr::new(198, 19, 0, 2), new_dst);
        let ph = PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: new_dst,
        };
        assert!(p.verify_checksum(&ph));
        assert_eq!(p.dst_port(), 8080);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&SYN[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut b = SYN;
        b[12] = 0x40; // data offset 4 (16 bytes)
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadDataOffset
        );
        b[12] = 0x70; // 28 bytes in a 26-byte buffer
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadDataOffset
        );
        assert_eq!(
            Packet::new_checked(&SYN[..23]).unwrap_err(),
            Error::BadDataOffset
        );
    }

    #[test]
    fn rst_and_emit() {
        let syn = Packet::new_checked(&SYN[..]).unwrap();
        let rst = Repr::rst_for(&syn);
        assert_eq!((rst.src_port, rst.dst_port), (80, 40000));
        assert_eq!(rst.flags, Flags::RST | Flags::ACK);
        assert_eq!(rst.ack_number, 4);
        let mut buf = [0u8; 20];
        assert_eq!(rst.emit(&mut buf, &v4()), Ok(20));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(&v4()));
        assert!(p.flags().rst() && p.flags().ack());
        assert_eq!(rst.emit(&mut buf[..19], &v4()), Err(Error::Truncated));

        let mut ackd = SYN;
        ackd[13] = 0x10;
        ackd[8..12].copy_from_slice(&77u32.to_be_bytes());
        let r = Repr::rst_for(&Packet::new_checked(&ackd[..]).unwrap());
        assert_eq!((r.seq_number, r.flags), (77, Flags::RST));
    }
}
