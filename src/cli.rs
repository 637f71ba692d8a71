//! Command-line wiring: flags (each with an environment variable), logging,
//! configuration loading, and the two modes: serve (default) and `check`.
//! This is the only place that uses `anyhow`; errors reaching here already
//! name the file, key, pid or port involved. Flags follow the Prometheus
//! conventions (`--version` as Prometheus prints it, repeatable
//! `--web.listen-address`, `--web.systemd-socket`,
//! `--web.disable-exporter-metrics`); `check` follows the Nagios plugin
//! guidelines (bad arguments are UNKNOWN, a closed stdout is no crash,
//! `-t` bounds the whole run).

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::check::{self, Output, Threshold};
use crate::collect::Collector;
use crate::config::{self, Config, LoadChecks};
use crate::http;
use crate::logging::{self, Format};
use crate::platform;
use crate::service::Service;

/// `--version`, as Prometheus and its exporters print it.
pub const VERSION_TEXT: &str = concat!(
    "portrange_exporter, version ",
    env!("CARGO_PKG_VERSION"),
    " (branch: ",
    env!("PORTRANGE_BRANCH"),
    ", revision: ",
    env!("PORTRANGE_REVISION"),
    ")\n  build date:       ",
    env!("PORTRANGE_BUILD_DATE"),
    "\n  rust version:     rustc ",
    env!("PORTRANGE_RUSTC_VERSION"),
    "\n  platform:         ",
    env!("PORTRANGE_PLATFORM"),
    "\n  target:           ",
    env!("PORTRANGE_TARGET"),
    "\n"
);

/// Paths the server answers itself, which the telemetry path must not hide.
const RESERVED_PATHS: [&str; 7] = [
    "/",
    "/-/healthy",
    "/-/reload",
    "/portmap.js",
    "/portmap.css",
    crate::http::STATUS_PATH,
    crate::http::EVENTS_PATH,
];

/// Prometheus exporter for port ranges: ports in use, free capacity and
/// unexpected listeners (default: the Citrix Framehawk range, UDP/TCP 3224-3324).
#[derive(Parser, Debug)]
#[command(name = "portrange_exporter", about, long_about = None, disable_version_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print the version, revision, branch, build date, toolchain, platform and target.
    #[arg(short = 'V', long = "version", global = true)]
    pub version: bool,

    /// Address to listen on (":PORT" listens on every interface). Repeat the
    /// flag to listen on several addresses; the environment variable takes
    /// one address.
    #[arg(
        long = "web.listen-address",
        env = "PORTRANGE_EXPORTER_WEB_LISTEN_ADDRESS",
        default_value = ":10224",
        action = clap::ArgAction::Append
    )]
    pub listen_address: Vec<String>,

    /// Use the listening sockets systemd passes on socket activation
    /// (LISTEN_FDS) instead of --web.listen-address.
    #[arg(
        long = "web.systemd-socket",
        env = "PORTRANGE_EXPORTER_WEB_SYSTEMD_SOCKET"
    )]
    pub systemd_socket: bool,

    /// Path under which to expose metrics (starting with "/"; not "/",
    /// "/-/healthy", "/-/reload" or the port map's /portmap.js,
    /// /portmap.css and /api/v1/status).
    #[arg(
        long = "web.telemetry-path",
        env = "PORTRANGE_EXPORTER_WEB_TELEMETRY_PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    /// Leave out the exporter's own metrics: process_* and promhttp_*.
    #[arg(
        long = "web.disable-exporter-metrics",
        env = "PORTRANGE_EXPORTER_WEB_DISABLE_EXPORTER_METRICS"
    )]
    pub disable_exporter_metrics: bool,

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

    /// The longest scrape timeout a scraper may ask for (X-Prometheus-Scrape-Timeout-Seconds);
    /// a collection gets 80% of the scrape timeout.
    #[arg(long = "web.max-scrape-timeout", env = "PORTRANGE_EXPORTER_WEB_MAX_SCRAPE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub max_scrape_timeout: Duration,

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

    /// Sample every network namespace on the host (containers, pods, ip netns),
    /// not only the exporter's own: every per-range series gains a netns label.
    /// Needs CAP_SYS_ADMIN to enter namespaces (else /proc/<pid>/net is read).
    #[arg(
        long = "collector.netns",
        env = "PORTRANGE_EXPORTER_COLLECTOR_NETNS",
        global = true
    )]
    pub collector_netns: bool,

    /// With --collector.netns, how many threads dump namespaces at once (the
    /// collector's own included): each dump walks the kernel's socket tables,
    /// so more threads shorten a scrape of many namespaces and add a burst of
    /// CPU on as many cores (docs/performance.md). 1 dumps them one by one.
    #[arg(
        long = "collector.netns.workers",
        env = "PORTRANGE_EXPORTER_COLLECTOR_NETNS_WORKERS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=16),
        global = true
    )]
    pub collector_netns_workers: u16,

    /// How often the collector samples the watched ranges between scrapes
    /// for the listener trail (GET /api/v1/events), so that a listener
    /// that lives a few seconds between two scrapes is recorded; "0" or
    /// "off" compares scrapes only.
    #[arg(
        long = "collector.trail.interval",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAIL_INTERVAL",
        default_value = "2s",
        value_parser = parse_interval
    )]
    pub trail_interval: Duration,

    /// Events the listener trail keeps (the newest).
    #[arg(
        long = "collector.trail.events",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAIL_EVENTS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub trail_events: u32,

    /// Trail events recorded per second on average; more are dropped and
    /// counted in portrange_listener_events_dropped_total.
    #[arg(
        long = "collector.trail.rate",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAIL_RATE",
        default_value_t = 10.0
    )]
    pub trail_rate: f64,

    /// Trail events recorded at once before --collector.trail.rate applies.
    #[arg(
        long = "collector.trail.burst",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAIL_BURST",
        default_value_t = 100.0
    )]
    pub trail_burst: f64,

    /// Leave command lines out of the listener trail (events carry
    /// "cmdline": null, the log none). Without it they are redacted (the
    /// secret shapes of docs/trail.md), escaped and cut at 256 bytes, and
    /// served over HTTP only with authentication.
    #[arg(
        long = "collector.trail.no-cmdline",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAIL_NO_CMDLINE"
    )]
    pub trail_no_cmdline: bool,

    /// Serve the listener trail's command lines (redacted) on
    /// /api/v1/events, /api/v1/status and the page without authentication.
    /// Without it they are served only when --web.config.file sets
    /// basic_auth_users or requires verified client certificates
    /// (RequireAndVerifyClientCert): anyone who reaches the port would
    /// read every listener's command line. The log has them either way.
    #[arg(
        long = "web.serve-command-lines-without-auth",
        env = "PORTRANGE_EXPORTER_WEB_SERVE_COMMAND_LINES_WITHOUT_AUTH"
    )]
    pub serve_cmdlines_without_auth: bool,

    /// Count packets, bytes and TCP connection attempts to the watched ranges,
    /// split by listening and closed ports, in an nftables table of our own
    /// (inet portrange_exporter_<listen port>, gone when the exporter exits). Needs CAP_NET_ADMIN in
    /// the exporter's network namespace; counts that namespace only. Linux only.
    #[arg(
        long = "collector.traffic",
        env = "PORTRANGE_EXPORTER_COLLECTOR_TRAFFIC",
        global = true
    )]
    pub collector_traffic: bool,

    /// Count the dynamic (ephemeral) port range that outgoing connections
    /// take their ports from: its size, ports in use, sockets by state, the
    /// fewest ports left toward one destination, and the top holders. On by
    /// default; --no-collector.ephemeral (or the variable set to false)
    /// turns it off.
    #[arg(
        long = "collector.ephemeral",
        env = "PORTRANGE_EXPORTER_COLLECTOR_EPHEMERAL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        overrides_with = "no_collector_ephemeral",
        global = true
    )]
    pub collector_ephemeral: bool,

    /// Turn the ephemeral collector off.
    #[arg(
        long = "no-collector.ephemeral",
        overrides_with = "collector_ephemeral",
        global = true
    )]
    pub no_collector_ephemeral: bool,

    /// Read how each TCP port of the dynamic range was taken (connect() by
    /// itself, shared across destinations; or bind(), gone for all) with a
    /// BPF socket iterator (Linux 5.9+ with BTF; CAP_BPF and CAP_PERFMON),
    /// for an exact headroom. On by default; where it cannot load, or with
    /// --no-collector.ephemeral.bpf, every TCP port in use counts against
    /// every destination (portrange_ephemeral_counting_info says which).
    #[arg(
        long = "collector.ephemeral.bpf",
        env = "PORTRANGE_EXPORTER_COLLECTOR_EPHEMERAL_BPF",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        overrides_with = "no_collector_ephemeral_bpf",
        global = true
    )]
    pub collector_ephemeral_bpf: bool,

    /// Count the TCP headroom conservatively, without BPF.
    #[arg(
        long = "no-collector.ephemeral.bpf",
        overrides_with = "collector_ephemeral_bpf",
        global = true
    )]
    pub no_collector_ephemeral_bpf: bool,

    /// Owners of dynamic-range sockets with a portrange_ephemeral_holders
    /// series of their own (the most sockets first); the rest are summed
    /// into process="other".
    #[arg(
        long = "collector.ephemeral.top-holders",
        env = "PORTRANGE_EXPORTER_COLLECTOR_EPHEMERAL_TOP_HOLDERS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(1..=1000),
        global = true
    )]
    pub ephemeral_top_holders: u16,

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
    /// Sample once and report as a Nagios plugin: exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN; performance data after "|" on the first line.
    Check(CheckArgs),
}

/// The plugin's flags, after the monitoring plugins guidelines.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Warning threshold on each range's free ports, in the plugin range
    /// syntax: "10:" warns below 10 free, "10%:" below 10% of the range,
    /// "@0:5" at 5 or fewer. Default 10%:.
    #[arg(short = 'w', long = "warning", value_name = "RANGE")]
    pub warning: Option<Threshold>,
    /// Critical threshold on each range's free ports, same syntax.
    /// Default 1: (critical when the range is full).
    #[arg(short = 'c', long = "critical", value_name = "RANGE")]
    pub critical: Option<Threshold>,
    /// Older spelling of -w N: (warn below this count or percentage of free ports).
    #[arg(long = "warn-free", value_name = "MIN_FREE", conflicts_with = "warning", value_parser = Threshold::min_free)]
    pub warn_free: Option<Threshold>,
    /// Warning threshold on the dynamic (ephemeral) range's ports left
    /// toward the busiest destination, same syntax, percentages of the
    /// dynamic range. Default 20%:.
    #[arg(long = "ephemeral-warning", value_name = "RANGE")]
    pub ephemeral_warning: Option<Threshold>,
    /// Critical threshold on the same; 0 ports left is always critical.
    /// Default 5%:.
    #[arg(long = "ephemeral-critical", value_name = "RANGE")]
    pub ephemeral_critical: Option<Threshold>,
    /// Check only this range (repeatable): one service per range. The
    /// dynamic (ephemeral) range is checked only without --range.
    #[arg(long = "range", value_name = "NAME")]
    pub range: Vec<String>,
    /// The whole run's time limit: past it the plugin answers UNKNOWN.
    /// Process attribution gets 90% of it. Seconds, or "500ms", "1m".
    #[arg(short = 't', long = "timeout", default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,
    /// More output: -v lists every listener, -vv adds the collection's counters.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// text: plugin output; json: the whole report for scripts.
    #[arg(long = "output", value_enum, default_value = "text")]
    pub output: Output,
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

/// Parses `--collector.trail.interval`: a duration, or "0" / "off"
/// (returned as zero) to watch scrapes only.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "off" | "0s" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
}

/// The listener trail's settings from the flags; `None` for a rate or
/// burst that cannot work.
pub fn trail_options(cli: &Cli) -> anyhow::Result<crate::trail::Options> {
    anyhow::ensure!(
        cli.trail_rate.is_finite() && cli.trail_rate > 0.0,
        "--collector.trail.rate {}: must be a number of events per second above 0",
        cli.trail_rate
    );
    anyhow::ensure!(
        cli.trail_burst.is_finite() && cli.trail_burst >= 1.0,
        "--collector.trail.burst {}: must be at least 1",
        cli.trail_burst
    );
    Ok(crate::trail::Options {
        watch_interval: (!cli.trail_interval.is_zero()).then_some(cli.trail_interval),
        capacity: cli.trail_events as usize,
        rate: cli.trail_rate,
        burst: cli.trail_burst,
        cmdline: !cli.trail_no_cmdline,
        ..crate::trail::Options::default()
    })
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
    if !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!(
            "--web.listen-address {addr:?} is a bare port: write \":{addr}\" (every address) or \"127.0.0.1:{addr}\" (this host only)"
        );
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

/// Whether the command line asks for `check`: the first word that is
/// neither a flag nor a flag's value.
fn invokes_check(args: &[OsString]) -> bool {
    let cmd = Cli::command();
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        let w = w.to_string_lossy();
        if w == "--" {
            return false;
        }
        if let Some(long) = w.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .is_some_and(|a| a.get_action().takes_values());
            if takes_value {
                words.next();
            }
            continue;
        }
        if w.starts_with('-') && w.len() > 1 {
            continue;
        }
        return w == "check";
    }
    false
}

/// Writes plugin output to stdout. A reader that went away (`check |
/// head -1`) is not an error: the answer is the exit code.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs the program; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let shown = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if invokes_check(&args) && !shown {
                // A plugin with bad arguments is UNKNOWN, on one line.
                let full = e.to_string();
                let first = full.lines().next().unwrap_or("bad arguments");
                let first = first.strip_prefix("error: ").unwrap_or(first);
                emit(&format!(
                    "PORTRANGE UNKNOWN - {} (see portrange_exporter check --help)\n",
                    crate::text::printable(first)
                ));
                return check::Status::Unknown as i32;
            }
            let _ = e.print();
            return e.exit_code();
        }
    };
    if cli.version {
        emit(VERSION_TEXT);
        return 0;
    }
    let level = match cli.log_level.as_str() {
        "debug" => log::LevelFilter::Debug,
        "warn" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    // The Windows service logs to the event log, from its first line on.
    #[cfg(windows)]
    let service = cli.windows_service && cli.command.is_none();
    #[cfg(windows)]
    if service {
        let sink: Option<logging::Sink> = match platform::windows::eventlog::EventLog::open() {
            Ok(events) => Some(Box::new(move |level, msg: &str| events.write(level, msg))),
            Err(e) => {
                eprintln!("portrange_exporter: cannot open the event log, logging to stderr: {e}");
                None
            }
        };
        logging::init_with(level, cli.log_format, sink);
    }
    // (A no-op when the service's logger is installed.)
    logging::init(level, cli.log_format);
    platform::raise_open_file_limit();
    // The platform is built once here (its probes log what they find) and
    // handed to `check` or to the collector; the collector builds another
    // only after a failure.
    let host = platform::host_with(&cli.procfs, &platform_options(&cli));
    // What every configuration load asks of the host: allowlist user
    // names against the user database (where the platform can look names
    // up) and who can write the directories of `exe:` globs.
    let mut missing = Vec::new();
    let mut lookup: Option<config::UserLookup> = None;
    if let Ok(host) = &host {
        if let Some(resolve) = host.user_name_resolver() {
            lookup = Some(Arc::new(move |name: &str| {
                resolve(name).map(|u| u.is_some())
            }));
        }
        missing = host.missing_privileges();
    }
    let checks = LoadChecks::new(lookup, platform::trust::exe_dir_writers);

    if let Some(Command::Check(args)) = &cli.command {
        return run_check(&cli, args.clone(), host, &checks);
    }
    #[cfg(windows)]
    if service {
        return match platform::windows::service::run(move || run_server(cli, host, missing, checks))
        {
            Ok(code) => code,
            Err(e) => {
                log::error!("{e}");
                1
            }
        };
    }
    run_server(cli, host, missing, checks)
}

/// The platform built at start, or why it could not be.
type Host = Result<Box<dyn platform::Platform>, platform::PlatformError>;

/// Checks the flags, loads the configurations and serves until asked to
/// stop; returns the exit code (2 for a refused flag or configuration).
fn run_server(cli: Cli, host: Host, missing: Vec<&'static str>, checks: LoadChecks) -> i32 {
    if let Err(e) = check_telemetry_path(&cli.telemetry_path) {
        log::error!(flag = "--web.telemetry-path", value = cli.telemetry_path.as_str(); "refusing the flag: {e}");
        return 2;
    }
    let config = match Config::load_or_builtin(cli.config_file.as_deref(), &checks) {
        Ok(mut c) => {
            c.ephemeral = ephemeral_options(&cli);
            c
        }
        Err(e) => {
            // Said once, on stderr, through the logger.
            log::error!(err:% = e; "refusing the configuration");
            return 2;
        }
    };
    let web = match &cli.web_config_file {
        None => None,
        Some(p) => match crate::webconfig::WebConfig::load(p) {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                log::error!(err:% = e; "refusing the web configuration");
                return 2;
            }
        },
    };
    match serve(cli, config, web, host, missing, checks) {
        Ok(()) => 0,
        Err(e) => {
            log::error!(err:% = format!("{e:#}"); "exiting");
            1
        }
    }
}

/// Where the exporter's own listen ports lie inside a watched TCP range:
/// it would count itself there as an unexpected listener. One sentence per
/// port and range, with the two fixes. The entry suggested names the exporter's executable `exe` (what a local
/// user cannot forge), or its process name when the path is unknown.
pub fn own_port_in_ranges(config: &Config, ports: &[u16], exe: Option<&Path>) -> Vec<String> {
    let entry = match exe {
        Some(p) => format!("\"- exe: {}\"", p.display()),
        None => "\"- process: portrange_expor\" (the kernel keeps 15 characters of a process name)"
            .to_string(),
    };
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let mut out = Vec::new();
    for &port in &ports {
        for r in &config.ranges {
            if r.protocols.contains(&crate::ranges::Protocol::Tcp) && r.ports.contains(port) {
                out.push(format!(
                    "the exporter's own listen port {port} lies inside the watched range {} ({}, tcp), \
                     so it counts itself there as an unexpected listener: listen outside the range \
                     (--web.listen-address :<port>), or allow it with an entry under the range's expected: {entry}",
                    r.name,
                    r.ports.summary()
                ));
            }
        }
    }
    out
}

/// `--web.telemetry-path` must be an absolute path that does not hide the
/// port map page (with its assets and JSON), the health check or the
/// reload endpoint.
pub fn check_telemetry_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} does not start with \"/\", so no request could reach it: write /{path}"
        ));
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "{path:?} is served by the exporter itself (port map page, health check, reload): choose another path such as /metrics"
        ));
    }
    Ok(())
}

fn run_check(cli: &Cli, args: CheckArgs, host: Host, checks: &LoadChecks) -> i32 {
    // The plugin's time limit covers everything, the configuration's user
    // lookups and a kernel that does not answer included.
    let answered = Arc::new(Mutex::new(false));
    let watchdog = answered.clone();
    let limit = args.timeout;
    let _ = std::thread::Builder::new()
        .name("check-timeout".into())
        .spawn(move || {
            std::thread::sleep(limit);
            let mut done = watchdog.lock().unwrap_or_else(|p| p.into_inner());
            if !*done {
                *done = true;
                emit(&format!(
                    "PORTRANGE UNKNOWN - no answer within the {} s time limit (-t)\n",
                    limit.as_secs_f64()
                ));
                std::process::exit(check::Status::Unknown as i32);
            }
        });
    let started = Instant::now();
    let (status, text) = check_output(cli, &args, host, checks, started);
    let mut done = answered.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        // The watchdog answered and is exiting the process.
        loop {
            std::thread::park();
        }
    }
    *done = true;
    emit(&text);
    status as i32
}

fn check_output(
    cli: &Cli,
    args: &CheckArgs,
    host: Host,
    checks: &LoadChecks,
    started: Instant,
) -> (check::Status, String) {
    let unknown = |msg: String| {
        (
            check::Status::Unknown,
            format!("PORTRANGE UNKNOWN - {}\n", crate::text::printable(&msg)),
        )
    };
    let (config_file, judged) =
        check_configuration(cli.config_file.as_deref(), crate::config::default_file());
    let mut config = match Config::load_or_builtin(config_file.as_deref(), checks) {
        Ok(c) => c,
        Err(e) => return unknown(e.to_string()),
    };
    config.ephemeral = ephemeral_options(cli);
    if !args.range.is_empty() {
        // One service per range: the dynamic range is checked by the
        // service without --range.
        config.ephemeral.enabled = false;
        let names: Vec<&str> = config.ranges.iter().map(|r| r.name.as_str()).collect();
        if let Some(missing) = args.range.iter().find(|n| !names.contains(&n.as_str())) {
            return unknown(format!(
                "--range {missing:?}: no such range (configured: {})",
                names.join(", ")
            ));
        }
        config.ranges.retain(|r| args.range.contains(&r.name));
    }
    let opts = check::Options {
        warning: args
            .warning
            .clone()
            .or_else(|| args.warn_free.clone())
            .unwrap_or_else(|| check::Options::default().warning),
        critical: args
            .critical
            .clone()
            .unwrap_or_else(|| check::Options::default().critical),
        verbosity: args.verbose,
        ephemeral_warning: args
            .ephemeral_warning
            .clone()
            .unwrap_or_else(crate::ephemeral::check::default_warning),
        ephemeral_critical: args
            .ephemeral_critical
            .clone()
            .unwrap_or_else(crate::ephemeral::check::default_critical),
    };
    let warnings = config.warnings.clone();
    let host = match host {
        Ok(h) => h,
        Err(e) => return unknown(e.to_string()),
    };
    let mut collector = Collector::new(Arc::new(config), host);
    if cli.collector_traffic {
        // check reads the running exporter's table (named by the port of
        // its first --web.listen-address); it never installs one.
        let instance = cli
            .listen_address
            .first()
            .and_then(|a| listen_addrs(a).ok())
            .and_then(|a| a.first().map(|a| a.port().to_string()))
            .unwrap_or_default();
        collector.set_traffic(crate::traffic::TrafficCollector::reader(
            platform::traffic_table(&instance),
        ));
    }
    let budget = args.timeout.mul_f64(0.9);
    let mut report = collector.collect(started + budget);
    // check looks once: "since" is its process's start time.
    crate::trail::since_process_start(&mut report, &mut |pid| collector.process_details(pid));
    match args.output {
        Output::Text => {
            let (status, mut text) = check::render(&report, &warnings, &opts);
            if report.error.is_none() {
                text.push_str(&format!("\nConfiguration: {}\n", check::printable(&judged)));
            }
            (status, text)
        }
        Output::Json => check::render_json(&report, &warnings, &opts),
    }
}

/// The configuration `check` judges: `--config.file` when given, else the
/// packages' file at `default` when it exists (what the service reads),
/// else the built-in one; and the long output's words for it.
fn check_configuration(flag: Option<&Path>, default: Option<&Path>) -> (Option<PathBuf>, String) {
    match flag {
        Some(p) => (
            Some(p.to_path_buf()),
            format!("{} (--config.file)", p.display()),
        ),
        None => match default.filter(|d| d.exists()) {
            Some(default) => (
                Some(default.to_path_buf()),
                format!(
                    "{} (the default, as the service reads it; --config.file names another)",
                    default.display()
                ),
            ),
            None => (
                None,
                format!(
                    "built-in (framehawk 3224-3324, udp and tcp, empty allowlist): no --config.file{}",
                    default.map_or(String::new(), |d| format!(
                        ", and {} does not exist",
                        d.display()
                    ))
                ),
            ),
        },
    }
}

fn serve(
    cli: Cli,
    config: Config,
    web: Option<Arc<crate::webconfig::WebConfig>>,
    host: Host,
    missing: Vec<&'static str>,
    checks: LoadChecks,
) -> anyhow::Result<()> {
    // Socket activation hands over fds before any other thread exists.
    let activated = if cli.systemd_socket {
        Some(platform::systemd_listeners().context("--web.systemd-socket")?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        match activated {
            Some(sockets) => {
                for s in sockets {
                    listeners.push(
                        tokio::net::TcpListener::from_std(s)
                            .context("taking a socket from systemd")?,
                    );
                }
            }
            None => {
                for address in &cli.listen_address {
                    let addrs = listen_addrs(address)?;
                    listeners.push(
                        platform::bind_listener(&addrs)
                            .with_context(|| format!("listening on {address}"))?,
                    );
                }
            }
        }
        let ranges: Vec<String> = config
            .ranges
            .iter()
            .map(|r| format!("{}={}", r.name, r.ports.summary()))
            .collect();
        let own_ports: Vec<u16> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.port())
            .collect();
        let own_port_warnings = own_port_in_ranges(
            &config,
            &own_ports,
            std::env::current_exe().ok().as_deref(),
        );
        let procfs = cli.procfs.clone();
        let registry = if cli.disable_exporter_metrics {
            prometheus::Registry::new()
        } else {
            platform::self_metrics_registry()
        };
        let options = platform_options(&cli);
        // The platform built at start first (or its error, which the
        // collector reports and retries), then fresh ones.
        let mut first = Some(host);
        let trail = trail_options(&cli)?;
        // The traffic table is named by the port of the first listener,
        // unique in the network namespace.
        let instance = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(String::new, |a| a.port().to_string());
        let traffic = cli.collector_traffic;
        let service = Service::start_with(
            config,
            cli.config_file.clone(),
            checks,
            Box::new(move || {
                first
                    .take()
                    .unwrap_or_else(|| platform::host_with(&procfs, &options))
            }),
            registry,
            crate::service::Extras {
                trail: Some(trail),
                traffic: traffic.then(|| {
                    Box::new(move || platform::traffic_table(&instance))
                        as crate::service::TrafficFactory
                }),
            },
        )
        .context("starting the collector thread")?;
        let tls = web.as_ref().is_some_and(|w| w.tls.is_some());
        let authenticated = web.as_ref().is_some_and(|w| w.authenticates());
        let cmdline_withheld = crate::trail::cmdline_withheld(
            !cli.trail_no_cmdline,
            authenticated,
            cli.serve_cmdlines_without_auth,
        );
        if cli.serve_cmdlines_without_auth && !authenticated && !cli.trail_no_cmdline {
            log::warn!(
                "--web.serve-command-lines-without-auth: the listener trail's command lines (redacted) are served to anyone who reaches the port"
            );
        }
        let state = http::State::new(
            service.clone(),
            http::Options {
                telemetry_path: cli.telemetry_path.clone(),
                header_read_timeout: cli.header_read_timeout,
                max_scrape_timeout: cli.max_scrape_timeout,
                max_connections: connection_cap(cli.max_connections),
                web: web.clone(),
                enable_lifecycle: cli.enable_lifecycle,
                exporter_metrics: !cli.disable_exporter_metrics,
                cmdline_withheld: cmdline_withheld.clone(),
                ..http::Options::default()
            },
        );
        let config_source = cli
            .config_file
            .as_ref()
            .map_or("built-in default".to_string(), |p| p.display().to_string());
        log::info!(
            version = crate::metrics::VERSION,
            revision = crate::metrics::REVISION,
            branch = env!("PORTRANGE_BRANCH"),
            ranges = ranges.join(" ").as_str(),
            config = config_source.as_str(),
            telemetry_path = cli.telemetry_path.as_str(),
            tls = tls,
            basic_auth = web.as_ref().is_some_and(|w| w.auth.is_some()),
            command_lines_served = cmdline_withheld.is_none(),
            exporter_metrics = !cli.disable_exporter_metrics;
            "starting portrange_exporter"
        );
        for l in &listeners {
            let local = l.local_addr().context("reading the bound address")?;
            log::info!(
                address:% = local,
                scheme = if tls { "https" } else { "http" },
                systemd_socket = cli.systemd_socket;
                "listening"
            );
        }
        for w in &own_port_warnings {
            log::warn!("{w}");
        }
        if !missing.is_empty() {
            // The capabilities are named in the sentence (once), where an
            // operator reads them.
            log::warn!(
                "process attribution is limited to this user's own processes: missing {} ({} or grant them); \
                 other users' sockets will count in portrange_unattributed_sockets with expected=\"unknown\"",
                missing.join(" and "),
                platform::RUN_PRIVILEGED,
            );
        }
        tokio::spawn(reload_on_signal(service));
        http::serve_all(listeners, state, async {
            let which = platform::shutdown_signal().await;
            log::info!(signal = which; "shutting down");
        })
        .await?;
        // The traffic table goes with the exporter's netlink socket, at
        // this exit or any other: nothing to remove here.
        log::info!("shut down");
        Ok(())
    })
}

/// The ephemeral collector's settings from the flags.
fn ephemeral_options(cli: &Cli) -> crate::ephemeral::Options {
    crate::ephemeral::Options {
        enabled: cli.collector_ephemeral && !cli.no_collector_ephemeral,
        bpf: cli.collector_ephemeral_bpf && !cli.no_collector_ephemeral_bpf,
        top_holders: usize::from(cli.ephemeral_top_holders),
    }
}

fn platform_options(cli: &Cli) -> platform::PlatformOptions {
    platform::PlatformOptions {
        netns: cli.collector_netns,
        netns_workers: Some(usize::from(cli.collector_netns_workers)),
    }
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
        log::info!(signal = which; "reloading the configuration");
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
    fn an_own_port_inside_a_tcp_range_is_named_with_the_fix() {
        let cfg = Config::parse(
            "ranges:\n  - name: rtp\n    ports: 10000-20000\n    protocols: [tcp]\n  - name: media\n    ports: 10000-20000\n    protocols: [udp]\n",
            "r.yml",
        )
        .unwrap();
        let w = own_port_in_ranges(&cfg, &[10224, 10224, 9100], None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the exporter's own listen port 10224 lies inside the watched range rtp (10000-20000, tcp)"),
            "{w:?}"
        );
        assert!(w[0].contains("--web.listen-address :<port>"), "{w:?}");
        assert!(w[0].ends_with(
            "\"- process: portrange_expor\" (the kernel keeps 15 characters of a process name)"
        ));
        let w = own_port_in_ranges(
            &cfg,
            &[10224],
            Some(Path::new("/usr/bin/portrange_exporter")),
        );
        assert!(
            w[0].ends_with("expected: \"- exe: /usr/bin/portrange_exporter\""),
            "{w:?}"
        );
        assert!(own_port_in_ranges(&Config::builtin(), &[10224], None).is_empty());
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
        // A bare port, as a newcomer writes it, says what to write instead.
        let e = listen_addrs("10225").unwrap_err().to_string();
        assert!(e.contains("write \":10225\""), "{e}");
    }

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn which_command_a_line_asks_for() {
        assert!(invokes_check(&words("x check --bogus")));
        assert!(invokes_check(&words("x --config.file c.yml check -w 5:")));
        assert!(invokes_check(&words("x --config.file=c.yml check")));
        assert!(invokes_check(&words("x --web.enable-lifecycle check")));
        assert!(!invokes_check(&words("x --config.file check")), "a value");
        assert!(!invokes_check(&words("x --bogus")));
        assert!(!invokes_check(&words("x")));
    }

    #[test]
    fn telemetry_paths() {
        assert!(check_telemetry_path("/metrics").is_ok());
        assert!(check_telemetry_path("/x/metrics").is_ok());
        let e = check_telemetry_path("metrics").unwrap_err();
        assert!(
            e.contains("does not start with \"/\"") && e.contains("/metrics"),
            "{e}"
        );
        for p in [
            "/",
            "/-/healthy",
            "/-/reload",
            "/portmap.js",
            "/portmap.css",
            "/api/v1/status",
        ] {
            assert!(check_telemetry_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn the_version_reads_as_prometheus_prints_it() {
        let first = VERSION_TEXT.lines().next().unwrap();
        assert!(
            first.starts_with(&format!(
                "portrange_exporter, version {} (branch: ",
                env!("CARGO_PKG_VERSION")
            )) && first.contains(", revision: "),
            "{first}"
        );
        for key in ["  build date:", "  rust version:", "  platform:"] {
            assert!(VERSION_TEXT.contains(key), "{VERSION_TEXT}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
