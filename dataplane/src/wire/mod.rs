//! Zero-copy views over frames (after smoltcp's `wire`): one file per protocol, checked
//! constructors after which no accessor can panic, typed errors that each map to a drop
//! counter, RFC 1071/1624 checksums and SCTP's CRC32c.
//!
//! A view is `Packet<T: AsRef<[u8]>>`; `new_checked` validates lengths once, getters
//! read in place, setters (on `T: AsMut<[u8]>`) write in place. Nothing here allocates.
//! `Repr` types exist only for frames built from nothing (ICMP errors, ARP and NDP
//! replies, TCP RST, tests); they `emit` into a caller-provided buffer.
//!
//! Parsing and translating a frame in place (what the pipeline does per packet):
//!
//! ```
//! use kubypass_dataplane::packet_builder::PacketBuilder;
//! use kubypass_dataplane::wire::{
//!     EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket, Error,
//! };
//! use std::net::Ipv4Addr;
//!
//! let (client, vip, pod) =
//!     (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 10), Ipv4Addr::new(10, 244, 1, 5));
//! let mut frame = PacketBuilder::new().ipv4(client, vip).tcp(40000, 80).syn().build();
//!
//! fn dnat(frame: &mut [u8], to: Ipv4Addr, port: u16) -> Result<(), Error> {
//!     let eth = EthernetFrame::new_checked(&mut *frame)?;
//!     if eth.ethertype() != EtherType::Ipv4 {
//!         return Err(Error::Unsupported);
//!     }
//!     let l3 = eth.header_len();
//!     let mut ip = Ipv4Packet::new_checked(&mut frame[l3..])?;
//!     if ip.protocol() != IpProtocol::Tcp || ip.is_later_fragment() {
//!         return Err(Error::Unsupported);
//!     }
//!     let old = ip.rewrite_dst_addr(to); // header checksum updated (RFC 1624)
//!     ip.decrement_ttl();
//!     let mut tcp = TcpPacket::new_checked(ip.payload_mut())?;
//!     tcp.update_checksum_v4_addr(old, to); // pseudo-header part
//!     tcp.rewrite_dst_port(port);
//!     Ok(())
//! }
//!
//! dnat(&mut frame, pod, 8080).unwrap();
//! let want = PacketBuilder::new().ipv4(client, pod).ttl(63).tcp(40000, 8080).syn().build();
//! assert_eq!(frame, want);
//! ```

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod proptests;

use std::fmt;

pub use arp::{Operation as ArpOperation, Packet as ArpPacket, Repr as ArpRepr};
pub use checksum::PseudoHeader;
pub use ethernet::{
    Address as EthernetAddress, EtherType, Frame as EthernetFrame, Repr as EthernetRepr,
};
pub use icmpv4::{Message as Icmpv4Message, Packet as Icmpv4Packet, Repr as Icmpv4Repr};
pub use icmpv6::{Message as Icmpv6Message, Packet as Icmpv6Packet, Repr as Icmpv6Repr};
pub use ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use ipv6::{
    FragmentHeader as Ipv6FragmentHeader, Packet as Ipv6Packet, Repr as Ipv6Repr,
    Transport as Ipv6Transport,
};
pub use sctp::{ChunkType as SctpChunkType, Packet as SctpPacket};
pub use tcp::{Flags as TcpFlags, Packet as TcpPacket, Repr as TcpRepr};
pub use udp::{Packet as UdpPacket, Repr as UdpRepr};

/// Why a frame could not be parsed or a header could not be emitted. `Copy`, and each
/// variant has a stable index so the pipeline can keep one drop counter per variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before a header (or a header field's claimed extent) does.
    Truncated,
    /// IP version field does not match the view (4 or 6).
    BadVersion,
    /// IPv4 IHL below 5 (20 bytes).
    BadHeaderLength,
    /// IPv4 total length below the header length, or beyond the buffer; IPv6 payload
    /// length beyond the buffer.
    BadTotalLength,
    /// TCP data offset below 5 (20 bytes) or beyond the buffer.
    BadDataOffset,
    /// UDP length below 8 or beyond the buffer.
    BadLength,
    /// An IPv6 extension header runs past the end of the payload.
    BadExtensionHeader,
    /// More IPv6 extension headers than the bounded walk accepts.
    TooManyExtensionHeaders,
    /// A well-formed header this code does not handle (ARP for another hardware or
    /// protocol type, ICMP type without a `Repr`).
    Unsupported,
}

impl Error {
    /// Number of variants: the size of a per-error counter array.
    pub const COUNT: usize = 9;

    /// Every variant, in index order.
    pub const ALL: [Error; Error::COUNT] = [
        Error::Truncated,
        Error::BadVersion,
        Error::BadHeaderLength,
        Error::BadTotalLength,
        Error::BadDataOffset,
        Error::BadLength,
        Error::BadExtensionHeader,
        Error::TooManyExtensionHeaders,
        Error::Unsupported,
    ];

    /// Stable index in `0..COUNT`, for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        match self {
            Error::Truncated => 0,
            Error::BadVersion => 1,
            Error::BadHeaderLength => 2,
            Error::BadTotalLength => 3,
            Error::BadDataOffset => 4,
            Error::BadLength => 5,
            Error::BadExtensionHeader => 6,
            Error::TooManyExtensionHeaders => 7,
            Error::Unsupported => 8,
        }
    }

    /// Stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad_version",
            Error::BadHeaderLength => "bad_header_length",
            Error::BadTotalLength => "bad_total_length",
            Error::BadDataOffset => "bad_data_offset",
            Error::BadLength => "bad_length",
            Error::BadExtensionHeader => "bad_extension_header",
            Error::TooManyExtensionHeaders => "too_many_extension_headers",
            Error::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`). Unknown numbers are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    HopByHop,
    Icmp,
    Tcp,
    Udp,
    Ipv6Route,
    Ipv6Frag,
    Esp,
    Ah,
    Icmpv6,
    Ipv6NoNxt,
    Ipv6Opts,
    Sctp,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(n: u8) -> Self {
        match n {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            50 => IpProtocol::Esp,
            51 => IpProtocol::Ah,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            132 => IpProtocol::Sctp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Esp => 50,
            IpProtocol::Ah => 51,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Sctp => 132,
            IpProtocol::Unknown(n) => n,
        }
    }
}

/// The source and destination ports at the start of a TCP, UDP or SCTP header, as
/// quoted in ICMP errors (which carry only the first 8 bytes). `None` if shorter than 4.
#[inline]
pub fn transport_ports(header: &[u8]) -> Option<(u16, u16)> {
    match header.get(..4) {
        Some(&[a, b, c, d]) => Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
        _ => None,
    }
}

/// Writes the source and destination ports at the start of a TCP, UDP or SCTP header
/// (no checksum change). Returns `Err(Truncated)` if shorter than 4 bytes.
#[inline]
pub fn set_transport_ports(header: &mut [u8], src: u16, dst: u16) -> Result<(), Error> {
    match header.get_mut(..4) {
        Some(h) => {
            h[..2].copy_from_slice(&src.to_be_bytes());
            h[2..].copy_from_slice(&dst.to_be_bytes());
            Ok(())
        }
        None => Err(Error::Truncated),
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn arr4(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

#[inline]
pub(crate) fn arr16(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_indices_are_dense_and_names_unique() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        let mut names: Vec<_> = Error::ALL.iter().map(|e| e.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Error::COUNT);
    }

    #[test]
    fn ip_protocol_round_trips_every_number() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(n)), n);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }

    #[test]
    fn transport_ports_read_and_write() {
        let mut h = [0u8; 8];
        assert_eq!(set_transport_ports(&mut h, 1234, 80), Ok(()));
        assert_eq!(transport_ports(&h), Some((1234, 80)));
        assert_eq!(transport_ports(&h[..3]), None);
        assert_eq!(
            set_transport_ports(&mut h[..3], 1, 2),
            Err(Error::Truncated)
        );
    }
}
