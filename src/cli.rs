//! Command-line wiring: flags (each with an environment variable), logging,
//! configuration loading, and the two modes: serve (default) and `check`.
//! This is the only place that uses `anyhow`; errors reaching here already
//! name the file, key, pid or port involved.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::check::{self, WarnFree};
use crate::collect::Collector;
use crate::config::Config;
use crate::http;
use crate::logging::{self, Format};
use crate::platform;
use crate::service::Service;

/// Prometheus exporter for port ranges: ports in use, free capacity and
/// unexpected listeners (default: the Citrix Framehawk range, UDP/TCP 3224-3324).
#[derive(Parser, Debug)]
#[command(name = "portrange_exporter", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on (":PORT" listens on every interface).
    #[arg(
        long = "web.listen-address",
        env = "PORTRANGE_EXPORTER_WEB_LISTEN_ADDRESS",
        default_value = ":10224"
    )]
    pub listen_address: String,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        env = "PORTRANGE_EXPORTER_WEB_TELEMETRY_PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    /// Maximum number of open HTTP connections; more are closed on accept.
    /// Kept 64 below the process's open-file limit.
    #[arg(
        long = "web.max-connections",
        env = "PORTRANGE_EXPORTER_WEB_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,

    /// Time a client has to send its request headers.
    #[arg(long = "web.header-read-timeout", env = "PORTRANGE_EXPORTER_WEB_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// TLS, basic auth and response headers, in the exporter-toolkit web config format.
    #[arg(long = "web.config.file", env = "PORTRANGE_EXPORTER_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Serve POST /-/reload, which re-reads --config.file.
    #[arg(
        long = "web.enable-lifecycle",
        env = "PORTRANGE_EXPORTER_WEB_ENABLE_LIFECYCLE"
    )]
    pub enable_lifecycle: bool,

    /// Range configuration (YAML). Without it the built-in framehawk range is watched.
    #[arg(
        long = "config.file",
        env = "PORTRANGE_EXPORTER_CONFIG_FILE",
        global = true
    )]
    pub config_file: Option<PathBuf>,

    /// procfs mount point.
    #[arg(
        long = "path.procfs",
        env = "PORTRANGE_EXPORTER_PATH_PROCFS",
        default_value_os_t = crate::platform::default_procfs(),
        global = true
    )]
    pub procfs: PathBuf,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", env = "PORTRANGE_EXPORTER_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error"], global = true)]
    pub log_level: String,

    /// Output format of log messages.
    #[arg(
        long = "log.format",
        env = "PORTRANGE_EXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub log_format: Format,

    /// Run as the Windows service (the installer's service passes it):
    /// report to the service control manager, stop on its request, and
    /// log to the Application event log (source portrange_exporter).
    #[cfg(windows)]
    #[arg(long = "windows.service")]
    pub windows_service: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sample once, print a table and exit with a Nagios plugin code
    /// (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        /// Warn when a range's free ports fall below this share ("10%") or count ("5").
        #[arg(long = "warn-free", default_value = "10%")]
        warn_free: WarnFree,
        /// Time attribution may take before sockets count as unattributed.
        #[arg(long = "timeout", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Parses "250ms", "10s", "2m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Resolves `--web.listen-address`; ":PORT" means every interface: one
/// dual-stack `[::]` socket (IPV6_V6ONLY off, whatever
/// net.ipv6.bindv6only says), or `0.0.0.0` where IPv6 is not available.
pub fn listen_addrs(addr: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("--web.listen-address {addr:?}: bad port"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("--web.listen-address {addr:?}: cannot resolve"))?
        .collect();
    anyhow::ensure!(
        !addrs.is_empty(),
        "--web.listen-address {addr:?} resolves to nothing"
    );
    Ok(addrs)
}

/// Runs the program; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = match cli.log_level.as_str() {
        "debug" => log::LevelFilter::Debug,
        "warn" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    if let Some(Command::Check { warn_free, timeout }) = &cli.command {
        logging::init(level, cli.log_format);
        return run_check(&cli, *warn_free, *timeout);
    }
    #[cfg(windows)]
    if cli.windows_service {
        let sink: Option<logging::Sink> = match platform::windows::eventlog::EventLog::open() {
            Ok(events) => Some(Box::new(move |level, msg: &str| events.write(level, msg))),
            Err(e) => {
                eprintln!("portrange_exporter: cannot open the event log, logging to stderr: {e}");
                None
            }
        };
        logging::init_with(level, cli.log_format, sink);
        return match platform::windows::service::run(move || run_server(cli)) {
            Ok(code) => code,
            Err(e) => {
                log::error!("{e}");
                eprintln!("portrange_exporter: {e}");
                1
            }
        };
    }
    logging::init(level, cli.log_format);
    run_server(cli)
}

/// Loads the configurations and serves until asked to stop; returns the
/// exit code (2 for a refused configuration).
fn run_server(cli: Cli) -> i32 {
    let config = match Config::load_or_builtin(cli.config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("refusing the configuration: {e}");
            eprintln!("portrange_exporter: {e}");
            return 2;
        }
    };
    let web = match &cli.web_config_file {
        None => None,
        Some(p) => match crate::webconfig::WebConfig::load(p) {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                log::error!("refusing the web configuration: {e}");
                eprintln!("portrange_exporter: {e}");
                return 2;
            }
        },
    };
    match serve(cli, config, web) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e:#}");
            1
        }
    }
}

fn run_check(cli: &Cli, warn_free: WarnFree, timeout: Duration) -> i32 {
    let config = match Config::load_or_builtin(cli.config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            println!("PORTRANGE UNKNOWN - {}", check::printable(&e.to_string()));
            return check::Status::Unknown as i32;
        }
    };
    let mut collector = Collector::new(Arc::new(config), platform::host(&cli.procfs));
    let report = collector.collect(Instant::now() + timeout);
    let (status, text) = check::render(&report, warn_free);
    print!("{text}");
    status as i32
}

fn serve(
    cli: Cli,
    config: Config,
    web: Option<Arc<crate::webconfig::WebConfig>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let addrs = listen_addrs(&cli.listen_address)?;
        let listener = platform::bind_listener(&addrs).with_context(|| format!("listening on {}", cli.listen_address))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let ranges: Vec<String> = config
            .ranges
            .iter()
            .map(|r| format!("{}={}", r.name, r.ports))
            .collect();
        let procfs = cli.procfs.clone();
        let service = Service::start(
            config,
            cli.config_file.clone(),
            Box::new(move || platform::host(&procfs)),
            platform::self_metrics_registry(),
        )
        .context("starting the collector thread")?;
        let state = http::State::new(
            service.clone(),
            http::Options {
                telemetry_path: cli.telemetry_path.clone(),
                header_read_timeout: cli.header_read_timeout,
                max_connections: connection_cap(cli.max_connections),
                web: web.clone(),
                enable_lifecycle: cli.enable_lifecycle,
                ..http::Options::default()
            },
        );
        log::info!(
            "portrange_exporter {} (revision {}) listening on {}://{local}{}, metrics at {}, watching {}{}",
            crate::metrics::VERSION,
            crate::metrics::REVISION,
            if web.as_ref().is_some_and(|w| w.tls.is_some()) { "https" } else { "http" },
            if web.as_ref().is_some_and(|w| w.auth.is_some()) { " (basic auth)" } else { "" },
            cli.telemetry_path,
            ranges.join(" "),
            cli.config_file
                .as_ref()
                .map_or(" (built-in default)".to_string(), |p| format!(" from {}", p.display()))
        );
        let missing = platform::host(&cli.procfs).missing_privileges();
        if !missing.is_empty() {
            log::warn!(
                "process attribution is limited to this user's own processes: missing {} ({} or grant them); \
                 other users' sockets will count in portrange_unattributed_sockets with expected=\"unknown\"",
                missing.join(" and "),
                platform::RUN_PRIVILEGED,
            );
        }
        tokio::spawn(reload_on_signal(service));
        http::serve(listener, state, async {
            let which = platform::shutdown_signal().await;
            log::info!("received {which}, shutting down");
        })
        .await?;
        log::info!("shut down");
        Ok(())
    })
}

/// `--web.max-connections`, kept 64 below the open-file limit so that a
/// flood of connections cannot starve sampling and attribution of fds.
fn connection_cap(wanted: usize) -> usize {
    let Some(limit) = platform::open_file_limit() else {
        return wanted.max(1);
    };
    let room = usize::try_from(limit.saturating_sub(64))
        .unwrap_or(usize::MAX)
        .max(16);
    if wanted > room {
        log::warn!(
            "--web.max-connections {wanted} is above what the open-file limit ({limit}) allows; using {room}"
        );
    }
    wanted.min(room).max(1)
}

/// The reload signal (SIGHUP) re-reads `--config.file`; a refused file
/// keeps the old ranges. It shares one path with `POST /-/reload`.
async fn reload_on_signal(service: Arc<Service>) {
    let mut signals = platform::reload_signals();
    while let Some(which) = signals.recv().await {
        log::info!("received {which}, reloading the configuration");
        let _ = service.reload(which).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn listen_addresses() {
        let a = listen_addrs(":10224").unwrap();
        assert_eq!(a[0].to_string(), "[::]:10224");
        assert_eq!(a[1].to_string(), "0.0.0.0:10224");
        assert_eq!(
            listen_addrs("127.0.0.1:9").unwrap()[0].to_string(),
            "127.0.0.1:9"
        );
        assert!(listen_addrs(":x").is_err());
    }
}
