//! ICMPv4 (RFC 792): echo, destination unreachable (with the frag-needed MTU, RFC 1191),
//! time exceeded, and access to the original IP header an error quotes.

use super::checksum;
use super::ipv4;
use super::{be16, put16, Error};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const MTU: usize = 6;
    pub const DATA: usize = 8;
}

pub const HEADER_LEN: usize = 8;

/// Destination-unreachable codes the appliance uses.
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set: carries the next-hop MTU.
    pub const FRAG_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// ICMPv4 message types. Unknown types are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    EchoReply,
    DstUnreachable,
    Redirect,
    EchoRequest,
    TimeExceeded,
    ParamProblem,
    Unknown(u8),
}

impl From<u8> for Message {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            0 => Message::EchoReply,
            3 => Message::DstUnreachable,
            5 => Message::Redirect,
            8 => Message::EchoRequest,
            11 => Message::TimeExceeded,
            12 => Message::ParamProblem,
            o => Message::Unknown(o),
        }
    }
}

impl From<Message> for u8 {
    #[inline]
    fn from(m: Message) -> u8 {
        match m {
            Message::EchoReply => 0,
            Message::DstUnreachable => 3,
            Message::Redirect => 5,
            Message::EchoRequest => 8,
            Message::TimeExceeded => 11,
            Message::ParamProblem => 12,
            Message::Unknown(o) => o,
        }
    }
}

impl Message {
    /// True for error messages that quote the packet that caused them.
    #[inline]
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Message::DstUnreachable
                | Message::TimeExceeded
                | Message::ParamProblem
                | Message::Redirect
        )
    }
}

/// A view of an ICMPv4 message (the whole IP payload). After `new_checked` the 8-byte
/// header is present.
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
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> Message {
        Message::from(self.buffer.as_ref()[field::TYPE])
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Next-hop MTU of a frag-needed message (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU)
    }

    /// Everything after the 8-byte header (echo data, or the quoted packet).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// The original IPv4 header an error message quotes (its payload: the first bytes
    /// of the original transport header, usually 8). Checked leniently: the quoted
    /// total length may exceed what is present.
    #[inline]
    pub fn quoted_ipv4(&self) -> Result<ipv4::Packet<&[u8]>, Error> {
        ipv4::Packet::new_checked_quoted(self.data())
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, m: Message) {
        self.buffer.as_mut()[field::TYPE] = m.into();
    }

    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQNO, v);
    }

    /// Writes the 4 bytes after the checksum: unused (0) and the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, 0);
        put16(self.buffer.as_mut(), field::MTU, mtu);
    }

    /// Recomputes the checksum over the whole message (after translating the quote).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::sum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// The quoted original IPv4 header, mutably, for translating it in place.
    #[inline]
    pub fn quoted_ipv4_mut(&mut self) -> Result<ipv4::Packet<&mut [u8]>, Error> {
        ipv4::Packet::new_checked_quoted(self.data_mut())
    }
}

/// ICMPv4 messages the appliance builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `quoted`: the original IP header and at least 8 bytes of its payload.
    /// `next_hop_mtu` is written for every code and is meaningful for `FRAG_NEEDED`.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        quoted: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        quoted: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads an echo, destination-unreachable or time-exceeded message.
    pub fn parse(p: &Packet<&'a [u8]>) -> Result<Repr<'a>, Error> {
        let whole: &'a [u8] = p.buffer;
        let data = &whole[field::DATA..];
        Ok(match p.msg_type() {
            Message::EchoRequest => Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            Message::EchoReply => Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            Message::DstUnreachable => Repr::DstUnreachable {
                code: p.msg_code(),
                next_hop_mtu: p.next_hop_mtu(),
                quoted: data,
            },
            Message::TimeExceeded => Repr::TimeExceeded {
                code: p.msg_code(),
                quoted: data,
            },
            _ => return Err(Error::Unsupported),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match *self {
                Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data.len(),
                Repr::DstUnreachable { quoted, .. } | Repr::TimeExceeded { quoted, .. } => {
                    quoted.len()
                }
            }
    }

    /// Writes the message with its checksum at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut p = Packet::new_unchecked(b);
        let data = match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                let m = if matches!(self, Repr::EchoRequest { .. }) {
                    Message::EchoRequest
                } else {
                    Message::EchoReply
                };
                p.set_msg_type(m);
                p.set_msg_code(0);
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
                data
            }
            Repr::DstUnreachable {
                code,
                next_hop_mtu,
                quoted,
            } => {
                p.set_msg_type(Message::DstUnreachable);
                p.set_msg_code(code);
                p.set_next_hop_mtu(next_hop_mtu);
                quoted
            }
            Repr::TimeExceeded { code, quoted } => {
                p.set_msg_type(Message::TimeExceeded);
                p.set_msg_code(code);
                p.set_next_hop_mtu(0);
                quoted
            }
        };
        p.data_mut().copy_from_slice(data);
        p.fill_checksum();
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;
    use std::net::Ipv4Addr;

    /// Echo request id 0x1234 seq 1, data "hi", checksum computed by hand:
    /// 0x0800 + 0x1234 + 0x0001 + 0x6869 = 0x829e -> !0x829e = 0x7d61.
    const ECHO: [u8; 10] = [8, 0, 0x7d, 0x61, 0x12, 0x34, 0x00, 0x01, b'h', b'i'];

    #[test]
    fn parse_echo() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), Message::EchoRequest);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert!(p.verify_checksum());
        assert_eq!(
            Repr::parse(&p),
            Ok(Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"hi"
            })
        );
        let mut buf = [0u8; 10];
        Repr::parse(&p).unwrap().emit(&mut buf).unwrap();
        assert_eq!(buf, ECHO);
    }

    fn quoted() -> Vec<u8> {
        let ip = ipv4::Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(10, 244, 0, 5),
            protocol: IpProtocol::Udp,
            payload_len: 1472,
            ttl: 63,
            dont_frag: true,
        };
        let mut b = vec![0u8; 28];
        ip.emit(&mut b).unwrap();
        b[20..28].copy_from_slice(&[0xcf, 0x08, 0x00, 0x35, 0x05, 0xc8, 0x12, 0x34]);
        b
    }

    #[test]
    fn frag_needed_round_trip_and_quote() {
        let q = quoted();
        let r = Repr::DstUnreachable {
            code: unreachable::FRAG_NEEDED,
            next_hop_mtu: 1400,
            quoted: &q,
        };
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut buf), Ok(36));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.msg_type().is_error());
        assert_eq!(p.msg_code(), 4);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(Repr::parse(&p), Ok(r));
        let ip = p.quoted_ipv4().unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 244, 0, 5));
        assert_eq!(ip.total_len(), 1492);
        assert_eq!(
            crate::wire::transport_ports(ip.payload()),
            Some((53000, 53))
        );
    }

    #[test]
    fn translate_quote_in_place() {
        let q = quoted();
        let r = Repr::TimeExceeded {
            code: 0,
            quoted: &q,
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf).unwrap();
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        {
            let mut ip = p.quoted_ipv4_mut().unwrap();
            ip.rewrite_dst_addr(Ipv4Addr::new(198, 19, 0, 10));
            crate::wire::set_transport_ports(ip.payload_mut(), 53000, 5353).unwrap();
            assert!(ip.verify_checksum());
        }
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.msg_type(), Message::TimeExceeded);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&ECHO[..7]).unwrap_err(),
            Error::Truncated
        );
        let p = Packet::new_checked(&ECHO[..8]).unwrap();
        assert_eq!(p.quoted_ipv4().unwrap_err(), Error::Truncated);
        let mut redirect = ECHO;
        redirect[0] = 5;
        let p = Packet::new_checked(&redirect[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        assert_eq!(
            Packet::new_checked(&[42u8; 8][..]).unwrap().msg_type(),
            Message::Unknown(42)
        );
        let mut buf = [0u8; 9];
        let r = Repr::EchoReply {
            ident: 1,
            seq_no: 2,
            data: b"hi",
        };
        assert_eq!(r.emit(&mut buf), Err(Error::Truncated));
    }
}
