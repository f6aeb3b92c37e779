//! What the pipeline decided for a frame, and why frames are dropped.

/// The outcome of [`crate::pipeline::Worker::process`]. The frame has already been
/// rewritten in place when the verdict sends it anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on this port.
    Forward(u16),
    /// Transmit back out of the port it arrived on (ARP/ND replies, RST, ICMP errors).
    Reply,
    /// Free the frame; the reason has been counted.
    Drop(DropReason),
    /// Addressed to the appliance itself but not something the dataplane answers
    /// (the runtime hands it to the host path, or counts and frees it).
    ToHost,
    /// Belongs to the flow of another worker: hand it over unchanged.
    Steer(usize),
}

/// A checksum [`crate::pipeline::Worker::process`] left to the NIC in the frame it
/// forwarded (its offload intent), read with [`crate::pipeline::Worker::offload`]. The
/// field holds a stale value, to be computed over the whole transport packet; every other
/// checksum of the frame is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumOffload {
    /// The transport whose checksum is left (today only SCTP's CRC32c).
    pub l4: crate::table::L4Protocol,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Ethernet header length (14, 18 with a VLAN tag).
    pub l2_len: u8,
    /// IP header length, IPv4 options or IPv6 extension headers included.
    pub l3_len: u16,
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $label:literal,)*) => {
        /// Why a frame was dropped: one counter each. `label()` is the Prometheus label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = DropReason::ALL.len();

            /// A stable snake_case name for metrics and logs.
            pub const fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }

            /// Index into a counter array.
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header.
    EthernetTruncated = "ethernet_truncated",
    /// An ethertype the appliance does not handle (neither IPv4, IPv6 nor ARP).
    UnsupportedEthertype = "unsupported_ethertype",
    /// More than one VLAN tag.
    UnsupportedVlan = "unsupported_vlan",
    /// A malformed ARP packet.
    ArpMalformed = "arp_malformed",
    /// An ARP request for an address the appliance does not answer for, or a gratuitous
    /// one.
    ArpIgnored = "arp_ignored",
    /// A malformed IPv4 header (truncated, bad IHL, bad total length, bad version).
    Ipv4Malformed = "ipv4_malformed",
    /// An IPv4 header whose checksum does not verify.
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// A malformed IPv6 header or extension-header chain.
    Ipv6Malformed = "ipv6_malformed",
    /// A malformed TCP, UDP or SCTP header (truncated, bad data offset, bad length).
    L4Malformed = "l4_malformed",
    /// A malformed ICMP or ICMPv6 message.
    IcmpMalformed = "icmp_malformed",
    /// An ICMP error whose embedded packet belongs to no tracked flow.
    IcmpNoFlow = "icmp_no_flow",
    /// ICMP/ICMPv6 types the appliance neither answers nor translates.
    IcmpIgnored = "icmp_ignored",
    /// A Service address, but no frontend on that port and protocol.
    UnknownServicePort = "unknown_service_port",
    /// The client is outside the frontend's loadBalancerSourceRanges.
    SourceRangeDenied = "source_range_denied",
    /// The Service has no usable backend and its policy is to drop.
    NoBackend = "no_backend",
    /// Neither a Service address nor a reply of a tracked flow.
    NoFlow = "no_flow",
    /// A non-first fragment whose first fragment this worker has not translated.
    FragmentNoState = "fragment_no_state",
    /// TTL or hop limit ran out (an ICMP time exceeded was sent where possible).
    TtlExceeded = "ttl_exceeded",
    /// No route to the destination.
    NoRoute = "no_route",
    /// The next hop's link-layer address is unknown; an ARP/ND request went instead.
    NeighbourUnresolved = "neighbour_unresolved",
    /// The frame is too large to be turned into the reply it needed.
    NoRoom = "no_room",
    /// A new flow whose reply key every usable backend already uses for a live flow of
    /// the same client port (through another frontend).
    NatClash = "nat_clash",
    /// Not for the appliance (a destination MAC of another host).
    NotForUs = "not_for_us",
    /// A neighbour solicitation for an address the appliance does not answer for.
    NdIgnored = "nd_ignored",
    /// A first fragment the appliance cannot translate (SCTP: its CRC32c covers the whole
    /// packet, which one fragment does not hold).
    FragmentUnsupported = "fragment_unsupported",
    /// An ARP reply: its sender was learned (when on a connected prefix), and nothing is
    /// sent on. Not an error, but a frame not forwarded.
    ArpReplyConsumed = "arp_reply_consumed",
    /// A neighbour advertisement: as an ARP reply.
    NdAdvertConsumed = "nd_advert_consumed",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indexes_dense() {
        let mut labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
