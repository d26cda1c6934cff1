//! The `kernsight-floor` object: an empty program on each hook kernsight's families use, that
//! `cargo xtask bench` attaches (with the `kernsight-floor` binary) to measure what any program
//! there costs: the floor each family's overhead is compared with. The agent never loads it.
#![no_std]
#![no_main]
// `cgroup_skb`'s wrapper takes the raw `__sk_buff` pointer and, around an empty body, clippy
// takes it for a dereference in a safe function.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action::XDP_PASS},
    macros::{btf_tracepoint, cgroup_skb, classifier, xdp},
    programs::{BtfTracePointContext, SkBuffContext, TcContext, XdpContext},
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

/// No verdict, as kernsight's TC programs (`TC_ACT_UNSPEC`): the packet goes on to what follows.
#[classifier]
pub fn floor_tc_ingress(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_tc_egress(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Lets every frame through, as kernsight's XDP program does.
#[xdp]
pub fn floor_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

include!("object_root.rs");
