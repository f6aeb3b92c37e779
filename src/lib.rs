//! kubypass, the appliance: DPDK boundary (`dpdk`), worker runtime (`runtime`) and
//! configuration (`config`). `main.rs` is the command line over these.

pub mod config;
pub mod dpdk;
pub mod runtime;
