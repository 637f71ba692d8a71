//! Wrong passwords against good scrapes (issue 17, fault 3): what a flood
//! of failed basic-auth logins does to a scraper with the right password.
//! Run as root (it makes a private network namespace, so nothing else on
//! the host shares its ports):
//!
//!     cargo bench --bench auth_flood                      # bcrypt cost 10 and 12, 16 clients, 15 s each
//!     cargo bench --bench auth_flood -- --cost 10 --seconds 5
//!     BENCH_EXPORTER=/path/to/old/portrange_exporter cargo bench --bench auth_flood
//!
//! For each cost it writes a web config with two users at that cost
//! (`alice`, the scraper, and `late`, who logs in for the first time in
//! the middle of the flood) and starts the release exporter on loopback.
//! Without a flood it times 20 scrapes of /metrics by alice (the first
//! one logs in; the rest are the baseline). Then `--clients` threads from
//! 127.0.0.1 send wrong passwords for alice, each a new one, one request
//! after the other, for `--seconds`; meanwhile the scraper, from
//! 127.0.0.2 (another peer, as Prometheus is), logs `late` in once after
//! 1 s and scrapes /metrics as alice every 200 ms. It prints the median and
//! worst scrape during the flood against the baseline, the first login's
//! time, and how the flood was answered (401, 429). The goal: the scrape
//! stays under 250 ms, median and worst, at both costs.
//!
//! With `--spread` each flood client sends from an address of its own
//! (127.0.1.N), as a flood from many hosts would: the logins already
//! cached must not notice, and a first login then waits its turn behind
//! the flood's (or gets 429 when the queue is full).
//!
//! Every loop is bounded by the flood's deadline and every socket by a
//! read timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BUILT_EXPORTER: &str = env!("CARGO_BIN_EXE_portrange_exporter");
const ADDR: &str = "127.0.0.1:10230";
/// The scraper's source address: another peer than the flood's.
const SCRAPER: &str = "127.0.0.2";
const FLOODER: &str = "127.0.0.1";
const GOAL: Duration = Duration::from_millis(250);

fn exporter_path() -> String {
    std::env::var("BENCH_EXPORTER").unwrap_or_else(|_| BUILT_EXPORTER.to_string())
}

struct Options {
    costs: Vec<u32>,
    clients: usize,
    seconds: u64,
    /// One source address per flood client.
    spread: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut o = Options {
        costs: vec![10, 12],
        clients: 16,
        seconds: 15,
        spread: false,
    };
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str).unwrap_or("");
        if args[i] == "--spread" {
            o.spread = true;
            i += 1;
            continue;
        }
        match args[i].as_str() {
            "--cost" => {
                o.costs = value
                    .split(',')
                    .map(|c| c.parse().expect("--cost 10,12"))
                    .collect()
            }
            "--clients" => o.clients = value.parse().expect("--clients N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            other => panic!("unknown argument {other:?} (--cost, --clients, --seconds, --spread)"),
        }
        i += 2;
    }
    o
}

fn main() {
    let o = options();
    // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network
    // namespace (every thread and child made later inherits it).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "auth_flood needs root for a private network namespace: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip link set lo up");
    assert!(st.success());
    println!("exporter: {}", exporter_path());
    println!(
        "{} flood clients from {}, {} s per cost; scraper from {SCRAPER}; goal: scrape < {} ms",
        o.clients,
        if o.spread {
            "127.0.1.N, one each"
        } else {
            FLOODER
        },
        o.seconds,
        GOAL.as_millis()
    );
    let mut ok = true;
    let mut rows = Vec::new();
    for &cost in &o.costs {
        let r = run(cost, &o);
        ok &= r.during_median < GOAL && r.during_worst < GOAL && r.failed == 0;
        rows.push(r);
    }
    println!();
    println!(
        "| cost | scrape, no flood (median) | scrape during flood: median | worst | n (not 200) | first login during flood | flood answers 401 / 429 / other |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} ({}) | {:.0} ms | {} / {} / {} |",
            r.cost,
            ms(r.baseline),
            ms(r.during_median),
            ms(r.during_worst),
            r.scrapes,
            r.failed,
            ms(r.first_login),
            r.flood_401,
            r.flood_429,
            r.flood_other
        );
    }
    println!(
        "goal (median and worst < {} ms): {}",
        GOAL.as_millis(),
        if ok { "met" } else { "MISSED" }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    cost: u32,
    baseline: Duration,
    during_median: Duration,
    during_worst: Duration,
    scrapes: usize,
    first_login: Duration,
    flood_401: u64,
    flood_429: u64,
    flood_other: u64,
    /// Good scrapes during the flood not answered 200.
    failed: usize,
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// One GET from `from`, returning the status code (0 when the connection
/// failed or no answer came within 30 s).
fn get(from: &str, path: &str, authorization: &str) -> u16 {
    let attempt = || -> std::io::Result<u16> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        let src: SocketAddr = format!("{from}:0").parse().unwrap();
        sock.bind(&src.into())?;
        let dst: SocketAddr = ADDR.parse().unwrap();
        sock.connect_timeout(&dst.into(), Duration::from_secs(5))?;
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let head = String::from_utf8_lossy(&raw[..raw.len().min(16)]).into_owned();
        Ok(head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    };
    attempt().unwrap_or(0)
}

fn timed_get(from: &str, authorization: &str) -> (u16, Duration) {
    let t = Instant::now();
    let code = get(from, "/metrics", authorization);
    (code, t.elapsed())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cost: u32, o: &Options) -> Row {
    println!();
    println!("cost {cost}:");
    let dir = std::env::temp_dir().join(format!("portrange-auth-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alice = bcrypt::hash("alice-password", cost).unwrap();
    let late = bcrypt::hash("late-password", cost).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  alice: {alice}\n  late: {late}\n"),
    )
    .unwrap();
    let _exporter = KillOnDrop(
        Command::new(exporter_path())
            .args(["--web.listen-address", ADDR, "--web.config.file"])
            .arg(&web)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the exporter"),
    );
    let up = Instant::now() + Duration::from_secs(60);
    while get(SCRAPER, "/-/healthy", "") != 401 {
        assert!(
            Instant::now() < up,
            "the exporter did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let good = basic("alice", "alice-password");
    let (code, first) = timed_get(SCRAPER, &good);
    assert_eq!(code, 200, "alice's first login");
    let mut base: Vec<Duration> = (0..19)
        .map(|_| {
            let (code, t) = timed_get(SCRAPER, &good);
            assert_eq!(code, 200);
            t
        })
        .collect();
    let baseline = median(&mut base);
    println!(
        "  no flood: first login {:.0} ms, then median {:.1} ms",
        ms(first),
        ms(baseline)
    );

    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let flood: Vec<_> = (0..o.clients)
        .map(|t| {
            let counts = counts.clone();
            let from = if o.spread {
                format!("127.0.1.{}", t + 1)
            } else {
                FLOODER.to_string()
            };
            std::thread::spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let code = get(
                        &from,
                        "/metrics",
                        &basic("alice", &format!("wrong-{t}-{i}")),
                    );
                    let slot = match code {
                        401 => 0,
                        429 => 1,
                        _ => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    if code == 429 {
                        // A refused client comes back soon, as a brute
                        // forcer would; never a busy loop.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (code, first_login) = timed_get(SCRAPER, &basic("late", "late-password"));
    println!(
        "  during the flood: late's first login answered {code} in {:.0} ms",
        ms(first_login)
    );
    let mut during = Vec::new();
    let mut failed = 0;
    while Instant::now() + Duration::from_millis(500) < deadline {
        let (code, t) = timed_get(SCRAPER, &good);
        if code == 200 {
            during.push(t);
        } else {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in flood {
        f.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!during.is_empty(), "no good scrape during the flood");
    let scrapes = during.len();
    let during_median = median(&mut during);
    let during_worst = *during.last().unwrap();
    println!(
        "  during the flood: {scrapes} scrapes, median {:.1} ms, worst {:.1} ms ({failed} not answered 200)",
        ms(during_median),
        ms(during_worst)
    );
    Row {
        cost,
        baseline,
        during_median,
        during_worst,
        scrapes,
        first_login,
        flood_401: counts[0].load(Ordering::Relaxed),
        flood_429: counts[1].load(Ordering::Relaxed),
        flood_other: counts[2].load(Ordering::Relaxed),
        failed,
    }
}
