//! The metrics port as an attack surface: TLS and basic authentication from the exporters' web
//! config file, scraped by a real Prometheus; client certificates (mTLS); certificates reloaded
//! when they change; slow and non-reading clients that cannot exhaust the agent; concurrent
//! scrapes that share one encode. Everything runs on loopback.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Barrier, Mutex, mpsc},
    time::{Duration, Instant},
};

use crate::support::{self, BINARY, http_get, parse, privileged, value};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

/// bcrypt of "s3cret" (cost 10, as htpasswd -nBC 10 makes it).
fn bcrypt_hash() -> String {
    bcrypt::hash("s3cret", 10).expect("bcrypt")
}

/// A CA, a server certificate for 127.0.0.1, a client certificate of the CA and one of another
/// CA, written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Self { dir };
        let ca = pki.ca("kernsight test CA", "ca");
        pki.leaf(&ca, "server", "kernsight test server", ExtendedKeyUsagePurpose::ServerAuth);
        pki.leaf(&ca, "client", "prometheus", ExtendedKeyUsagePurpose::ClientAuth);
        let other = pki.ca("someone else's CA", "other-ca");
        pki.leaf(&other, "wrong-client", "prometheus", ExtendedKeyUsagePurpose::ClientAuth);
        pki
    }

    fn ca(&self, name: &str, file: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.path(&format!("{file}.crt")), ca.pem()).unwrap();
        ca
    }

    /// Writes NAME.crt and NAME.key, signed by `ca`.
    fn leaf(
        &self,
        ca: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn web_config(&self, text: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A `kernsight run` serving over TLS (support::Agent waits for an http:// address).
struct TlsAgent {
    child: Child,
    address: SocketAddr,
    log: Arc<Mutex<String>>,
    pins: PathBuf,
}

impl TlsAgent {
    fn start(web_config: &Path) -> Self {
        Self::start_with(web_config, &[])
    }

    fn start_with(web_config: &Path, extra: &[&str]) -> Self {
        let pins = support::unique_pin_dir("http");
        let mut child = Command::new(BINARY)
            .args(["run", "--listen", "127.0.0.1:0", "--pin-dir"])
            .arg(&pins)
            .arg("--web.config.file")
            .arg(web_config)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kernsight");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving metrics on https://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(address) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kernsight did not serve https; log:\n{}", log.lock().unwrap());
        };
        Self { child, address: address.parse().expect("address"), log, pins }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address of the plain health port (`--health-listen`), once logged.
    fn health_address(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(rest) = log.split("serving /healthz and /readyz on http://").nth(1) {
                return rest.split_whitespace().next().unwrap_or_default().parse().expect("health address");
            }
            assert!(Instant::now() < deadline, "no health port in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// A TLS client trusting `ca`, presenting `client` (NAME.crt and NAME.key) if given.
fn tls_client(pki: &Pki, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.path("ca.crt")).unwrap()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = vec![CertificateDer::from_pem_file(pki.path(&format!("{name}.crt"))).unwrap()];
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// GET over TLS: the status and body, or the error that stopped it (handshake included).
fn tls_get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(u16, String, Vec<CertificateDer<'static>>), String> {
    use base64::Engine as _;
    let mut tcp = TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    let authorization = credentials
        .map(|(user, password)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Authorization: Basic {encoded}\r\n")
        })
        .unwrap_or_default();
    write!(tls, "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: text/plain\r\n{authorization}\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let peer = connection.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned(), peer))
}

/// The path of the Debian `prometheus` binary, or a skip (a failure when tests are required).
fn prometheus_binary() -> Option<PathBuf> {
    let found =
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        let why = "needs prometheus (Debian package; cargo xtask setup installs it)";
        assert!(!support::required(), "{} {why}", support::test_name());
        support::skip(why);
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Prometheus server on loopback with the given scrape configs, killed when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, scrape_configs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape_configs}"
        );
        std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(dir.path().join("prometheus.yml"))
            .output()
            .expect("promtool");
        assert!(
            check.status.success(),
            "promtool check config:\n{config}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self { child, address, _dir: dir }
    }

    /// Each target's job, health and last error, once Prometheus answers.
    fn targets(&self) -> Vec<(String, String, String)> {
        if TcpStream::connect(self.address).is_err() {
            return Vec::new();
        }
        let (status, body) = http_get(self.address, "/api/v1/targets", "*/*");
        if status != 200 {
            return Vec::new();
        }
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        let text = |key: &str| t[key].as_str().unwrap_or_default().to_owned();
                        (
                            t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                            text("health"),
                            text("lastError"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (30 s at most) until every job has been scraped at least once; returns them.
    fn wait_scraped(&self, jobs: &[&str]) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let targets = self.targets();
            let done =
                jobs.iter().all(|job| targets.iter().any(|(j, health, _)| j == job && health != "unknown"));
            if done {
                return targets;
            }
            assert!(Instant::now() < deadline, "targets not scraped after 30 s: {targets:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Prometheus {
    /// Waits (30 s at most) until `job` is up; returns every target then.
    fn wait_until_up(&self, job: &str) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let targets = self.targets();
            if targets.iter().any(|(j, health, _)| j == job && health == "up") || Instant::now() > deadline {
                return targets;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health<'a>(targets: &'a [(String, String, String)], job: &str) -> (&'a str, &'a str) {
    let (_, health, error) = targets.iter().find(|(j, _, _)| j == job).expect("job among the targets");
    (health, error)
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_anonymous_scrapes_get_401() {
    if !privileged() {
        return;
    }
    let Some(prometheus) = prometheus_binary() else { return };
    let _serial = support::serial();
    let pki = Pki::new();
    let web = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  prometheus: '{}'\n",
        bcrypt_hash()
    ));
    let agent = TlsAgent::start(&web);
    let ca = pki.path("ca.crt");
    let target = agent.address;
    let prometheus = Prometheus::start(
        &prometheus,
        &format!(
            "  - job_name: basic-auth\n    scheme: https\n    tls_config: {{ca_file: {ca:?}}}\n\
             \x20   basic_auth: {{username: prometheus, password: s3cret}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n\
             \x20 - job_name: wrong-password\n    scheme: https\n    tls_config: {{ca_file: {ca:?}}}\n\
             \x20   basic_auth: {{username: prometheus, password: guess}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n\
             \x20 - job_name: anonymous\n    scheme: https\n    tls_config: {{ca_file: {ca:?}}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n\
             \x20 - job_name: plain-http\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    );
    prometheus.wait_scraped(&["basic-auth", "wrong-password", "anonymous", "plain-http"]);
    // The first scrape with a password pays bcrypt (slow in a debug build) and may time out;
    // the answer is remembered for the next ones.
    let targets = prometheus.wait_until_up("basic-auth");
    eprintln!("Prometheus targets: {targets:#?}");
    assert_eq!(health(&targets, "basic-auth"), ("up", ""), "agent log:\n{}", agent.log());
    for job in ["anonymous", "wrong-password"] {
        let (health, error) = health(&targets, job);
        assert_eq!(health, "down", "{job}");
        assert!(error.contains("401"), "{job}: {error}");
    }
    let (plain, error) = health(&targets, "plain-http");
    assert_eq!(plain, "down", "plain HTTP on the TLS port: {error}");

    // The same by hand: 401 with a challenge, health probes without credentials, the headers.
    let client = tls_client(&pki, None);
    let (status, _, _) = tls_get(agent.address, client.clone(), "/metrics", None).unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = tls_get(agent.address, client.clone(), "/healthz", None).unwrap();
    assert_eq!(status, 200, "kubelet's probes carry no credentials");
    let (status, body, _) =
        tls_get(agent.address, client, "/metrics", Some(("prometheus", "s3cret"))).unwrap();
    assert_eq!(status, 200);
    let samples = parse(&body);
    assert!(value(&samples, "kernsight_http_requests_denied_total", &[("code", "401")]) >= 3.0, "{body}");
    assert!(
        value(&samples, "kernsight_http_connections_refused_total", &[("reason", "tls_handshake")]) >= 1.0
    );
}

#[test]
fn prometheus_scrapes_with_a_client_certificate_and_a_wrong_one_fails_the_handshake() {
    if !privileged() {
        return;
    }
    let Some(prometheus) = prometheus_binary() else { return };
    let _serial = support::serial();
    let pki = Pki::new();
    let web = pki.web_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS12\n",
    );
    let agent = TlsAgent::start_with(&web, &["--health-listen", "127.0.0.1:0"]);
    // kubelet's probes carry no certificate: the plain loopback port answers them, and only them.
    let probes = agent.health_address();
    assert_eq!(http_get(probes, "/healthz", "*/*").0, 200);
    assert_ne!(http_get(probes, "/readyz", "*/*").0, 0);
    assert_eq!(http_get(probes, "/metrics", "text/plain").0, 404, "no metrics on the probe port");
    let target = agent.address;
    let (ca, crt, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let (wrong_crt, wrong_key) = (pki.path("wrong-client.crt"), pki.path("wrong-client.key"));
    let prometheus = Prometheus::start(
        &prometheus,
        &format!(
            "  - job_name: mtls\n    scheme: https\n\
             \x20   tls_config: {{ca_file: {ca:?}, cert_file: {crt:?}, key_file: {key:?}}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n\
             \x20 - job_name: wrong-certificate\n    scheme: https\n\
             \x20   tls_config: {{ca_file: {ca:?}, cert_file: {wrong_crt:?}, key_file: {wrong_key:?}}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n\
             \x20 - job_name: no-certificate\n    scheme: https\n    tls_config: {{ca_file: {ca:?}}}\n\
             \x20   static_configs: [{{targets: ['{target}']}}]\n"
        ),
    );
    prometheus.wait_scraped(&["mtls", "wrong-certificate", "no-certificate"]);
    let targets = prometheus.wait_until_up("mtls");
    eprintln!("Prometheus targets: {targets:#?}");
    assert_eq!(health(&targets, "mtls"), ("up", ""), "agent log:\n{}", agent.log());
    for job in ["wrong-certificate", "no-certificate"] {
        let (health, error) = health(&targets, job);
        assert_eq!(health, "down", "{job}");
        assert!(error.contains("tls") || error.contains("certificate"), "{job}: {error}");
    }

    // By hand: no HTTP answer at all without the right certificate.
    for client in [None, Some("wrong-client")] {
        let result = tls_get(agent.address, tls_client(&pki, client), "/metrics", None);
        // The alert, or the closed connection it came with when the client was still writing.
        let err = result.expect_err("no response without a certificate of the CA");
        let closed = ["certificate", "alert", "broken pipe", "reset by peer"];
        assert!(closed.iter().any(|c| err.to_lowercase().contains(c)), "{client:?}: {err}");
    }
    let (status, body, _) =
        tls_get(agent.address, tls_client(&pki, Some("client")), "/metrics", None).unwrap();
    assert_eq!(status, 200);
    let refused =
        value(&parse(&body), "kernsight_http_connections_refused_total", &[("reason", "tls_handshake")]);
    assert!(refused >= 2.0, "failed handshakes counted: {refused}");
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let pki = Pki::new();
    let web = pki.web_config("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let agent = TlsAgent::start(&web);
    let client = tls_client(&pki, None);
    let (_, _, before) = tls_get(agent.address, client.clone(), "/healthz", None).unwrap();
    // cert-manager renews: a new key and certificate from the same CA, written in place.
    let ca_key = pki.path("ca.crt");
    assert!(ca_key.exists());
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // The CA's key was not kept: make a new CA and trust it, as a CA rotation would.
    params.distinguished_name.push(DnType::CommonName, "kernsight test CA 2");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(pki.path("ca.crt"), ca.pem()).unwrap();
    pki.leaf(&ca, "server", "kernsight renewed server", ExtendedKeyUsagePurpose::ServerAuth);
    let client = tls_client(&pki, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        std::thread::sleep(Duration::from_millis(300));
        if let Ok((200, _, peer)) = tls_get(agent.address, client.clone(), "/healthz", None) {
            break peer;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate not served after 10 s; log:\n{}",
            agent.log()
        );
    };
    assert_ne!(before, after, "a new certificate is served");
    let (_, body, _) = tls_get(agent.address, client.clone(), "/metrics", None).unwrap();
    let reloads = value(&parse(&body), "kernsight_http_config_reloads_total", &[("result", "success")]);
    assert!(reloads >= 1.0, "reload counted: {reloads}");

    // A broken renewal (a key that does not fit) keeps the last good certificate.
    std::fs::write(pki.path("server.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _, still) = tls_get(agent.address, client.clone(), "/healthz", None).unwrap();
    assert_eq!((status, &still), (200, &after));
    assert!(agent.log().contains("keeping the previous web config"), "{}", agent.log());
}

#[test]
fn a_bad_web_config_stops_the_agent_with_the_key_at_fault() {
    let pki = Pki::new();
    for (text, expected) in [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cert_fiel: x\n",
            "cert_fiel",
        ),
        ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "missing.crt"),
    ] {
        let web = pki.web_config(text);
        let out = Command::new(BINARY)
            .args(["run", "--listen", "127.0.0.1:0", "--pin-dir", "", "--web.config.file"])
            .arg(&web)
            .output()
            .expect("run kernsight");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started anyway");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A scrape's duration, and its samples.
fn timed_scrape(address: SocketAddr) -> (Duration, Vec<support::Sample>) {
    let started = Instant::now();
    let (status, body) = http_get(address, "/metrics", "text/plain");
    let took = started.elapsed();
    assert_eq!(status, 200, "scrape failed: {body}");
    (took, parse(&body))
}

/// Connections that send part of a request head and then nothing (or a byte now and then), and
/// connections that send a whole request and never read the answer.
#[test]
fn slow_and_non_reading_clients_are_closed_and_scrapes_still_answer() {
    if !privileged() {
        return;
    }
    const PARTIAL: usize = 300;
    const OVERSIZED: usize = 50;
    const NON_READING: usize = 150;
    let _serial = support::serial();
    let agent = support::Agent::start(&[]);
    for _ in 0..3 {
        timed_scrape(agent.address);
    }
    let rss_before = rss_kib(agent.pid());
    let attack_started = Instant::now();
    let mut partial = Vec::new();
    for i in 0..PARTIAL {
        let mut stream = TcpStream::connect(agent.address).unwrap();
        // Half send a few KiB of unfinished headers, half only a request line.
        let junk = if i % 2 == 0 { "a".repeat(4000) } else { String::new() };
        let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: {junk}");
        partial.push(stream);
    }
    for _ in 0..OVERSIZED {
        let mut stream = TcpStream::connect(agent.address).unwrap();
        let _ = write!(stream, "GET /metrics HTTP/1.1\r\nX-Big: {}", "b".repeat(400 * 1024));
        partial.push(stream);
    }
    let mut non_reading = Vec::new();
    for _ in 0..NON_READING {
        let socket = socket_with_small_receive_buffer(agent.address);
        let mut stream = socket;
        // Pipelined: more response than the socket buffers hold, so the agent's writes stall.
        let _ = stream.write_all("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50).as_bytes());
        non_reading.push(stream);
    }
    let connected = attack_started.elapsed();

    // During the attack: normal scrapes answer quickly, and the agent's memory stays flat.
    let mut slowest = Duration::ZERO;
    let mut peak_rss = rss_kib(agent.pid());
    while attack_started.elapsed() < Duration::from_secs(3) {
        let (took, _) = timed_scrape(agent.address);
        slowest = slowest.max(took);
        peak_rss = peak_rss.max(rss_kib(agent.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every attacking connection is closed by the agent within 10 s of the attack.
    let mut samples;
    loop {
        let (took, scraped) = timed_scrape(agent.address);
        slowest = slowest.max(took);
        peak_rss = peak_rss.max(rss_kib(agent.pid()));
        samples = scraped;
        // The scrape's own connection is the one left.
        if value(&samples, "kernsight_http_connections_open", &[]) <= 1.0 {
            break;
        }
        assert!(
            attack_started.elapsed() < Duration::from_secs(10),
            "{} connections still open 10 s after the attack began",
            value(&samples, "kernsight_http_connections_open", &[])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_after = attack_started.elapsed();
    // The partial-header clients see their connection closed (EOF, reset or a 431).
    for stream in &mut partial {
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut sink = [0u8; 4096];
        let closed = loop {
            match stream.read(&mut sink) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "a partial-header connection is still open");
    }
    let timed_out =
        |phase: &str| value(&samples, "kernsight_http_connections_timed_out_total", &[("phase", phase)]);
    let refused =
        |reason: &str| value(&samples, "kernsight_http_connections_refused_total", &[("reason", reason)]);
    let growth_mib = peak_rss.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "slow clients: {PARTIAL} partial heads, {OVERSIZED} oversized, {NON_READING} non-reading, connected in {connected:?}; \
         all closed after {closed_after:?}; slowest scrape {slowest:?}; RSS {rss_before} KiB -> peak {peak_rss} KiB \
         (+{growth_mib:.1} MiB); timed out: header {}, idle {}, write {}; refused: evicted {}, limit {}, header_too_large {}",
        timed_out("header"),
        timed_out("idle"),
        timed_out("write"),
        refused("evicted"),
        refused("limit"),
        refused("header_too_large"),
    );
    assert!(slowest < Duration::from_secs(1), "a scrape during the attack took {slowest:?}");
    assert!(growth_mib < 20.0, "RSS grew by {growth_mib:.1} MiB");
    let closed_by_agent = timed_out("header")
        + timed_out("idle")
        + timed_out("write")
        + refused("evicted")
        + refused("header_too_large");
    assert!(
        closed_by_agent >= (PARTIAL + OVERSIZED + NON_READING) as f64,
        "the agent closed them and counted why: {closed_by_agent}"
    );
    assert!(timed_out("write") > 0.0, "stalled responses end by the write timeout");
    drop(non_reading);
}

/// A client socket whose receive buffer is small, so that an unread response stalls the agent's
/// write soon.
fn socket_with_small_receive_buffer(address: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a new socket, owned by the TcpStream made from it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let SocketAddr::V4(v4) = address else { panic!("IPv4 loopback expected") };
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn concurrent_scrapes_cost_at_most_two_encodes() {
    if !privileged() {
        return;
    }
    const SCRAPERS: usize = 150;
    let _serial = support::serial();
    let agent = support::Agent::start(&[]);
    let (_, before) = timed_scrape(agent.address);
    let encodes_before = value(&before, "kernsight_metrics_encodes_total", &[]);
    let shared_before = value(&before, "kernsight_metrics_shared_responses_total", &[]);
    // Connected first, then all send at once.
    let barrier = Arc::new(Barrier::new(SCRAPERS));
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let barrier = barrier.clone();
            let address = agent.address;
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                barrier.wait();
                write!(stream, "GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n").unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).expect("read");
                response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    let answered = scrapers.into_iter().filter_map(|s| s.join().ok()).filter(|ok| *ok).count();
    assert_eq!(answered, SCRAPERS, "every scraper got its metrics");
    let (_, after) = timed_scrape(agent.address);
    // `after` counts the `before` scrape's encode too, not its own.
    let encodes = value(&after, "kernsight_metrics_encodes_total", &[]) - encodes_before - 1.0;
    let shared = value(&after, "kernsight_metrics_shared_responses_total", &[]) - shared_before;
    eprintln!("{SCRAPERS} concurrent scrapes: {encodes} encodes, {shared} shared responses");
    assert!(encodes <= 2.0, "{SCRAPERS} concurrent scrapes caused {encodes} encodes");
    assert_eq!(encodes + shared, SCRAPERS as f64, "every scrape was counted once");
}

/// The web configs the manifests ship are ones the agent accepts (checked with its own parser),
/// in each setting of the chart that writes one.
#[test]
fn shipped_web_configs_are_valid_agent_web_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned();
    let kustomize = root.join("deploy/kubernetes/web.yml");
    let text = std::fs::read_to_string(&kustomize).unwrap();
    let config = kernsight::http::web_config::WebConfig::parse(&text, &kustomize).unwrap();
    let tls = config.tls_server_config.expect("TLS");
    assert_eq!(tls.client_auth_type, kernsight::http::web_config::ClientAuthType::RequireAndVerifyClientCert);

    let tools = std::env::var_os("KERNSIGHT_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/deploy-tools"))
        .join("bin/helm");
    let helm = if tools.is_file() { tools } else { PathBuf::from("helm") };
    let hash = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";
    for set in [
        String::new(),
        format!("web.basicAuthUsers.prometheus={hash}"),
        format!(
            "web.tls.clientAuthType=NoClientCert,web.basicAuthUsers.prometheus={hash},web.tls.minVersion=TLS13"
        ),
    ] {
        let mut command = Command::new(&helm);
        command.args(["template", "kernsight"]).arg(root.join("deploy/helm/kernsight"));
        command.args(["--show-only", "templates/web-config.yaml"]);
        if !set.is_empty() {
            command.args(["--set-string", &set]);
        }
        let out = match command.output() {
            Ok(out) => out,
            Err(err) => {
                assert!(!support::required(), "helm: {err} (deploy/tools.sh installs it)");
                support::skip("helm is missing (deploy/tools.sh installs it)");
                return;
            }
        };
        assert!(out.status.success(), "helm --set {set}: {}", String::from_utf8_lossy(&out.stderr));
        let manifest = String::from_utf8(out.stdout).unwrap();
        // The block under `web.yml: |`, dedented.
        let mut lines = manifest.lines().skip_while(|l| !l.trim_start().starts_with("web.yml: |"));
        let key = lines.next().expect("web.yml in the Secret");
        let indent = key.len() - key.trim_start().len() + 2;
        let text: String = lines.map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect();
        let config =
            kernsight::http::web_config::WebConfig::parse(&text, Path::new("/etc/kernsight/web/web.yml"))
                .unwrap_or_else(|e| panic!("--set {set}: the agent rejects\n{text}\n{e}"));
        assert!(config.tls_server_config.is_some(), "{text}");
        assert_eq!(config.basic_auth_users.is_empty(), set.is_empty(), "{text}");
    }
}
