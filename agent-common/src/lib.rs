//! Wire types shared by kernsight's kernel programs (`kernsight-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, made of integers only, with explicit padding, and its size is
//! checked at compile time so that both sides agree on the layout byte for byte.
#![no_std]

pub mod cgroups;
pub mod oom;
pub mod sched;
pub mod security;
pub mod syscalls;
