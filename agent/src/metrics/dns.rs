//! `kernsight_dns_queries_total{qtype}`, `kernsight_dns_responses_total{rcode}`,
//! `kernsight_dns_timeouts_total{qtype}`, `kernsight_dns_malformed_total` and the histogram
//! `kernsight_dns_latency_seconds`, by workload, from the `dns` family's exchanges; and what the
//! matching itself bounded (`kernsight_dns_untracked_queries_total`, `..._unmatched_...`).

use std::{collections::BTreeMap, sync::Arc};

use kernsight_common::counters::LATENCY_SUM_BUCKET;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    LabelNames, NO_LABELS, Series, encode_counters, encode_gauges,
    histogram::{Latency, encode_histogram},
    naming::CgroupNamer,
};
use crate::{
    bpf::{Programs, dns::DnsState},
    dns::{
        exchanges::{CgroupDns, monotonic_now_ns},
        message::{QTYPE_NAMES, RCODE_NAMES},
    },
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct DnsCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl DnsCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

/// The sums of one workload's cgroups.
#[derive(Default)]
struct WorkloadDns {
    counts: CgroupDns,
    latency: Latency,
}

impl WorkloadDns {
    fn add(&mut self, counts: &CgroupDns) {
        let sum = |into: &mut [u64], from: &[u64]| into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        sum(&mut self.counts.queries, &counts.queries);
        sum(&mut self.counts.responses, &counts.responses);
        sum(&mut self.counts.timeouts, &counts.timeouts);
        self.counts.malformed += counts.malformed;
        for (bucket, &count) in counts.latency_buckets.iter().enumerate() {
            if count > 0 {
                self.latency.add(bucket as u32, count);
            }
        }
        self.latency.add(LATENCY_SUM_BUCKET, counts.latency_sum_ns);
    }
}

impl Collector for DnsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.programs.family::<DnsState>() else {
            return Ok(());
        };
        let (rows, untracked, unmatched, pending) = {
            let mut exchanges = state.exchanges();
            // Timeouts are due whether or not DNS traffic came since.
            exchanges.expire(monotonic_now_ns());
            (exchanges.counts_by_cgroup(), exchanges.untracked, exchanges.unmatched, exchanges.pending())
        };
        drop(state);
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let mut series: BTreeMap<Arc<Workload>, WorkloadDns> = BTreeMap::new();
        for (cgroup_id, counts) in &rows {
            series.entry(namer.name(*cgroup_id)).or_default().add(counts);
        }
        drop(namer); // every cgroup named: the index goes before the encoding
        let names = LabelNames::of(&self.resolver);
        let by =
            |values: fn(&CgroupDns) -> &[u64], label: &'static str, names_of: &'static [&'static str]| {
                let names = &names;
                series.iter().flat_map(move |(workload, dns)| {
                    values(&dns.counts)
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(move |(at, &n)| (Series::of(workload, names).with(label, names_of[at]), n))
                })
            };
        encode_counters(
            &mut encoder,
            "kernsight_dns_queries",
            "DNS queries the workload sent to the DNS port (UDP and TCP), by query type (common types by name, the rest other)",
            by(|c| &c.queries, "qtype", &QTYPE_NAMES),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_dns_responses",
            "DNS answers the workload received from the DNS port, by response code (NOERROR, NXDOMAIN, SERVFAIL, REFUSED...)",
            by(|c| &c.responses, "rcode", &RCODE_NAMES),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_dns_timeouts",
            "DNS queries no answer came for within dns.timeout_milliseconds, by query type",
            by(|c| &c.timeouts, "qtype", &QTYPE_NAMES),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_dns_malformed",
            "UDP messages to or from the DNS port that are not well-formed DNS (counted, never parsed further)",
            series
                .iter()
                .filter(|(_, dns)| dns.counts.malformed > 0)
                .map(|(workload, dns)| (Series::of(workload, &names), dns.counts.malformed)),
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_dns_latency_seconds",
            "From a DNS query leaving the workload's socket to its answer arriving (matched by socket cgroup, protocol, addresses, ports and id)",
            None,
            MetricType::Histogram,
        )?;
        for (workload, dns) in series.iter().filter(|(_, dns)| dns.counts.responses.iter().any(|&n| n > 0)) {
            encode_histogram(&mut family, &Series::of(workload, &names), &dns.latency)?;
        }
        encode_counters(
            &mut encoder,
            "kernsight_dns_untracked_queries",
            "DNS queries counted but not timed: dns.max_pending_queries were awaiting an answer",
            [(NO_LABELS, untracked)],
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_dns_unmatched_responses",
            "DNS answers no awaited query matched (after its timeout, or never asked)",
            [(NO_LABELS, unmatched)],
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_dns_pending_queries",
            "DNS queries awaiting an answer",
            [(NO_LABELS, pending as i64)],
        )
    }
}
