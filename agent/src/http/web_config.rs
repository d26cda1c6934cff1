//! The web configuration file of the Prometheus exporters (exporter-toolkit's
//! `--web.config.file`, as node_exporter reads it): TLS, client certificates, basic
//! authentication with bcrypt hashes, response headers and a request rate limit. The same file
//! works for node_exporter and for kernsight; a key node_exporter would not accept is an error
//! that names it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config {path}: {source}: check --web.config.file (metrics.web_config_file)")]
    Read { path: PathBuf, source: std::io::Error },
    // serde's message names the key, the line and the column, and lists the valid keys.
    #[error("invalid web config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid web config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file. Every section is optional: an empty file serves plain HTTP without
/// authentication, as no file does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name → bcrypt hash of the password.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// Inline PEM, instead of `cert_file`.
    #[serde(default)]
    pub cert: Option<String>,
    /// Inline PEM, instead of `key_file`.
    #[serde(default)]
    pub key: Option<String>,
    /// Inline PEM, instead of `client_ca_file`.
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: ClientAuthType,
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
    #[serde(default = "TlsVersion::tls12")]
    pub min_version: TlsVersion,
    #[serde(default = "TlsVersion::tls13")]
    pub max_version: TlsVersion,
    /// IANA names of TLS 1.2 suites (TLS 1.3 suites are not configurable, as in Go).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    /// Go's names: X25519, CurveP256, CurveP384.
    #[serde(default)]
    pub curve_preferences: Vec<String>,
}

/// Go's `tls.ClientAuthType` names, as exporter-toolkit spells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ClientAuthType {
    #[default]
    NoClientCert,
    /// Asks for a certificate; accepts connections without one and does not verify it.
    RequestClientCert,
    /// Requires a certificate, any, unverified.
    RequireAnyClientCert,
    /// Verifies a certificate against `client_ca` if the client sends one.
    VerifyClientCertIfGiven,
    /// Requires a certificate signed by `client_ca`: the one setting that authenticates clients.
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    fn verifies(self) -> bool {
        matches!(self, Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert)
    }

    fn requires(self) -> bool {
        matches!(self, Self::RequireAnyClientCert | Self::RequireAndVerifyClientCert)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    // rustls implements neither; named so that their error says so rather than "unknown".
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

impl TlsVersion {
    fn tls12() -> Self {
        Self::TLS12
    }

    fn tls13() -> Self {
        Self::TLS13
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// kernsight serves HTTP/1.1 only; the key is accepted so that node_exporter's files load.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Response headers: only those exporter-toolkit allows, with the values it allows.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Time between two requests (Go duration: `100ms`, `1s`); 0 disables the limit.
    pub interval: String,
    /// Requests allowed at once above the rate.
    pub burst: u32,
}

/// A token bucket, as the config describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// The response headers exporter-toolkit allows, and the values it accepts for each (`None`:
/// any value).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

impl WebConfig {
    pub fn from_file(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WebConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a file's text; `path` names it in errors and anchors relative paths
    /// (exporter-toolkit resolves them against the file's directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        // An empty YAML document is `null`, which is the empty configuration.
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml_ng::from_str::<Option<Self>>(text)
                .map_err(|err| WebConfigError::Parse { path: path.to_owned(), message: err.to_string() })?
                .unwrap_or_default()
        };
        let invalid = |message: String| WebConfigError::Invalid { path: path.to_owned(), message };
        config.validate().map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut config.tls_server_config {
            for file in [&mut tls.cert_file, &mut tls.key_file, &mut tls.client_ca_file].into_iter().flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(tls) = &self.tls_server_config {
            tls.validate()?;
        }
        for (user, hash) in &self.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "basic_auth_users: {user:?} is not a user name (empty, or contains ':')"
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|_| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected $2y$10$... from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )
            })?;
        }
        for (name, value) in &self.http_server_config.headers {
            let Some((_, allowed)) = HEADERS.iter().find(|(known, _)| known.eq_ignore_ascii_case(name))
            else {
                let known: Vec<&str> = HEADERS.iter().map(|(name, _)| *name).collect();
                return Err(format!(
                    "http_server_config.headers: {name:?} cannot be set; allowed: {}",
                    known.join(", ")
                ));
            };
            if let Some(allowed) = allowed
                && !allowed.iter().any(|v| v.eq_ignore_ascii_case(value))
            {
                return Err(format!(
                    "http_server_config.headers.{name}: {value:?} is not one of {allowed:?}"
                ));
            }
            axum::http::HeaderValue::from_str(value)
                .map_err(|_| format!("http_server_config.headers.{name}: {value:?} is not a header value"))?;
        }
        if let Some(limit) = &self.rate_limit {
            parse_go_duration(&limit.interval).map_err(|why| format!("rate_limit.interval: {why}"))?;
        }
        Ok(())
    }

    /// The response headers to add, checked by `validate`.
    pub fn headers(&self) -> Vec<(axum::http::HeaderName, axum::http::HeaderValue)> {
        self.http_server_config
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                let value = axum::http::HeaderValue::from_str(value).ok()?;
                Some((name, value))
            })
            .collect()
    }

    /// The request rate limit, if any (an interval of 0 disables it).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let limit = self.rate_limit.as_ref()?;
        let interval = parse_go_duration(&limit.interval).ok()?;
        (!interval.is_zero()).then_some(RateLimit { interval, burst: limit.burst.max(1) })
    }

    /// The files the configuration depends on: a change to any is a reason to reload it.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls_server_config else { return Vec::new() };
        [&tls.cert_file, &tls.key_file, &tls.client_ca_file].into_iter().flatten().cloned().collect()
    }
}

impl TlsServerConfig {
    fn validate(&self) -> Result<(), String> {
        match (&self.cert, &self.cert_file) {
            (None, None) => return Err("tls_server_config: cert_file (or cert) is required".into()),
            (Some(_), Some(_)) => return Err("tls_server_config: set cert or cert_file, not both".into()),
            _ => {}
        }
        match (&self.key, &self.key_file) {
            (None, None) => return Err("tls_server_config: key_file (or key) is required".into()),
            (Some(_), Some(_)) => return Err("tls_server_config: set key or key_file, not both".into()),
            _ => {}
        }
        let has_ca = self.client_ca.is_some() || self.client_ca_file.is_some();
        if self.client_ca.is_some() && self.client_ca_file.is_some() {
            return Err("tls_server_config: set client_ca or client_ca_file, not both".into());
        }
        if self.client_auth_type.verifies() && !has_ca {
            return Err(format!(
                "tls_server_config: client_auth_type {:?} needs client_ca_file, the CA that signs client certificates",
                self.client_auth_type
            ));
        }
        if has_ca && !self.client_auth_type.verifies() {
            return Err(format!(
                "tls_server_config: a client CA is set but client_auth_type is {:?}, which never verifies against it: use RequireAndVerifyClientCert",
                self.client_auth_type
            ));
        }
        if !self.client_allowed_sans.is_empty() && !self.client_auth_type.requires() {
            return Err(
                "tls_server_config: client_allowed_sans needs client_auth_type RequireAndVerifyClientCert or RequireAnyClientCert"
                    .into(),
            );
        }
        for version in [self.min_version, self.max_version] {
            if version < TlsVersion::TLS12 {
                return Err(format!(
                    "tls_server_config: {version:?} is not supported (insecure): use TLS12 or TLS13"
                ));
            }
        }
        if self.min_version > self.max_version {
            return Err("tls_server_config: min_version is above max_version".into());
        }
        Ok(())
    }
}

/// Go's `time.ParseDuration` for what a rate limit needs: a sequence of number+unit
/// (`1m30s`, `250ms`, `0`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let unit_end = rest[number_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| number_end + i);
        let number: f64 = rest[..number_end]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration such as 100ms or 1s"))?;
        let scale = match &rest[number_end..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("unknown unit {unit:?} in `{text}`: use ms, s, m or h")),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/kernsight/web.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn node_exporter_file_loads() {
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  client_ca_file: ca.crt\n\
             \x20 client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n\
             \x20 cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: true\n\
             \x20 curve_preferences: [X25519, CurveP256]\n\
             http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prometheus: '{HASH}'\n\
             rate_limit:\n  interval: 100ms\n  burst: 10\n"
        );
        let config = parse(&text).unwrap();
        let tls = config.tls_server_config.as_ref().unwrap();
        // Relative paths are relative to the file, as exporter-toolkit has them.
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/etc/kernsight/server.crt")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/abs/server.key")));
        assert_eq!(tls.client_auth_type, ClientAuthType::RequireAndVerifyClientCert);
        assert_eq!(tls.min_version, TlsVersion::TLS13);
        assert_eq!(config.headers().len(), 2);
        assert_eq!(config.rate_limit(), Some(RateLimit { interval: Duration::from_millis(100), burst: 10 }));
        assert_eq!(config.files().len(), 3);
        assert_eq!(config.basic_auth_users["prometheus"], HASH);
    }

    #[test]
    fn empty_file_is_plain_http() {
        assert_eq!(parse("").unwrap(), WebConfig::default());
        assert_eq!(parse("# nothing\n").unwrap(), WebConfig::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  cert_fiel: c\n").unwrap_err();
        assert!(err.contains("cert_fiel"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = parse("basic_auth_user:\n  a: b\n").unwrap_err();
        assert!(err.contains("basic_auth_user"), "{err}");
        let err = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireClientCert\n",
        )
        .unwrap_err();
        assert!(err.contains("RequireClientCert"), "{err}");
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_reason() {
        for (text, expected) in [
            ("tls_server_config:\n  key_file: b\n", "cert_file"),
            ("tls_server_config:\n  cert_file: a\n", "key_file"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "never verifies"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n", "TLS11"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
                "client_allowed_sans",
            ),
            ("basic_auth_users:\n  alice: secret\n", "not a bcrypt hash"),
            ("http_server_config:\n  headers:\n    Server: kernsight\n", "cannot be set"),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options"),
            ("rate_limit:\n  interval: 1 fortnight\n  burst: 1\n", "rate_limit.interval"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("/etc/kernsight/web.yml"), "{err}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("s").is_err());
    }
}
