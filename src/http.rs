//! The HTTP endpoint: routing, TLS and compression; basic authentication is
//! decided by [`crate::auth`] before routing, on every path, and answered
//! here (401; 429 when the client's address already has a login being
//! checked or too many wait; 500 when the check itself failed), with the
//! configured headers. Paths:
//! `/metrics` (or `--web.telemetry-path`), the port map page at `/` with
//! its script and style (`/portmap.js`, `/portmap.css`, compiled in, served
//! under a Content-Security-Policy that allows nothing else), its JSON at
//! `/api/v1/status` ([`crate::status`]), the listener trail at
//! `/api/v1/events` (both leave the trail's command lines out, and say why
//! in `cmdline_withheld`, unless every client is authenticated or the
//! operator said otherwise: [`crate::trail::cmdline_withheld`]),
//! `/-/healthy`, `/-/reload` (with
//! `--web.enable-lifecycle`), 404 elsewhere whatever the method, 405 for
//! methods other than GET and HEAD on the known paths. Collections belong
//! to [`Service`]: a scrape or a status request asks it for one (shared
//! with whatever runs), and nothing here touches the OS; `/`, its assets,
//! `/-/healthy` and `/-/reload` never wait for a collection; `/-/healthy`
//! answers 503 with the reason while no collector can run. The metrics
//! handler counts its requests as Go's promhttp does
//! (`promhttp_metric_handler_requests_total` by code, `..._in_flight`),
//! unless exporter metrics are disabled. The server takes bound listeners
//! (one or several) and a shutdown future, caps open connections, cuts
//! clients that do not finish their headers in time, answers plain HTTP on
//! a TLS port with a 400 that says so (as Go does), and drains open
//! connections on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Outcome;
use crate::metrics;
use crate::service::Service;
use crate::status;
use crate::webconfig::WebConfig;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub telemetry_path: String,
    /// A client must send its complete request head within this time.
    pub header_read_timeout: Duration,
    /// Connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Default scrape budget when Prometheus sends no
    /// `X-Prometheus-Scrape-Timeout-Seconds`.
    pub default_budget: Duration,
    /// The longest scrape timeout a scraper may ask for in
    /// `X-Prometheus-Scrape-Timeout-Seconds` (`--web.max-scrape-timeout`).
    pub max_scrape_timeout: Duration,
    /// How long shutdown waits for open connections.
    pub shutdown_grace: Duration,
    /// TLS, basic auth and response headers (`--web.config.file`).
    pub web: Option<Arc<WebConfig>>,
    /// Serve `POST /-/reload` (`--web.enable-lifecycle`).
    pub enable_lifecycle: bool,
    /// Add the `promhttp_*` request metrics to every scrape (off with
    /// `--web.disable-exporter-metrics`).
    pub exporter_metrics: bool,
    /// Why `/api/v1/events` and `/api/v1/status` leave the trail's command
    /// lines out (`None`: they serve them, redacted); see
    /// [`crate::trail::cmdline_withheld`]. Withheld by default.
    pub cmdline_withheld: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            telemetry_path: "/metrics".into(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            default_budget: Duration::from_secs(5),
            max_scrape_timeout: MAX_SCRAPE_TIMEOUT,
            shutdown_grace: Duration::from_secs(5),
            web: None,
            enable_lifecycle: false,
            exporter_metrics: true,
            cmdline_withheld: Some(crate::trail::WITHHELD_WITHOUT_AUTH.to_string()),
        }
    }
}

/// The metrics handler's own counters, as Go's promhttp keeps them.
#[derive(Default)]
struct HandlerMetrics {
    in_flight: AtomicI64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Scrapes that got no collection within their own time.
    late: AtomicU64,
}

/// Codes the counter always shows (promhttp's initial set).
const COUNTED_CODES: [u16; 3] = [200, 500, 503];

impl HandlerMetrics {
    /// The two families in the text format, as they stand now.
    fn exposition(&self) -> String {
        let mut out = String::from(
            "# HELP promhttp_metric_handler_requests_in_flight Current number of scrapes being served.\n\
             # TYPE promhttp_metric_handler_requests_in_flight gauge\n",
        );
        out.push_str(&format!(
            "promhttp_metric_handler_requests_in_flight {}\n",
            self.in_flight.load(Ordering::SeqCst)
        ));
        out.push_str(
            "# HELP promhttp_metric_handler_requests_total Total number of scrapes by HTTP status code.\n\
             # TYPE promhttp_metric_handler_requests_total counter\n",
        );
        for code in COUNTED_CODES {
            let n = match code {
                200 => self.ok.load(Ordering::SeqCst),
                500 => self.failed.load(Ordering::SeqCst),
                503 => self.late.load(Ordering::SeqCst),
                _ => 0,
            };
            out.push_str(&format!(
                "promhttp_metric_handler_requests_total{{code=\"{code}\"}} {n}\n"
            ));
        }
        out
    }
}

/// Counts one scrape in flight until dropped.
struct InFlight<'a>(&'a HandlerMetrics);

impl<'a> InFlight<'a> {
    fn start(m: &'a HandlerMetrics) -> InFlight<'a> {
        m.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the handlers share.
pub struct State {
    service: Arc<Service>,
    options: Options,
    handler: HandlerMetrics,
}

impl State {
    pub fn new(service: Arc<Service>, options: Options) -> Arc<State> {
        Arc::new(State {
            service,
            options,
            handler: HandlerMetrics::default(),
        })
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }
}

/// Serves until `shutdown` completes, then drains open connections for up
/// to the grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_all(vec![listener], state, shutdown).await
}

/// Like [`serve`], on several listeners at once (repeated
/// `--web.listen-address`, or the sockets systemd passed). The connection
/// cap is shared.
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(state.options.max_connections));
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let tx = accepted_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok(conn) => {
                            if tx.send(conn).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!(err:% = e; "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        })
        .collect();
    drop(accepted_tx);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = accepted.recv() => match r {
                Some(x) => x,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            log::debug!(
                peer:% = peer, open = state.options.max_connections;
                "closing connection: too many connections open"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = state
            .options
            .web
            .as_ref()
            .and_then(|w| w.tls.as_ref())
            .map(|t| t.config());
        let st = state.clone();
        let watcher = graceful.watcher();
        let timeout = state.options.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), st, watcher, peer).await,
                Some(config) => {
                    if plain_http_on_tls(&stream, timeout).await {
                        refuse_plain_http(stream, peer).await;
                        drop(permit);
                        return;
                    }
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(TokioIo::new(tls_stream), st, watcher, peer).await
                        }
                        Ok(Err(e)) => log::debug!(peer:% = peer, err:% = e; "TLS handshake failed"),
                        Err(_) => log::debug!(peer:% = peer; "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    for a in &acceptors {
        a.abort();
    }
    for a in acceptors {
        let _ = a.await; // the listeners close here
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(state.options.shutdown_grace) => {
            log::warn!(grace:? = state.options.shutdown_grace; "shutdown: connections still open after the grace period, closing them");
        }
    }
    Ok(())
}

/// Whether a client on the TLS port opened with plain HTTP: a TLS client
/// starts with a handshake record (byte 0x16); an HTTP request starts with
/// a method in capitals. Peeks, so the TLS handshake still sees every byte.
async fn plain_http_on_tls(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0].is_ascii_uppercase()
    )
}

/// What Go's net/http answers to plain HTTP on a TLS port.
pub const PLAIN_HTTP_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Answers plain HTTP on the TLS port with a 400, then closes after the
/// client's request is read (closing with unread data would reset the
/// connection and could lose the answer).
async fn refuse_plain_http(stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    log::debug!(peer:% = peer; "plain HTTP on the TLS port: answering 400");
    let mut sent = 0;
    while sent < PLAIN_HTTP_ON_TLS.len() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(&PLAIN_HTTP_ON_TLS[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
    let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 && stream.readable().await.is_ok() {
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn serve_connection<I>(
    io: I,
    state: Arc<State>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let timeout = state.options.header_read_timeout;
    let service = hyper::service::service_fn(move |req| {
        let st = state.clone();
        async move { Ok::<_, Infallible>(respond(&st, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        log::debug!(peer:% = peer, err:% = e; "connection ended with an error");
    }
}

type Resp = Response<Full<Bytes>>;

/// Authenticates, routes, and adds the configured response headers.
async fn respond(state: &Arc<State>, req: Request<Incoming>, peer: std::net::SocketAddr) -> Resp {
    let web = state.options.web.clone();
    if let Some(auth) = web.as_ref().and_then(|w| w.auth.as_ref()) {
        let header = req.headers().get(header::AUTHORIZATION);
        let outcome = auth
            .check(header.map(HeaderValue::as_bytes), peer.ip())
            .await;
        if let Some(r) = refusal(&outcome) {
            return with_headers(r, web.as_deref());
        }
    }
    let r = handle(state, req).await;
    with_headers(r, web.as_deref())
}

/// The answer to a request that authentication did not let through, or
/// `None` when it did. A check that failed is a 500 (logged by
/// [`crate::auth`]), never a 401 that would read as a wrong password.
fn refusal(outcome: &Outcome) -> Option<Resp> {
    match outcome {
        Outcome::Allowed => None,
        Outcome::Refused(_) => {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portrange_exporter\""),
            );
            Some(r)
        }
        Outcome::Throttled => {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests: too many logins being checked, retry later\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Some(r)
        }
        Outcome::Failed(_) => Some(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error: the credentials could not be checked\n",
        )),
    }
}

fn with_headers(mut r: Resp, web: Option<&WebConfig>) -> Resp {
    if let Some(w) = web {
        for (k, v) in &w.headers {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    if path == "/-/reload" {
        if req.method() != Method::POST && req.method() != Method::PUT {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only POST or PUT requests allowed\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
            return r;
        }
        if !state.options.enable_lifecycle {
            return text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n");
        }
        return match state.service.reload("POST /-/reload").await {
            Ok(_) => text(StatusCode::OK, "OK\n"),
            Err(e) => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(format!(
                    "failed to reload config: {e}\n"
                ))))
                .expect("static headers are valid"),
        };
    }
    let known = path == state.options.telemetry_path
        || matches!(
            path,
            "/" | "/-/healthy" | "/portmap.js" | "/portmap.css" | STATUS_PATH | EVENTS_PATH
        );
    if !known {
        return text(StatusCode::NOT_FOUND, "Not Found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == state.options.telemetry_path {
        return scrape(state, req.headers()).await;
    }
    match path {
        "/" => page(
            "text/html; charset=utf-8",
            Bytes::from(port_map_page(state)),
        ),
        "/portmap.js" => page(
            "text/javascript; charset=utf-8",
            Bytes::from_static(PORTMAP_JS.as_bytes()),
        ),
        "/portmap.css" => page(
            "text/css; charset=utf-8",
            Bytes::from_static(PORTMAP_CSS.as_bytes()),
        ),
        STATUS_PATH => status_json(state, req.headers()).await,
        EVENTS_PATH => events_json(state, req.uri().query()),
        _ => health(state),
    }
}

/// `/-/healthy`: 200 while a collector can run, else 503 with the reason
/// (the platform cannot be built, the collector keeps failing), so that
/// a supervisor restarts the exporter. Never waits for a collection.
fn health(state: &State) -> Resp {
    match state.service.health() {
        Ok(()) => text(StatusCode::OK, "Healthy\n"),
        Err(why) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(format!("Unhealthy: {why}\n"))))
            .expect("static headers are valid"),
    }
}

/// The port map's JSON.
pub const STATUS_PATH: &str = "/api/v1/status";

/// The listener trail's events.
pub const EVENTS_PATH: &str = "/api/v1/events";

/// The `since` of an events query: events after this sequence number (0,
/// every event kept, without one); `Err` names what is wrong.
pub fn events_since(query: Option<&str>) -> Result<u64, String> {
    let mut since = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "since" {
            since = v.parse().map_err(|_| {
                format!("since={v:?}: not a sequence number (an event's seq, 0 or more)")
            })?;
        }
    }
    Ok(since)
}

/// `/api/v1/events`: the trail's events after `?since=` (a sequence
/// number), oldest first (newest last), with the last sequence number
/// given, the events dropped so far, and why command lines are left out
/// (`cmdline_withheld`, null when they are served). Never waits for a
/// collection: the collector thread's watch passes keep the trail current.
fn events_json(state: &State, query: Option<&str>) -> Resp {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        events: Vec<std::borrow::Cow<'a, crate::trail::Event>>,
        last_seq: u64,
        dropped: u64,
        cmdline_withheld: Option<&'a str>,
    }
    let since = match events_since(query) {
        Ok(s) => s,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(format!("{e}\n"))))
                .expect("static headers are valid");
        }
    };
    let Some(trail) = state.service.trail() else {
        return text(
            StatusCode::NOT_FOUND,
            "Not Found: no listener trail is kept\n",
        );
    };
    let (events, last_seq, dropped) = {
        let t = trail.lock().unwrap_or_else(|p| p.into_inner());
        (t.since(since), t.last_seq(), t.dropped())
    };
    let withheld = state.options.cmdline_withheld.as_deref();
    let doc = Doc {
        events: match withheld {
            Some(_) => crate::trail::without_cmdlines(&events)
                .into_iter()
                .map(std::borrow::Cow::Owned)
                .collect(),
            None => events
                .iter()
                .map(|e| std::borrow::Cow::Borrowed(&**e))
                .collect(),
        },
        last_seq,
        dropped,
        cmdline_withheld: withheld,
    };
    match serde_json::to_vec(&doc) {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body(Full::new(Bytes::from(body)))
            .expect("static headers are valid"),
        Err(e) => server_error(&format!("cannot encode the events: {e}")),
    }
}

/// The policy of the page and its assets: their own script and style, the
/// JSON from the same origin, nothing else (no inline code, no framing).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The live port map served at `/`, a template: [`port_map_page`] replaces
/// its placeholders, each value HTML-escaped (& < > " at least):
/// `{{VERSION}}` (e.g. 0.2.0), `{{REVISION}}` (the VCS revision),
/// `{{METRICS_PATH}}` (the telemetry path starting with "/", used as
/// `.{{METRICS_PATH}}` so the link stays relative behind a path prefix) and
/// `{{RANGE_ROWS}}` (rows of the watched-ranges table from the
/// configuration, so the page names the ranges before and without the
/// script, which replaces them). Nothing else is a placeholder. The page has
/// no inline script or style and no comment for developers (this is where
/// they read it): it loads portmap.css and portmap.js relative to its own
/// URL, then polls api/v1/status; it must be served at a URL ending in "/"
/// under [`CONTENT_SECURITY_POLICY`].
const PORTMAP_HTML: &str = include_str!("web/portmap.html");
const PORTMAP_JS: &str = include_str!("web/portmap.js");
const PORTMAP_CSS: &str = include_str!("web/portmap.css");

/// The page or one of its assets, under the policy.
fn page(content_type: &'static str, body: Bytes) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(body))
        .expect("static headers are valid")
}

/// `/api/v1/status`: a collection (shared with scrapes, on the same budget
/// rules) as the port map's JSON, never cached.
async fn status_json(state: &State, headers: &hyper::HeaderMap) -> Resp {
    let time = ScrapeTime::of(headers, &state.options);
    let gzip = accepts_gzip(headers);
    let resp = match state
        .service
        .collect_by(time.budget, Some(time.answer_by))
        .await
    {
        Err(late) => unavailable(&late.0),
        Ok(Err(e)) => {
            log::debug!(err:% = e; "status request failed");
            server_error(&e)
        }
        Ok(Ok(c)) => {
            let path = state.options.telemetry_path.clone();
            let withheld = state.options.cmdline_withheld.clone();
            let rendered = tokio::task::spawn_blocking(move || {
                let exporter = status::Exporter {
                    version: metrics::VERSION,
                    revision: metrics::REVISION,
                    metrics_path: &path,
                    cmdline_withheld: withheld.as_deref(),
                };
                // The page's top line: what `check` says of this collection.
                let (verdict, summary) = crate::check::headline(&c.report);
                let verdict = status::Verdict {
                    status: verdict.label(),
                    summary: &summary,
                };
                status::render(&c.report, &exporter, &verdict, c.finished)
            })
            .await;
            match rendered {
                Ok(Ok(body)) => compressed(Bytes::from(body), "application/json", gzip).await,
                Ok(Err(e)) => server_error(&format!("cannot encode the status: {e}")),
                Err(e) => server_error(&format!("cannot encode the status: {e}")),
            }
        }
    };
    let mut resp = resp;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A scrape that got no collection within its own time (503: the
/// exporter is there, but could not answer this scrape in time).
fn unavailable(message: &str) -> Resp {
    plain_error(StatusCode::SERVICE_UNAVAILABLE, message)
}

fn server_error(message: &str) -> Resp {
    plain_error(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn plain_error(status: StatusCode, message: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .expect("static headers are valid")
}

/// One scrape: a collection (shared with concurrent scrapes), plus the
/// handler's own metrics as they stand before this request is counted.
async fn scrape(state: &State, headers: &hyper::HeaderMap) -> Resp {
    let counting = state.options.exporter_metrics;
    let _in_flight = counting.then(|| InFlight::start(&state.handler));
    let time = ScrapeTime::of(headers, &state.options);
    let gzip = accepts_gzip(headers);
    let resp = match state
        .service
        .collect_by(time.budget, Some(time.answer_by))
        .await
    {
        Err(late) => {
            log::debug!(err:% = late.0; "scrape answered late");
            unavailable(&late.0)
        }
        Ok(Err(e)) => {
            log::debug!(err:% = e; "scrape failed");
            server_error(&e)
        }
        Ok(Ok(c)) => {
            let r = &c.report;
            let sockets: u64 = r
                .ranges
                .iter()
                .flat_map(|s| s.states.iter().map(|(_, n)| *n))
                .sum();
            let unattributed: u64 = r.ranges.iter().map(|s| s.unattributed).sum();
            let owners: std::collections::HashSet<u32> = r
                .listeners()
                .filter_map(|l| l.owner().map(|o| o.pid))
                .collect();
            log::debug!(
                generation = c.generation,
                up = r.up(),
                duration_seconds = r.duration.as_secs_f64(),
                sockets = sockets,
                listeners = r.listeners().count(),
                unattributed = unattributed,
                owners_found = owners.len(),
                owners_from_cache = r.attribution.confirmed,
                processes_scanned = r.attribution.processes_scanned,
                kernel_held = r.attribution.kernel,
                scan_cut = r.attribution.deadline_hit;
                "scrape"
            );
            let auth = state.options.web.as_ref().and_then(|w| w.auth.as_ref());
            let body = if counting || auth.is_some() {
                let mut b = Vec::with_capacity(c.metrics.len() + 2048);
                b.extend_from_slice(&c.metrics);
                if let Some(a) = auth {
                    b.extend_from_slice(a.exposition().as_bytes());
                }
                if counting {
                    b.extend_from_slice(state.handler.exposition().as_bytes());
                }
                Bytes::from(b)
            } else {
                c.metrics.clone()
            };
            compressed(body, metrics::CONTENT_TYPE, gzip).await
        }
    };
    if counting {
        let counter = match resp.status() {
            StatusCode::OK => &state.handler.ok,
            StatusCode::SERVICE_UNAVAILABLE => &state.handler.late,
            _ => &state.handler.failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    resp
}

/// The default of `--web.max-scrape-timeout`: a few seconds above
/// Prometheus's default `scrape_timeout` (10 s), so that a scraper with
/// the defaults, or one allowing a little more, is taken at its word,
/// while a collection never runs longer than 12 s (80% of it): it ends
/// before the next scrape of the common 15 s interval, and a scraper that
/// asks for an hour cannot make the scrapes that join its collection wait
/// that long.
pub const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);

/// A scrape's time: what its collection may take, and when it answers.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeTime {
    /// 80% of the scrape timeout (leaving room for encoding and the
    /// network), or the default budget.
    pub budget: Duration,
    /// 90% of the scrape timeout from now: past it the scraper has, or
    /// will have, given up, so the scrape answers 503 rather than wait on.
    pub answer_by: Instant,
}

impl ScrapeTime {
    pub fn of(headers: &hyper::HeaderMap, options: &Options) -> ScrapeTime {
        let budget = scrape_budget(headers, options.default_budget, options.max_scrape_timeout);
        ScrapeTime {
            budget,
            answer_by: Instant::now() + budget.mul_f64(0.9 / 0.8),
        }
    }
}

/// The time a collection may take: 80% of Prometheus's scrape timeout
/// (`X-Prometheus-Scrape-Timeout-Seconds`), or the default; either at
/// most 80% of `max`.
pub fn scrape_budget(headers: &hyper::HeaderMap, default: Duration, max: Duration) -> Duration {
    headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(max.as_secs_f64()) * 0.8))
        .unwrap_or(default)
        .min(max.mul_f64(0.8))
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
pub fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
    })
}

/// A 200 with `body`, gzipped when the client accepts it. Compresses on a
/// blocking thread: a large exposition is CPU work that must not hold up
/// an async worker.
async fn compressed(body: Bytes, content_type: &'static str, gzip: bool) -> Resp {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::VARY, "Accept-Encoding");
    let body = if gzip {
        let plain = body.clone();
        let zipped = tokio::task::spawn_blocking(move || {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(plain.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&plain)?;
            enc.finish()
        })
        .await;
        match zipped {
            Ok(Ok(z)) => {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                Bytes::from(z)
            }
            _ => body,
        }
    } else {
        body
    };
    builder
        .body(Full::new(body))
        .expect("static headers are valid")
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static headers are valid")
}

/// The port map page: the template with its placeholders filled, each
/// value HTML-escaped, and the watched ranges from the configuration in
/// force (never waits for a collection; the script fills in the numbers).
fn port_map_page(state: &State) -> String {
    let config = state.service.config();
    let mut rows = String::new();
    for r in &config.ranges {
        for p in &r.protocols {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"netns-col\"></td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">…</td><td class=\"num\">…</td><td class=\"num\">…</td></tr>\n",
                escape_html(&r.name),
                p.as_str(),
                escape_html(&r.ports.to_string()),
                r.ports.len(),
            ));
        }
    }
    fill_template(PORTMAP_HTML, |name| match name {
        "VERSION" => Some(escape_html(metrics::VERSION)),
        "REVISION" => Some(escape_html(metrics::REVISION)),
        "METRICS_PATH" => Some(escape_html(&state.options.telemetry_path)),
        "RANGE_ROWS" => Some(rows.clone()),
        _ => None,
    })
}

/// Replaces each `{{NAME}}` of `template` by `value(NAME)` in one pass (a
/// value is never scanned again); unknown names stay as they are.
fn fill_template(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| {
            let name = &after[..end];
            let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
            ok.then(|| value(name).map(|v| (v, end))).flatten()
        }) {
            Some((v, end)) => {
                out.push_str(&v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "deflate, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn budget_from_prometheus_header() {
        let d = Duration::from_secs(5);
        let scrape_budget = |h: &hyper::HeaderMap, d| scrape_budget(h, d, MAX_SCRAPE_TIMEOUT);
        assert_eq!(
            scrape_budget(
                &headers(&[("x-prometheus-scrape-timeout-seconds", "3600")]),
                d
            ),
            Duration::from_secs(12),
            "capped at --web.max-scrape-timeout"
        );
        assert_eq!(
            scrape_budget(
                &headers(&[("x-prometheus-scrape-timeout-seconds", "10")]),
                d
            ),
            Duration::from_secs(8)
        );
        assert_eq!(
            scrape_budget(
                &headers(&[("x-prometheus-scrape-timeout-seconds", "junk")]),
                d
            ),
            d
        );
        assert_eq!(
            scrape_budget(
                &headers(&[("x-prometheus-scrape-timeout-seconds", "-1")]),
                d
            ),
            d
        );
        assert_eq!(scrape_budget(&headers(&[]), d), d);
        assert_eq!(
            super::scrape_budget(&headers(&[]), d, Duration::from_secs(2)),
            Duration::from_millis(1600),
            "the default too is capped"
        );
    }

    #[test]
    fn template_placeholders_are_filled_once() {
        let t = "a {{X}} b {{Y}} {{lower}} {{ {{X}}}}";
        let out = fill_template(t, |n| match n {
            "X" => Some("{{Y}}".into()),
            "Y" => Some("&lt;y&gt;".into()),
            _ => None,
        });
        assert_eq!(out, "a {{Y}} b &lt;y&gt; {{lower}} {{ {{Y}}}}");
    }

    #[test]
    fn the_page_template_has_its_placeholders_and_no_inline_code() {
        for p in [
            "{{VERSION}}",
            "{{REVISION}}",
            ".{{METRICS_PATH}}",
            "{{RANGE_ROWS}}",
        ] {
            assert!(PORTMAP_HTML.contains(p), "{p}");
        }
        assert_eq!(inline_code(PORTMAP_HTML), Vec::<String>::new());
        // Notes for developers live in the code, not in the served page.
        assert!(!PORTMAP_HTML.contains("<!--"), "a comment in the page");
        assert!(PORTMAP_HTML.contains("<script src=\"portmap.js\" defer></script>"));
    }

    /// What the Content-Security-Policy would block in `html`: a `<script>`
    /// without `src` or with content, a `<style>` element, a `style`
    /// attribute, an event-handler attribute (`on*`), a `javascript:` URL.
    /// Tags are read as HTML does: names and attributes in any case,
    /// values quoted with either quote or unquoted; comments are skipped.
    fn inline_code(html: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(lt) = rest.find('<') {
            rest = &rest[lt + 1..];
            if let Some(comment) = rest.strip_prefix("!--") {
                rest = comment.find("-->").map_or("", |e| &comment[e + 3..]);
                continue;
            }
            let b = rest.as_bytes();
            // The tag name, then attributes up to '>'.
            let mut i = usize::from(b.first() == Some(&b'/'));
            let name_start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
                i += 1;
            }
            let tag = rest[name_start..i].to_ascii_lowercase();
            let closing = name_start == 1;
            let mut attrs: Vec<(String, String)> = Vec::new();
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'>' {
                    break;
                }
                let n = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && !b"=>/".contains(&b[i]) {
                    i += 1;
                }
                let attr = rest[n..i].to_ascii_lowercase();
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let mut value = String::new();
                if i < b.len() && b[i] == b'=' {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    let v = i;
                    if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                        let q = b[i];
                        i += 1;
                        while i < b.len() && b[i] != q {
                            i += 1;
                        }
                        value = rest[v + 1..i].to_string();
                        i = (i + 1).min(b.len());
                    } else {
                        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                            i += 1;
                        }
                        value = rest[v..i].to_string();
                    }
                }
                attrs.push((attr, value));
            }
            rest = &rest[(i + 1).min(rest.len())..];
            if closing || tag.starts_with('!') {
                continue;
            }
            for (attr, value) in &attrs {
                if attr == "style" || attr.starts_with("on") {
                    found.push(format!("<{tag} {attr}=...>"));
                }
                let v: String = value
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
                    .collect();
                if v.to_ascii_lowercase().starts_with("javascript:") {
                    found.push(format!("<{tag} {attr}=javascript:...>"));
                }
            }
            if tag == "style" {
                found.push("<style>".into());
            }
            if tag == "script" {
                let content = rest[..rest
                    .to_ascii_lowercase()
                    .find("</script")
                    .unwrap_or(rest.len())]
                    .trim()
                    .to_string();
                if !attrs.iter().any(|(a, _)| a == "src") || !content.is_empty() {
                    found.push("inline <script>".into());
                }
            }
        }
        found
    }

    #[test]
    fn inline_code_is_found_however_it_is_written() {
        let clean = "<!-- <script>x</script> style= onload= --><html><head>\
            <link rel=\"stylesheet\" href=\"portmap.css\"><script src=\"portmap.js\" defer></script>\
            </head><body data-once=\"1\"><a href=\"./metrics\" class=online>m</a></body></html>";
        assert_eq!(inline_code(clean), Vec::<String>::new());
        for hostile in [
            "<script>alert(1)</script>",
            "<SCRIPT>alert(1)</SCRIPT>",
            "<script type=\"module\">import x from './x.js'</script>",
            "<script\nasync>alert(1)</script>",
            "<script src=\"portmap.js\">alert(1)</script>",
            "<style>body{}</style>",
            "<p STYLE='color:red'>x</p>",
            "<div onclick=\"go()\">x</div>",
            "<img src=x onerror=alert(1)>",
            "<body onLoad='go()'>",
            "<a href=\" JavaScript:alert(1)\">x</a>",
            "<a href=\"java\tscript:alert(1)\">x</a>",
            "<form action='javascript:go()'></form>",
        ] {
            assert!(!inline_code(hostile).is_empty(), "not found: {hostile}");
        }
    }

    #[test]
    fn a_failed_credential_check_is_a_500_not_a_401() {
        assert!(refusal(&Outcome::Allowed).is_none());
        let r = refusal(&Outcome::Failed("the bcrypt thread panicked".into())).unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        let r = refusal(&Outcome::Refused(crate::auth::Reason::WrongPassword)).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        let r = refusal(&Outcome::Throttled).unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn events_since_reads_the_query() {
        assert_eq!(events_since(None), Ok(0));
        assert_eq!(events_since(Some("since=42")), Ok(42));
        assert_eq!(events_since(Some("x=1&since=7")), Ok(7));
        assert!(
            events_since(Some("since=-1"))
                .unwrap_err()
                .contains("since")
        );
        assert!(events_since(Some("since=abc")).is_err());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
