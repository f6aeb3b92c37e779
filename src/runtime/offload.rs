//! Tx checksum offload, runtime side: which of a frame's unfinished checksums the tx
//! port's NIC takes ([`TxOffload::split`]), finishing the others in software
//! ([`finish_checksums`], also for replay, where there is no NIC), and the mbuf's tx
//! offload flags and header lengths ([`prepare_tx`]).

use super::processor::{L4Checksum, TxOffload};
use crate::dpdk::{tx_flags, ChecksumCaps, Mbuf};
use kubypass_dataplane::wire::checksum::{self, PseudoHeader};
use kubypass_dataplane::wire::SctpPacket;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a frame's checksums could not be finished: the frame does not match its
/// [`TxOffload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The frame ends before the headers (or the IP length) the offload describes.
    #[error("frame shorter than the headers its offload describes")]
    Truncated,
    /// `l2_len` is below an Ethernet header's 14 bytes.
    #[error("l2_len below 14")]
    BadL2Len,
    /// The IP header disagrees with the offload: version, `l3_len` (IPv4 IHL, IPv6 at
    /// least 40 and within the payload), or the IPv4 protocol against the transport.
    #[error("IP header does not match the offload (version, header length or protocol)")]
    BadIpHeader,
    /// An IPv4 header checksum asked of an IPv6 packet.
    #[error("IPv4 header checksum asked of an IPv6 packet")]
    Ipv4HeaderOnIpv6,
}

const ETHERNET_HEADER_LEN: usize = 14;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;

impl L4Checksum {
    /// The IP protocol number.
    pub fn protocol(self) -> u8 {
        match self {
            L4Checksum::Tcp => PROTO_TCP,
            L4Checksum::Udp => PROTO_UDP,
            L4Checksum::Sctp => PROTO_SCTP,
        }
    }

    /// Whether a port with `caps` computes this checksum.
    pub fn offered_by(self, caps: ChecksumCaps) -> bool {
        match self {
            L4Checksum::Tcp => caps.tcp,
            L4Checksum::Udp => caps.udp,
            L4Checksum::Sctp => caps.sctp,
        }
    }
}

impl TxOffload {
    /// Splits the checksums left unfinished into those a port with `caps` computes (first)
    /// and those software must finish (second). Both keep the family and header lengths.
    #[inline]
    pub fn split(&self, caps: ChecksumCaps) -> (TxOffload, TxOffload) {
        let hw_ipv4 = self.ipv4_header && caps.ipv4;
        let hw_l4 = self.l4.filter(|k| k.offered_by(caps));
        let hw = TxOffload {
            ipv4_header: hw_ipv4,
            l4: hw_l4,
            ..*self
        };
        let sw = TxOffload {
            ipv4_header: self.ipv4_header && !hw_ipv4,
            l4: if hw_l4.is_some() { None } else { self.l4 },
            ..*self
        };
        (hw, sw)
    }

    /// The `RTE_MBUF_F_TX_*` flags asking the NIC for these checksums (0 when none).
    #[inline]
    pub fn mbuf_tx_flags(&self) -> u64 {
        if self.is_none() {
            return 0;
        }
        let mut f = if self.ipv6 {
            tx_flags::IPV6
        } else if self.ipv4_header {
            tx_flags::IPV4 | tx_flags::IP_CKSUM
        } else {
            tx_flags::IPV4
        };
        f |= match self.l4 {
            Some(L4Checksum::Tcp) => tx_flags::TCP_CKSUM,
            Some(L4Checksum::Udp) => tx_flags::UDP_CKSUM,
            Some(L4Checksum::Sctp) => tx_flags::SCTP_CKSUM,
            None => 0,
        };
        f
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let w = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([*w.first()?, *w.get(1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Result<(), OffloadError> {
    b.get_mut(at..at + 2)
        .ok_or(OffloadError::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn addr<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// Finishes in software every checksum `offload` leaves unfinished, in place: the IPv4
/// header checksum, TCP/UDP over the pseudo-header (recomputed whole, whatever the field
/// held; a UDP result of 0 is written 0xffff), the SCTP CRC32c. `frame` is the whole
/// Ethernet frame (padding after the IP packet is allowed and left out of the sums).
/// Checks the frame against the offload first and changes nothing when they disagree.
/// Does nothing for [`TxOffload::NONE`]. Neither allocates nor panics.
pub fn finish_checksums(frame: &mut [u8], offload: &TxOffload) -> Result<(), OffloadError> {
    if offload.is_none() {
        return Ok(());
    }
    let l2 = usize::from(offload.l2_len);
    let l3 = usize::from(offload.l3_len);
    if l2 < ETHERNET_HEADER_LEN {
        return Err(OffloadError::BadL2Len);
    }
    let ip = frame.get_mut(l2..).ok_or(OffloadError::Truncated)?;
    let version = ip.first().ok_or(OffloadError::Truncated)? >> 4;
    // Where the IP packet ends (within `ip`), and the transport's pseudo-header.
    let (end, pseudo) = if offload.ipv6 {
        if offload.ipv4_header {
            return Err(OffloadError::Ipv4HeaderOnIpv6);
        }
        if ip.len() < IPV6_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        if version != 6 || l3 < IPV6_HEADER_LEN {
            return Err(OffloadError::BadIpHeader);
        }
        let payload = usize::from(be16(ip, 4).ok_or(OffloadError::Truncated)?);
        let end = IPV6_HEADER_LEN + payload;
        if end > ip.len() {
            return Err(OffloadError::Truncated);
        }
        if l3 > end {
            return Err(OffloadError::BadIpHeader);
        }
        // Without extension headers the next header must be the transport.
        let next = ip.get(6).copied().ok_or(OffloadError::Truncated)?;
        if l3 == IPV6_HEADER_LEN && offload.l4.is_some_and(|k| k.protocol() != next) {
            return Err(OffloadError::BadIpHeader);
        }
        let src: [u8; 16] = addr(ip, 8).ok_or(OffloadError::Truncated)?;
        let dst: [u8; 16] = addr(ip, 24).ok_or(OffloadError::Truncated)?;
        let pseudo = PseudoHeader::V6 {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
        };
        (end, pseudo)
    } else {
        if ip.len() < IPV4_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        let ihl = usize::from(ip.first().ok_or(OffloadError::Truncated)? & 0x0f) * 4;
        if version != 4 || ihl != l3 || l3 < IPV4_HEADER_LEN {
            return Err(OffloadError::BadIpHeader);
        }
        let end = usize::from(be16(ip, 2).ok_or(OffloadError::Truncated)?);
        if end > ip.len() {
            return Err(OffloadError::Truncated);
        }
        if end < l3 {
            return Err(OffloadError::BadIpHeader);
        }
        let protocol = ip.get(9).copied().ok_or(OffloadError::Truncated)?;
        if offload.l4.is_some_and(|k| k.protocol() != protocol) {
            return Err(OffloadError::BadIpHeader);
        }
        let src: [u8; 4] = addr(ip, 12).ok_or(OffloadError::Truncated)?;
        let dst: [u8; 4] = addr(ip, 16).ok_or(OffloadError::Truncated)?;
        let pseudo = PseudoHeader::V4 {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
        };
        (end, pseudo)
    };
    // Every check that can fail on the transport is made before any byte is written.
    let segment_len = end - l3;
    let min = match offload.l4 {
        Some(L4Checksum::Tcp) => TCP_HEADER_LEN,
        Some(L4Checksum::Udp) => UDP_HEADER_LEN,
        Some(L4Checksum::Sctp) => kubypass_dataplane::wire::sctp::MIN_PACKET_LEN,
        None => 0,
    };
    if segment_len < min {
        return Err(OffloadError::Truncated);
    }
    if offload.ipv4_header {
        let header = ip.get_mut(..l3).ok_or(OffloadError::Truncated)?;
        put16(header, 10, 0)?;
        let sum = !checksum::sum(header);
        put16(header, 10, sum)?;
    }
    let segment = ip.get_mut(l3..end).ok_or(OffloadError::Truncated)?;
    // A segment of over 4 GiB cannot occur: `end` came from a 16-bit length.
    let len32 = u32::try_from(segment_len).unwrap_or(u32::MAX);
    match offload.l4 {
        Some(L4Checksum::Tcp) => {
            put16(segment, TCP_CHECKSUM, 0)?;
            let c = !checksum::add(pseudo.sum(PROTO_TCP, len32), checksum::sum(segment));
            put16(segment, TCP_CHECKSUM, c)?;
        }
        Some(L4Checksum::Udp) => {
            put16(segment, UDP_CHECKSUM, 0)?;
            let c = !checksum::add(pseudo.sum(PROTO_UDP, len32), checksum::sum(segment));
            put16(segment, UDP_CHECKSUM, checksum::udp_field(c))?;
        }
        Some(L4Checksum::Sctp) => {
            SctpPacket::new_checked(segment)
                .map_err(|_| OffloadError::Truncated)?
                .fill_checksum();
        }
        None => {}
    }
    Ok(())
}

/// What [`prepare_tx`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPrepared {
    /// Checksums left to the NIC (flags and header lengths written to the mbuf).
    pub hardware: TxOffload,
    /// Checksums finished in software because the port lacks their offload.
    pub software: TxOffload,
}

impl TxPrepared {
    /// Whether software had to finish a checksum (the offload fallback ran).
    pub fn fell_back(&self) -> bool {
        !self.software.is_none()
    }
}

/// Readies `m` for transmission on a port whose enabled checksum offloads are `caps`:
/// checksums the port computes get their `RTE_MBUF_F_TX_*` flags (replacing the rx flags
/// the mbuf carried) and l2/l3 lengths; the others are finished in software first. On
/// error the mbuf's flags are untouched and the frame must not be sent (its checksums
/// are wrong). Call only for a non-NONE `offload`; neither allocates nor panics.
#[inline]
pub fn prepare_tx(
    m: &mut Mbuf,
    offload: &TxOffload,
    caps: ChecksumCaps,
) -> Result<TxPrepared, OffloadError> {
    let (hardware, software) = offload.split(caps);
    if !software.is_none() {
        let len = m.len();
        let frame = m
            .frame_and_tailroom()
            .get_mut(..len)
            .ok_or(OffloadError::Truncated)?;
        finish_checksums(frame, &software)?;
    }
    if !hardware.is_none() {
        m.set_ol_flags(hardware.mbuf_tx_flags());
        m.set_tx_header_lens(u16::from(hardware.l2_len), hardware.l3_len, 0);
    }
    Ok(TxPrepared { hardware, software })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubypass_dataplane::packet_builder::PacketBuilder;
    use kubypass_dataplane::wire::checksum::{pseudo_header_v4, pseudo_header_v6};
    use kubypass_dataplane::wire::IpProtocol;

    const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const S4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

    fn c6() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn s6() -> Ipv6Addr {
        "2001:db8:1::10".parse().unwrap()
    }

    /// Leaves `frame`'s checksums as the offload contract does for the NIC: IPv4 header
    /// checksum 0, TCP/UDP field = pseudo-header sum (as rte_ipv4_phdr_cksum /
    /// rte_ipv6_phdr_cksum give it), SCTP CRC stale. Test-side model of the processor.
    fn leave_to_nic(frame: &[u8], o: &TxOffload) -> Vec<u8> {
        let mut f = frame.to_vec();
        let l2 = usize::from(o.l2_len);
        let l3 = usize::from(o.l3_len);
        let ip = &mut f[l2..];
        let (pseudo, end) = if o.ipv6 {
            let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().unwrap();
            let dst: [u8; 16] = ip[24..40].try_into().unwrap();
            let proto = o.l4.map_or(0, L4Checksum::protocol);
            let len = (end - l3) as u32;
            (pseudo_header_v6(src.into(), dst.into(), proto, len), end)
        } else {
            let end = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().unwrap();
            let dst: [u8; 4] = ip[16..20].try_into().unwrap();
            let proto = o.l4.map_or(0, L4Checksum::protocol);
            let len = (end - l3) as u32;
            (pseudo_header_v4(src.into(), dst.into(), proto, len), end)
        };
        if o.ipv4_header {
            ip[10..12].copy_from_slice(&[0, 0]);
        }
        let seg = &mut ip[l3..end];
        match o.l4 {
            Some(L4Checksum::Tcp) => seg[16..18].copy_from_slice(&pseudo.to_be_bytes()),
            Some(L4Checksum::Udp) => seg[6..8].copy_from_slice(&pseudo.to_be_bytes()),
            Some(L4Checksum::Sctp) => {
                for b in &mut seg[8..12] {
                    *b ^= 0x5a;
                }
            }
            None => {}
        }
        f
    }

    fn v4(l4: Option<L4Checksum>, ipv4_header: bool) -> TxOffload {
        TxOffload {
            ipv4_header,
            l4,
            ipv6: false,
            l2_len: 14,
            l3_len: 20,
        }
    }

    fn v6(l4: Option<L4Checksum>) -> TxOffload {
        TxOffload {
            ipv4_header: false,
            l4,
            ipv6: true,
            l2_len: 14,
            l3_len: 40,
        }
    }

    /// (description, frame built correct, what is left to the NIC)
    fn cases() -> Vec<(&'static str, Vec<u8>, TxOffload)> {
        let payload: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(29)).collect();
        let b4 = || PacketBuilder::new().ipv4(C4, S4).payload(&payload);
        let b6 = || PacketBuilder::new().ipv6(c6(), s6()).payload(&payload);
        let mut padded = PacketBuilder::new().ipv4(C4, S4).udp(53, 5353).build();
        padded.resize(60, 0);
        vec![
            (
                "ipv4/tcp",
                b4().tcp(40000, 80).syn().build(),
                v4(Some(L4Checksum::Tcp), true),
            ),
            (
                "ipv4/udp",
                b4().udp(40000, 53).build(),
                v4(Some(L4Checksum::Udp), true),
            ),
            (
                "ipv4/sctp",
                b4().sctp(40000, 3868).sctp_init(7).build(),
                v4(Some(L4Checksum::Sctp), true),
            ),
            (
                "ipv6/tcp",
                b6().tcp(40000, 443).build(),
                v6(Some(L4Checksum::Tcp)),
            ),
            (
                "ipv6/udp",
                b6().udp(40000, 53).build(),
                v6(Some(L4Checksum::Udp)),
            ),
            (
                "ipv6/sctp",
                b6().sctp(40000, 3868).sctp_init(9).build(),
                v6(Some(L4Checksum::Sctp)),
            ),
            ("ipv4 header only", b4().tcp(1, 2).build(), v4(None, true)),
            (
                "ipv4 tcp only, header checksum kept",
                b4().tcp(1, 2).build(),
                v4(Some(L4Checksum::Tcp), false),
            ),
            (
                "vlan + ipv4 options / tcp",
                b4().vlan(100)
                    .ipv4_options(&[1, 1, 1, 0])
                    .tcp(40000, 80)
                    .build(),
                TxOffload {
                    l2_len: 18,
                    l3_len: 24,
                    ..v4(Some(L4Checksum::Tcp), true)
                },
            ),
            (
                "ipv6 + extension header / udp",
                b6().ipv6_ext(IpProtocol::HopByHop, 8)
                    .udp(40000, 53)
                    .build(),
                TxOffload {
                    l3_len: 48,
                    ..v6(Some(L4Checksum::Udp))
                },
            ),
            (
                "ipv4/udp with ethernet padding",
                padded,
                v4(Some(L4Checksum::Udp), true),
            ),
        ]
    }

    #[test]
    fn finishing_what_was_left_to_the_nic_gives_the_frame_built_correct() {
        for (what, good, o) in cases() {
            let mut f = leave_to_nic(&good, &o);
            assert_ne!(f, good, "{what}: the contract changed nothing");
            finish_checksums(&mut f, &o).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(f, good, "{what}");
        }
    }

    #[test]
    fn finishing_ignores_what_the_fields_held() {
        // Full recompute: garbage in the fields gives the same result.
        for (what, good, o) in cases() {
            let mut f = leave_to_nic(&good, &o);
            let l2 = usize::from(o.l2_len);
            let l3 = usize::from(o.l3_len);
            if o.ipv4_header {
                f[l2 + 10] = 0xab;
            }
            match o.l4 {
                Some(L4Checksum::Tcp) => f[l2 + l3 + 16] ^= 0xff,
                Some(L4Checksum::Udp) => f[l2 + l3 + 7] ^= 0x0f,
                _ => {}
            }
            finish_checksums(&mut f, &o).unwrap();
            assert_eq!(f, good, "{what}");
        }
    }

    #[test]
    fn udp_sum_of_zero_is_sent_as_ffff() {
        // A two-byte payload chosen so the checksum computes to 0.
        let mut f = PacketBuilder::new()
            .ipv4(C4, S4)
            .udp(1000, 2000)
            .payload(&[0, 0])
            .build();
        let o = v4(Some(L4Checksum::Udp), false);
        let seg_at = 14 + 20;
        let len = f.len() - seg_at;
        f[seg_at + 6..seg_at + 8].copy_from_slice(&[0, 0]);
        let s = checksum::add(
            pseudo_header_v4(C4, S4, PROTO_UDP, len as u32),
            checksum::sum(&f[seg_at..]),
        );
        f[seg_at + 8..seg_at + 10].copy_from_slice(&(!s).to_be_bytes());
        finish_checksums(&mut f, &o).unwrap();
        assert_eq!(&f[seg_at + 6..seg_at + 8], &[0xff, 0xff]);
    }

    #[test]
    fn none_changes_nothing() {
        let good = PacketBuilder::new().ipv4(C4, S4).tcp(1, 2).build();
        let mut f = good.clone();
        f[14 + 10] = 0; // a broken frame stays broken
        let before = f.clone();
        finish_checksums(&mut f, &TxOffload::NONE).unwrap();
        assert_eq!(f, before);
        assert!(TxOffload::NONE.is_none() && TxOffload::default().is_none());
    }

    #[test]
    fn short_frames_are_errors_and_never_panic() {
        for (what, good, o) in cases() {
            let broken = leave_to_nic(&good, &o);
            let ip_end = if o.ipv6 {
                usize::from(o.l2_len)
                    + 40
                    + usize::from(u16::from_be_bytes([
                        good[usize::from(o.l2_len) + 4],
                        good[usize::from(o.l2_len) + 5],
                    ]))
            } else {
                usize::from(o.l2_len)
                    + usize::from(u16::from_be_bytes([
                        good[usize::from(o.l2_len) + 2],
                        good[usize::from(o.l2_len) + 3],
                    ]))
            };
            for n in 0..ip_end {
                let mut f = broken[..n].to_vec();
                assert_eq!(
                    finish_checksums(&mut f, &o),
                    Err(OffloadError::Truncated),
                    "{what} cut to {n}"
                );
                assert_eq!(f, broken[..n], "{what} cut to {n}: unchanged");
            }
        }
    }

    #[test]
    fn frames_that_disagree_with_their_offload_are_errors_left_unchanged() {
        let tcp4 = leave_to_nic(
            &PacketBuilder::new().ipv4(C4, S4).tcp(1, 2).build(),
            &v4(Some(L4Checksum::Tcp), true),
        );
        let udp6 = leave_to_nic(
            &PacketBuilder::new().ipv6(c6(), s6()).udp(1, 2).build(),
            &v6(Some(L4Checksum::Udp)),
        );
        let mut tiny_sctp = PacketBuilder::new()
            .ipv4(C4, S4)
            .raw(IpProtocol::Sctp)
            .payload(&[0; 12])
            .build();
        tiny_sctp.truncate(14 + 20 + 12);
        let bad: Vec<(&str, &[u8], TxOffload, OffloadError)> = vec![
            (
                "l2_len 0",
                &tcp4,
                TxOffload {
                    l2_len: 0,
                    ..v4(Some(L4Checksum::Tcp), true)
                },
                OffloadError::BadL2Len,
            ),
            (
                "ipv6 flag on ipv4",
                &tcp4,
                TxOffload {
                    ipv6: true,
                    ..v4(Some(L4Checksum::Tcp), false)
                },
                OffloadError::BadIpHeader,
            ),
            (
                "ipv4 on ipv6",
                &udp6,
                v4(Some(L4Checksum::Udp), true),
                OffloadError::BadIpHeader,
            ),
            (
                "ipv4 header checksum of ipv6",
                &udp6,
                TxOffload {
                    ipv4_header: true,
                    ..v6(Some(L4Checksum::Udp))
                },
                OffloadError::Ipv4HeaderOnIpv6,
            ),
            (
                "l3_len not the ihl",
                &tcp4,
                TxOffload {
                    l3_len: 24,
                    ..v4(Some(L4Checksum::Tcp), true)
                },
                OffloadError::BadIpHeader,
            ),
            (
                "udp asked of tcp",
                &tcp4,
                v4(Some(L4Checksum::Udp), true),
                OffloadError::BadIpHeader,
            ),
            (
                "tcp asked of ipv6 udp",
                &udp6,
                v6(Some(L4Checksum::Tcp)),
                OffloadError::BadIpHeader,
            ),
            (
                "ipv6 l3_len past the payload",
                &udp6,
                TxOffload {
                    l3_len: 400,
                    ..v6(Some(L4Checksum::Udp))
                },
                OffloadError::BadIpHeader,
            ),
            (
                "sctp without a chunk header",
                &tiny_sctp,
                v4(Some(L4Checksum::Sctp), true),
                OffloadError::Truncated,
            ),
        ];
        for (what, frame, o, want) in bad {
            let mut f = frame.to_vec();
            assert_eq!(finish_checksums(&mut f, &o), Err(want), "{what}");
            assert_eq!(f, frame, "{what}: unchanged");
        }
    }

    #[test]
    fn split_gives_the_port_what_it_offers_and_software_the_rest() {
        let o = v4(Some(L4Checksum::Tcp), true);
        let (hw, sw) = o.split(ChecksumCaps::ALL);
        assert_eq!((hw, sw.is_none()), (o, true));
        let (hw, sw) = o.split(ChecksumCaps::NONE);
        assert_eq!((hw.is_none(), sw), (true, o));
        let ipv4_only = ChecksumCaps {
            ipv4: true,
            ..ChecksumCaps::NONE
        };
        let (hw, sw) = o.split(ipv4_only);
        assert_eq!(hw, v4(None, true));
        assert_eq!(sw, v4(Some(L4Checksum::Tcp), false));
        let no_sctp = ChecksumCaps {
            sctp: false,
            ..ChecksumCaps::ALL
        };
        let (hw, sw) = v6(Some(L4Checksum::Sctp)).split(no_sctp);
        assert!(hw.is_none());
        assert_eq!(sw, v6(Some(L4Checksum::Sctp)));
        let (hw, sw) = v6(Some(L4Checksum::Udp)).split(no_sctp);
        assert_eq!((hw, sw.is_none()), (v6(Some(L4Checksum::Udp)), true));
    }

    #[test]
    fn mbuf_flags_name_family_and_checksums() {
        use tx_flags::*;
        let f = |o: TxOffload| o.mbuf_tx_flags();
        assert_eq!(
            f(v4(Some(L4Checksum::Tcp), true)),
            IPV4 | IP_CKSUM | TCP_CKSUM
        );
        assert_eq!(f(v4(Some(L4Checksum::Udp), false)), IPV4 | UDP_CKSUM);
        assert_eq!(f(v4(None, true)), IPV4 | IP_CKSUM);
        assert_eq!(f(v6(Some(L4Checksum::Sctp))), IPV6 | SCTP_CKSUM);
        assert_eq!(f(v6(Some(L4Checksum::Tcp))), IPV6 | TCP_CKSUM);
        assert_eq!(f(TxOffload::NONE), 0);
        // The three transport requests are distinct values of one two-bit field.
        let l4 = [TCP_CKSUM, UDP_CKSUM, SCTP_CKSUM];
        for (i, k) in l4.iter().enumerate() {
            assert_eq!(k & L4_MASK, *k);
            assert!(!l4[i + 1..].contains(k));
        }
    }
}
