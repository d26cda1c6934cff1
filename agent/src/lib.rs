//! kernsight: eBPF observability agent (`kernsight run`) and node-local tool.
//!
//! The binary is a thin `main`; the modules are a library so that integration tests can drive
//! the real client code (CRI, cgroupfs, procfs) against real runtimes and kernels.

pub mod advise;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod dns;
pub mod duration;
pub mod events;
pub mod freshness;
pub mod heap;
pub mod http;
pub mod inspect;
pub mod kernel;
pub mod label_filter;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod parallel;
pub mod pod_labels;
pub mod posture;
pub mod seccomp;
pub mod seeded_hash;
pub mod terminal;
pub mod top;
pub mod trace;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod testing;
