//! kubypass-dataplane: the per-packet logic of the appliance, with no DPDK and no `unsafe`.
//!
//! It owns the zero-copy wire views (`wire`), the immutable `ServiceTable` snapshot that the
//! control plane builds (`table`), backend selection (`maglev`), flow keys, flow hashes and
//! flow ownership (`flow`), per-worker connection tracking (`conntrack`) and ClientIP
//! session affinity (`affinity`), and the pipeline that turns a received frame into a
//! verdict.
//! Nothing on the per-packet path allocates, locks or panics.
#![forbid(unsafe_code)]

pub mod affinity;
pub mod conntrack;
pub mod flow;
pub mod hash;
pub mod maglev;
pub mod packet_builder;
pub mod pipeline;
pub mod table;
pub mod traffic;
pub mod wire;
