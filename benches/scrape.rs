//! Scrape cost at scale, against `ss` and netstat2, in one run on the same
//! sockets. Run as root (it builds a private network namespace):
//!
//!     cargo bench --bench scrape                     # N = 10k, 100k; M = 10, 100
//!     cargo bench --bench scrape -- --idle-procs 3000  # plus 3,000 idle processes with 70 fds each
//!     cargo bench --bench scrape -- --quick          # the smoke run CI does
//!
//! For each N (sockets outside the range, spread over processes of at most
//! 19,000 fds) and M (sockets in 3224-3324, held by one process named
//! CtxGfx) it starts the release exporter in the namespace and measures
//! scrape latency over HTTP (median, p99 of --scrapes), CPU time per
//! scrape and peak RSS, in three scenarios: steady (no change between
//! scrapes), churn from a known owner (CtxGfx opens a new socket in the
//! range between scrapes) and a new owner (a fresh process binds in the
//! range between scrapes); then `ss -Hantu` and `ss -Hantup` with the same
//! port filter, and netstat2's get_sockets_info filtered to the range. It
//! prints a table with the ratios and checks the targets of docs/performance.md.
//!
//! The binary re-executes itself for its helpers (--fill, --hold, --idle).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const EXPORTER: &str = env!("CARGO_BIN_EXE_portrange_exporter");
const ADDR: &str = "127.0.0.1:10224";
const FILTER: &str = "sport >= :3224 and sport <= :3324";
const RANGE: std::ops::RangeInclusive<u16> = 3224..=3324;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("--fill") => fill(&args[1], args[2].parse().unwrap()),
        Some("--hold") => hold(&args[1], &args[2..]),
        Some("--idle") => idle(args[1].parse().unwrap()),
        _ => run(&args),
    }
}

// ---------------------------------------------------------------- helpers

fn set_comm(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
}

fn wait_stdin() {
    let mut s = String::new();
    let _ = std::io::stdin().read_to_string(&mut s);
}

/// Holds `count` sockets on ephemeral ports of `addr` (half TCP listeners,
/// half UDP), outside the watched range.
fn fill(addr: &str, count: usize) {
    set_comm("filler");
    let mut held: (Vec<UdpSocket>, Vec<TcpListener>) = (Vec::new(), Vec::new());
    for i in 0..count {
        if i % 2 == 0 {
            held.0.push(UdpSocket::bind((addr, 0)).unwrap());
        } else {
            held.1.push(TcpListener::bind((addr, 0)).unwrap());
        }
    }
    assert!(
        held.0
            .iter()
            .all(|s| !RANGE.contains(&s.local_addr().unwrap().port()))
    );
    println!("ready");
    wait_stdin();
}

/// Holds UDP sockets on the given ports as process `name`; then takes
/// "open PORT" and "close PORT" lines on stdin, answering "ok".
fn hold(name: &str, ports: &[String]) {
    set_comm(name);
    let mut held: std::collections::HashMap<u16, UdpSocket> = ports
        .iter()
        .map(|p| {
            let p: u16 = p.parse().unwrap();
            (p, UdpSocket::bind(("0.0.0.0", p)).unwrap())
        })
        .collect();
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|p| p.parse::<u16>().ok())) {
            (Some("open"), Some(p)) => {
                held.insert(p, UdpSocket::bind(("0.0.0.0", p)).unwrap());
            }
            (Some("close"), Some(p)) => {
                held.remove(&p);
            }
            _ => break,
        }
        println!("ok");
    }
}

/// An idle process holding `fds` open files (like a busy host's daemons).
fn idle(fds: usize) {
    set_comm("idle");
    let held: Vec<std::fs::File> = (0..fds)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    println!("ready");
    wait_stdin();
    drop(held);
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(args: &[&str]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper {
            child,
            stdin,
            stdout,
        };
        h.expect("ready");
        h
    }

    fn expect(&mut self, word: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word, "helper answered {line:?}");
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.expect("ok");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- measuring

struct Options {
    sockets: Vec<usize>,
    in_range: Vec<usize>,
    idle_procs: usize,
    idle_fds: usize,
    scrapes: usize,
    slow_runs: usize,
    soak: usize,
}

fn parse_list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|x| x.trim().replace('_', "").parse().unwrap())
        .collect()
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        sockets: vec![10_000, 100_000],
        in_range: vec![10, 100],
        idle_procs: 0,
        idle_fds: 70,
        scrapes: 30,
        slow_runs: 10,
        soak: 10_000,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("flag value").as_str();
        match a.as_str() {
            "--sockets" => o.sockets = parse_list(val()),
            "--in-range" => o.in_range = parse_list(val()),
            "--idle-procs" => o.idle_procs = val().parse().unwrap(),
            "--idle-fds" => o.idle_fds = val().parse().unwrap(),
            "--scrapes" => o.scrapes = val().parse().unwrap(),
            "--slow-runs" => o.slow_runs = val().parse().unwrap(),
            "--soak" => o.soak = val().parse().unwrap(),
            "--quick" => {
                o.sockets = vec![2_000];
                o.in_range = vec![5];
                o.scrapes = 5;
                o.slow_runs = 2;
                o.soak = 200;
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        o.in_range.iter().all(|&m| m < 101),
        "--in-range must leave a free port in 3224-3324"
    );
    o
}

/// Latencies in milliseconds.
struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    fn new(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Stats { samples }
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
    fn max(&self) -> f64 {
        *self.samples.last().unwrap()
    }
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn children_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct we pass; it is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn self_cpu_ms() -> f64 {
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A keep-alive HTTP client, as Prometheus scrapes.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect() -> Client {
        let s = TcpStream::connect(ADDR).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    /// GET /metrics; returns (milliseconds, body). A connection the server
    /// closed while idle (after its header-read timeout) is reopened, as
    /// Prometheus's client does.
    fn scrape(&mut self) -> (f64, String) {
        let request =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
        let mut t = Instant::now();
        let mut status = String::new();
        let sent = self.r.get_mut().write_all(request).is_ok();
        if !sent || self.r.read_line(&mut status).unwrap_or(0) == 0 {
            *self = Client::connect();
            t = Instant::now();
            self.r.get_mut().write_all(request).unwrap();
            status.clear();
            self.r.read_line(&mut status).unwrap();
        }
        assert!(status.contains(" 200 "), "{status:?}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (
            t.elapsed().as_secs_f64() * 1000.0,
            String::from_utf8(body).unwrap(),
        )
    }
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series}"))
        .parse()
        .unwrap()
}

fn time_command(args: &[&str], runs: usize) -> (Stats, f64, usize) {
    let mut v = Vec::new();
    let cpu0 = children_cpu_ms();
    let mut lines = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
        lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    }
    (
        Stats::new(v),
        (children_cpu_ms() - cpu0) / runs as f64,
        lines,
    )
}

fn time_netstat2(runs: usize) -> (Stats, f64, usize) {
    use netstat2::{AddressFamilyFlags as AF, ProtocolFlags as PF};
    let mut v = Vec::new();
    let cpu0 = self_cpu_ms();
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let infos = netstat2::get_sockets_info(AF::IPV4 | AF::IPV6, PF::TCP | PF::UDP).unwrap();
        n = infos
            .iter()
            .filter(|i| RANGE.contains(&i.local_port()))
            .count();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (Stats::new(v), (self_cpu_ms() - cpu0) / runs as f64, n)
}

struct Row {
    n: usize,
    m: usize,
    scenario: &'static str,
    ex: Stats,
    cpu_ms: f64,
    attributed: bool,
}

fn scrape_series(
    client: &mut Client,
    pid: u32,
    runs: usize,
    mut between: impl FnMut(usize),
    m_expected: usize,
) -> (Stats, f64, bool) {
    let mut v = Vec::new();
    let mut cpu = 0u64;
    let mut attributed = true;
    for i in 0..runs {
        between(i);
        let c0 = proc_cpu_ticks(pid);
        let (ms, body) = client.scrape();
        cpu += proc_cpu_ticks(pid) - c0;
        v.push(ms);
        assert_eq!(value(&body, "portrange_up"), 1.0);
        let in_use = value(
            &body,
            r#"portrange_ports_in_use{range="framehawk",protocol="udp"}"#,
        ) as usize;
        assert!(in_use >= m_expected, "in use {in_use} < {m_expected}");
        if value(
            &body,
            r#"portrange_unattributed_sockets{range="framehawk",protocol="udp"}"#,
        ) != 0.0
        {
            attributed = false;
        }
    }
    // SAFETY: sysconf has no preconditions.
    let tick_ms = 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        Stats::new(v),
        cpu as f64 * tick_ms / runs as f64,
        attributed,
    )
}

fn run(args: &[String]) {
    let o = options(args);
    // SAFETY: unshare(2) on the calling (still only) thread; no memory involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "the benchmark needs root: it builds a private network namespace ({})",
            std::io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    assert!(
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    println!("# portrange_exporter scrape benchmark");
    println!(
        "kernel {}, {cpus} CPUs, {} processes visible; {} idle processes x {} fds added; {} scrapes per scenario, {} runs of ss -p and netstat2",
        kernel.trim(),
        std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u32>()
                .is_ok())
            .count(),
        o.idle_procs,
        o.idle_fds,
        o.scrapes,
        o.slow_runs
    );
    let fds = o.idle_fds.to_string();
    let idle: Vec<Helper> = (0..o.idle_procs)
        .map(|_| Helper::spawn(&["--idle", &fds]))
        .collect();

    let mut rows: Vec<Row> = Vec::new();
    let mut comparators = Vec::new();
    let mut rss = Vec::new();
    let mut soak_done = false;
    for &n in &o.sockets {
        let per = 19_000;
        let fillers: Vec<Helper> = (0..n.div_ceil(per))
            .map(|k| {
                let count = per.min(n - k * per).to_string();
                Helper::spawn(&["--fill", &format!("127.0.0.{}", k + 1), &count])
            })
            .collect();
        for &m in &o.in_range {
            let ports: Vec<String> = (0..m).map(|i| (3224 + i).to_string()).collect();
            let mut hargs = vec!["--hold", "CtxGfx"];
            hargs.extend(ports.iter().map(String::as_str));
            let mut owner = Helper::spawn(&hargs);
            let mut exporter = Command::new(EXPORTER)
                .args(["--web.listen-address", ADDR, "--log.level"])
                .arg(std::env::var("BENCH_EXPORTER_LOG_LEVEL").unwrap_or_else(|_| "error".into()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let pid = exporter.id();
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(ADDR).is_err() {
                assert!(Instant::now() < deadline, "exporter did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut client = Client::connect();
            for _ in 0..3 {
                client.scrape();
            }
            // Steady state.
            let (ex, cpu_ms, attributed) = scrape_series(&mut client, pid, o.scrapes, |_| {}, m);
            rows.push(Row {
                n,
                m,
                scenario: "steady",
                ex,
                cpu_ms,
                attributed,
            });
            // Churn from the known owner: a new socket in the range before each scrape.
            let free: Vec<u16> = (3224 + m as u16..=3324).collect();
            let mut last: Option<u16> = None;
            let (ex, cpu_ms, attributed) = scrape_series(
                &mut client,
                pid,
                o.scrapes,
                |i| {
                    if let Some(p) = last.take() {
                        owner.say(&format!("close {p}"));
                    }
                    let p = free[i % free.len()];
                    owner.say(&format!("open {p}"));
                    last = Some(p);
                },
                m,
            );
            rows.push(Row {
                n,
                m,
                scenario: "churn, known owner",
                ex,
                cpu_ms,
                attributed,
            });
            if let Some(p) = last.take() {
                owner.say(&format!("close {p}"));
            }
            // A new owner before each scrape.
            let mut newcomer: Option<Helper> = None;
            let (ex, cpu_ms, attributed) = scrape_series(
                &mut client,
                pid,
                o.scrapes,
                |i| {
                    drop(newcomer.take());
                    let p = free[i % free.len()].to_string();
                    newcomer = Some(Helper::spawn(&["--hold", "newowner", &p]));
                },
                m,
            );
            drop(newcomer);
            rows.push(Row {
                n,
                m,
                scenario: "new owner",
                ex,
                cpu_ms,
                attributed,
            });

            let ss = time_command(&["ss", "-Hantu", FILTER], o.scrapes);
            let ssp = time_command(&["ss", "-Hantup", FILTER], o.slow_runs);
            let ns2 = time_netstat2(o.slow_runs);
            assert_eq!(ss.2, m, "ss sees the {m} sockets in the range");
            assert_eq!(ns2.2, m, "netstat2 sees the {m} sockets in the range");
            if !soak_done && o.soak > 0 {
                let before = proc_status_kib(pid, "VmRSS:");
                for _ in 0..o.soak {
                    client.scrape();
                }
                let after = proc_status_kib(pid, "VmRSS:");
                println!(
                    "soak: {} scrapes at N={n}, M={m}: RSS {before} KiB -> {after} KiB ({:+} KiB)",
                    o.soak,
                    after as i64 - before as i64
                );
                soak_done = true;
                rss.push((
                    n,
                    m,
                    proc_status_kib(pid, "VmHWM:"),
                    Some(after as i64 - before as i64),
                ));
            } else {
                rss.push((n, m, proc_status_kib(pid, "VmHWM:"), None));
            }
            comparators.push((n, m, ss, ssp, ns2));
            let _ = exporter.kill();
            let _ = exporter.wait();
            drop(owner);
        }
        drop(fillers);
    }
    drop(idle);
    report(&rows, &comparators, &rss);
}

type Cmp = (
    usize,
    usize,
    (Stats, f64, usize),
    (Stats, f64, usize),
    (Stats, f64, usize),
);

fn report(rows: &[Row], cmp: &[Cmp], rss: &[(usize, usize, u64, Option<i64>)]) {
    println!();
    println!(
        "| N | M | what | median ms | p99 ms | max ms | CPU ms/run | / ss -Hantu | / ss -Hantup | / netstat2 | all attributed |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (n, m, ss, ssp, ns2) in cmp {
        for r in rows.iter().filter(|r| r.n == *n && r.m == *m) {
            println!(
                "| {n} | {m} | exporter, {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.3}x | {:.3}x | {} |",
                r.scenario,
                r.ex.median(),
                r.ex.pct(0.99),
                r.ex.max(),
                r.cpu_ms,
                r.ex.median() / ss.0.median(),
                r.ex.median() / ssp.0.median(),
                r.ex.median() / ns2.0.median(),
                if r.attributed { "yes" } else { "no" }
            );
        }
        for (name, s) in [
            ("ss -Hantu (filter)", ss),
            ("ss -Hantup (filter)", ssp),
            ("netstat2 get_sockets_info", ns2),
        ] {
            println!(
                "| {n} | {m} | {name} | {:.2} | {:.2} | {:.2} | {:.2} | | | | |",
                s.0.median(),
                s.0.pct(0.99),
                s.0.max(),
                s.1
            );
        }
    }
    println!();
    for (n, m, hwm, growth) in rss {
        println!(
            "exporter peak RSS at N={n}, M={m}: {:.1} MiB{}",
            *hwm as f64 / 1024.0,
            growth.map_or(String::new(), |g| format!(
                "; RSS growth over the soak {g:+} KiB"
            ))
        );
    }
    // Targets, at the largest N.
    let nmax = cmp.iter().map(|c| c.0).max().unwrap();
    println!();
    println!("targets at N = {nmax} (medians):");
    let mut ok = true;
    for (n, m, ss, ssp, _) in cmp.iter().filter(|c| c.0 == nmax) {
        let get = |s: &str| {
            rows.iter()
                .find(|r| r.n == *n && r.m == *m && r.scenario == s)
                .unwrap()
        };
        let steady = get("steady").ex.median();
        let churn = get("churn, known owner").ex.median();
        let newo = get("new owner");
        for (what, got, limit) in [
            ("steady / ss -Hantu", steady / ss.0.median(), 1.0),
            ("churn / steady", churn / steady, 1.5),
            (
                "new owner / ss -Hantup",
                newo.ex.median() / ssp.0.median(),
                0.6,
            ),
        ] {
            let pass = got <= limit;
            ok &= pass;
            println!(
                "  M={m}: {what} = {got:.3} (target <= {limit}) {}",
                if pass { "met" } else { "MISSED" }
            );
        }
        let budget_ms = 8000.0;
        let pass = newo.ex.max() < budget_ms;
        ok &= pass;
        println!(
            "  M={m}: slowest new-owner scrape {:.1} ms (budget {budget_ms} ms) {}",
            newo.ex.max(),
            if pass { "met" } else { "MISSED" }
        );
    }
    for (n, m, hwm, growth) in rss.iter().filter(|r| r.0 == nmax || r.3.is_some()) {
        let pass = *hwm <= 16 * 1024;
        ok &= pass;
        println!(
            "  N={n}, M={m}: peak RSS {:.1} MiB (target <= 16 MiB) {}",
            *hwm as f64 / 1024.0,
            if pass { "met" } else { "MISSED" }
        );
        if let Some(g) = growth {
            let pass = *g < 1024;
            ok &= pass;
            println!(
                "  RSS growth over the soak {g:+} KiB (target < 1024 KiB) {}",
                if pass { "met" } else { "MISSED" }
            );
        }
    }
    println!(
        "{}",
        if ok {
            "all targets met"
        } else {
            "some targets missed"
        }
    );
}
