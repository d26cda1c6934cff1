//! `/metrics` (OpenMetrics or Prometheus text, by `Accept`), `/healthz` and `/readyz`, served by
//! `crate::http` (TLS, authentication, limits). Concurrent scrapes share one encode (`shared`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use super::exposition::{Exposition, Format};
use crate::{
    bpf::{ProbeState, ProbeStatus},
    http::{
        ConnectionReady, Limits, Peer, WebState,
        stats::{HttpStats, bump},
    },
};

mod body;
mod shared;
use body::Pieces;
use shared::SharedEncode;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/readyz` reports: ready once every enabled probe family is attached.
#[derive(Debug)]
pub struct Health {
    probes: Vec<ProbeStatus>,
    pub scrapes: ScrapeStats,
}

/// The cost of serving `/metrics`, reported on the following scrapes.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    pub count: AtomicU64,
    pub nanos: AtomicU64,
    /// Samples in the last response.
    pub series: AtomicU64,
    /// Time spent in each collector over those responses, by collector name.
    pub collectors: std::sync::Mutex<Vec<(&'static str, Arc<AtomicU64>)>>,
    /// When each scraper came, to read the kernel's files ahead of its next scrape.
    pub read_ahead: Arc<super::Scrapes>,
}

impl ScrapeStats {
    /// A collector's line: the nanoseconds its encodes took go there.
    pub fn collector(&self, name: &'static str) -> Arc<AtomicU64> {
        let nanos = Arc::new(AtomicU64::new(0));
        self.collectors.lock().unwrap_or_else(|e| e.into_inner()).push((name, nanos.clone()));
        nanos
    }

    /// (collector, nanoseconds) of every collector, in registration order.
    pub fn by_collector(&self) -> Vec<(&'static str, u64)> {
        let collectors = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        collectors.iter().map(|(name, nanos)| (*name, nanos.load(Ordering::Relaxed))).collect()
    }
}

impl Health {
    pub fn new(probes: Vec<ProbeStatus>) -> Self {
        Self { probes, scrapes: ScrapeStats::default() }
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    fn failed(&self) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| matches!(p.state, ProbeState::Failed(_)))
            .map(|p| format!("{}: {}", p.name, p.state))
            .collect()
    }
}

struct AppState {
    exposition: Exposition,
    health: Arc<Health>,
    encoded: SharedEncode<Pieces>,
    stats: Arc<HttpStats>,
}

/// The HTTP face's settings: limits, and the web configuration (TLS, authentication).
pub struct HttpOptions {
    pub limits: Limits,
    pub web: Arc<WebState>,
    pub stats: Arc<HttpStats>,
}

pub async fn serve(
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    exposition: Exposition,
    health: Arc<Health>,
    options: HttpOptions,
) -> anyhow::Result<()> {
    let HttpOptions { limits, web, stats } = options;
    let encoded = SharedEncode::new(limits.encode_reuse);
    let state = Arc::new(AppState { exposition, health, encoded, stats: stats.clone() });
    if let Some(health_listener) = health_listener {
        // Probes only, plain HTTP, counted apart from the metrics port.
        let probes = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state.clone());
        let probe_stats = Arc::new(HttpStats::default());
        let plain = Arc::new(WebState::new(None, probe_stats.clone()).map_err(|e| anyhow::anyhow!(e))?);
        tokio::spawn(async move {
            if let Err(err) = crate::http::serve(health_listener, probes, plain, limits, probe_stats).await {
                tracing::warn!("health server stopped: {err}");
            }
        });
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    crate::http::serve(listener, app, web, limits, stats).await?;
    Ok(())
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format for the
/// others (curl, promtool, older scrapers).
async fn metrics(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let format = if openmetrics { Format::OpenMetrics } else { Format::Text };
    // Set by crate::http for every request; a request from elsewhere is ready now.
    let ready_since = request.extensions().get::<ConnectionReady>().map_or_else(Instant::now, |r| r.0);
    if let Some(Peer(peer)) = request.extensions().get::<Peer>() {
        state.health.scrapes.read_ahead.scraped(*peer, Instant::now());
    }
    let encoder = state.clone();
    let body = state.encoded.begin(ready_since).body(format, move || encoder.encode(format)).await;
    let content_type = if openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT };
    match body {
        Some((body, shared)) => {
            bump(if shared { &state.stats.shared } else { &state.stats.encodes });
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body.into_body()).into_response()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}

impl AppState {
    /// Reads every collector and encodes the body (blocking: collectors read kernel maps).
    fn encode(&self, format: Format) -> Option<Pieces> {
        let started = Instant::now();
        let result = self.exposition.encode(format);
        let stats = &self.health.scrapes;
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // A scrape of a busy node allocates megabytes (map reads, label sets) that are free again
        // now: return them rather than let each thread's arena keep its peak.
        crate::heap::release_free_memory();
        let pieces = result.ok()?;
        // Each piece is whole lines (a collector's families), so its samples add up.
        stats
            .series
            .store(pieces.iter().map(|piece| samples(piece)).sum::<usize>() as u64, Ordering::Relaxed);
        Some(Pieces::released_on_drop(pieces))
    }
}

/// The sample lines of an exposition: those neither empty nor comments. The body's newlines are
/// found with `memchr`'s vector search: splitting a 16 MB body into lines was 2 % of the agent's
/// CPU in back-to-back scrapes, and a byte-by-byte count 10 %.
fn samples(body: &str) -> usize {
    let bytes = body.as_bytes();
    let starts_sample = |at: usize| bytes.get(at).is_some_and(|&byte| byte != b'#' && byte != b'\n');
    usize::from(starts_sample(0))
        + memchr::memchr_iter(b'\n', bytes).filter(|&at| starts_sample(at + 1)).count()
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let failed = state.health.failed();
    if failed.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", failed.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_the_lines_neither_empty_nor_comments() {
        let count = |body: &str| {
            (samples(body), body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count())
        };
        for body in [
            "",
            "\n",
            "#",
            "a 1",
            "# HELP a x\n# TYPE a counter\na_total 1\na_total{l=\"#\"} 2\n\n# EOF\n",
            "a 1\n\n\nb 2\n#c\nd 3",
            "\n\na 1\n",
        ] {
            let (fast, by_lines) = count(body);
            assert_eq!(fast, by_lines, "{body:?}");
        }
        assert_eq!(samples("# TYPE a gauge\na 1\na{x=\"1\"} 2\n# EOF\n"), 2);
    }

    fn probe(name: &'static str, state: ProbeState) -> ProbeStatus {
        ProbeStatus {
            name,
            programs: vec!["ks_program"],
            program_ids: Vec::new(),
            implementation: "standard",
            fallback: None,
            state,
        }
    }

    #[test]
    fn only_a_family_that_should_run_and_failed_keeps_the_agent_unready() {
        let unsupported = ProbeState::Unsupported("the escape vectors are x86_64 syscall numbers".into());
        let health = Health::new(vec![
            probe("syscalls", ProbeState::Attached),
            probe("runqueue", ProbeState::Disabled),
            probe("escape", unsupported),
        ]);
        assert!(health.failed().is_empty(), "a kernel that lacks a feature still runs the rest, ready");

        let health = Health::new(vec![
            probe("syscalls", ProbeState::Failed("verifier: invalid access".into())),
            probe("packet_drops", ProbeState::Unsupported("no drop reason".into())),
        ]);
        assert_eq!(health.failed(), ["syscalls: failed: verifier: invalid access"]);
    }
}
