//! `/metrics` (OpenMetrics or Prometheus text, by `Accept`), `/healthz` and `/readyz`.

use std::sync::Arc;

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
}

impl Health {
    pub fn new(probes: Vec<ProbeStatus>) -> Self {
        Self { probes }
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
        let mut body = String::new();
        let result = if openmetrics {
            prometheus_client::encoding::text::encode(&mut body, &state.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut body, &state.registry)
        };
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
