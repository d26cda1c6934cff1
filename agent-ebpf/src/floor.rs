//! The `kernsight-floor` object: an empty program on each hook kernsight's families use, that
//! `cargo xtask bench` attaches (with the `kernsight-floor` binary) to measure what any program
//! there costs: the floor each family's overhead is compared with. The agent never loads it.
#![no_std]
#![no_main]
// `cgroup_skb`'s wrapper takes the raw `__sk_buff` pointer and, around an empty body, clippy
// takes it for a dereference in a safe function.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb},
    programs::{BtfTracePointContext, SkBuffContext},
};

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn floor_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn floor_sched_wakeup(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn floor_sched_wakeup_new(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "cap_capable")]
pub fn floor_cap_capable(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Lets every packet through, as kernsight's traffic programs do.
#[cgroup_skb]
pub fn floor_skb(_ctx: SkBuffContext) -> i32 {
    1
}

include!("object_root.rs");
