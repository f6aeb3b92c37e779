//! IPv6 headers (RFC 8200) and a bounded walk over extension headers (hop-by-hop,
//! routing, destination options, fragment, AH) to the transport header.

use std::net::Ipv6Addr;

use super::checksum;
use super::{arr16, be16, be32, put16, Error, IpProtocol};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Length of the fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Most extension headers the walk follows before giving up.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// The fields of an IPv6 fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Offset of this fragment's data, in bytes.
    pub offset: u16,
    pub more_frags: bool,
    pub ident: u32,
}

impl FragmentHeader {
    /// True for a fragment other than the first (no transport header in it).
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        self.offset != 0
    }
}

/// Where the extension-header walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// The upper-layer protocol (or `Ipv6NoNxt`, `Esp`, or an unknown number).
    pub protocol: IpProtocol,
    /// Offset of its header from the start of the IPv6 header; ≤ 40 + payload length.
    pub offset: usize,
    /// The fragment header, if one was crossed. For a later fragment the walk stops
    /// there: `offset` then points at fragment data, not a transport header.
    pub fragment: Option<FragmentHeader>,
}

/// A view of an IPv6 packet. After `new_checked`, 40 + payload length ≤ buffer length
/// (the buffer may be longer: Ethernet padding); `payload` stops at the payload length.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Checks version and payload length against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_checked_quoted(buffer)?;
        if HEADER_LEN + usize::from(p.payload_len()) > p.buffer.as_ref().len() {
            return Err(Error::BadTotalLength);
        }
        Ok(p)
    }

    /// Checks version and that the fixed header is present, letting the payload length
    /// exceed the buffer: for the original header an ICMPv6 error quotes.
    #[inline]
    pub fn new_checked_quoted(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The next header after the fixed header (maybe an extension header).
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr16(self.buffer.as_ref(), field::SRC))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr16(self.buffer.as_ref(), field::DST))
    }

    /// The transport pseudo-header for this packet's addresses.
    #[inline]
    pub fn pseudo_header(&self) -> checksum::PseudoHeader {
        checksum::PseudoHeader::V6 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// End of the packet: 40 + payload length, capped at the buffer's end.
    #[inline]
    pub fn end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// Everything after the fixed header, extension headers included.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    /// Walks at most [`MAX_EXTENSION_HEADERS`] extension headers to the upper-layer
    /// header. `BadExtensionHeader` if one runs past the packet's end.
    pub fn transport(&self) -> Result<Transport, Error> {
        let b = self.buffer.as_ref();
        let end = self.end();
        let mut nh = b[field::NXT_HDR];
        let mut off = HEADER_LEN;
        let mut fragment = None;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let len = match IpProtocol::from(nh) {
                IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                    match b.get(off + 1) {
                        Some(&l) if off + 2 <= end => (usize::from(l) + 1) * 8,
                        _ => return Err(Error::BadExtensionHeader),
                    }
                }
                IpProtocol::Ah => match b.get(off + 1) {
                    Some(&l) if off + 2 <= end => (usize::from(l) + 2) * 4,
                    _ => return Err(Error::BadExtensionHeader),
                },
                IpProtocol::Ipv6Frag => FRAGMENT_HEADER_LEN,
                protocol => {
                    return Ok(Transport {
                        protocol,
                        offset: off,
                        fragment,
                    })
                }
            };
            if off + len > end {
                return Err(Error::BadExtensionHeader);
            }
            if nh == u8::from(IpProtocol::Ipv6Frag) {
                let fo = be16(b, off + 2);
                let f = FragmentHeader {
                    offset: fo & 0xfff8,
                    more_frags: fo & 1 != 0,
                    ident: be32(b, off + 4),
                };
                fragment = Some(f);
                if f.is_later_fragment() {
                    return Ok(Transport {
                        protocol: IpProtocol::from(b[off]),
                        offset: off + len,
                        fragment,
                    });
                }
            }
            nh = b[off];
            off += len;
        }
        match IpProtocol::from(nh) {
            IpProtocol::HopByHop
            | IpProtocol::Ipv6Route
            | IpProtocol::Ipv6Opts
            | IpProtocol::Ah
            | IpProtocol::Ipv6Frag => Err(Error::TooManyExtensionHeaders),
            protocol => Ok(Transport {
                protocol,
                offset: off,
                fragment,
            }),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the payload length. Keep 40 + it within the buffer, or re-check the view.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.into();
    }

    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }

    /// Decrements the hop limit; returns the new value, or 0 (left unchanged) when it
    /// was 0 or 1 (time exceeded). IPv6 has no header checksum.
    #[inline]
    pub fn decrement_hop_limit(&mut self) -> u8 {
        let h = self.hop_limit();
        if h <= 1 {
            return 0;
        }
        self.set_hop_limit(h - 1);
        h - 1
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The whole buffer mutably (to reach a transport header at `Transport::offset`).
    #[inline]
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[..end]
    }
}

/// A fixed IPv6 header to emit (no extension headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Repr {
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte header at the start of `buf`; returns 40.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let pl = u16::try_from(self.payload_len).map_err(|_| Error::BadTotalLength)?;
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Packet::new_unchecked(b);
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(pl);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0x00, 0x00, 0x00];
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        b.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn parse_plain() {
        let mut b = header(17, &[1, 2, 3, 4, 5, 6, 7, 8]);
        b[1] = 0xa1; // traffic class 0x0a, flow label 0x1xxxx
        b[2] = 0x23;
        b[3] = 0x45;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x0a);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let t = p.transport().unwrap();
        assert_eq!(
            t,
            Transport {
                protocol: IpProtocol::Udp,
                offset: 40,
                fragment: None
            }
        );
    }

    #[test]
    fn walks_hbh_routing_dstopts_fragment_ah() {
        let mut ext = Vec::new();
        ext.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // HBH -> routing, 8 bytes
        ext.extend_from_slice(&[60, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // routing 16
        ext.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // dstopts -> frag
        ext.extend_from_slice(&[51, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]); // frag: off 0, M
        ext.extend_from_slice(&[6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // AH: (1+2)*4=12
        ext.extend_from_slice(&[0xaa; 20]); // TCP
        let b = header(0, &ext);
        let t = Packet::new_checked(&b[..]).unwrap().transport().unwrap();
        assert_eq!(t.protocol, IpProtocol::Tcp);
        assert_eq!(t.offset, 40 + 8 + 16 + 8 + 8 + 12);
        assert_eq!(
            t.fragment,
            Some(FragmentHeader {
                offset: 0,
                more_frags: true,
                ident: 0xdeadbeef
            })
        );
    }

    #[test]
    fn later_fragment_stops_at_fragment_header() {
        let b = header(44, &[17, 0, 0x05, 0xa8, 0, 0, 0, 9, 1, 2, 3, 4]); // offset 1448
        let t = Packet::new_checked(&b[..]).unwrap().transport().unwrap();
        assert_eq!(t.protocol, IpProtocol::Udp);
        assert_eq!(t.offset, 48);
        let f = t.fragment.unwrap();
        assert_eq!((f.offset, f.more_frags, f.ident), (1448, false, 9));
        assert!(f.is_later_fragment());
    }

    #[test]
    fn malformed() {
        let b = header(17, &[0; 8]);
        assert_eq!(Packet::new_checked(&b[..39]).unwrap_err(), Error::Truncated);
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert_eq!(Packet::new_checked(&v4[..]).unwrap_err(), Error::BadVersion);
        assert_eq!(
            Packet::new_checked(&b[..47]).unwrap_err(),
            Error::BadTotalLength
        );
        assert!(Packet::new_checked_quoted(&b[..44]).is_ok());
        // Extension header claims 16 bytes, only 8 present.
        let run_off = header(60, &[6, 1, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&run_off[..]).unwrap();
        assert_eq!(p.transport().unwrap_err(), Error::BadExtensionHeader);
        // Length byte itself missing.
        let no_len = header(0, &[6]);
        let p = Packet::new_checked(&no_len[..]).unwrap();
        assert_eq!(p.transport().unwrap_err(), Error::BadExtensionHeader);
        // Fragment header cut short.
        let frag = header(44, &[6, 0, 0, 0]);
        let p = Packet::new_checked(&frag[..]).unwrap();
        assert_eq!(p.transport().unwrap_err(), Error::BadExtensionHeader);
        // Padding after the payload length is not walked into.
        let mut padded = header(60, &[]);
        padded.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.transport().unwrap_err(), Error::BadExtensionHeader);
        // An endless chain of destination options is cut off.
        let chain: Vec<u8> = (0..10).flat_map(|_| [60u8, 0, 0, 0, 0, 0, 0, 0]).collect();
        let b = header(60, &chain);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.transport().unwrap_err(), Error::TooManyExtensionHeaders);
    }

    #[test]
    fn emit_and_hop_limit() {
        let r = Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 8,
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 48];
        assert_eq!(r.emit(&mut buf), Ok(40));
        // Same bytes as the fixture header carrying 8 payload bytes.
        assert_eq!(&buf[..40], &header(17, &[0; 8])[..40]);
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.decrement_hop_limit(), 63);
        p.set_hop_limit(1);
        assert_eq!(p.decrement_hop_limit(), 0);
        assert_eq!(r.emit(&mut buf[..39]), Err(Error::Truncated));
    }
}
