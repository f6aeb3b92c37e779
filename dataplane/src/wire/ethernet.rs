//! Ethernet II frames with at most one 802.1Q VLAN tag.

use std::fmt;

use super::{be16, put16, Error};

/// A 48-bit MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 6]);

impl Address {
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// Reads an address from the first 6 bytes of `b`; `None` if shorter.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Option<Address> {
        match b.get(..6) {
            Some(&[a0, a1, a2, a3, a4, a5]) => Some(Address([a0, a1, a2, a3, a4, a5])),
            _ => None,
        }
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Group (multicast or broadcast) bit set.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Address::BROADCAST
    }

    /// The 33:33:xx:xx:xx:xx address an IPv6 multicast group maps to (RFC 2464).
    #[inline]
    pub fn ipv6_multicast(group: std::net::Ipv6Addr) -> Address {
        let o = group.octets();
        Address([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// EtherType values. Unknown types are values, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Vlan,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(v) => v,
        }
    }
}

mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    /// With an 802.1Q tag: TCI at 14..16, inner EtherType at 16..18.
    pub const VLAN_TCI: usize = 14;
    pub const VLAN_ETHERTYPE: usize = 16;
}

/// Untagged header length.
pub const HEADER_LEN: usize = 14;
/// Header length with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// A view of an Ethernet frame. After `new_checked`, a frame whose outer EtherType is
/// 0x8100 is known to hold the whole tag.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checks; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking it holds the header (and the VLAN tag, if any).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the buffer holds the header, including the 802.1Q tag when present.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::ETHERTYPE) == 0x8100 && b.len() < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> Address {
        let b = self.buffer.as_ref();
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn src_addr(&self) -> Address {
        let b = self.buffer.as_ref();
        Address([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// The outer EtherType (0x8100 `Vlan` for a tagged frame).
    #[inline]
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// True when the frame carries an 802.1Q tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        be16(self.buffer.as_ref(), field::ETHERTYPE) == 0x8100
    }

    /// The 802.1Q tag control information (PCP, DEI, VID), if tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.is_tagged() {
            Some(be16(self.buffer.as_ref(), field::VLAN_TCI))
        } else {
            None
        }
    }

    /// The 12-bit VLAN id, if tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|t| t & 0x0fff)
    }

    /// The EtherType of the payload: the inner one for a tagged frame.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        if self.is_tagged() {
            EtherType::from(be16(b, field::VLAN_ETHERTYPE))
        } else {
            EtherType::from(be16(b, field::ETHERTYPE))
        }
    }

    /// Offset of the payload: 14, or 18 with a VLAN tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Sets the payload EtherType (the inner one for a tagged frame).
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        let at = if self.is_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        put16(self.buffer.as_mut(), at, t.into());
    }

    /// Sets the tag control information of a tagged frame; no-op if untagged.
    #[inline]
    pub fn set_vlan_tci(&mut self, tci: u16) {
        if self.is_tagged() {
            put16(self.buffer.as_mut(), field::VLAN_TCI, tci);
        }
    }

    /// Swaps source and destination addresses (for replies built in place).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (s, d) = (self.src_addr(), self.dst_addr());
        self.set_src_addr(d);
        self.set_dst_addr(s);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// An Ethernet header to emit: addresses, payload EtherType, optional 802.1Q TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Address,
    pub dst: Address,
    pub ethertype: EtherType,
    pub vlan_tci: Option<u16>,
}

impl Repr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Repr {
        Repr {
            src: frame.src_addr(),
            dst: frame.dst_addr(),
            ethertype: frame.ethertype(),
            vlan_tci: frame.vlan_tci(),
        }
    }

    /// Bytes the header takes.
    pub const fn header_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.header_len();
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        b[field::DESTINATION].copy_from_slice(&self.dst.0);
        b[field::SOURCE].copy_from_slice(&self.src.0);
        match self.vlan_tci {
            Some(tci) => {
                put16(b, field::ETHERTYPE, 0x8100);
                put16(b, field::VLAN_TCI, tci);
                put16(b, field::VLAN_ETHERTYPE, self.ethertype.into());
            }
            None => put16(b, field::ETHERTYPE, self.ethertype.into()),
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x02, // dst
        0x02, 0, 0, 0, 0, 0x01, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb,
    ];

    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x02, 0, 0, 0, 0, 0x01, //
        0x81, 0x00, 0xa0, 0x2a, // PCP 5, VID 42
        0x86, 0xdd, // IPv6
        0x60, 0x00,
    ];

    #[test]
    fn parse_untagged() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), Address([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src_addr(), Address([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn parse_tagged() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert_eq!(f.outer_ethertype(), EtherType::Vlan);
        assert_eq!(f.ethertype(), EtherType::Ipv6);
        assert_eq!(f.vlan_tci(), Some(0xa02a));
        assert_eq!(f.vlan_id(), Some(42));
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x60, 0x00]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Frame::new_checked(&TAGGED[..17]).unwrap_err(),
            Error::Truncated
        );
        assert!(Frame::new_checked(&TAGGED[..18]).is_ok());
        assert!(Frame::new_checked(&UNTAGGED[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn emit_matches_fixtures_and_setters_write() {
        let mut buf = [0u8; 18];
        let r = Repr::parse(&Frame::new_checked(&TAGGED[..]).unwrap());
        assert_eq!(r.emit(&mut buf), Ok(18));
        assert_eq!(&buf[..], &TAGGED[..18]);
        let mut buf = [0u8; 14];
        let r = Repr::parse(&Frame::new_checked(&UNTAGGED[..]).unwrap());
        assert_eq!(r.emit(&mut buf), Ok(14));
        assert_eq!(&buf[..], &UNTAGGED[..14]);
        assert_eq!(r.emit(&mut buf[..13]), Err(Error::Truncated));

        let mut f = Frame::new_checked(TAGGED).unwrap();
        f.swap_addrs();
        f.set_ethertype(EtherType::Arp);
        f.set_vlan_tci(7);
        assert_eq!(f.src_addr(), Address::BROADCAST);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.vlan_id(), Some(7));
        assert_eq!(f.outer_ethertype(), EtherType::Vlan);
    }

    #[test]
    fn mac_helpers() {
        assert_eq!(
            Address([2, 0, 0, 0, 0, 0xab]).to_string(),
            "02:00:00:00:00:ab"
        );
        assert!(Address([1, 0, 0x5e, 0, 0, 1]).is_multicast());
        let g: std::net::Ipv6Addr = "ff02::1:ff00:1234".parse().unwrap();
        assert_eq!(
            Address::ipv6_multicast(g),
            Address([0x33, 0x33, 0xff, 0, 0x12, 0x34])
        );
        assert_eq!(Address::from_bytes(&[1, 2, 3]), None);
    }
}
