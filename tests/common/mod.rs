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
