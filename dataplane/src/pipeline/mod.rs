//! The per-packet pipeline: a received frame, the worker's state and the current
//! `ServiceTable` in; the frame rewritten in place and a [`Verdict`] out.

pub mod config;
pub mod counters;
pub mod fragments;
pub mod neighbour;
pub mod verdict;
pub mod worker;

#[cfg(test)]
mod tests;

pub use crate::flow::owner_worker;
pub use config::{MacAddr, NextHop, PortConfig, Route, Routes, TxChecksumOffloads, WorkerConfig};
pub use counters::PipelineCounters;
pub use neighbour::{Learned, NeighbourTable};
pub use verdict::{ChecksumOffload, DropReason, Verdict};
pub use worker::{Context, Worker};
