//! What the dataplane benches share: the address plan, Service tables of a given size,
//! pools of prebuilt frames, and the burst buffer a frame is copied into before each
//! measured step (a NIC hands the worker a fresh frame every time).

// Each bench binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use kubypass_dataplane::hash::mix64;
use kubypass_dataplane::packet_builder::PacketBuilder;
use kubypass_dataplane::table::{
    Backend, Conditions, FrontendKey, FrontendKind, L4Protocol, NoBackendAction, ServiceSpec,
    ServiceTable, ServiceTableBuilder,
};
use kubypass_dataplane::wire::EthernetAddress;

/// The appliance's memory hints, compiled into each bench for its prefetch (for
/// `Worker::set_prefetcher` and the conntrack micro bench; the dataplane crate forbids the
/// `unsafe` an intrinsic needs): the benches measure the appliance's own.
#[allow(unsafe_code)]
#[path = "../../../src/dpdk/memory.rs"]
mod memory;
pub use memory::prefetch;

/// Frames per burst, as a worker polls them.
pub const BURST: usize = 32;

/// Bytes of each frame buffer in a burst (room for the replies a pipeline may write).
pub const FRAME_ROOM: usize = 256;

/// Backends per Service in every bench table.
pub const BACKENDS_PER_SERVICE: usize = 10;

/// Service `i`'s ClusterIP: 198.19.0.0/16 (RFC 2544 range), port 80.
pub fn frontend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc613_0000 + i as u32)
}

pub const FRONTEND_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;

/// Backend `j` of Service `i`: 10.0.0.0/8, behind the gateway on port 1.
pub fn backend_addr(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + ((i as u32) << 4) + j as u32 + 1)
}

/// Clients: 198.18.128.0/17 (32,768 addresses) behind the gateway on port 0.
pub const CLIENT_ADDRS: u64 = 1 << 15;

/// The `k`-th client 5-tuple source: a distinct (address, port) for every `k` below
/// 2³¹ (32,768 addresses × 64,512 ports).
pub fn client(k: u64) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from(0xc612_8000 + (k % CLIENT_ADDRS) as u32);
    let port = 1024 + ((k / CLIENT_ADDRS) % 64_512) as u16;
    (addr, port)
}

/// A table of `services` TCP Services, each with one ClusterIP frontend and
/// [`BACKENDS_PER_SERVICE`] ready backends.
pub fn service_table(services: usize) -> ServiceTable {
    service_table_builder(services).build()
}

/// The builder of [`service_table`], before its Maglev tables are computed.
pub fn service_table_builder(services: usize) -> ServiceTableBuilder {
    let mut b = ServiceTable::builder().generation(1).seed(0x6b75_6279);
    for i in 0..services {
        let id = b.add_service(ServiceSpec {
            name: format!("bench/svc-{i}:http"),
            protocol: L4Protocol::Tcp,
            backends: (0..BACKENDS_PER_SERVICE)
                .map(|j| Backend {
                    addr: IpAddr::V4(backend_addr(i, j)),
                    port: BACKEND_PORT,
                    weight: 1,
                    conditions: Conditions::READY,
                })
                .collect(),
            affinity_timeout_secs: None,
            no_backend: NoBackendAction::Reject,
        });
        b.add_frontend(frontend_key(i), FrontendKind::ClusterIp, id, Vec::new())
            .expect("bench frontends are distinct");
    }
    b
}

pub fn frontend_key(i: usize) -> FrontendKey {
    FrontendKey {
        addr: IpAddr::V4(frontend_addr(i)),
        port: FRONTEND_PORT,
        protocol: L4Protocol::Tcp,
    }
}

/// The Service flow `k` goes to when flows are spread over `services` Services: a
/// scattered choice, so consecutive flows do not share a Service.
pub fn service_of(k: u64, services: usize) -> usize {
    (mix64(k ^ 0x5345_5256) % services as u64) as usize
}

/// The appliance's port 0 (clients' side) and port 1 (backends' side) MACs, and the
/// gateways' MACs on each.
pub const PORT0_MAC: [u8; 6] = [0x02, 0x6b, 0x62, 0, 0, 0x10];
pub const PORT1_MAC: [u8; 6] = [0x02, 0x6b, 0x62, 0, 0, 0x11];
pub const GATEWAY0_MAC: [u8; 6] = [0x02, 0x67, 0x77, 0, 0, 0x10];
pub const GATEWAY1_MAC: [u8; 6] = [0x02, 0x67, 0x77, 0, 0, 0x11];

fn from_clients() -> PacketBuilder {
    PacketBuilder::new().eth(EthernetAddress(GATEWAY0_MAC), EthernetAddress(PORT0_MAC))
}

fn from_backends() -> PacketBuilder {
    PacketBuilder::new().eth(EthernetAddress(GATEWAY1_MAC), EthernetAddress(PORT1_MAC))
}

/// A client→frontend TCP segment of flow `k` (ACK only: an established flow's packet),
/// as the gateway on port 0 sends it.
pub fn forward_ack(k: u64, services: usize) -> Vec<u8> {
    let (c, cport) = client(k);
    from_clients()
        .ipv4(c, frontend_addr(service_of(k, services)))
        .tcp(cport, FRONTEND_PORT)
        .build()
}

/// The client's SYN opening flow `k`.
pub fn forward_syn(k: u64, services: usize) -> Vec<u8> {
    let (c, cport) = client(k);
    from_clients()
        .ipv4(c, frontend_addr(service_of(k, services)))
        .tcp(cport, FRONTEND_PORT)
        .syn()
        .build()
}

/// A backend→client segment of flow `k` (SYN-ACK or ACK), as the gateway on port 1
/// sends it.
pub fn reverse(k: u64, backend: Ipv4Addr, backend_port: u16, syn_ack: bool) -> Vec<u8> {
    let (c, cport) = client(k);
    let b = from_backends().ipv4(backend, c).tcp(backend_port, cport);
    if syn_ack {
        b.syn_ack().build()
    } else {
        b.build()
    }
}

/// Prebuilt frames in one flat allocation, one frame per [`POOL_STRIDE`] bytes (a cache
/// line: the benches' frames are 54 bytes), copied out a burst at a time.
pub struct FramePool {
    bytes: Vec<u8>,
    lens: Vec<usize>,
}

/// Bytes per frame in a [`FramePool`].
pub const POOL_STRIDE: usize = 64;

impl FramePool {
    pub fn new(frames: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let mut bytes = Vec::new();
        let mut lens = Vec::new();
        for f in frames {
            assert!(f.len() <= POOL_STRIDE, "bench frame of {} bytes", f.len());
            let start = bytes.len();
            bytes.resize(start + POOL_STRIDE, 0);
            bytes[start..start + f.len()].copy_from_slice(&f);
            lens.push(f.len());
        }
        assert!(
            !lens.is_empty() && lens.len() % BURST == 0,
            "a pool holds whole bursts"
        );
        FramePool { bytes, lens }
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Frame `i` (wrapping).
    pub fn frame(&self, i: usize) -> &[u8] {
        let i = i % self.lens.len();
        &self.bytes[i * POOL_STRIDE..i * POOL_STRIDE + self.lens[i]]
    }

    /// Copies burst number `n` (wrapping) into `burst`: what a NIC's fresh frames cost.
    #[inline]
    pub fn copy_burst(&self, n: usize, burst: &mut Burst) {
        let first = (n * BURST) % self.lens.len();
        for (slot, i) in (first..first + BURST).enumerate() {
            let len = self.lens[i];
            let src = &self.bytes[i * POOL_STRIDE..i * POOL_STRIDE + len];
            burst.frames[slot][..len].copy_from_slice(src);
            burst.lens[slot] = len;
        }
    }
}

/// The reusable receive buffer: [`BURST`] frames of [`FRAME_ROOM`] bytes.
pub struct Burst {
    pub frames: [[u8; FRAME_ROOM]; BURST],
    pub lens: [usize; BURST],
}

impl Burst {
    pub fn new() -> Box<Self> {
        Box::new(Burst {
            frames: [[0; FRAME_ROOM]; BURST],
            lens: [0; BURST],
        })
    }
}

/// `count` distinct indexes in `0..n` in a scattered order (all of them when
/// `count >= n`, repeated to fill `count`).
pub fn scattered(n: u64, count: usize) -> Vec<u64> {
    if count as u64 >= n {
        let mut v: Vec<u64> = (0..n).collect();
        v.sort_by_key(|&k| mix64(k ^ 0x7368_7566));
        return v.iter().cycle().take(count).copied().collect();
    }
    // A stride coprime to n walks 0..n without repeats; start and stride are arbitrary.
    let mut stride = (mix64(n) % n) | 1;
    while gcd(stride, n) != 1 {
        stride += 2;
    }
    (0..count as u64)
        .map(|i| (i * stride + 12_345) % n)
        .collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
