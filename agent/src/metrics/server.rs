//! `/metrics` (OpenMetrics or Prometheus text, by `Accept`), `/healthz` and `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::bpf::{ProbeState, ProbeStatus};

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
    registry: Registry,
    health: Arc<Health>,
}

pub async fn serve(listener: TcpListener, registry: Registry, health: Arc<Health>) -> anyhow::Result<()> {
    let state = Arc::new(AppState { registry, health });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format for the
/// others (curl, promtool, older scrapers).
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // Collectors read kernel maps with blocking syscalls: keep them off the async workers.
    let encoded = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut body = String::new();
        let result = if openmetrics {
            prometheus_client::encoding::text::encode(&mut body, &state.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut body, &state.registry)
        };
        let stats = &state.health.scrapes;
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
        stats.series.store(series as u64, Ordering::Relaxed);
        // A scrape of a busy node allocates megabytes (map reads, label sets) that are free again
        // now: return them rather than let each blocking thread's arena keep its peak.
        crate::heap::release_free_memory();
        result.map(|()| body)
    })
    .await;
    let content_type = if openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT };
    match encoded {
        Ok(Ok(body)) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let failed = state.health.failed();
    if failed.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", failed.join("\n")))
    }
}
