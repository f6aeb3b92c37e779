//! IPv4 headers (RFC 791): options via IHL, fragmentation fields, total length against
//! the buffer, header checksum verify/fill, TTL, and address rewrites that keep the
//! header checksum right incrementally (RFC 1624).

use std::net::Ipv4Addr;

use super::checksum;
use super::{arr4, be16, put16, Error, IpProtocol};

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A view of an IPv4 packet.
///
/// After `new_checked`: 20 ≤ header length ≤ total length ≤ buffer length. The buffer
/// may be longer than the total length (Ethernet padding); `payload` stops at the total
/// length. After `new_checked_quoted` (for headers quoted in ICMP errors) only the
/// header is known to be present and `payload` is whatever follows, up to total length.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Checks version, IHL and total length against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_checked_quoted(buffer)?;
        let tl = p.total_len() as usize;
        if tl < p.header_len() || tl > p.buffer.as_ref().len() {
            return Err(Error::BadTotalLength);
        }
        Ok(p)
    }

    /// Checks version and IHL, and that the header (with options) is in the buffer, but
    /// lets the total length exceed it: for the original header an ICMP error quotes.
    #[inline]
    pub fn new_checked_quoted(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < HEADER_LEN {
            return Err(Error::BadHeaderLength);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// True for any fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | 0x1fff) != 0
    }

    /// True for a fragment other than the first (it carries no transport header).
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::SRC))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::DST))
    }

    /// The options bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }

    /// The transport pseudo-header for this packet's addresses.
    #[inline]
    pub fn pseudo_header(&self) -> checksum::PseudoHeader {
        checksum::PseudoHeader::V4 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// The payload: from the header's end to the total length (or the buffer's end if
    /// that comes first, for quoted headers).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (self.total_len() as usize).min(b.len());
        let start = self.header_len().min(end);
        &b[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    /// Length setters can break what `new_checked` established: keep the value within
    /// the buffer, or re-check the view.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length (header + payload); see `set_header_len` on bounds.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets DF, MF and the fragment offset (in bytes; must be a multiple of 8).
    #[inline]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & 0x1fff;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.into();
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Computes and writes the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = !checksum::sum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Rewrites the source address and updates the header checksum incrementally.
    /// Returns the old address (the transport checksum still needs its own update).
    #[inline]
    pub fn rewrite_src_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        let c = checksum::update32(self.checksum(), old.octets(), a.octets());
        self.set_src_addr(a);
        self.set_checksum(c);
        old
    }

    /// Rewrites the destination address and updates the header checksum incrementally.
    /// Returns the old address.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        let c = checksum::update32(self.checksum(), old.octets(), a.octets());
        self.set_dst_addr(a);
        self.set_checksum(c);
        old
    }

    /// Decrements the TTL and updates the checksum incrementally. Returns the new TTL;
    /// a TTL of 0 or 1 is left unchanged and reported as 0 (time exceeded).
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buffer.as_ref();
        let ttl = b[field::TTL];
        if ttl <= 1 {
            return 0;
        }
        let old = be16(b, field::TTL);
        let new = old - 0x0100;
        let c = checksum::update16(self.checksum(), old, new);
        put16(self.buffer.as_mut(), field::TTL, new);
        self.set_checksum(c);
        ttl - 1
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = (self.total_len() as usize).min(len);
        let start = self.header_len().min(end);
        &mut self.buffer.as_mut()[start..end]
    }

    /// The whole header (with options) mutably.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[..hl]
    }
}

/// An option-less IPv4 header to emit (ICMP errors, RSTs): ident 0, not fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub payload_len: usize,
    pub ttl: u8,
    pub dont_frag: bool,
}

impl Repr {
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 20-byte header with its checksum at the start of `buf`; returns 20.
    /// `Err(BadTotalLength)` if 20 + payload length exceeds 65535.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let total =
            u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| Error::BadTotalLength)?;
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Packet::new_unchecked(b);
        p.set_header_len(HEADER_LEN);
        p.set_dscp_ecn(0);
        p.set_total_len(total);
        p.set_ident(0);
        p.set_frag(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.fill_checksum();
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20-byte header + 4 payload bytes + 2 bytes of Ethernet padding.
    const PACKET: [u8; 26] = [
        0x45, 0x00, 0x00, 0x18, // v4, IHL 5, total 24
        0x12, 0x34, 0x20, 0x03, // ident, MF, offset 3 (24 bytes)
        0x40, 0x11, 0x00, 0x00, // TTL 64, UDP, checksum (filled in test)
        198, 18, 0, 1, //
        198, 19, 0, 2, //
        0xde, 0xad, 0xbe, 0xef, //
        0, 0,
    ];

    fn fixture() -> [u8; 26] {
        let mut b = PACKET;
        let c = !checksum::sum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse() {
        let b = fixture();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 24);
        assert!(p.is_fragment() && p.is_later_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 19, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn options_via_ihl() {
        let mut b = vec![
            0x46, 0, 0, 28, 0, 0, 0, 0, 64, 6, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        b.extend_from_slice(&[0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
        b.extend_from_slice(&[9, 9, 9, 9]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
    }

    #[test]
    fn malformed() {
        let b = fixture();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        let mut v6 = b;
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), Error::BadVersion);
        let mut ihl = b;
        ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&ihl[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        let mut big_ihl = b;
        big_ihl[0] = 0x4f; // 60-byte header in a 26-byte buffer
        assert_eq!(
            Packet::new_checked(&big_ihl[..]).unwrap_err(),
            Error::Truncated
        );
        let mut long = b;
        long[3] = 27; // total length beyond the buffer
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            Error::BadTotalLength
        );
        let mut short = b;
        short[3] = 19; // total length below the header
        assert_eq!(
            Packet::new_checked(&short[..]).unwrap_err(),
            Error::BadTotalLength
        );
        // A quoted header may claim more than is present.
        let q = Packet::new_checked_quoted(&long[..22]).unwrap();
        assert_eq!(q.payload(), &[0xde, 0xad]);
        let mut bad = b;
        bad[15] ^= 1;
        assert!(!Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    #[test]
    fn rewrites_keep_checksum() {
        let mut b = fixture();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            p.rewrite_dst_addr(Ipv4Addr::new(10, 244, 1, 7)),
            Ipv4Addr::new(198, 19, 0, 2)
        );
        assert!(p.verify_checksum());
        p.rewrite_src_addr(Ipv4Addr::new(255, 255, 0, 0));
        assert!(p.verify_checksum());
        assert_eq!(p.decrement_ttl(), 63);
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        p.set_ttl(1);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), 0);
        assert_eq!(p.ttl(), 1);
    }

    #[test]
    fn emit() {
        let r = Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 19, 0, 2),
            protocol: IpProtocol::Icmp,
            payload_len: 36,
            ttl: 64,
            dont_frag: false,
        };
        let mut buf = [0u8; 56];
        assert_eq!(r.emit(&mut buf), Ok(20));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.total_len(), 56);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert!(p.verify_checksum() && !p.is_fragment());
        assert_eq!(r.emit(&mut buf[..19]), Err(Error::Truncated));
        let huge = Repr {
            payload_len: 70000,
            ..r
        };
        assert_eq!(huge.emit(&mut buf), Err(Error::BadTotalLength));
    }
}
