//! What a worker knows about the appliance itself: its ports, their addresses, routes,
//! and the sizes of its tables. Fixed at start; Services change through the table.

use std::net::IpAddr;

use crate::flow::TableHashKey;
use crate::table::IpCidr;

/// A 48-bit Ethernet address.
pub type MacAddr = [u8; 6];

/// One appliance port (a DPDK port), by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub mac: MacAddr,
    /// The appliance's own addresses on this port, with their on-link prefixes
    /// (`198.18.1.1/24`). ARP and ND answer for them; they make connected routes.
    pub addrs: Vec<(IpAddr, u8)>,
    /// The checksums this port's NIC finishes on transmit.
    pub tx_offloads: TxChecksumOffloads,
}

/// Checksums a port's NIC can finish on transmit (the DPDK tx checksum offloads the port
/// enabled). The pipeline leaves a translated packet's SCTP CRC32c to a port that offers
/// it (see [`crate::pipeline::ChecksumOffload`]). It finishes every other checksum a
/// translation touches itself: an incremental update of a 16-bit sum costs a few
/// instructions, less than writing the pseudo-header sum a NIC needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxChecksumOffloads {
    pub ipv4: bool,
    pub tcp: bool,
    pub udp: bool,
    pub sctp: bool,
}

/// A static route: destinations in `prefix` leave through `port`, to the gateway `via`
/// or, without one, directly to the destination (on-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpCidr,
    pub port: u16,
    pub via: Option<IpAddr>,
}

/// Everything a worker needs besides the Service table.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's index, `0..workers`.
    pub index: usize,
    /// How many workers share the flows (see [`crate::pipeline::owner_worker`]).
    pub workers: usize,
    pub ports: Vec<PortConfig>,
    /// Static routes besides the connected ones that port addresses make.
    pub routes: Vec<Route>,
    /// Tracked flows per worker (fixed at start).
    pub conntrack_capacity: usize,
    /// The key of the connection-tracking table's bucket hash: `None` (the default) draws
    /// a random one per worker ([`ConnTrack::new`](crate::conntrack::ConnTrack::new));
    /// benches fix it so that placement is the same in every run.
    pub conntrack_hash_key: Option<TableHashKey>,
    /// ClientIP affinity entries per worker.
    pub affinity_capacity: usize,
    /// IPv4/IPv6 datagrams whose later fragments this worker can follow.
    pub fragment_capacity: usize,
    /// Take frames whatever their destination MAC (a promiscuous dedicated NIC, replay).
    pub promiscuous: bool,
    /// Treat every next hop as resolved, to a fixed MAC (`replay`, tests): the output then
    /// depends only on the L3/L4 logic.
    pub assume_resolved: Option<MacAddr>,
    /// Translate packets of established IPv4 TCP/UDP flows on the fast path (see
    /// `pipeline::worker`'s `fast` module). On by default; off, every packet takes the
    /// full pipeline, with the same result (for diagnosis and for tests comparing both).
    pub fast_path: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            index: 0,
            workers: 1,
            ports: Vec::new(),
            routes: Vec::new(),
            conntrack_capacity: 1 << 16,
            conntrack_hash_key: None,
            affinity_capacity: 1 << 14,
            fragment_capacity: 1024,
            promiscuous: false,
            assume_resolved: None,
            fast_path: true,
        }
    }
}

/// Where a packet to some destination leaves: the port and the next hop to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub port: u16,
    pub addr: IpAddr,
}

/// The routing table: connected prefixes from port addresses plus static routes,
/// longest prefix first. Its size is the appliance's configuration (a handful of
/// entries), not the number of Services, so a short ordered scan is the fastest lookup.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    entries: Vec<Route>,
}

impl Routes {
    pub fn new(ports: &[PortConfig], statics: &[Route]) -> Self {
        let mut entries: Vec<Route> = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            for &(addr, len) in &p.addrs {
                if let Ok(prefix) = IpCidr::new(addr, len) {
                    entries.push(Route {
                        prefix,
                        port: i as u16,
                        via: None,
                    });
                }
            }
        }
        entries.extend_from_slice(statics);
        // Longest prefix first; stable, so among equals connected routes win.
        entries.sort_by_key(|r| std::cmp::Reverse(r.prefix.prefix_len()));
        Routes { entries }
    }

    /// The port and next hop for `dst`, or `None` when no route covers it.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        self.entries
            .iter()
            .find(|r| r.prefix.contains(dst))
            .map(|r| NextHop {
                port: r.port,
                addr: r.via.unwrap_or(dst),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_gateways_are_next_hops() {
        let ports = vec![
            PortConfig {
                mac: [2, 0, 0, 0, 0, 1],
                addrs: vec![("198.18.1.1".parse().unwrap(), 24)],
                tx_offloads: Default::default(),
            },
            PortConfig {
                mac: [2, 0, 0, 0, 0, 2],
                addrs: vec![("198.18.2.1".parse().unwrap(), 24)],
                tx_offloads: Default::default(),
            },
        ];
        let statics = vec![Route {
            prefix: "198.18.0.0/15".parse().unwrap(),
            port: 1,
            via: Some("198.18.2.254".parse().unwrap()),
        }];
        let r = Routes::new(&ports, &statics);
        let hop = |s: &str| r.lookup(s.parse().unwrap());
        assert_eq!(
            hop("198.18.1.7"),
            Some(NextHop {
                port: 0,
                addr: "198.18.1.7".parse().unwrap()
            })
        );
        assert_eq!(
            hop("198.18.9.9"),
            Some(NextHop {
                port: 1,
                addr: "198.18.2.254".parse().unwrap()
            })
        );
        assert_eq!(hop("203.0.113.1"), None);
        assert_eq!(hop("2001:db8::1"), None);
    }
}
