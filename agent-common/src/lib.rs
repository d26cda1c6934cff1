//! Wire types shared by kernsight's kernel programs (`kernsight-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, made of integers only, with explicit padding, and its size is
//! checked at compile time so that both sides agree on the layout byte for byte.
#![no_std]

pub mod block_io;
pub mod capabilities;
pub mod cgroups;
pub mod counters;
pub mod dns;
pub mod escape;
pub mod memory_reclaim;
pub mod net;
pub mod oom;
pub mod processes;
pub mod runqueue;
pub mod syscalls;
pub mod trace;

/// The meaning of the pinned maps' keys and values. Change it with any change to a pinned map's
/// key or value type, or to what a slot or bucket means: an agent finding pins of another
/// version replaces them instead of misreading them.
pub const MAP_LAYOUT_VERSION: u32 = 4;
