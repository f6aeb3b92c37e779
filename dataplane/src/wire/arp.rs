//! ARP for Ethernet and IPv4 (RFC 826): the only kind the appliance answers or sends.

use std::net::Ipv4Addr;

use super::ethernet::Address;
use super::{arr4, be16, put16, Error};

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation. Unknown codes are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            o => Operation::Unknown(o),
        }
    }
}

impl From<Operation> for u16 {
    #[inline]
    fn from(o: Operation) -> u16 {
        match o {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

/// A view of an ARP packet. `new_checked` accepts only Ethernet (1) / IPv4 (0x0800)
/// with 6/4-byte addresses, so the address accessors read fixed offsets.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Checks length (28) and the hardware/protocol types and lengths.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn operation(&self) -> Operation {
        Operation::from(be16(self.buffer.as_ref(), field::OPER))
    }

    #[inline]
    pub fn sender_hw_addr(&self) -> Address {
        let b = &self.buffer.as_ref()[field::SHA..];
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::SPA))
    }

    #[inline]
    pub fn target_hw_addr(&self) -> Address {
        let b = &self.buffer.as_ref()[field::THA..];
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr4(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_operation(&mut self, o: Operation) {
        put16(self.buffer.as_mut(), field::OPER, o.into());
    }

    #[inline]
    pub fn set_sender_hw_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_sender_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_target_hw_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&a.octets());
    }
}

/// An Ethernet/IPv4 ARP message, for building requests and replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sender_hw_addr: Address,
    pub sender_ip: Ipv4Addr,
    pub target_hw_addr: Address,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// A who-has request for `target_ip` (target hardware address zero).
    pub fn request(sender_hw_addr: Address, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Repr {
        Repr {
            operation: Operation::Request,
            sender_hw_addr,
            sender_ip,
            target_hw_addr: Address([0; 6]),
            target_ip,
        }
    }

    /// The reply to `request`, saying `ip_owner_hw` has the requested address.
    pub fn reply_to(request: &Repr, ip_owner_hw: Address) -> Repr {
        Repr {
            operation: Operation::Reply,
            sender_hw_addr: ip_owner_hw,
            sender_ip: request.target_ip,
            target_hw_addr: request.sender_hw_addr,
            target_ip: request.sender_ip,
        }
    }

    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            operation: p.operation(),
            sender_hw_addr: p.sender_hw_addr(),
            sender_ip: p.sender_ip(),
            target_hw_addr: p.target_hw_addr(),
            target_ip: p.target_ip(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the 28-byte packet at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let b = buf.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        put16(b, field::HTYPE, 1);
        put16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let mut p = Packet::new_unchecked(b);
        p.set_operation(self.operation);
        p.set_sender_hw_addr(self.sender_hw_addr);
        p.set_sender_ip(self.sender_ip);
        p.set_target_hw_addr(self.target_hw_addr);
        p.set_target_ip(self.target_ip);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198, 18, 0, 1, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 198, 18, 0, 2,
    ];

    #[test]
    fn parse_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        let r = Repr::parse(&p);
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.sender_hw_addr, Address([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.sender_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r.target_ip, Ipv4Addr::new(198, 18, 0, 2));
    }

    #[test]
    fn emit_request_and_reply() {
        let req = Repr::request(
            Address([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        let mut buf = [0xeeu8; 28];
        assert_eq!(req.emit(&mut buf), Ok(28));
        assert_eq!(buf, REQUEST);
        let rep = Repr::reply_to(&req, Address([2, 0, 0, 0, 0, 2]));
        rep.emit(&mut buf).unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), Operation::Reply);
        assert_eq!(p.sender_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.target_hw_addr(), Address([2, 0, 0, 0, 0, 1]));
        assert_eq!(req.emit(&mut buf[..27]), Err(Error::Truncated));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        for (at, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[at] = v;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Unsupported);
        }
        let mut b = REQUEST;
        b[7] = 9;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().operation(),
            Operation::Unknown(9)
        );
    }
}
