//! Queries matched to their answers, per cgroup: what the `dns` family's records add up to.
//! Everything a tenant controls is bounded: the label values (`message::QTYPE_NAMES`,
//! `RCODE_NAMES`), the cgroups counted (`max_cgroups`, then `other`) and the queries awaiting an
//! answer (`max_pending`, then counted as untracked). Times are the kernel's monotonic clock
//! (`bpf_ktime_get_ns`, the same as `CLOCK_MONOTONIC` here).

use std::collections::{HashMap, VecDeque};

use kernsight_common::{
    counters::{LATENCY_BUCKETS, OVERFLOW_CGROUP_ID, latency_bucket},
    dns::{DNS_CAPTURE_BYTES, DNS_EVENT_SIZE, DNS_PAYLOAD_OFFSET, DnsEvent, EGRESS, PROTOCOL_TCP},
};

use super::message::{self, Message, QTYPE_NAMES, RCODE_NAMES};

/// One record of the ring, decoded: where it went and the message bytes captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub egress: bool,
    pub tcp: bool,
    pub ip_version: u8,
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub bytes: Vec<u8>,
}

/// Decodes a ring record; the error says what was wrong with it.
pub fn decode(record: &[u8]) -> Result<Segment, String> {
    if record.len() < DNS_EVENT_SIZE {
        return Err(format!("{} bytes, not {DNS_EVENT_SIZE}", record.len()));
    }
    // SAFETY: at least `size_of::<DnsEvent>()` bytes, read unaligned; every bit pattern is a
    // valid `DnsEvent` (integers only).
    let event: DnsEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let captured = usize::from(event.captured);
    if captured > DNS_CAPTURE_BYTES
        || captured > usize::from(event.payload_len)
        || !matches!(event.ip_version, 4 | 6)
    {
        return Err(format!("captured {captured} of {} bytes, IPv{}", event.payload_len, event.ip_version));
    }
    Ok(Segment {
        timestamp_ns: event.timestamp_ns,
        cgroup_id: event.cgroup_id,
        egress: event.direction == EGRESS,
        tcp: event.protocol == PROTOCOL_TCP,
        ip_version: event.ip_version,
        local: event.local_addr,
        remote: event.remote_addr,
        local_port: event.local_port,
        remote_port: event.remote_port,
        bytes: record[DNS_PAYLOAD_OFFSET..DNS_PAYLOAD_OFFSET + captured].to_vec(),
    })
}

/// The counts of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDns {
    /// By `QTYPE_NAMES` index.
    pub queries: [u64; QTYPE_NAMES.len()],
    /// By `RCODE_NAMES` index.
    pub responses: [u64; RCODE_NAMES.len()],
    /// Queries without an answer in time, by `QTYPE_NAMES` index.
    pub timeouts: [u64; QTYPE_NAMES.len()],
    /// UDP messages that were not DNS (or a query received, an answer sent on the client side).
    pub malformed: u64,
    /// Query-to-answer times: log2 buckets of nanoseconds, and their exact sum.
    pub latency_buckets: [u64; LATENCY_BUCKETS as usize],
    pub latency_sum_ns: u64,
}

impl Default for CgroupDns {
    fn default() -> Self {
        Self {
            queries: [0; QTYPE_NAMES.len()],
            responses: [0; RCODE_NAMES.len()],
            timeouts: [0; QTYPE_NAMES.len()],
            malformed: 0,
            latency_buckets: [0; LATENCY_BUCKETS as usize],
            latency_sum_ns: 0,
        }
    }
}

/// What an answer must share with its query. The socket's cgroup too: two pods' network
/// namespaces may hold the same addresses (a DNS cache on each one's loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ExchangeKey {
    cgroup_id: u64,
    tcp: bool,
    client: [u8; 16],
    client_port: u16,
    server: [u8; 16],
    server_port: u16,
    id: u16,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    cgroup_id: u64,
    sent_ns: u64,
    qtype: usize,
}

/// What one segment was, for `kernsight trace dns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Query(Message),
    /// An answer, and how long after its query (`None`: no query awaited it).
    Answer(Message, Option<u64>),
    Malformed(message::Malformed),
    /// A TCP segment that does not start a message (the rest of a long one).
    Continuation,
}

/// A query no answer came for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    pub cgroup_id: u64,
    pub qtype: &'static str,
    pub sent_ns: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout_ns: u64,
    pub max_pending: usize,
    pub max_cgroups: usize,
}

#[derive(Debug)]
pub struct Exchanges {
    limits: Limits,
    cgroups: HashMap<u64, CgroupDns>,
    pending: HashMap<ExchangeKey, Pending>,
    /// Awaited queries per cgroup: one cgroup may hold `pending_quota` of them, so that a
    /// tenant flooding queries nobody answers leaves the others timed.
    pending_by_cgroup: HashMap<u64, usize>,
    pending_quota: usize,
    /// (sent, key) in the order the queries were seen; entries answered meanwhile are skipped.
    deadlines: VecDeque<(u64, ExchangeKey)>,
    /// Queries not awaited for want of room (`max_pending`).
    pub untracked: u64,
    /// Answers no awaited query matched (late, after a timeout; or never asked).
    pub unmatched: u64,
}

impl Exchanges {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            cgroups: HashMap::new(),
            pending: HashMap::new(),
            pending_by_cgroup: HashMap::new(),
            pending_quota: (limits.max_pending / 8).max(16),
            deadlines: VecDeque::new(),
            untracked: 0,
            unmatched: 0,
        }
    }

    /// The counts of `cgroup_id`, or of `other` once `max_cgroups` are counted.
    fn counts(&mut self, cgroup_id: u64) -> &mut CgroupDns {
        let id = if self.cgroups.contains_key(&cgroup_id) || self.cgroups.len() < self.limits.max_cgroups {
            cgroup_id
        } else {
            OVERFLOW_CGROUP_ID
        };
        self.cgroups.entry(id).or_default()
    }

    /// Counts one segment.
    pub fn observe(&mut self, segment: &Segment) -> Seen {
        let bytes = if segment.tcp {
            // A message starts with its length; a segment that does not is the rest of one.
            match segment.bytes.get(2..) {
                Some(rest) if segment.bytes.len() >= 14 => rest,
                _ => return Seen::Continuation,
            }
        } else {
            &segment.bytes[..]
        };
        let message = match message::parse(bytes) {
            Ok(message) if message.response != segment.egress => message,
            Ok(_) if segment.tcp => return Seen::Continuation,
            Ok(_) => {
                self.counts(segment.cgroup_id).malformed += 1;
                return Seen::Malformed(message::Malformed::Direction);
            }
            Err(_) if segment.tcp => return Seen::Continuation,
            Err(err) => {
                self.counts(segment.cgroup_id).malformed += 1;
                return Seen::Malformed(err);
            }
        };
        let key = ExchangeKey {
            cgroup_id: segment.cgroup_id,
            tcp: segment.tcp,
            client: segment.local,
            client_port: segment.local_port,
            server: segment.remote,
            server_port: segment.remote_port,
            id: message.id,
        };
        let qtype = message::qtype_slot(message.qtype);
        if segment.egress {
            self.counts(segment.cgroup_id).queries[qtype] += 1;
            self.await_answer(
                key,
                Pending { cgroup_id: segment.cgroup_id, sent_ns: segment.timestamp_ns, qtype },
            );
            return Seen::Query(message);
        }
        let rcode = message::rcode_slot(message.rcode);
        self.counts(segment.cgroup_id).responses[rcode] += 1;
        let latency = match self.take_pending(&key) {
            Some(query) => {
                let latency = segment.timestamp_ns.saturating_sub(query.sent_ns);
                let counts = self.counts(query.cgroup_id);
                counts.latency_buckets[latency_bucket(latency) as usize] += 1;
                counts.latency_sum_ns = counts.latency_sum_ns.saturating_add(latency);
                Some(latency)
            }
            None => {
                self.unmatched += 1;
                None
            }
        };
        Seen::Answer(message, latency)
    }

    /// A resolver's retry (same id, same ports) keeps the first send: the latency is the one
    /// the application waited.
    fn await_answer(&mut self, key: ExchangeKey, query: Pending) {
        if self.pending.contains_key(&key) {
            return;
        }
        let of_cgroup = self.pending_by_cgroup.get(&query.cgroup_id).copied().unwrap_or(0);
        if self.pending.len() >= self.limits.max_pending
            || self.deadlines.len() >= 2 * self.limits.max_pending
            || of_cgroup >= self.pending_quota
        {
            self.untracked += 1;
            return;
        }
        self.pending.insert(key, query);
        self.pending_by_cgroup.insert(query.cgroup_id, of_cgroup + 1);
        self.deadlines.push_back((query.sent_ns, key));
    }

    /// Removes an awaited query (answered or timed out).
    fn take_pending(&mut self, key: &ExchangeKey) -> Option<Pending> {
        let query = self.pending.remove(key)?;
        if let Some(count) = self.pending_by_cgroup.get_mut(&query.cgroup_id) {
            *count -= 1;
            if *count == 0 {
                self.pending_by_cgroup.remove(&query.cgroup_id);
            }
        }
        Some(query)
    }

    /// Counts as timed out the queries sent at least the timeout before `now_ns`; returns them.
    pub fn expire(&mut self, now_ns: u64) -> Vec<TimedOut> {
        let mut timed_out = Vec::new();
        while let Some(&(sent_ns, key)) = self.deadlines.front() {
            if sent_ns.saturating_add(self.limits.timeout_ns) > now_ns {
                break;
            }
            self.deadlines.pop_front();
            // Answered meanwhile, or awaited again since (a later query with the same key).
            let Some(query) = self.pending.get(&key).copied().filter(|q| q.sent_ns == sent_ns) else {
                continue;
            };
            self.take_pending(&key);
            self.counts(query.cgroup_id).timeouts[query.qtype] += 1;
            timed_out.push(TimedOut { cgroup_id: query.cgroup_id, qtype: QTYPE_NAMES[query.qtype], sent_ns });
        }
        timed_out
    }

    /// Forgets the counts of cgroups `gone` says are gone; returns how many.
    pub fn forget(&mut self, gone: &mut dyn FnMut(u64) -> bool) -> usize {
        let before = self.cgroups.len();
        self.cgroups.retain(|&id, _| id == OVERFLOW_CGROUP_ID || !gone(id));
        before - self.cgroups.len()
    }

    /// The counts of every cgroup.
    pub fn counts_by_cgroup(&self) -> Vec<(u64, CgroupDns)> {
        self.cgroups.iter().map(|(&id, counts)| (id, counts.clone())).collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn cgroups(&self) -> usize {
        self.cgroups.len()
    }
}

/// The kernel's monotonic clock (`bpf_ktime_get_ns`), in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests;
