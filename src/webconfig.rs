//! `--web.config.file`, in the Prometheus exporter-toolkit format, so one
//! file serves node_exporter and this exporter alike: `tls_server_config`
//! (rustls, TLS 1.2 and 1.3; certificates, keys and the client CA are
//! re-read when their files change), `http_server_config.headers`, and
//! `basic_auth_users` (bcrypt hashes as `htpasswd -nbB` writes them,
//! checked here and handed to [`crate::auth`], which verifies requests
//! against them). Secrets and hashes never reach a log line or an error
//! message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use serde::Deserialize;

use crate::auth::BasicAuth;

/// A refused web configuration.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The checked web configuration.
pub struct WebConfig {
    pub tls: Option<Tls>,
    pub auth: Option<Arc<BasicAuth>>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.users()))
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// The headers exporter-toolkit allows in `http_server_config.headers`.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

impl WebConfig {
    /// Whether every request is authenticated: `basic_auth_users`, or TLS
    /// that requires a client certificate verified against
    /// `client_ca_file` (`RequireAndVerifyClientCert`; the other modes let
    /// a client in without one, or with any certificate it made itself).
    pub fn authenticates(&self) -> bool {
        self.auth.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.settings.client_auth == ClientAuth::RequireAndVerifyClientCert)
    }

    /// Loads and checks the file; relative paths in it are resolved against
    /// its directory. Certificates and keys are loaded now, so a bad one is
    /// refused at start.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        WebConfig::parse(&text, &display, &base)
    }

    pub fn parse(text: &str, path: &str, base: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                let first = e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid YAML")
                    .to_string();
                let message = first
                    .strip_prefix("error: line ")
                    .and_then(|r| r.split_once(": ").map(|(_, m)| m.to_string()))
                    .unwrap_or(first);
                WebConfigError::Syntax {
                    path: path.to_string(),
                    line,
                    column,
                    message,
                }
            })?
        };
        let invalid = |key: &str, message: String| WebConfigError::Invalid {
            path: path.to_string(),
            key: key.to_string(),
            message,
        };
        let mut headers = Vec::new();
        if let Some(http) = &raw.http_server_config {
            if http.http2 == Some(true) {
                log::debug!(
                    "{path}: http_server_config.http2 is accepted; this exporter serves HTTP/1.1"
                );
            }
            for (name, value) in &http.headers {
                let Some(allowed) = ALLOWED_HEADERS
                    .iter()
                    .find(|h| h.eq_ignore_ascii_case(name))
                else {
                    return Err(invalid(
                        "http_server_config.headers",
                        format!(
                            "header {name:?} is not allowed (allowed: {})",
                            ALLOWED_HEADERS.join(", ")
                        ),
                    ));
                };
                let n = hyper::header::HeaderName::from_bytes(allowed.as_bytes())
                    .expect("static header name");
                let v = hyper::header::HeaderValue::from_str(value).map_err(|_| {
                    invalid(
                        "http_server_config.headers",
                        format!("bad value for {name}"),
                    )
                })?;
                headers.push((n, v));
            }
        }
        let auth = if raw.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &raw.basic_auth_users {
                if user.contains(':') {
                    return Err(invalid(
                        "basic_auth_users",
                        format!("user name {user:?} contains ':'"),
                    ));
                }
                if bcrypt::verify("", hash).is_err() {
                    return Err(invalid(
                        "basic_auth_users",
                        format!(
                            "the password of user {user:?} is not a bcrypt hash (use htpasswd -nbB)"
                        ),
                    ));
                }
            }
            Some(Arc::new(BasicAuth::new(raw.basic_auth_users)))
        };
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => Some(
                Tls::new(TlsSettings::from_raw(t, base).map_err(|(k, m)| invalid(k, m))?)
                    .map_err(|m| invalid("tls_server_config", m))?,
            ),
        };
        Ok(WebConfig { tls, auth, headers })
    }
}

// ---------------------------------------------------------------------------
// TLS

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Debug)]
struct TlsSettings {
    cert: PathBuf,
    key: PathBuf,
    client_auth: ClientAuth,
    client_ca: Option<PathBuf>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    cipher_suites: Option<Vec<String>>,
    curves: Option<Vec<String>>,
    prefer_server: bool,
}

impl TlsSettings {
    fn from_raw(t: RawTls, base: &Path) -> Result<TlsSettings, (&'static str, String)> {
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let cert = t
            .cert_file
            .as_deref()
            .map(resolve)
            .ok_or(("tls_server_config.cert_file", "missing".to_string()))?;
        let key = t
            .key_file
            .as_deref()
            .map(resolve)
            .ok_or(("tls_server_config.key_file", "missing".to_string()))?;
        let client_auth = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
            "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err((
                    "tls_server_config.client_auth_type",
                    format!(
                        "unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                    ),
                ));
            }
        };
        let client_ca = t.client_ca_file.as_deref().map(resolve);
        let verifies = matches!(
            client_auth,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        );
        if verifies && client_ca.is_none() {
            return Err((
                "tls_server_config.client_ca_file",
                format!("{client_auth:?} needs a client_ca_file"),
            ));
        }
        if client_ca.is_some() && !verifies {
            return Err((
                "tls_server_config.client_ca_file",
                format!(
                    "a client CA is given but client_auth_type {client_auth:?} does not verify client certificates"
                ),
            ));
        }
        if t.client_allowed_sans
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        {
            return Err((
                "tls_server_config.client_allowed_sans",
                "is not supported by this exporter; issue client certificates from a dedicated CA instead".to_string(),
            ));
        }
        let version = |v: &str, key: &'static str| -> Result<u8, (&'static str, String)> {
            match v {
                "TLS12" => Ok(12),
                "TLS13" => Ok(13),
                "TLS10" | "TLS11" => Err((
                    key,
                    format!("{v} is not supported: rustls speaks TLS 1.2 and 1.3 only"),
                )),
                other => Err((key, format!("unknown TLS version {other:?} (TLS12, TLS13)"))),
            }
        };
        let min = version(
            t.min_version.as_deref().unwrap_or("TLS12"),
            "tls_server_config.min_version",
        )?;
        let max = version(
            t.max_version.as_deref().unwrap_or("TLS13"),
            "tls_server_config.max_version",
        )?;
        if min > max {
            return Err((
                "tls_server_config.min_version",
                "is above max_version".to_string(),
            ));
        }
        let mut versions = Vec::new();
        if min <= 13 && max >= 13 {
            versions.push(&rustls::version::TLS13);
        }
        if min <= 12 && max >= 12 {
            versions.push(&rustls::version::TLS12);
        }
        let settings = TlsSettings {
            cert,
            key,
            client_auth,
            client_ca,
            versions,
            cipher_suites: t.cipher_suites,
            curves: t.curve_preferences,
            prefer_server: t.prefer_server_cipher_suites.unwrap_or(false),
        };
        // Refuse unknown suite and curve names now, not at the first handshake.
        settings.provider().map_err(|m| ("tls_server_config", m))?;
        Ok(settings)
    }

    /// The ring provider restricted to the configured cipher suites
    /// (TLS 1.2 names as Go spells them; TLS 1.3 suites are always on, as in
    /// Go) and curves.
    fn provider(&self) -> Result<CryptoProvider, String> {
        let mut p = rustls::crypto::ring::default_provider();
        if let Some(names) = &self.cipher_suites {
            let mut keep = Vec::new();
            for name in names {
                let go = name.trim_end_matches("_SHA256").to_string();
                let found = p.cipher_suites.iter().find(|s| {
                    let ours = format!("{:?}", s.suite());
                    ours == *name || ours.trim_end_matches("_SHA256") == go
                });
                match found {
                    Some(s) => keep.push(*s),
                    None => {
                        return Err(format!("cipher suite {name:?} is not supported by rustls"));
                    }
                }
            }
            p.cipher_suites.retain(|s| {
                s.version() == &rustls::version::TLS13
                    || keep.iter().any(|k| k.suite() == s.suite())
            });
        }
        if let Some(curves) = &self.curves {
            let mut groups = Vec::new();
            for c in curves {
                let want = match c.as_str() {
                    "CurveP256" => rustls::NamedGroup::secp256r1,
                    "CurveP384" => rustls::NamedGroup::secp384r1,
                    "X25519" => rustls::NamedGroup::X25519,
                    other => {
                        return Err(format!(
                            "curve {other:?} is not supported (CurveP256, CurveP384, X25519)"
                        ));
                    }
                };
                if let Some(g) = p.kx_groups.iter().find(|g| g.name() == want) {
                    groups.push(*g);
                }
            }
            p.kx_groups = groups;
        }
        Ok(p)
    }

    fn files(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }

    fn build(&self) -> Result<Arc<ServerConfig>, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("cert_file {}: {e}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cert_file {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("cert_file {}: no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("key_file {}: {e}", self.key.display()))?;
        let provider = Arc::new(self.provider()?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let verifier: Arc<dyn ClientCertVerifier> = match self.client_auth {
            ClientAuth::NoClientCert => {
                let mut cfg = builder
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .map_err(|e| format!("cert_file/key_file: {e}"))?;
                cfg.ignore_client_order = self.prefer_server;
                return Ok(Arc::new(cfg));
            }
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
                Arc::new(AnyClientCert {
                    mandatory: self.client_auth == ClientAuth::RequireAnyClientCert,
                    provider: provider.clone(),
                })
            }
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let ca = self.client_ca.as_ref().expect("checked at load");
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?
                {
                    let c = c.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("client_ca_file {}: no certificate", ca.display()));
                }
                let b =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let b = if self.client_auth == ClientAuth::VerifyClientCertIfGiven {
                    b.allow_unauthenticated()
                } else {
                    b
                };
                b.build()
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?
            }
        };
        let mut cfg = builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("cert_file/key_file: {e}"))?;
        cfg.ignore_client_order = self.prefer_server;
        Ok(Arc::new(cfg))
    }
}

/// RequestClientCert / RequireAnyClientCert: a certificate is asked for (and
/// required by the second) but not checked against a CA, as in Go's
/// crypto/tls; the handshake signature still proves the key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS server state: the current rustls config, rebuilt when a
/// certificate, key or CA file changes (checked at most once a second, on
/// accept). A file that fails to load keeps the previous config serving.
pub struct Tls {
    settings: TlsSettings,
    state: Mutex<TlsState>,
}

struct TlsState {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

const RECHECK: Duration = Duration::from_secs(1);

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl Tls {
    fn new(settings: TlsSettings) -> Result<Tls, String> {
        let config = settings.build()?;
        let stamps = settings.files().iter().map(|p| stamp(p)).collect();
        Ok(Tls {
            settings,
            state: Mutex::new(TlsState {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The config to use for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let stamps: Vec<_> = self.settings.files().iter().map(|p| stamp(p)).collect();
            if stamps != st.stamps {
                match self.settings.build() {
                    Ok(c) => {
                        log::info!("TLS certificate, key or client CA changed on disk: reloaded");
                        st.config = c;
                        st.stamps = stamps;
                    }
                    Err(e) => log::error!(
                        "TLS files changed but cannot be loaded, keeping the previous ones: {e}"
                    ),
                }
            }
        }
        st.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, "web.yml", Path::new("/nonexistent"))
    }

    #[test]
    fn refusals_never_show_secrets() {
        let e = parse("basic_auth_users:\n  alice: notahash-secret\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("alice") && e.contains("bcrypt") && !e.contains("notahash-secret"),
            "{e}"
        );
        let e = parse("basic_auth_users:\n  alice: x\nextra: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.yml:3:1") && e.contains("extra"), "{e}");
    }

    #[test]
    fn tls_settings_refusals() {
        for (yaml, needle) in [
            ("tls_server_config:\n  key_file: k\n", "cert_file: missing"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Bogus\n",
                "unknown value",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs a client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
                "TLS 1.2 and 1.3 only",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                "not supported by rustls",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: [CurveP521]\n",
                "not supported",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_allowed_sans: [a]\n",
                "not supported",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/c\n  key_file: k\n",
                "cert_file /nonexistent/c",
            ),
            (
                "http_server_config:\n  headers:\n    X-Evil: 1\n",
                "not allowed",
            ),
        ] {
            let e = parse(yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn go_cipher_names_map_to_rustls() {
        let raw = RawTls {
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            client_auth_type: None,
            client_ca_file: None,
            client_allowed_sans: None,
            min_version: None,
            max_version: None,
            cipher_suites: Some(vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
            ]),
            curve_preferences: Some(vec!["X25519".into()]),
            prefer_server_cipher_suites: Some(true),
        };
        let s = TlsSettings::from_raw(raw, Path::new("/")).unwrap();
        let p = s.provider().unwrap();
        let tls12: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|c| c.version() == &rustls::version::TLS12)
            .map(|c| format!("{:?}", c.suite()))
            .collect();
        assert_eq!(tls12.len(), 2, "{tls12:?}");
        assert_eq!(p.kx_groups.len(), 1);
        assert!(s.prefer_server);
    }

    #[test]
    fn empty_file_means_plain_http() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none() && c.headers.is_empty());
    }
}
