//! ICMPv6 (RFC 4443) and the neighbour discovery messages the appliance answers and
//! sends (RFC 4861): echo, destination unreachable, packet too big (MTU), time exceeded
//! with the quoted original header, and neighbour solicitation/advertisement with the
//! target address and link-layer address option.

use std::net::Ipv6Addr;

use super::checksum::{self, PseudoHeader};
use super::ethernet::Address;
use super::ipv6;
use super::{be16, be32, put16, put32, Error};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const MTU: usize = 4;
    pub const NDP_FLAGS: usize = 4;
    pub const DATA: usize = 8;
    pub const TARGET: core::ops::Range<usize> = 8..24;
    pub const NDP_OPTIONS: usize = 24;
}

pub const HEADER_LEN: usize = 8;
/// Neighbour solicitation/advertisement length without options.
pub const NDP_LEN: usize = 24;
const PROTOCOL: u8 = 58;
/// NDP option types for link-layer addresses.
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;
/// Most NDP options looked at before giving up.
const MAX_NDP_OPTIONS: usize = 16;

/// Destination-unreachable codes.
pub mod unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const ADDRESS: u8 = 3;
    pub const PORT: u8 = 4;
}

/// ICMPv6 message types. Unknown types are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    DstUnreachable,
    PacketTooBig,
    TimeExceeded,
    ParamProblem,
    EchoRequest,
    EchoReply,
    RouterSolicit,
    RouterAdvert,
    NeighborSolicit,
    NeighborAdvert,
    Redirect,
    Unknown(u8),
}

impl From<u8> for Message {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            1 => Message::DstUnreachable,
            2 => Message::PacketTooBig,
            3 => Message::TimeExceeded,
            4 => Message::ParamProblem,
            128 => Message::EchoRequest,
            129 => Message::EchoReply,
            133 => Message::RouterSolicit,
            134 => Message::RouterAdvert,
            135 => Message::NeighborSolicit,
            136 => Message::NeighborAdvert,
            137 => Message::Redirect,
            o => Message::Unknown(o),
        }
    }
}

impl From<Message> for u8 {
    #[inline]
    fn from(m: Message) -> u8 {
        match m {
            Message::DstUnreachable => 1,
            Message::PacketTooBig => 2,
            Message::TimeExceeded => 3,
            Message::ParamProblem => 4,
            Message::EchoRequest => 128,
            Message::EchoReply => 129,
            Message::RouterSolicit => 133,
            Message::RouterAdvert => 134,
            Message::NeighborSolicit => 135,
            Message::NeighborAdvert => 136,
            Message::Redirect => 137,
            Message::Unknown(o) => o,
        }
    }
}

impl Message {
    /// True for error messages (types below 128), which quote the offending packet.
    #[inline]
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

/// Neighbour advertisement flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NeighborFlags(pub u8);

impl NeighborFlags {
    pub const ROUTER: NeighborFlags = NeighborFlags(0x80);
    pub const SOLICITED: NeighborFlags = NeighborFlags(0x40);
    pub const OVERRIDE: NeighborFlags = NeighborFlags(0x20);

    #[inline]
    pub const fn contains(self, o: NeighborFlags) -> bool {
        self.0 & o.0 == o.0
    }
}

impl std::ops::BitOr for NeighborFlags {
    type Output = NeighborFlags;
    #[inline]
    fn bitor(self, o: NeighborFlags) -> NeighborFlags {
        NeighborFlags(self.0 | o.0)
    }
}

/// A view of an ICMPv6 message (the whole upper-layer payload). After `new_checked` the
/// 8-byte header is present, and for NS/NA the 24-byte fixed part.
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
        let ndp = matches!(
            Message::from(b[field::TYPE]),
            Message::NeighborSolicit | Message::NeighborAdvert
        );
        if ndp && b.len() < NDP_LEN {
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

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Everything after the 8-byte header (echo data, quoted packet, NDP body).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// The original IPv6 header an error message quotes, checked leniently (its payload
    /// length may exceed what is present).
    #[inline]
    pub fn quoted_ipv6(&self) -> Result<ipv6::Packet<&[u8]>, Error> {
        ipv6::Packet::new_checked_quoted(self.data())
    }

    /// NA flags (router, solicited, override).
    #[inline]
    pub fn neighbor_flags(&self) -> NeighborFlags {
        NeighborFlags(self.buffer.as_ref()[field::NDP_FLAGS] & 0xe0)
    }

    /// Target address of a neighbour solicitation or advertisement; `None` otherwise.
    #[inline]
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        if !matches!(
            self.msg_type(),
            Message::NeighborSolicit | Message::NeighborAdvert
        ) {
            return None;
        }
        let t = self.buffer.as_ref().get(field::TARGET)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(t);
        Some(Ipv6Addr::from(a))
    }

    /// The first NDP link-layer address option of type `opt_type` (`OPT_SOURCE_LL` in
    /// NS, `OPT_TARGET_LL` in NA). `None` if absent or the options are malformed.
    pub fn ndp_link_layer_addr(&self, opt_type: u8) -> Option<Address> {
        let b = self.buffer.as_ref();
        let mut off = field::NDP_OPTIONS;
        for _ in 0..MAX_NDP_OPTIONS {
            let (&t, &l) = (b.get(off)?, b.get(off + 1)?);
            let len = usize::from(l) * 8;
            if len == 0 || off + len > b.len() {
                return None;
            }
            if t == opt_type {
                return Address::from_bytes(&b[off + 2..off + len]);
            }
            off += len;
        }
        None
    }

    /// True when the checksum over the IPv6 pseudo-header and the message verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, PROTOCOL, b.len() as u32);
        checksum::add(ph, checksum::sum(b)) == 0xffff
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

    /// Writes the 4 bytes after the checksum (MTU for packet-too-big, else zero).
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::MTU, v);
    }

    /// Recomputes the checksum over the pseudo-header and the whole message.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::transport(
            &PseudoHeader::V6 { src, dst },
            PROTOCOL,
            self.buffer.as_ref(),
        );
        self.set_checksum(c);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// The quoted original IPv6 header, mutably, for translating it in place.
    #[inline]
    pub fn quoted_ipv6_mut(&mut self) -> Result<ipv6::Packet<&mut [u8]>, Error> {
        ipv6::Packet::new_checked_quoted(self.data_mut())
    }
}

/// ICMPv6 messages the appliance builds.
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
    /// `quoted`: as much of the original packet as fits in the minimum MTU.
    DstUnreachable {
        code: u8,
        quoted: &'a [u8],
    },
    PacketTooBig {
        mtu: u32,
        quoted: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        quoted: &'a [u8],
    },
    /// With a source link-layer address option when `lladdr` is set.
    NeighborSolicit {
        target: Ipv6Addr,
        lladdr: Option<Address>,
    },
    /// With a target link-layer address option when `lladdr` is set.
    NeighborAdvert {
        flags: NeighborFlags,
        target: Ipv6Addr,
        lladdr: Option<Address>,
    },
}

impl<'a> Repr<'a> {
    /// Reads any message this enum has a variant for; `Unsupported` otherwise.
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
                quoted: data,
            },
            Message::PacketTooBig => Repr::PacketTooBig {
                mtu: p.mtu(),
                quoted: data,
            },
            Message::TimeExceeded => Repr::TimeExceeded {
                code: p.msg_code(),
                quoted: data,
            },
            Message::NeighborSolicit => Repr::NeighborSolicit {
                target: p.target_addr().ok_or(Error::Truncated)?,
                lladdr: p.ndp_link_layer_addr(OPT_SOURCE_LL),
            },
            Message::NeighborAdvert => Repr::NeighborAdvert {
                flags: p.neighbor_flags(),
                target: p.target_addr().ok_or(Error::Truncated)?,
                lladdr: p.ndp_link_layer_addr(OPT_TARGET_LL),
            },
            _ => return Err(Error::Unsupported),
        })
    }

    pub fn buffer_len(&self) -> usize {
        match *self {
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Repr::DstUnreachable { quoted, .. }
            | Repr::PacketTooBig { quoted, .. }
            | Repr::TimeExceeded { quoted, .. } => HEADER_LEN + quoted.len(),
            Repr::NeighborSolicit { lladdr, .. } | Repr::NeighborAdvert { lladdr, .. } => {
                NDP_LEN + if lladdr.is_some() { 8 } else { 0 }
            }
        }
    }

    /// Writes the message with its checksum (over `src`/`dst`); returns its length.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, Error> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut p = Packet::new_unchecked(b);
        p.set_msg_code(0);
        p.set_mtu(0);
        match *self {
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
                p.set_msg_type(if matches!(self, Repr::EchoRequest { .. }) {
                    Message::EchoRequest
                } else {
                    Message::EchoReply
                });
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
                p.data_mut().copy_from_slice(data);
            }
            Repr::DstUnreachable { code, quoted } => {
                p.set_msg_type(Message::DstUnreachable);
                p.set_msg_code(code);
                p.data_mut().copy_from_slice(quoted);
            }
            Repr::PacketTooBig { mtu, quoted } => {
                p.set_msg_type(Message::PacketTooBig);
                p.set_mtu(mtu);
                p.data_mut().copy_from_slice(quoted);
            }
            Repr::TimeExceeded { code, quoted } => {
                p.set_msg_type(Message::TimeExceeded);
                p.set_msg_code(code);
                p.data_mut().copy_from_slice(quoted);
            }
            Repr::NeighborSolicit { target, lladdr } => {
                p.set_msg_type(Message::NeighborSolicit);
                emit_ndp_body(p.data_mut(), target, lladdr, OPT_SOURCE_LL);
            }
            Repr::NeighborAdvert {
                flags,
                target,
                lladdr,
            } => {
                p.set_msg_type(Message::NeighborAdvert);
                p.buffer[field::NDP_FLAGS] = flags.0 & 0xe0;
                emit_ndp_body(p.data_mut(), target, lladdr, OPT_TARGET_LL);
            }
        }
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

/// Writes target and optional link-layer option into `body` (the bytes after the
/// 8-byte header), which `buffer_len` sized exactly.
fn emit_ndp_body(body: &mut [u8], target: Ipv6Addr, lladdr: Option<Address>, opt: u8) {
    body[..16].copy_from_slice(&target.octets());
    if let Some(a) = lladdr {
        body[16] = opt;
        body[17] = 1;
        body[18..24].copy_from_slice(&a.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn echo_fixture() {
        // Echo request id 7 seq 9 "ab" from fd00::1 to fd00::2; checksum by hand:
        // pseudo: fd00+1+fd00+2 + len 10 + 58 = 0x1fa47; body 0x8000+7+9+0x6162 = 0xe172.
        // 0x1fa47 + 0xe172 = 0x2dbb9 -> 0xdbbb -> !0xdbbb = 0x2444.
        let b = [128, 0, 0x24, 0x44, 0, 7, 0, 9, b'a', b'b'];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(a("fd00::1"), a("fd00::2")));
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr::EchoRequest {
                ident: 7,
                seq_no: 9,
                data: b"ab"
            }
        );
        let mut out = [0u8; 10];
        r.emit(&mut out, a("fd00::1"), a("fd00::2")).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn neighbor_solicit_fixture() {
        let mut b = vec![135, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&a("fd00::2").octets());
        b.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        let (src, dst) = (a("fd00::1"), a("ff02::1:ff00:2"));
        Packet::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(src, dst);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert_eq!(p.target_addr(), Some(a("fd00::2")));
        assert_eq!(
            p.ndp_link_layer_addr(OPT_SOURCE_LL),
            Some(Address([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(p.ndp_link_layer_addr(OPT_TARGET_LL), None);
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr::NeighborSolicit {
                target: a("fd00::2"),
                lladdr: Some(Address([2, 0, 0, 0, 0, 1]))
            }
        );
        let mut out = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut out, src, dst), Ok(32));
        assert_eq!(out, b);
    }

    #[test]
    fn neighbor_advert_round_trip() {
        let r = Repr::NeighborAdvert {
            flags: NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            target: a("fd00::10"),
            lladdr: Some(Address([2, 0, 0, 0, 0, 9])),
        };
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out, a("fd00::10"), a("fd00::1")).unwrap();
        let p = Packet::new_checked(&out[..]).unwrap();
        assert!(p.verify_checksum(a("fd00::10"), a("fd00::1")));
        assert!(p.neighbor_flags().contains(NeighborFlags::SOLICITED));
        assert!(!p.neighbor_flags().contains(NeighborFlags::ROUTER));
        assert_eq!(Repr::parse(&p), Ok(r));
        let bare = Repr::NeighborAdvert {
            flags: NeighborFlags(0),
            target: a("fd00::10"),
            lladdr: None,
        };
        assert_eq!(bare.buffer_len(), 24);
    }

    #[test]
    fn packet_too_big_with_quote() {
        let ip = ipv6::Repr {
            src: a("fd00::1"),
            dst: a("fd00:10::5"),
            next_header: IpProtocol::Tcp,
            payload_len: 1460,
            hop_limit: 63,
        };
        let mut q = vec![0u8; 48];
        ip.emit(&mut q).unwrap();
        q[40..44].copy_from_slice(&[0x9c, 0x40, 0x1f, 0x90]);
        let r = Repr::PacketTooBig {
            mtu: 1280,
            quoted: &q,
        };
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out, a("fd00:ff::1"), a("fd00::1")).unwrap();
        let mut p = Packet::new_checked(&mut out[..]).unwrap();
        assert_eq!(p.msg_type(), Message::PacketTooBig);
        assert!(p.msg_type().is_error());
        assert_eq!(p.mtu(), 1280);
        {
            let qp = p.quoted_ipv6().unwrap();
            assert_eq!(qp.dst_addr(), a("fd00:10::5"));
            let t = qp.transport().unwrap();
            assert_eq!(t.protocol, IpProtocol::Tcp);
            assert_eq!(
                crate::wire::transport_ports(qp.payload()),
                Some((40000, 8080))
            );
        }
        p.quoted_ipv6_mut().unwrap().set_dst_addr(a("fd00:20::1"));
        p.fill_checksum(a("fd00:ff::1"), a("fd00::1"));
        assert!(p.verify_checksum(a("fd00:ff::1"), a("fd00::1")));
        assert_eq!(p.target_addr(), None);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&[128u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
        let mut ns = [0u8; 23];
        ns[0] = 135;
        assert_eq!(Packet::new_checked(&ns[..]).unwrap_err(), Error::Truncated);
        // Zero-length option and option running off the end are ignored.
        let mut b = vec![136u8, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.ndp_link_layer_addr(OPT_TARGET_LL), None);
        b[25] = 2;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.ndp_link_layer_addr(OPT_TARGET_LL), None);
        let p = Packet::new_checked(&[133u8, 0, 0, 0, 0, 0, 0, 0][..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        let r = Repr::EchoReply {
            ident: 1,
            seq_no: 1,
            data: b"x",
        };
        assert_eq!(
            r.emit(&mut [0u8; 8], a("::1"), a("::1")),
            Err(Error::Truncated)
        );
    }
}
