//! Network families: per-cgroup traffic (`traffic`: cgroup_skb), per-interface traffic by
//! direction and protocol (`tc`; `xdp` for received frames, when configured), TCP connection health (`tcp`) and packet drops by reason (`drops`).
//!
//! Counters here are updated with atomic adds even in per-CPU maps: these programs run in
//! process context and in softirq, and a softirq can interrupt a program on the same CPU (see
//! `crate::counters`). The exceptions, the ingress program's adds to its traffic slot and the
//! TC and XDP programs' adds to their interface slots, say why in `traffic` and
//! `interface_slots`.

mod dns;
mod drops;
mod interface_slots;
mod parse;
mod tc;
mod tcp;
mod traffic;
mod traffic_and_dns;
mod xdp;

use aya_ebpf::{bindings::BPF_NOEXIST, maps::PerCpuHashMap};
use kernsight_common::net::Traffic;

use crate::{
    counters::{atomic_add, count_map_full},
    task::{cgroup_id, global, load},
};

#[inline(always)]
fn add_existing_traffic<K>(map: &PerCpuHashMap<K, Traffic>, key: &K, bytes: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's value in the map.
            unsafe { add_packet(value, bytes, false) };
            true
        }
        None => false,
    }
}

/// Adds a packet of `bytes` to `traffic`: with plain adds where `plain` (the caller says why
/// nothing else can add to the counter on this CPU meanwhile), else with atomic ones.
///
/// # Safety
/// `traffic` points to this CPU's value in a per-CPU map.
#[inline(always)]
unsafe fn add_packet(traffic: *mut Traffic, bytes: u64, plain: bool) {
    // SAFETY: as the caller promised.
    unsafe {
        if plain {
            (*traffic).packets += 1;
            (*traffic).bytes += bytes;
        } else {
            atomic_add(&raw mut (*traffic).packets, 1);
            atomic_add(&raw mut (*traffic).bytes, bytes);
        }
    }
}

/// Counts one packet of `bytes` under `key`, or under the key `overflow` makes (created by user
/// space before attaching) when the map is full (see `counters::add`).
#[inline(always)]
pub(crate) fn add_traffic<K>(
    map: &PerCpuHashMap<K, Traffic>,
    key: &K,
    overflow: impl FnOnce() -> K,
    full_index: u32,
    bytes: u64,
) {
    if add_existing_traffic(map, key, bytes) {
        return;
    }
    let first = Traffic { packets: 1, bytes };
    if map.insert(key, &first, BPF_NOEXIST.into()).is_ok() || add_existing_traffic(map, key, bytes) {
        return;
    }
    count_map_full(full_index);
    add_existing_traffic(map, &overflow(), bytes);
}

#[unsafe(no_mangle)]
static SOCK_CGRP_DATA_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_CGRP_DATA_CGROUP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_STATE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_PROTOCOL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKB_SK_OFFSET: u32 = 0;

/// `TCP_TIME_WAIT` and `TCP_NEW_SYN_RECV`: states of the small socket kinds (timewait and
/// request sockets) that share only `sock_common` with a full `struct sock`.
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// `sk->sk_state`.
///
/// # Safety
/// `sk` must be a BTF pointer to a `struct sock` (or one of its smaller kinds), non-null.
#[inline(always)]
pub(crate) unsafe fn sock_state(sk: *const u8) -> u8 {
    // SAFETY: the caller's BTF pointer, at an offset read from the kernel's own BTF.
    unsafe { load(sk, global(&SOCK_STATE_OFFSET)) }
}

/// `sk->sk_protocol`.
///
/// # Safety
/// As `sock_state`, for a full socket.
#[inline(always)]
pub(crate) unsafe fn sock_protocol(sk: *const u8) -> u16 {
    // SAFETY: the caller's BTF pointer to a full socket, at an offset from the kernel's BTF.
    unsafe { load(sk, global(&SOCK_PROTOCOL_OFFSET)) }
}

/// The cgroup v2 id of a socket (the cgroup of the task that created it), or `None` for a null
/// pointer or a socket kind that has no cgroup (timewait, request sockets).
///
/// # Safety
/// `sk` must be null or a BTF pointer to a `struct sock`.
#[inline(always)]
pub(crate) unsafe fn sock_cgroup(sk: *const u8) -> Option<u64> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: `sk` is a non-null BTF pointer (the caller's promise, null checked above); the
    // cgroup data is read only from full sockets, and the cgroup pointer only when non-null.
    unsafe {
        let state = sock_state(sk);
        if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
            return None;
        }
        let offset = global(&SOCK_CGRP_DATA_OFFSET) + global(&SOCK_CGRP_DATA_CGROUP_OFFSET);
        let cgroup: *mut aya_ebpf::bindings::cgroup = load(sk, offset);
        if cgroup.is_null() {
            return None;
        }
        Some(cgroup_id(cgroup))
    }
}

/// `skb->sk`.
///
/// # Safety
/// `skb` must be a BTF pointer to a `struct sk_buff`.
#[inline(always)]
pub(crate) unsafe fn skb_sock(skb: *const u8) -> *const u8 {
    // SAFETY: the caller's BTF pointer, at an offset read from the kernel's own BTF.
    unsafe { load(skb, global(&SKB_SK_OFFSET)) }
}
