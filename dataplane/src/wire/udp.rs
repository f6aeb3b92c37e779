//! UDP headers (RFC 768): ports, length, checksum. Over IPv4 a zero checksum means
//! "none": it stays zero through NAT, and a computed zero is sent as 0xffff.

use super::checksum::{self, PseudoHeader};
use super::{be16, put16, Error};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

pub const HEADER_LEN: usize = 8;
const PROTOCOL: u8 = 17;

/// A view of a UDP datagram. After `new_checked`: 8 ≤ length ≤ buffer length; the
/// datagram (and `payload`) stops at the length field.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::BadLength);
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
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).clamp(HEADER_LEN, b.len())]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.datagram()[HEADER_LEN..]
    }

    /// True when the checksum verifies, or is zero (none) over IPv4.
    #[inline]
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        if self.checksum() == 0 && pseudo.is_v4() {
            return true;
        }
        let d = self.datagram();
        checksum::add(pseudo.sum(PROTOCOL, d.len() as u32), checksum::sum(d)) == 0xffff
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

    /// Sets the length field. Keep it within 8..=buffer length, or re-check the view.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and writes the checksum (a computed 0 is written as 0xffff).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let c = checksum::udp_field(checksum::transport(pseudo, PROTOCOL, self.datagram()));
        self.set_checksum(c);
    }

    /// Rewrites the source port; a zero (absent) checksum stays zero.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let c = checksum::update16_udp(self.checksum(), self.src_port(), port);
        self.set_src_port(port);
        self.set_checksum(c);
    }

    /// Rewrites the destination port; a zero (absent) checksum stays zero.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let c = checksum::update16_udp(self.checksum(), self.dst_port(), port);
        self.set_dst_port(port);
        self.set_checksum(c);
    }

    /// Updates the checksum for a pseudo-header IPv4 address change (zero stays zero).
    #[inline]
    pub fn update_checksum_v4_addr(&mut self, old: std::net::Ipv4Addr, new: std::net::Ipv4Addr) {
        let c = checksum::update32_udp(self.checksum(), old.octets(), new.octets());
        self.set_checksum(c);
    }

    /// Updates the checksum for a pseudo-header IPv6 address change. (A zero checksum
    /// is invalid over IPv6; it is left zero rather than invented.)
    #[inline]
    pub fn update_checksum_v6_addr(&mut self, old: std::net::Ipv6Addr, new: std::net::Ipv6Addr) {
        let c = checksum::update128_udp(self.checksum(), old.octets(), new.octets());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.len()).clamp(HEADER_LEN, len);
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A UDP datagram to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl Repr<'_> {
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the datagram with its checksum; returns its length.
    pub fn emit(&self, buf: &mut [u8], pseudo: &PseudoHeader) -> Result<usize, Error> {
        let len = self.buffer_len();
        let l16 = u16::try_from(len).map_err(|_| Error::BadLength)?;
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        b[HEADER_LEN..].copy_from_slice(self.payload);
        let mut p = Packet::new_unchecked(b);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(l16);
        p.fill_checksum(pseudo);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4() -> PseudoHeader {
        PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 19, 0, 2),
        }
    }

    /// 53000 -> 53, length 12, no checksum, 4 payload bytes, 2 bytes trailing padding.
    const DGRAM: [u8; 14] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4, 0, 0,
    ];

    #[test]
    fn parse() {
        let p = Packet::new_checked(&DGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 53000);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(
            p.verify_checksum(&v4()),
            "zero checksum over IPv4 means none"
        );
        let v6 = PseudoHeader::V6 {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
        };
        assert!(
            !p.verify_checksum(&v6),
            "zero checksum over IPv6 is invalid"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&DGRAM[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = DGRAM;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        b[5] = 15;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn zero_checksum_stays_zero_through_nat() {
        let mut b = DGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_dst_port(5353);
        p.update_checksum_v4_addr(Ipv4Addr::new(198, 19, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.dst_port(), 5353);
    }

    #[test]
    fn filled_checksum_survives_nat() {
        let mut b = DGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&v4());
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum(&v4()));
        p.rewrite_src_port(1);
        let nd = Ipv4Addr::new(10, 0, 0, 1);
        p.update_checksum_v4_addr(Ipv4Addr::new(198, 19, 0, 2), nd);
        assert!(p.verify_checksum(&PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: nd
        }));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose a payload word making the checksum compute to 0: fill once with a zero
        // payload word, then set that word to the computed checksum's complement.
        let mut b = [0u8; 10];
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&v4());
        let c = p.checksum();
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum(&v4());
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(&v4()));
    }

    #[test]
    fn emit() {
        let r = Repr {
            src_port: 53000,
            dst_port: 53,
            payload: &[1, 2, 3, 4],
        };
        let mut buf = [0u8; 12];
        assert_eq!(r.emit(&mut buf, &v4()), Ok(12));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(&buf[..6], &DGRAM[..6]);
        assert!(p.verify_checksum(&v4()) && p.checksum() != 0);
        assert_eq!(r.emit(&mut buf[..11], &v4()), Err(Error::Truncated));
    }
}
