//! Exact pod owners from the Kubernetes API, where the operator grants it
//! (`metadata.api_watch`): this node's pods are listed and watched, their owner references
//! followed to the workload (`resolve`), and kept in a bounded store (`store`) that the
//! resolver asks before the CRI's labels. A pod the API does not know (yet), or every pod while
//! the API is unreachable, is named from the CRI's labels as without the watch
//! (`kernsight_workload_owner_source_total` counts both).

pub mod resolve;
pub mod store;
pub mod watch;

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use http_body_util::Limited;
use kube::{Client, client::ClientBuilder, config::KubeConfigOptions};

/// The most one API response may carry (a list page, or one watch stream before it is resumed):
/// a hostile or broken API server cannot make the agent buffer more.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("metadata.api_server {url:?} is not a URL: {why}")]
    Url { url: String, why: String },
    #[error(
        "cannot read the kubeconfig {path}: {why} (set metadata.kubeconfig to a readable file, or leave it \
         empty in a pod to use its service account)"
    )]
    Kubeconfig { path: String, why: String },
    #[error(
        "no in-cluster Kubernetes API configuration: {0} (the pod needs its service account token mounted and \
         KUBERNETES_SERVICE_HOST set; or set metadata.api_server or metadata.kubeconfig)"
    )]
    InCluster(String),
    #[error("cannot build the Kubernetes API client: {0}")]
    Client(String),
}

/// Requests made to the API, for the self metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    pub list_ok: AtomicU64,
    pub list_error: AtomicU64,
    pub watch_ok: AtomicU64,
    pub watch_error: AtomicU64,
    /// Watches ended by 410 Gone, each followed by a fresh list.
    pub gone: AtomicU64,
}

impl ApiStats {
    pub fn count(&self, request: &str, ok: bool) {
        let counter = match (request, ok) {
            ("list", true) => &self.list_ok,
            ("list", false) => &self.list_error,
            (_, true) => &self.watch_ok,
            (_, false) => &self.watch_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client for the API server at `server` (a URL) if set, else of the kubeconfig `kubeconfig`
/// if set, else of the pod's service account (in-cluster). Every response body it reads is
/// bounded by [`MAX_RESPONSE_BYTES`].
pub async fn client(server: &str, kubeconfig: &Path) -> Result<Client, ApiError> {
    let mut config = if !server.is_empty() {
        let uri: hyper::Uri = server.parse().map_err(|err: hyper::http::uri::InvalidUri| ApiError::Url {
            url: server.to_owned(),
            why: err.to_string(),
        })?;
        kube::Config::new(uri)
    } else if !kubeconfig.as_os_str().is_empty() {
        let path = kubeconfig.display().to_string();
        let file = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|err| ApiError::Kubeconfig { path: path.clone(), why: err.to_string() })?;
        kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|err| ApiError::Kubeconfig { path, why: err.to_string() })?
    } else {
        kube::Config::incluster().map_err(|err| ApiError::InCluster(err.to_string()))?
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    if config.cluster_url.scheme_str() == Some("http")
        && config.root_cert.is_none()
        && config.root_cert_file.is_none()
    {
        // kube builds its TLS connector for every client, and without a CA it asks the OS trust
        // store, which the agent's image (FROM scratch) does not have: a plain-HTTP server
        // (an `api_server` on loopback, a kubectl proxy) would fail on "no CA certificates".
        // No TLS is spoken to it, so an empty trust store is the honest one.
        config.root_cert = Some(Vec::new());
    }
    let builder = ClientBuilder::try_from(config).map_err(|err| ApiError::Client(err.to_string()))?;
    let bounded = tower::util::MapResponseLayer::new(|response: hyper::Response<_>| {
        response.map(|body| Limited::new(body, MAX_RESPONSE_BYTES))
    });
    Ok(builder.with_layer(&bounded).build())
}
