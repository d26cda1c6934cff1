//! The `dns` family: `ks_dns_ingress` and `ks_dns_egress`, cgroup_skb programs on the cgroup v2
//! root, copy the DNS messages every workload sends and receives into `DNS_EVENTS`; when
//! `net_cgroup` runs too, the programs the two share (`ks_net_dns_ingress`, `ks_net_dns_egress`)
//! do. The agent keeps what they add up to (`crate::dns::exchanges`) here, where recycling
//! reaches it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::EbpfLoader;
use kernsight_common::dns::{DNS_EVENTS_LOST_MAP, DNS_EVENTS_MAP, DNS_PORT_GLOBAL};

use super::{
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, attached_any},
    net::{
        TRAFFIC_AND_DNS_PROGRAMS, attach_cgroup, needs_net_admin, traffic_and_dns, traffic_and_dns_attached,
    },
    rings::EventRing,
};
use crate::{
    config::Config,
    dns::exchanges::{Exchanges, Limits},
};

pub const PROBE: &str = "dns";
pub(crate) const PROGRAMS: [&str; 2] = ["ks_dns_ingress", "ks_dns_egress"];

pub struct Dns;

impl Family for Dns {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, config: &Config, facts: &KernelFacts) -> Vec<&'static str> {
        if traffic_and_dns(config, facts) { TRAFFIC_AND_DNS_PROGRAMS } else { PROGRAMS }.to_vec()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.dns.enabled
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.dns.enabled = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_net_admin().or_else(|| {
            facts
                .hierarchies
                .unified
                .is_none()
                .then(|| "no cgroup v2 hierarchy is mounted (cgroup_skb attaches to its root)".to_owned())
        })
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        loader.override_global(DNS_PORT_GLOBAL, &facts.dns_port, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[DNS_EVENTS_MAP, DNS_EVENTS_LOST_MAP]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let events = EventRing::take(cx.ebpf, PROBE, DNS_EVENTS_MAP, DNS_EVENTS_LOST_MAP)?;
        // `net_cgroup`, attached before this family, runs the capture in the programs they share
        // when both run; when those did not attach, the capture takes programs of its own.
        let shared = traffic_and_dns(cx.config, cx.facts);
        let mut fallback_programs = None;
        if !(shared && traffic_and_dns_attached(cx.ebpf)) {
            attach_cgroup(cx.ebpf, cx.facts.hierarchies.unified.as_ref(), PROGRAMS)?;
            fallback_programs = shared.then(|| PROGRAMS.to_vec());
        }
        let dns = &cx.config.dns;
        let limits = Limits {
            timeout_ns: dns.timeout_milliseconds * 1_000_000,
            max_pending: dns.max_pending_queries as usize,
            max_cgroups: dns.max_cgroups as usize,
        };
        Ok(Box::new(DnsState {
            exchanges: Arc::new(Mutex::new(Exchanges::new(limits))),
            events: Some(events),
            fallback_programs,
        }))
    }
}

/// The family's counts, shared with the consumer of its ring, and the ring until it is taken.
pub struct DnsState {
    pub exchanges: Arc<Mutex<Exchanges>>,
    events: Option<EventRing>,
    /// Its own programs, when those it shares with `net_cgroup` did not attach.
    fallback_programs: Option<Vec<&'static str>>,
}

impl DnsState {
    pub fn exchanges(&self) -> std::sync::MutexGuard<'_, Exchanges> {
        self.exchanges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Attached for DnsState {
    attached_any!();

    fn programs(&self) -> Option<Vec<&'static str>> {
        self.fallback_programs.clone()
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.exchanges().forget(&mut |id| gone_for(id).is_some_and(|gone| gone >= grace))
    }

    fn take_events(&mut self) -> Option<EventRing> {
        self.events.take()
    }
}
