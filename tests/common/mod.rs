//! Helpers shared by the integration tests: pcap captures in and out of `net_pcap` ports.
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::path::Path;
use std::time::Duration;

/// Writes `frames` as an Ethernet pcap capture, one second apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).unwrap();
        w.write_packet(&PcapPacket::new(Duration::from_secs(i as u64), len, f))
            .unwrap();
    }
}

/// Every frame of a pcap capture (micro- or nanosecond), in order.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = PcapReader::new(file)
        .unwrap_or_else(|e| panic!("{} is not a pcap file: {e}", path.display()));
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        frames.push(p.unwrap().data.into_owned());
    }
    frames
}

/// A frame of `len` bytes of a counting pattern whose byte 14 is `tag`.
pub fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[14] = tag;
    f
}

/// `good` (a frame with correct checksums) as the tx offload contract leaves it for the
/// NIC: IPv4 header checksum 0, TCP/UDP field = pseudo-header sum (what
/// rte_ipv4_phdr_cksum / rte_ipv6_phdr_cksum give), SCTP CRC stale.
pub fn leave_to_nic(good: &[u8], o: &kubypass::runtime::TxOffload) -> Vec<u8> {
    use kubypass::runtime::L4Checksum;
    use kubypass_dataplane::wire::checksum::{pseudo_header_v4, pseudo_header_v6};
    let mut f = good.to_vec();
    let l3 = usize::from(o.l3_len);
    let ip = &mut f[usize::from(o.l2_len)..];
    let proto = o.l4.map_or(0, L4Checksum::protocol);
    let (pseudo, end) = if o.ipv6 {
        let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let dst: [u8; 16] = ip[24..40].try_into().unwrap();
        let p = pseudo_header_v6(src.into(), dst.into(), proto, (end - l3) as u32);
        (p, end)
    } else {
        let end = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let src: [u8; 4] = ip[12..16].try_into().unwrap();
        let dst: [u8; 4] = ip[16..20].try_into().unwrap();
        let p = pseudo_header_v4(src.into(), dst.into(), proto, (end - l3) as u32);
        (p, end)
    };
    if o.ipv4_header {
        ip[10..12].fill(0);
    }
    let seg = &mut ip[l3..end];
    match o.l4 {
        Some(L4Checksum::Tcp) => seg[16..18].copy_from_slice(&pseudo.to_be_bytes()),
        Some(L4Checksum::Udp) => seg[6..8].copy_from_slice(&pseudo.to_be_bytes()),
        Some(L4Checksum::Sctp) => seg[8..12].iter_mut().for_each(|b| *b ^= 0x5a),
        None => {}
    }
    f
}
