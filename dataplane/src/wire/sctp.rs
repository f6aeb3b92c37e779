//! SCTP common headers (RFC 9260): ports, verification tag, the CRC32c checksum over
//! the whole packet (table-driven Castagnoli CRC), and the first chunk's type (to see
//! INIT and ABORT).

use super::{be16, be32, put16, put32, Error};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VERIFICATION_TAG: usize = 4;
    pub const CHECKSUM: core::ops::Range<usize> = 8..12;
    pub const FIRST_CHUNK_TYPE: usize = 12;
    pub const FIRST_CHUNK_FLAGS: usize = 13;
    pub const FIRST_CHUNK_LEN: usize = 14;
}

/// Common header length.
pub const HEADER_LEN: usize = 12;
/// Common header plus one chunk header: the least a valid packet holds.
pub const MIN_PACKET_LEN: usize = 16;

/// Chunk types. Unknown types are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkType {
    Data,
    Init,
    InitAck,
    Sack,
    Heartbeat,
    HeartbeatAck,
    Abort,
    Shutdown,
    ShutdownAck,
    Error,
    CookieEcho,
    CookieAck,
    ShutdownComplete,
    Unknown(u8),
}

impl From<u8> for ChunkType {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            0 => ChunkType::Data,
            1 => ChunkType::Init,
            2 => ChunkType::InitAck,
            3 => ChunkType::Sack,
            4 => ChunkType::Heartbeat,
            5 => ChunkType::HeartbeatAck,
            6 => ChunkType::Abort,
            7 => ChunkType::Shutdown,
            8 => ChunkType::ShutdownAck,
            9 => ChunkType::Error,
            10 => ChunkType::CookieEcho,
            11 => ChunkType::CookieAck,
            14 => ChunkType::ShutdownComplete,
            o => ChunkType::Unknown(o),
        }
    }
}

impl From<ChunkType> for u8 {
    #[inline]
    fn from(c: ChunkType) -> u8 {
        match c {
            ChunkType::Data => 0,
            ChunkType::Init => 1,
            ChunkType::InitAck => 2,
            ChunkType::Sack => 3,
            ChunkType::Heartbeat => 4,
            ChunkType::HeartbeatAck => 5,
            ChunkType::Abort => 6,
            ChunkType::Shutdown => 7,
            ChunkType::ShutdownAck => 8,
            ChunkType::Error => 9,
            ChunkType::CookieEcho => 10,
            ChunkType::CookieAck => 11,
            ChunkType::ShutdownComplete => 14,
            ChunkType::Unknown(o) => o,
        }
    }
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) lookup tables for slicing by
/// 8, built at compile time: `[0]` is the classic byte table, `[k]` advances a byte
/// that sits k positions further back.
static CRC32C_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
};

/// Continues a CRC32c over `data` (8 bytes per step). Start from `!0`, finish with `!crc`.
#[inline]
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC32C_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC32c of `data` (RFC 3720 appendix B.4).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

const CRC32C_POLY: u32 = 0x82F6_3B78;

/// Product of two polynomials modulo the CRC32c polynomial, in the reflected bit order
/// the CRC register uses (bit 31 is x^0).
const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p: u32 = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLY
        } else {
            b >> 1
        };
    }
    p
}

/// Largest shift (in zero bytes) served from [`X_POW_8N`]; longer ones are composed.
const X_POW_TABLE_LEN: usize = 2048;

/// `X_POW_8N[n]` = x^(8n) mod P: feeding n zero bytes through the register multiplies
/// its state by this.
static X_POW_8N: [u32; X_POW_TABLE_LEN] = {
    let mut t = [0u32; X_POW_TABLE_LEN];
    t[0] = 1 << 31;
    let x8 = 1u32 << (31 - 8);
    let mut i = 1;
    while i < X_POW_TABLE_LEN {
        t[i] = mul_mod_p(t[i - 1], x8);
        i += 1;
    }
    t
};

/// Register state after `n` zero bytes fed to a register holding `state`.
#[inline]
fn shift_zero_bytes(mut state: u32, mut n: usize) -> u32 {
    while n >= X_POW_TABLE_LEN {
        state = mul_mod_p(X_POW_8N[X_POW_TABLE_LEN - 1], state);
        n -= X_POW_TABLE_LEN - 1;
    }
    mul_mod_p(X_POW_8N[n], state)
}

/// Incremental CRC32c: the CRC of a `total_len`-byte message whose CRC was `crc`,
/// after the bytes `old` at `offset` are replaced by `new` (same length, ≤ 16 bytes).
/// CRC32c is affine, so the change is the CRC (zero init, no final xor) of
/// `old ^ new` followed by the bytes after it as zeros. Cost: independent of
/// `total_len` below 2 KiB (one 32-step multiply). Returns `crc` unchanged if the
/// arguments do not fit (`offset + len > total_len`, lengths differ or exceed 16).
#[inline]
pub fn crc32c_replace(crc: u32, total_len: usize, offset: usize, old: &[u8], new: &[u8]) -> u32 {
    let k = old.len();
    if k != new.len() || k > 16 || offset + k > total_len {
        return crc;
    }
    let mut delta = [0u8; 16];
    for i in 0..k {
        delta[i] = old[i] ^ new[i];
    }
    let state = crc32c_update(0, &delta[..k]);
    crc ^ shift_zero_bytes(state, total_len - offset - k)
}

/// A view of an SCTP packet: the buffer is the whole packet (the IP payload). After
/// `new_checked` the common header and the first chunk header are present.
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
        if buffer.as_ref().len() < MIN_PACKET_LEN {
            return Err(Error::Truncated);
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
    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// The checksum field as the CRC value (it is stored little-endian on the wire).
    #[inline]
    pub fn checksum(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_le_bytes([b[8], b[9], b[10], b[11]])
    }

    #[inline]
    pub fn first_chunk_type(&self) -> ChunkType {
        ChunkType::from(self.buffer.as_ref()[field::FIRST_CHUNK_TYPE])
    }

    #[inline]
    pub fn first_chunk_flags(&self) -> u8 {
        self.buffer.as_ref()[field::FIRST_CHUNK_FLAGS]
    }

    #[inline]
    pub fn first_chunk_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FIRST_CHUNK_LEN)
    }

    /// The chunks (everything after the common header).
    #[inline]
    pub fn chunks(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// CRC32c over the packet with the checksum field taken as zero.
    #[inline]
    pub fn compute_checksum(&self) -> u32 {
        let b = self.buffer.as_ref();
        let mut c = crc32c_update(!0, &b[..8]);
        c = crc32c_update(c, &[0; 4]);
        !crc32c_update(c, &b[HEADER_LEN..])
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        self.compute_checksum() == self.checksum()
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

    #[inline]
    pub fn set_verification_tag(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::VERIFICATION_TAG, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u32) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_le_bytes());
    }

    /// Recomputes and writes the CRC32c over the whole packet.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }

    /// Rewrites the source port and updates the CRC32c incrementally (cost independent
    /// of packet length). SCTP's checksum covers no IP address, so this is all an
    /// address+port NAT needs. A wrong checksum stays wrong.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port().to_be_bytes();
        let len = self.buffer.as_ref().len();
        let c = crc32c_replace(
            self.checksum(),
            len,
            field::SRC_PORT,
            &old,
            &port.to_be_bytes(),
        );
        self.set_src_port(port);
        self.set_checksum(c);
    }

    /// Rewrites the destination port and updates the CRC32c incrementally.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port().to_be_bytes();
        let len = self.buffer.as_ref().len();
        let c = crc32c_replace(
            self.checksum(),
            len,
            field::DST_PORT,
            &old,
            &port.to_be_bytes(),
        );
        self.set_dst_port(port);
        self.set_checksum(c);
    }

    #[inline]
    pub fn chunks_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_rfc3720_vectors() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113f_db5c);
        // iSCSI SCSI Read (10) command PDU.
        let pdu: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14,
            0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(crc32c(&pdu), 0xd996_3a56);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // Chained updates equal one pass.
        assert_eq!(
            !crc32c_update(crc32c_update(!0, &inc[..7]), &inc[7..]),
            0x46dd_794e
        );
    }

    /// INIT chunk from port 5000 to 36412, tag 0.
    fn init() -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..2].copy_from_slice(&5000u16.to_be_bytes());
        b[2..4].copy_from_slice(&36412u16.to_be_bytes());
        b[12] = 1; // INIT
        b[14..16].copy_from_slice(&20u16.to_be_bytes());
        b[16..20].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // initiate tag
        b
    }

    #[test]
    fn parse_and_checksum() {
        let mut b = init();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.src_port(), 5000);
        assert_eq!(p.dst_port(), 36412);
        assert_eq!(p.verification_tag(), 0);
        assert_eq!(p.first_chunk_type(), ChunkType::Init);
        assert_eq!(p.first_chunk_len(), 20);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        // The field holds the CRC of the packet with a zero field, little-endian.
        let mut z = init();
        let want = crc32c(&z);
        assert_eq!(&b[8..12], &want.to_le_bytes());
        z[8..12].copy_from_slice(&want.to_le_bytes());
        let mut p = Packet::new_checked(&mut z[..]).unwrap();
        p.set_dst_port(8080);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn incremental_crc_matches_recompute() {
        for len in [16usize, 17, 64, 1500, 2047, 2048, 2049, 5000, 9000] {
            let mut b: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            b[8..12].copy_from_slice(&[0; 4]);
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            p.rewrite_dst_port(0x1f90);
            p.rewrite_src_port(0xffff);
            assert!(p.verify_checksum(), "len {len}");
            assert_eq!((p.src_port(), p.dst_port()), (0xffff, 0x1f90));
        }
        let m = b"123456789";
        let c = crc32c(m);
        let changed = b"12AB56789";
        assert_eq!(crc32c_replace(c, 9, 2, b"34", b"AB"), crc32c(changed));
        // Arguments that do not fit leave the CRC alone.
        assert_eq!(crc32c_replace(c, 9, 8, b"34", b"AB"), c);
        assert_eq!(crc32c_replace(c, 9, 0, b"3", b"AB"), c);
    }

    #[test]
    fn malformed_and_chunk_types() {
        let b = init();
        assert_eq!(Packet::new_checked(&b[..15]).unwrap_err(), Error::Truncated);
        let mut a = b;
        a[12] = 6;
        assert_eq!(
            Packet::new_checked(&a[..]).unwrap().first_chunk_type(),
            ChunkType::Abort
        );
        a[12] = 200;
        assert_eq!(
            Packet::new_checked(&a[..]).unwrap().first_chunk_type(),
            ChunkType::Unknown(200)
        );
        for n in 0..=255u8 {
            assert_eq!(u8::from(ChunkType::from(n)), n);
        }
    }
}
