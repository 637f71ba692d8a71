//! The endpoint is as safe to expose as node_exporter: TLS (rustls) with
//! every client-auth mode that matters, basic auth with bcrypt hashes on
//! every path, configured response headers, certificates re-read on
//! change; and the configuration reloads (SIGHUP, POST /-/reload) keep the
//! old ranges when the new file is bad; the trail's command lines are
//! served only where every client is authenticated.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf certificate and key (PEM) signed by `ca`.
fn leaf(ca: &Ca, client: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portrange-sec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// GET over TLS, trusting `ca_pem`, optionally with a client certificate.
fn tls_get(
    ca_pem: &str,
    client: Option<&(String, String)>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            builder
                .with_client_auth_cert(
                    certs,
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap()
        }
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(ADDR).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_response(&raw).map_err(|e| e.to_string())
}

fn wait_tls(ca_pem: &str, client: Option<&(String, String)>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tls_get(ca_pem, client, "/-/healthy", &[]).is_err() {
        assert!(std::time::Instant::now() < deadline, "no TLS answer");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_exporter(args: &[&str]) -> std::process::Child {
    std::process::Command::new(EXPORTER)
        .args(["--web.listen-address", ADDR])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tls_handshakes_client_certificates_and_cert_reload() {
    if !enter_netns("tls_handshakes_client_certificates_and_cert_reload") {
        return;
    }
    let d = dir("tls");
    let ca1 = ca("ca one");
    let other = ca("someone else");
    let (cert, key) = leaf(&ca1, false);
    write(&d.join("server.crt"), &cert);
    write(&d.join("server.key"), &key);
    write(
        &d.join("web.yml"),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n",
    );
    let web = d.join("web.yml");
    let e = KillOnDrop(spawn_exporter(&[
        "--web.config.file",
        web.to_str().unwrap(),
    ]));
    wait_tls(&ca1.pem, None);

    let r = tls_get(&ca1.pem, None, "/metrics", &[]).expect("handshake with the right CA");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("portrange_up 1"));
    let err = tls_get(&other.pem, None, "/metrics", &[])
        .expect_err("a client trusting another CA refuses");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // Plain HTTP to the TLS port: no HTTP answer, and the server keeps serving.
    let plain = get(ADDR, "/metrics", &[]);
    assert!(
        plain.is_err() || plain.as_ref().unwrap().status != 200,
        "plain HTTP must not be served"
    );
    assert_eq!(
        tls_get(&ca1.pem, None, "/-/healthy", &[]).unwrap().status,
        200
    );

    // Certificates are re-read when they change: switch to a cert from CA 2.
    let ca2 = ca("ca two");
    let (cert2, key2) = leaf(&ca2, false);
    write(&d.join("server.key"), &key2);
    write(&d.join("server.crt"), &cert2);
    std::thread::sleep(Duration::from_millis(1200));
    let _ = tls_get(&ca2.pem, None, "/-/healthy", &[]); // the accept that notices the change
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = tls_get(&ca2.pem, None, "/metrics", &[]) {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        tls_get(&ca1.pem, None, "/metrics", &[]).is_err(),
        "the old certificate is gone"
    );
    drop(e);

    // RequireAndVerifyClientCert.
    let (ccert, ckey) = leaf(&ca1, true);
    let stranger = leaf(&other, true);
    write(&d.join("client_ca.crt"), &ca1.pem);
    write(
        &d.join("mtls.yml"),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client_ca.crt\n",
    );
    let mtls = d.join("mtls.yml");
    let _e = KillOnDrop(spawn_exporter(&[
        "--web.config.file",
        mtls.to_str().unwrap(),
    ]));
    let client = (ccert, ckey);
    wait_tls(&ca2.pem, Some(&client));
    let r = tls_get(&ca2.pem, Some(&client), "/metrics", &[])
        .expect("a valid client certificate is served");
    assert_eq!(r.status, 200);
    let no_cert = tls_get(&ca2.pem, None, "/metrics", &[]);
    assert!(
        no_cert.is_err() || no_cert.as_ref().unwrap().status != 200,
        "no client certificate must be refused"
    );
    let wrong = tls_get(&ca2.pem, Some(&stranger), "/metrics", &[]);
    assert!(
        wrong.is_err() || wrong.as_ref().unwrap().status != 200,
        "a certificate from another CA must be refused"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn basic_auth_on_every_path_and_configured_headers() {
    if !enter_netns("basic_auth_on_every_path_and_configured_headers") {
        return;
    }
    let d = dir("auth");
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    write(
        &d.join("web.yml"),
        &format!(
            "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
        ),
    );
    let web = d.join("web.yml");
    let _e = KillOnDrop(spawn_exporter(&[
        "--web.config.file",
        web.to_str().unwrap(),
    ]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(ADDR, "/-/healthy", &[]).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    use base64::Engine;
    let b64 = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let right = b64("alice:s3cret");
    let wrong = b64("alice:nope");
    let stranger = b64("mallory:s3cret");
    for path in ["/metrics", "/-/healthy", "/"] {
        let r = get(ADDR, path, &[]).unwrap();
        assert_eq!(r.status, 401, "{path} without credentials");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"portrange_exporter\"")
        );
        assert_eq!(
            r.header("x-frame-options"),
            Some("deny"),
            "headers on refusals too"
        );
        assert_eq!(
            get(ADDR, path, &[("Authorization", &wrong)])
                .unwrap()
                .status,
            401,
            "{path} wrong password"
        );
        assert_eq!(
            get(ADDR, path, &[("Authorization", &stranger)])
                .unwrap()
                .status,
            401,
            "{path} unknown user"
        );
        let ok = get(ADDR, path, &[("Authorization", &right)]).unwrap();
        assert_eq!(ok.status, 200, "{path} right credentials");
        assert_eq!(
            ok.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    let m = get(ADDR, "/metrics", &[("Authorization", &right)])
        .unwrap()
        .text();
    assert!(!m.contains(&hash) && !m.contains("s3cret"));
    let _ = std::fs::remove_dir_all(&d);
}

/// GET `path` from source address `from` (another loopback address is
/// another peer to the exporter), with `Authorization: authorization`.
fn get_from(from: &str, path: &str, authorization: &str) -> Response {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    let dst: std::net::SocketAddr = ADDR.parse().unwrap();
    sock.connect(&dst.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw).unwrap()
}

/// CPU time (user + system) `pid` has used, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (f[0] + f[1]) * 1000 / hz
}

fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Issue 17, fault 3: wrong passwords, each a bcrypt, must not hold up a
/// scraper that logged in before. At bcrypt cost 14 (about a second of CPU
/// each) five peers each send a wrong password; once the exporter is
/// visibly running bcrypt (its CPU time grows), the logged-in scraper
/// asks for /metrics. Its answer must come before any wrong password's
/// 401: it is answered from the cache, never queued behind bcrypt (before
/// the fix it waited on the blocking pool the five shared, behind at least
/// four of them). Then one peer's second guess while its first is being
/// checked gets 429 at once, while a first login from another address
/// goes through; the refusals are counted by reason.
#[test]
fn a_logged_in_scraper_is_answered_while_wrong_passwords_hold_the_bcrypt_threads() {
    let test = "a_logged_in_scraper_is_answered_while_wrong_passwords_hold_the_bcrypt_threads";
    if !enter_netns(test) {
        return;
    }
    let d = dir("flood");
    let alice = bcrypt::hash("s3cret", 14).unwrap();
    let late = bcrypt::hash("l4te", 10).unwrap();
    let web = d.join("web.yml");
    write(
        &web,
        &format!("basic_auth_users:\n  alice: {alice}\n  late: {late}\n"),
    );
    let e = KillOnDrop(spawn_exporter(&[
        "--web.config.file",
        web.to_str().unwrap(),
    ]));
    let pid = e.0.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get(ADDR, "/-/healthy", &[]).map(|r| r.status).ok() != Some(401) {
        assert!(std::time::Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let right = basic("alice:s3cret");
    assert_eq!(
        get_from("127.0.0.2", "/metrics", &right).status,
        200,
        "first login"
    );

    let cpu0 = cpu_ms(pid);
    let flood: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let r = get_from(
                    &format!("127.0.0.{}", 11 + i),
                    "/metrics",
                    &basic(&format!("alice:wrong{i}")),
                );
                (r.status, std::time::Instant::now())
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cpu_ms(pid) < cpu0 + 200 {
        assert!(std::time::Instant::now() < deadline, "no bcrypt started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let good = get_from("127.0.0.2", "/metrics", &right);
    let good_at = std::time::Instant::now();
    assert_eq!(good.status, 200);
    let answers: Vec<(u16, std::time::Instant)> =
        flood.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        answers.iter().all(|(code, _)| *code == 401),
        "every wrong password is verified and refused: {answers:?}"
    );
    let first_refusal = answers.iter().map(|(_, t)| *t).min().unwrap();
    assert!(
        good_at < first_refusal,
        "the logged-in scrape was answered {:?} after the first wrong password's 401: it waited for bcrypt",
        good_at - first_refusal
    );

    // One login per peer at a time; another peer's first login meanwhile.
    let cpu0 = cpu_ms(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let guess = std::thread::spawn(|| get_from("127.0.0.21", "/metrics", &basic("alice:guess1")));
    while cpu_ms(pid) < cpu0 + 200 {
        assert!(std::time::Instant::now() < deadline, "no bcrypt started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = get_from("127.0.0.21", "/metrics", &basic("alice:guess2"));
    assert_eq!(
        second.status, 429,
        "a second guess while the first is checked"
    );
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(
        get_from("127.0.0.3", "/metrics", &basic("late:l4te")).status,
        200,
        "a first login from another address"
    );
    assert_eq!(guess.join().unwrap().status, 401);

    let raw = get_from("127.0.0.2", "/metrics", &right).text();
    let m = Metrics::parse(&raw);
    let failures = |reason: &str| {
        m.value(&format!(
            "portrange_web_auth_failures_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(failures("wrong_password"), 6.0);
    assert_eq!(failures("throttled"), 1.0);
    assert_eq!(failures("unknown_user"), 0.0);
    assert_eq!(failures("error"), 0.0);
    assert!(failures("missing") >= 1.0, "the wait for /-/healthy");
    assert!(!raw.contains("alice") && !raw.contains("127.0.0."));
    promtool_check_metrics(&raw);
    drop(e);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_web_config_exits_2_without_leaking_secrets() {
    let d = dir("badweb");
    write(
        &d.join("web.yml"),
        "basic_auth_users:\n  alice: plaintext-password\n",
    );
    let out = std::process::Command::new(EXPORTER)
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            d.join("web.yml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.yml") && err.contains("alice") && err.contains("bcrypt"),
        "{err}"
    );
    assert!(!err.contains("plaintext-password"), "{err}");
    write(
        &d.join("web2.yml"),
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    );
    let out = std::process::Command::new(EXPORTER)
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            d.join("web2.yml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.crt"));
    let _ = std::fs::remove_dir_all(&d);
}

fn post(path: &str) -> Response {
    request(ADDR, "POST", path, &[("Content-Length", "0")]).unwrap()
}

#[test]
fn reload_changes_ranges_and_a_bad_file_keeps_the_old_ones() {
    if !enter_netns("reload_changes_ranges_and_a_bad_file_keeps_the_old_ones") {
        return;
    }
    let cfg = config_file("reload", "ranges:\n  - name: first\n    ports: 1000-1009\n");
    let c = cfg.to_str().unwrap();
    let e = Exporter::start(&["--config.file", c, "--web.enable-lifecycle"]);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ports{range="first",protocol="udp"}"#),
        10.0
    );
    assert_eq!(m.value("portrange_config_last_reload_successful"), 1.0);
    let t0 = m.value("portrange_config_last_reload_success_timestamp_seconds");

    std::fs::write(
        &cfg,
        "ranges:\n  - name: second\n    ports: 2000-2004\n    protocols: [tcp]\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let r = post("/-/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ports{range="second",protocol="tcp"}"#),
        5.0
    );
    assert!(
        m.get(r#"portrange_ports{range="first",protocol="udp"}"#)
            .is_none()
    );
    assert!(m.value("portrange_config_last_reload_success_timestamp_seconds") > t0);

    std::fs::write(&cfg, "ranges:\n  - name: third\n    ports: 3000-2000\n").unwrap();
    let r = post("/-/reload");
    assert_eq!(r.status, 500);
    assert!(r.text().contains(":3:12: ranges[0].ports"), "{}", r.text());
    let m = e.metrics();
    assert_eq!(m.value("portrange_config_last_reload_successful"), 0.0);
    assert_eq!(
        m.value(r#"portrange_ports{range="second",protocol="tcp"}"#),
        5.0,
        "old ranges kept"
    );
    assert!(
        e.stderr().contains("keeping the previous ranges"),
        "{}",
        e.stderr()
    );

    // SIGHUP does the same.
    std::fs::write(
        &cfg,
        "ranges:\n  - name: fourth\n    ports: 4000\n    protocols: [udp]\n",
    )
    .unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(e.child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = e.metrics();
        if m.get(r#"portrange_ports{range="fourth",protocol="udp"}"#) == Some(1.0) {
            assert_eq!(m.value("portrange_config_last_reload_successful"), 1.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(ADDR, "/-/reload", &[]).unwrap().status, 405);
    drop(e);

    let e = Exporter::start(&["--config.file", c]);
    assert_eq!(
        post("/-/reload").status,
        403,
        "lifecycle API off by default"
    );
    drop(e);
    let _ = std::fs::remove_file(cfg);
}

/// The trail's command lines are served only to authenticated clients:
/// with TLS, only `RequireAndVerifyClientCert` authenticates (the other
/// modes let in a client without a certificate, or with any it made);
/// otherwise `/api/v1/events` withholds them and says why.
#[test]
fn command_lines_are_served_only_where_every_client_is_authenticated() {
    if !enter_netns("command_lines_are_served_only_where_every_client_is_authenticated") {
        return;
    }
    let d = dir("cmdline");
    let ca1 = ca("cmdline ca");
    let (cert, key) = leaf(&ca1, false);
    write(&d.join("server.crt"), &cert);
    write(&d.join("server.key"), &key);
    write(&d.join("client_ca.crt"), &ca1.pem);
    let client = leaf(&ca1, true);
    let held = hold("nc", &["udp:127.0.0.1:3233"]);
    for (mode, served) in [
        ("RequireAndVerifyClientCert", true),
        ("VerifyClientCertIfGiven", false),
        ("RequireAnyClientCert", false),
        ("NoClientCert", false),
    ] {
        let ca_line = if mode.contains("Verify") {
            "  client_ca_file: client_ca.crt\n"
        } else {
            ""
        };
        let web = d.join(format!("{mode}.yml"));
        write(
            &web,
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {mode}\n{ca_line}"
            ),
        );
        let _e = KillOnDrop(spawn_exporter(&[
            "--web.config.file",
            web.to_str().unwrap(),
        ]));
        wait_tls(&ca1.pem, Some(&client));
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        let (doc, event) = loop {
            let r = tls_get(&ca1.pem, Some(&client), "/api/v1/events", &[]).unwrap();
            assert_eq!(r.status, 200, "{mode}");
            let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let event = doc["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["port"] == 3233)
                .cloned();
            if let Some(e) = event {
                break (doc, e);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: no event: {doc}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        if served {
            assert_eq!(doc["cmdline_withheld"], serde_json::Value::Null, "{mode}");
            assert!(
                event["cmdline"]
                    .as_str()
                    .is_some_and(|c| c.contains("udp:127.0.0.1:3233")),
                "{mode}: {event}"
            );
        } else {
            assert!(
                doc["cmdline_withheld"]
                    .as_str()
                    .is_some_and(|w| w.contains("no authentication is configured")),
                "{mode}: {doc}"
            );
            assert_eq!(event["cmdline"], serde_json::Value::Null, "{mode}: {event}");
        }
    }
    drop(held);
    let _ = std::fs::remove_dir_all(&d);
}
