//! What the HTTP face did with its connections, as self-metrics (`kernsight_http_*`): refused,
//! evicted and timed-out connections, failed handshakes, denied requests, shared encodes.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

#[derive(Debug, Default)]
pub struct HttpStats {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub limit: AtomicU64,
    /// Closed at once: every slot was serving a request.
    pub refused_limit: AtomicU64,
    /// An idle or unfinished connection closed to make room for a new one.
    pub evicted: AtomicU64,
    /// The TLS handshake failed (no certificate, wrong certificate, not TLS).
    pub tls_failed: AtomicU64,
    pub timed_out_handshake: AtomicU64,
    /// A request head that did not arrive in time (slow or partial headers).
    pub timed_out_header: AtomicU64,
    /// A kept-alive connection without a next request.
    pub timed_out_idle: AtomicU64,
    /// A response the client did not read.
    pub timed_out_write: AtomicU64,
    /// Request heads past the size bound (answered 431).
    pub header_too_large: AtomicU64,
    pub unauthorized: AtomicU64,
    pub rate_limited: AtomicU64,
    /// `/metrics` bodies encoded, and `/metrics` responses served with a body encoded for
    /// another request.
    pub encodes: AtomicU64,
    pub shared: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A counter family: name, help, and its rows (an optional label, the value).
type CounterFamily = (&'static str, &'static str, Vec<(Option<(&'static str, &'static str)>, u64)>);

/// Registered in the metrics registry beside the other collectors.
#[derive(Debug)]
pub struct HttpCollector(pub std::sync::Arc<HttpStats>);

impl Collector for HttpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters: [CounterFamily; 7] = [
            (
                "kernsight_http_connections_accepted",
                "TCP connections accepted on the metrics port",
                vec![(None, load(&s.accepted))],
            ),
            (
                "kernsight_http_connections_refused",
                "Connections closed without a response: limit (every slot was serving a request), evicted (an idle or unfinished connection closed to make room), tls_handshake (no or wrong client certificate, not TLS)",
                vec![
                    (Some(("reason", "limit")), load(&s.refused_limit)),
                    (Some(("reason", "evicted")), load(&s.evicted)),
                    (Some(("reason", "tls_handshake")), load(&s.tls_failed)),
                    (Some(("reason", "header_too_large")), load(&s.header_too_large)),
                ],
            ),
            (
                "kernsight_http_connections_timed_out",
                "Connections closed by a timeout, by phase: handshake (TLS), header (request head too slow), idle (kept alive without a request), write (the client does not read its response)",
                vec![
                    (Some(("phase", "handshake")), load(&s.timed_out_handshake)),
                    (Some(("phase", "header")), load(&s.timed_out_header)),
                    (Some(("phase", "idle")), load(&s.timed_out_idle)),
                    (Some(("phase", "write")), load(&s.timed_out_write)),
                ],
            ),
            (
                "kernsight_http_requests_denied",
                "Requests answered 401 (basic authentication failed) or 429 (rate_limit)",
                vec![
                    (Some(("code", "401")), load(&s.unauthorized)),
                    (Some(("code", "429")), load(&s.rate_limited)),
                ],
            ),
            (
                "kernsight_metrics_encodes",
                "Bodies of /metrics encoded (concurrent scrapes share one: compare with kernsight_metrics_shared_responses_total)",
                vec![(None, load(&s.encodes))],
            ),
            (
                "kernsight_metrics_shared_responses",
                "Responses to /metrics served with a body encoded for a concurrent scrape",
                vec![(None, load(&s.shared))],
            ),
            (
                "kernsight_http_config_reloads",
                "Reloads of the web config file and its certificates after they changed, by result (a failed one keeps the previous configuration)",
                vec![
                    (Some(("result", "success")), load(&s.reloads_ok)),
                    (Some(("result", "failure")), load(&s.reloads_failed)),
                ],
            ),
        ];
        for (name, help, rows) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, value) in rows {
                let labels: Vec<(&str, &str)> = label.into_iter().collect();
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in [
            ("kernsight_http_connections_open", "Connections open on the metrics port", load(&s.open)),
            (
                "kernsight_http_connections_limit",
                "Connections served at once (metrics.max_connections)",
                load(&s.limit),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(family.encode_family(&Vec::<(&str, &str)>::new())?)?;
        }
        Ok(())
    }
}
