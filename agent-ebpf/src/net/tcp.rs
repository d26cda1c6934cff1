//! TCP connection health, per cgroup of the socket: state changes (`inet_sock_set_state`),
//! retransmissions, and resets sent and received.
//!
//! The cgroup is the socket's own (`sk->sk_cgrp_data`: the cgroup of the task that created it;
//! an accepted socket inherits its listener's), never the current task's: most of these events
//! run in softirq (a SYN-ACK, a RST or a retransmission timer), where `current` is whichever
//! task the CPU happened to interrupt.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
    net::{
        DEFAULT_TCP_EVENTS_ENTRIES, DEFAULT_TCP_STARTS_ENTRIES, NO_SOCKET_CGROUP_ID, TcpKey, TcpStart,
        tcp_event,
    },
};

use super::{sock_cgroup, sock_protocol};
use crate::counters::add;
use crate::task::{global, load};

#[map]
static NET_TCP_EVENTS: PerCpuHashMap<TcpKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_TCP_EVENTS_ENTRIES, 0);

/// LRU: a socket whose close is never seen (the agent started mid-connection) cannot fill it.
#[map]
static NET_TCP_STARTS: LruHashMap<u64, TcpStart> =
    LruHashMap::with_max_entries(DEFAULT_TCP_STARTS_ENTRIES, 0);

#[unsafe(no_mangle)]
static RETRANSMIT_HAS_ERR: u32 = 0;
#[unsafe(no_mangle)]
static SKB_TCP_GSO_SEGS_OFFSET: u32 = 0;

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

#[inline(always)]
fn count(cgroup_id: u64, event: u32, amount: u64) {
    let key = TcpKey { cgroup_id, event, _pad: 0 };
    let overflow = || TcpKey { cgroup_id: OVERFLOW_CGROUP_ID, event, _pad: 0 };
    add(&NET_TCP_EVENTS, &key, overflow, map_full::NET_TCP_EVENTS, amount);
}

/// inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn ks_tcp_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // SAFETY: the tracepoint's BTF argument, a full socket.
    if sk.is_null() || unsafe { sock_protocol(sk) } != IPPROTO_TCP {
        return 0;
    }
    // SAFETY: as above.
    let Some(cgroup_id) = (unsafe { sock_cgroup(sk) }) else {
        return 0;
    };
    let address = sk as u64;
    match (old, new) {
        // Lifetimes run from the first SYN (active side) or the end of the handshake (passive).
        (_, TCP_SYN_SENT) => started(address, cgroup_id),
        (TCP_SYN_SENT, TCP_ESTABLISHED) => count(cgroup_id, tcp_event::CONNECTED, 1),
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            count(cgroup_id, tcp_event::ACCEPTED, 1);
            started(address, cgroup_id);
        }
        (_, TCP_CLOSE) => {
            if old == TCP_SYN_SENT {
                count(cgroup_id, tcp_event::FAILED, 1);
            }
            ended(address);
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn started(address: u64, cgroup_id: u64) {
    // SAFETY: helper without preconditions.
    let start = TcpStart { start_ns: unsafe { bpf_ktime_get_ns() }, cgroup_id };
    let _ = NET_TCP_STARTS.insert(&address, &start, 0);
}

#[inline(always)]
fn ended(address: u64) {
    // SAFETY: a copy of the value is taken before the entry is removed.
    let Some(start) = (unsafe { NET_TCP_STARTS.get(&address) }).copied() else {
        return;
    };
    let _ = NET_TCP_STARTS.remove(&address);
    // SAFETY: helper without preconditions.
    let lasted = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.start_ns);
    count(start.cgroup_id, tcp_event::DURATION_BUCKETS + latency_bucket(lasted), 1);
    count(start.cgroup_id, tcp_event::DURATION_BUCKETS + LATENCY_SUM_BUCKET, lasted);
}

/// tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb[, int err]): counted
/// when it went out (err 0) on kernels that report it, every attempt on older ones; in
/// segments (`tcp_skb_pcount`), as the kernel's `RetransSegs` counts them.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn ks_tcp_retransmit(ctx: BtfTracePointContext) -> i32 {
    if global(&RETRANSMIT_HAS_ERR) != 0 {
        let err: i32 = ctx.arg(2);
        if err != 0 {
            return 0;
        }
    }
    // SAFETY: the tracepoint's BTF arguments; `cb` is scratch space the verifier lets a
    // program read at any offset inside it.
    let (cgroup_id, segments) = unsafe {
        let skb: *const u8 = ctx.arg(1);
        let segments: u16 = load(skb, global(&SKB_TCP_GSO_SEGS_OFFSET));
        (sock_cgroup(ctx.arg(0)).unwrap_or(NO_SOCKET_CGROUP_ID), segments)
    };
    count(cgroup_id, tcp_event::RETRANSMIT, u64::from(segments.max(1)));
    0
}

/// tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, ...): `sk` is null when the
/// reset answers a segment no socket owns (a connection attempt to a closed port).
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn ks_tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's BTF argument (null or a socket of any kind).
    let cgroup_id = unsafe { sock_cgroup(ctx.arg(0)) }.unwrap_or(NO_SOCKET_CGROUP_ID);
    count(cgroup_id, tcp_event::RESET_SENT, 1);
    0
}

/// tcp_receive_reset(struct sock *sk)
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn ks_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's BTF argument.
    let cgroup_id = unsafe { sock_cgroup(ctx.arg(0)) }.unwrap_or(NO_SOCKET_CGROUP_ID);
    count(cgroup_id, tcp_event::RESET_RECEIVED, 1);
    0
}
