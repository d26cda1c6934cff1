//! kernsight's integration tests: one test binary, so that the shared support below is compiled
//! once and the tests share one serial lock. Each module is one area (`syscalls`, `oom`, `net`,
//! ...) and names its tests `<module>::<test>`: `cargo test -p kernsight --test integration oom::`
//! runs one area.
//!
//! Tests that load programs, create cgroups, namespaces or containers need root; without it they
//! print `SKIPPED <test>: <why>` and return, unless `KERNSIGHT_PRIVILEGED_TESTS=required`
//! (`cargo xtask test` as root), which makes them fail instead. Everything a test creates is
//! removed by a `Drop` guard, also when the test fails (see `harness::`).

// A test fails by panicking: unwrapping is how these tests say what they expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod net_support;
mod support;

mod advise;
mod attribution;
mod block_io;
mod budget;
mod capabilities;
mod cgroup_storms;
mod check;
mod cli;
mod conntrack;
mod containers;
mod cpu_wait;
mod cri;
mod deploy;
mod diagnose;
mod dns;
mod escape;
mod fallbacks;
mod families;
mod harness;
mod http_security;
mod interface_slots;
mod kube_api;
mod memory_reclaim;
mod net;
mod net_kernel;
mod net_tc;
mod oom;
mod packet_drops;
mod pins;
mod posture;
mod read_ahead;
mod reliability;
mod restart;
mod sched;
mod seccomp_drift;
mod syscalls;
mod tcp;
mod top;
mod trace;
mod trace_containers;
mod trace_oom;
mod trace_ring;
mod traffic_slots;
mod workloads;
