//! A rustls server configuration from `tls_server_config`: certificate and key, the client
//! certificate policy (Go's five `client_auth_type`s), versions, suites and curves. rustls with
//! the `ring` provider does the cryptography; this module only chooses its settings.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, SupportedKxGroup, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::web_config::{ClientAuthType, TlsServerConfig, TlsVersion};

/// Builds the server side of TLS from a checked `tls_server_config`. Errors name the key or the
/// file at fault.
pub fn server_config(tls: &TlsServerConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(provider(tls)?);
    let certs = pem_certificates(tls.cert.as_deref(), tls.cert_file.as_deref(), "cert")?;
    if certs.is_empty() {
        return Err("tls_server_config.cert_file holds no certificate".into());
    }
    let key = match (&tls.key, &tls.key_file) {
        (Some(pem), _) => PrivateKeyDer::from_pem_slice(pem.as_bytes()),
        (None, Some(file)) => PrivateKeyDer::from_pem_file(file),
        (None, None) => return Err("tls_server_config: key_file is required".into()),
    }
    .map_err(|err| format!("tls_server_config.key_file: no private key ({err})"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(TlsVersion::TLS12, &rustls::version::TLS12), (TlsVersion::TLS13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(version, _)| (tls.min_version..=tls.max_version).contains(version))
            .map(|(_, supported)| supported)
            .collect();
    let verifier = client_verifier(tls, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|err| format!("tls_server_config: {err}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|err| format!("tls_server_config: the key does not fit the certificate ({err})"))?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's suites and groups, narrowed to the configured ones (in their order).
fn provider(tls: &TlsServerConfig) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let (tls13, tls12): (Vec<SupportedCipherSuite>, Vec<SupportedCipherSuite>) =
            provider.cipher_suites.iter().partition(|suite| suite.version() == &rustls::version::TLS13);
        let mut chosen = Vec::new();
        for name in &tls.cipher_suites {
            let suite = tls12.iter().find(|s| format!("{:?}", s.suite()) == *name).ok_or_else(|| {
                let names: Vec<String> = tls12.iter().map(|s| format!("{:?}", s.suite())).collect();
                format!(
                    "tls_server_config.cipher_suites: {name} is not supported; choose from {}",
                    names.join(", ")
                )
            })?;
            chosen.push(*suite);
        }
        // As in Go, cipher_suites narrows TLS 1.2 only; TLS 1.3 has no weak suites to remove.
        chosen.extend(tls13);
        provider.cipher_suites = chosen;
    }
    if !tls.curve_preferences.is_empty() {
        let known: [(&str, &'static dyn SupportedKxGroup); 3] = [
            ("X25519", ring::kx_group::X25519),
            ("CurveP256", ring::kx_group::SECP256R1),
            ("CurveP384", ring::kx_group::SECP384R1),
        ];
        provider.kx_groups = tls
            .curve_preferences
            .iter()
            .map(|name| {
                known.iter().find(|(known, _)| known == name).map(|(_, group)| *group).ok_or_else(|| {
                    format!("tls_server_config.curve_preferences: {name} is not supported; choose from X25519, CurveP256, CurveP384")
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

fn pem_certificates(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = match (inline, file) {
        (Some(pem), _) => pem.as_bytes().to_vec(),
        (None, Some(file)) => std::fs::read(file)
            .map_err(|err| format!("tls_server_config.{key}_file: cannot read {}: {err}", file.display()))?,
        (None, None) => return Ok(Vec::new()),
    };
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("tls_server_config.{key}_file: not PEM certificates ({err})"))
}

fn client_verifier(
    tls: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        let mut roots = RootCertStore::empty();
        let cas = pem_certificates(tls.client_ca.as_deref(), tls.client_ca_file.as_deref(), "client_ca")?;
        if cas.is_empty() {
            return Err("tls_server_config.client_ca_file holds no certificate".into());
        }
        for ca in cas {
            roots.add(ca).map_err(|err| format!("tls_server_config.client_ca_file: {err}"))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if optional { builder.allow_unauthenticated() } else { builder };
        builder
            .build()
            .map(|v| v as Arc<dyn ClientCertVerifier>)
            .map_err(|err| format!("tls_server_config: {err}"))
    };
    let verifier: Arc<dyn ClientCertVerifier> = match tls.client_auth_type {
        ClientAuthType::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuthType::RequestClientCert => {
            Arc::new(AnyCertificate { provider: provider.clone(), mandatory: false })
        }
        ClientAuthType::RequireAnyClientCert => {
            Arc::new(AnyCertificate { provider: provider.clone(), mandatory: true })
        }
        ClientAuthType::VerifyClientCertIfGiven => verified(true)?,
        ClientAuthType::RequireAndVerifyClientCert => verified(false)?,
    };
    if tls.client_allowed_sans.is_empty() {
        return Ok(verifier);
    }
    let allowed = tls
        .client_allowed_sans
        .iter()
        .map(|san| {
            ServerName::try_from(san.as_str()).map(|name| name.to_owned()).map_err(|_| {
                format!(
                    "tls_server_config.client_allowed_sans: {san:?} is neither a DNS name nor an IP address (the SANs kernsight matches)"
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(AllowedSans { inner: verifier, allowed }))
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (and required by
/// the second) but not checked against any CA; the handshake still proves the client holds its
/// key. Go's semantics, which exporter-toolkit calls insecure: they identify, not authenticate.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: the certificate passes the inner policy and names one of the allowed
/// DNS names or IP addresses among its SANs.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self.allowed.iter().any(|name| cert.verify_is_valid_for_subject_name(name).is_ok()) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    use super::*;
    use crate::http::web_config::WebConfig;

    /// A CA and a server certificate signed by it, as inline PEM.
    fn pki() -> (String, String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    fn build(extra: &str) -> Result<Arc<ServerConfig>, String> {
        server_config(&tls_config(extra))
    }

    fn tls_config(extra: &str) -> TlsServerConfig {
        let (ca, cert, key) = pki();
        let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let text = format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_ca: |\n{}{extra}",
            indent(&cert),
            indent(&key),
            indent(&ca)
        );
        WebConfig::parse(&text, Path::new("/t/web.yml")).unwrap().tls_server_config.unwrap()
    }

    fn verifier(extra: &str) -> Arc<dyn ClientCertVerifier> {
        let tls = tls_config(extra);
        client_verifier(&tls, &Arc::new(provider(&tls).unwrap())).unwrap()
    }

    #[test]
    fn every_verifying_client_auth_type_builds() {
        for kind in ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"] {
            let extra = format!("  client_auth_type: {kind}\n");
            build(&extra).unwrap();
            let verifier = verifier(&extra);
            assert!(verifier.offer_client_auth(), "{kind}");
            assert_eq!(verifier.client_auth_mandatory(), kind == "RequireAndVerifyClientCert");
        }
        let sans = "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [prometheus.monitoring.svc, 10.0.0.1]\n";
        build(sans).unwrap();
        assert!(verifier(sans).client_auth_mandatory());
    }

    #[test]
    fn versions_suites_and_curves_narrow_the_provider() {
        let config = build(
            "  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n  curve_preferences: [X25519]\n",
        )
        .unwrap();
        assert_eq!(config.crypto_provider().kx_groups.len(), 1);
        let config = build(
            "  client_auth_type: RequireAndVerifyClientCert\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
        )
        .unwrap();
        let tls12 =
            config.crypto_provider().cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS12);
        assert_eq!(tls12.count(), 1);
        for (extra, expected) in [
            ("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "TLS_RSA_WITH_RC4_128_SHA is not supported"),
            ("  curve_preferences: [CurveP521]\n", "CurveP521 is not supported"),
            ("  client_allowed_sans: [mailto:x@y]\n", "neither a DNS name nor an IP address"),
        ] {
            let err = build(&format!("  client_auth_type: RequireAndVerifyClientCert\n{extra}")).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
    }

    #[test]
    fn a_key_that_does_not_fit_its_certificate_is_refused() {
        let (ca, cert, _) = pki();
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        let tls = TlsServerConfig {
            cert: Some(cert),
            key: Some(other_key),
            client_ca: Some(ca),
            ..WebConfig::parse("tls_server_config:\n  cert_file: a\n  key_file: b\n", Path::new("/t/web.yml"))
                .unwrap()
                .tls_server_config
                .unwrap()
        };
        let tls = TlsServerConfig { cert_file: None, key_file: None, ..tls };
        let err = server_config(&tls).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
    }
}
