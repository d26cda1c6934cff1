//! The agent's HTTP face, built for a port that anyone on the node network can reach: TLS and
//! authentication from the exporters' web configuration file (`web_config`, `tls`, `auth`),
//! and limits that make it degrade rather than die under slow or hostile clients (`limits`):
//! a bounded connection table, header and write timeouts, a bounded request head.

pub mod auth;
pub mod limits;
pub mod stats;
pub mod tls;
pub mod web_config;

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, Request, Response, StatusCode, header},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use limits::Limits;
use limits::{Activity, Admission, Guarded, Slot, Table};
use stats::{HttpStats, bump};
use web_config::WebConfig;

/// What the web configuration file turns into, swapped whole when the file or its certificates
/// change.
struct Loaded {
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<auth::BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate: Option<Mutex<TokenBucket>>,
    /// For the log: `https, client certificates RequireAndVerifyClientCert, basic auth (1 user)`.
    summary: String,
}

impl Loaded {
    fn plain() -> Self {
        Self { tls: None, auth: None, headers: Vec::new(), rate: None, summary: "http".into() }
    }

    fn from_config(config: &WebConfig) -> Result<Self, String> {
        let tls = config.tls_server_config.as_ref().map(tls::server_config).transpose()?;
        let mut summary = vec![if tls.is_some() { "https".to_owned() } else { "http".to_owned() }];
        if let Some(tls) = &config.tls_server_config {
            summary.push(format!("client certificates {:?}", tls.client_auth_type));
        }
        if !config.basic_auth_users.is_empty() {
            summary.push(format!("basic auth ({} users)", config.basic_auth_users.len()));
        }
        Ok(Self {
            tls: tls.map(TlsAcceptor::from),
            auth: auth::BasicAuth::new(&config.basic_auth_users),
            headers: config.headers(),
            rate: config.rate_limit().map(|limit| Mutex::new(TokenBucket::new(limit))),
            summary: summary.join(", "),
        })
    }

    fn load(path: &Path) -> Result<(Self, Vec<PathBuf>), String> {
        let config = WebConfig::from_file(path).map_err(|e| e.to_string())?;
        let loaded = Self::from_config(&config).map_err(|e| format!("web config {}: {e}", path.display()))?;
        Ok((loaded, config.files()))
    }
}

/// The web configuration in force, reloaded when the file or a file it names changes (a
/// rotated certificate is served to the next connection, within a second).
pub struct WebState {
    path: Option<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    watch: Mutex<Watch>,
    stats: Arc<HttpStats>,
}

struct Watch {
    checked: Instant,
    files: Vec<PathBuf>,
    fingerprint: Vec<Option<Fingerprint>>,
    last_error: Option<String>,
}

/// Enough of a file's metadata to see it replaced (Kubernetes swaps a Secret's files by symlink).
type Fingerprint = (u64, u64, u64, std::time::SystemTime);

fn fingerprint(paths: &[PathBuf]) -> Vec<Option<Fingerprint>> {
    use std::os::unix::fs::MetadataExt as _;
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.dev(), meta.ino(), meta.len(), meta.modified().ok()?))
        })
        .collect()
}

const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The send buffer of an accepted connection (the kernel doubles it for its bookkeeping).
const SEND_BUFFER_BYTES: usize = 256 * 1024;

impl WebState {
    /// Loads the web configuration file, if any; an error here stops the agent at start.
    pub fn new(path: Option<&Path>, stats: Arc<HttpStats>) -> Result<Self, String> {
        let (loaded, files) = match path {
            Some(path) => {
                let (loaded, mut files) = Loaded::load(path)?;
                files.insert(0, path.to_owned());
                (loaded, files)
            }
            None => (Loaded::plain(), Vec::new()),
        };
        let watch =
            Watch { checked: Instant::now(), fingerprint: fingerprint(&files), files, last_error: None };
        Ok(Self {
            path: path.map(Path::to_owned),
            current: RwLock::new(Arc::new(loaded)),
            watch: Mutex::new(watch),
            stats,
        })
    }

    /// `https, client certificates ..., basic auth (N users)`.
    pub fn summary(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).summary.clone()
    }

    pub fn scheme(&self) -> &'static str {
        if self.current.read().unwrap_or_else(|e| e.into_inner()).tls.is_some() { "https" } else { "http" }
    }

    /// The configuration for a new connection, after reloading it if its files changed.
    fn current(&self) -> Arc<Loaded> {
        self.reload_if_changed();
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload_if_changed(&self) {
        let Some(path) = &self.path else { return };
        // One connection checks; the others go on with what is loaded.
        let Ok(mut watch) = self.watch.try_lock() else { return };
        if watch.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        watch.checked = Instant::now();
        if fingerprint(&watch.files) == watch.fingerprint {
            return;
        }
        match Loaded::load(path) {
            Ok((loaded, mut files)) => {
                files.insert(0, path.clone());
                watch.fingerprint = fingerprint(&files);
                watch.files = files;
                watch.last_error = None;
                info!(config = %path.display(), "web config reloaded: {}", loaded.summary);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                bump(&self.stats.reloads_ok);
            }
            Err(why) => {
                // Tried again on the next check: a Secret may be half updated. Said once.
                bump(&self.stats.reloads_failed);
                if watch.last_error.as_ref() != Some(&why) {
                    warn!("keeping the previous web config: {why}");
                    watch.last_error = Some(why);
                }
            }
        }
    }
}

/// exporter-toolkit's `rate_limit`: `burst` requests at once, then one per `interval`.
struct TokenBucket {
    limit: web_config::RateLimit,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(limit: web_config::RateLimit) -> Self {
        Self { limit, tokens: f64::from(limit.burst), at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() / self.limit.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Request extension: since when the request's connection was ready for it (its accept, or the
/// end of its previous response). A body encoded after that moment was encoded concurrently
/// with this request and may be shared with it.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionReady(pub Instant);

/// Request extension: the address of the request's client.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// Paths served without basic authentication: kubelet's probes carry no credentials, and they
/// answer only whether the agent runs and its probes are attached.
const UNAUTHENTICATED: [&str; 2] = ["/healthz", "/readyz"];

struct Server {
    router: Router,
    web: Arc<WebState>,
    limits: Limits,
    stats: Arc<HttpStats>,
}

/// Accepts connections until the listener fails for good, serving `router` on each within the
/// limits and with the web configuration.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Arc<WebState>,
    limits: Limits,
    stats: Arc<HttpStats>,
) -> std::io::Result<()> {
    let table = Table::new(limits.max_connections);
    stats.limit.store(limits.max_connections as u64, Ordering::Relaxed);
    let server = Arc::new(Server { router, web, limits, stats: stats.clone() });
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, most often: wait for connections to close.
                if last_accept_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    warn!("accepting a metrics connection failed: {err}");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        bump(&stats.accepted);
        let slot = match table.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Evicted(slot) => {
                bump(&stats.evicted);
                slot
            }
            Admission::Refused => {
                bump(&stats.refused_limit);
                drop(stream);
                continue;
            }
        };
        stats.open.store(table.open() as u64, Ordering::Relaxed);
        let server = server.clone();
        let table = table.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = server.connection(stream, Peer(peer.ip()), &slot) => {}
                () = slot.evicted() => debug!("connection evicted to make room"),
            }
            drop(slot);
            server.stats.open.store(table.open() as u64, Ordering::Relaxed);
        });
    }
}

impl Server {
    async fn connection(self: &Arc<Self>, stream: TcpStream, peer: Peer, slot: &Slot) {
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        // The kernel would grow a send buffer to megabytes for a client that does not read
        // (node memory, and a write that stalls only once it is full): a few bodies' worth is
        // enough for a scraper that reads.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER_BYTES);
        let web = self.web.current();
        let activity = Arc::new(Activity::default());
        let stream = Guarded::new(stream, self.limits.write_timeout, activity.clone());
        match &web.tls {
            None => self.http(stream, peer, slot, &web, &activity, accepted).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream)).await {
                    Err(_) => bump(&self.stats.timed_out_handshake),
                    Ok(Err(err)) => {
                        bump(&self.stats.tls_failed);
                        debug!("TLS handshake failed: {err}");
                    }
                    Ok(Ok(stream)) => self.http(stream, peer, slot, &web, &activity, accepted).await,
                }
            }
        }
    }

    async fn http<S>(
        self: &Arc<Self>,
        stream: S,
        peer: Peer,
        slot: &Slot,
        web: &Arc<Loaded>,
        activity: &Arc<Activity>,
        accepted: Instant,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let state = slot.state.clone();
        let web_for_requests = web.clone();
        let requests = activity.clone();
        // hyper serves one request of a connection at a time: the end of one response is when
        // the connection is ready for the next.
        let ready_since = Arc::new(Mutex::new(accepted));
        let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            let this = this.clone();
            let state = state.clone();
            let web = web_for_requests.clone();
            let ready_since = ready_since.clone();
            requests.requests.fetch_add(1, Ordering::Relaxed);
            async move {
                state.busy.store(true, Ordering::Relaxed);
                let ready = *ready_since.lock().unwrap_or_else(|e| e.into_inner());
                request.extensions_mut().insert(ConnectionReady(ready));
                request.extensions_mut().insert(peer);
                let response = this.respond(request, &web).await;
                *ready_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                state.busy.store(false, Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(self.limits.max_header_bytes)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(err) = connection.await {
            self.count_error(&err, activity);
        }
    }

    fn count_error(&self, err: &hyper::Error, activity: &Activity) {
        if activity.write_timed_out.load(Ordering::Relaxed) {
            bump(&self.stats.timed_out_write);
        } else if err.is_timeout() {
            let idle = activity.requests.load(Ordering::Relaxed) > 0
                && !activity.reading_request.load(Ordering::Relaxed);
            bump(if idle { &self.stats.timed_out_idle } else { &self.stats.timed_out_header });
        } else if err.is_parse_too_large() {
            bump(&self.stats.header_too_large);
        } else {
            debug!("metrics connection ended: {err}");
        }
    }

    async fn respond(&self, request: Request<hyper::body::Incoming>, web: &Loaded) -> Response<Body> {
        let mut response = self.authorized(request, web).await;
        for (name, value) in &web.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }

    async fn authorized(&self, request: Request<hyper::body::Incoming>, web: &Loaded) -> Response<Body> {
        if let Some(bucket) = &web.rate
            && !bucket.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            bump(&self.stats.rate_limited);
            return status(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
        }
        if let Some(auth) = &web.auth
            && !UNAUTHENTICATED.contains(&request.uri().path())
        {
            let credentials = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
            if auth.check(credentials).await != auth::Verdict::Allowed {
                bump(&self.stats.unauthorized);
                let mut response = status(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                return response;
            }
        }
        let request = request.map(Body::new);
        match tower::ServiceExt::oneshot(self.router.clone(), request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = code;
    response
}
