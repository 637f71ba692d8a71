//! `--collector.netns`: every network namespace on the host, each with its
//! own counts and a `netns` label. Each test runs on a thread of its own in
//! a private "host" (see [`PrivateHost`]): its own network namespace (the
//! exporter's `netns="host"`), mount namespace (tmpfs on /run and /var/log,
//! so `ip netns` names and pod log directories are private) and pid
//! namespace with its /proc at /run/proc (pid 1 is an init in the test's
//! network namespace). Namespaces are made with `ip netns add` and held
//! only by a process (`unshare -n`); every one is deleted at the end, and
//! killing the init ends every process of the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::private_host::{PROCFS, PrivateHost, in_private_host, sh};
use common::*;

const RANGES: &str = "ranges:\n  - name: fh\n    ports: 3224-3324\n    per_port: false\n    expected:\n      - process: CtxGfx\n";

/// The namespace inode behind an nsfs path (`/run/netns/X`, `/proc/P/ns/net`).
fn ino(path: &str) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

fn netns_of(pid: u32) -> u64 {
    ino(&format!("/proc/{pid}/ns/net"))
}

/// The namespaces of the common layout and what holds their sockets.
struct Layout {
    blue: u64,
    green: u64,
    solo: u64,
    empty: u64,
    outside: u64,
    host: u64,
    green_holder: Option<Holder>,
    solo_holder: Holder,
    _held: Vec<Holder>,
}

/// host: CtxGfx on udp 3224. blue (ip netns): CtxGfx on udp 3224, udp
/// [::]:3225 and tcp 3300. green (ip netns): "intruder" on udp 3224.
/// solo (`unshare -n`, no name): CtxGfx on udp 3224 and tcp 3224. empty
/// (ip netns): nothing. outside (ip netns): CtxGfx on udp 4000 only.
fn layout(h: &PrivateHost) -> Layout {
    let host = ino("/proc/thread-self/ns/net");
    let blue = h.add("blue");
    let green = h.add("green");
    let empty = h.add("empty");
    let outside = h.add("outside");
    let held = vec![
        hold("CtxGfx", &["udp:0.0.0.0:3224"]),
        hold_in(
            &["ip", "netns", "exec", "blue"],
            "CtxGfx",
            &["udp:0.0.0.0:3224", "udp:[::]:3225", "tcp:0.0.0.0:3300"],
        ),
        hold_in(
            &["ip", "netns", "exec", "outside"],
            "CtxGfx",
            &["udp:0.0.0.0:4000"],
        ),
    ];
    let green_holder = hold_in(
        &["ip", "netns", "exec", "green"],
        "intruder",
        &["udp:0.0.0.0:3224"],
    );
    let solo_holder = hold_in(
        &["unshare", "-n"],
        "CtxGfx",
        &["udp:0.0.0.0:3224", "tcp:0.0.0.0:3224"],
    );
    let solo = netns_of(solo_holder.pid());
    assert_eq!(netns_of(green_holder.pid()), green);
    assert!(![blue, green, empty, outside, host].contains(&solo));
    Layout {
        blue,
        green,
        solo,
        empty,
        outside,
        host,
        green_holder: Some(green_holder),
        solo_holder,
        _held: held,
    }
}

fn label(l: &Layout, ns: u64) -> String {
    if ns == l.host {
        "host".into()
    } else {
        ns.to_string()
    }
}

fn ranges_cfg() -> PathBuf {
    let p = config_file("netns", RANGES);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn start(cfg: &Path, prefix: Option<&[&str]>) -> Exporter {
    Exporter::start_as(
        &[
            "--collector.netns",
            "--path.procfs",
            PROCFS,
            "--config.file",
            cfg.to_str().unwrap(),
        ],
        prefix,
    )
}

/// Sockets `ss` sees in 3224-3324 when run through `prefix`.
fn ss_count(prefix: &[&str]) -> usize {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("ss"));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg("ss");
    }
    let out = cmd
        .args(["-Hantu", "sport >= :3224 and sport <= :3324"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn sockets_in(m: &Metrics, ns: &str) -> f64 {
    m.named("portrange_sockets")
        .iter()
        .filter(|(l, _)| l.contains(&format!("netns=\"{ns}\"")))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn every_namespace_gets_its_own_counts_labels_and_info() {
    in_private_host("every_namespace_gets_its_own_counts_labels_and_info", |h| {
        let l = layout(h);
        let cfg = ranges_cfg();
        let exporter = start(&cfg, None);
        let raw = exporter.raw_metrics();
        promtool_check_metrics(&raw);
        let m = Metrics::parse(&raw);
        let v = |family: &str, proto: &str, ns: u64| {
            m.value(&format!(
                "{family}{{range=\"fh\",protocol=\"{proto}\",netns=\"{}\"}}",
                label(&l, ns)
            ))
        };
        // In use and free, per namespace: the same port 3224 is taken in
        // four namespaces at once and counts once in each.
        for (ns, udp, tcp) in [
            (l.host, 1.0, 0.0),
            (l.blue, 2.0, 1.0),
            (l.green, 1.0, 0.0),
            (l.solo, 1.0, 1.0),
        ] {
            assert_eq!(
                v("portrange_ports_in_use", "udp", ns),
                udp,
                "{}",
                m.dump("")
            );
            assert_eq!(v("portrange_ports_in_use", "tcp", ns), tcp);
            assert_eq!(v("portrange_ports_free", "udp", ns), 101.0 - udp);
            assert_eq!(v("portrange_ports_free", "tcp", ns), 101.0 - tcp);
            assert_eq!(v("portrange_ports", "udp", ns), 101.0);
            assert_eq!(v("portrange_unattributed_sockets", "udp", ns), 0.0);
        }
        assert_eq!(v("portrange_unexpected_listeners", "udp", l.green), 1.0);
        assert_eq!(v("portrange_unexpected_listeners", "udp", l.blue), 0.0);
        // ss in each namespace agrees with the sum over states.
        assert_eq!(sockets_in(&m, "host") as usize, ss_count(&[]));
        for (name, ns) in [("blue", l.blue), ("green", l.green)] {
            let n = ss_count(&["ip", "netns", "exec", name]);
            assert_eq!(sockets_in(&m, &ns.to_string()) as usize, n, "{name}");
        }
        let solo_ns = format!("--net=/proc/{}/ns/net", l.solo_holder.pid());
        assert_eq!(
            sockets_in(&m, &l.solo.to_string()) as usize,
            ss_count(&["nsenter", &solo_ns])
        );
        // Listener names, users and expected, with the netns label: the
        // unexpected one itemized, every owner counted (per_port is off, so
        // allowed listeners are counted, not itemized).
        let listeners: BTreeSet<String> = m
            .named("portrange_listener_info")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let want: BTreeSet<String> = [format!(
            "{{range=\"fh\",protocol=\"udp\",port=\"3224\",address=\"0.0.0.0\",process=\"intruder\",user=\"root\",expected=\"false\",netns=\"{}\"}}",
            l.green
        )]
        .into_iter()
        .collect();
        assert_eq!(listeners, want);
        let owners: BTreeMap<String, f64> = m.named("portrange_listeners").into_iter().collect();
        let want: BTreeMap<String, f64> = [
            ("udp", "CtxGfx", "true", label(&l, l.host), 1.0),
            ("udp", "CtxGfx", "true", l.blue.to_string(), 2.0),
            ("tcp", "CtxGfx", "true", l.blue.to_string(), 1.0),
            ("udp", "intruder", "false", l.green.to_string(), 1.0),
            ("udp", "CtxGfx", "true", l.solo.to_string(), 1.0),
            ("tcp", "CtxGfx", "true", l.solo.to_string(), 1.0),
        ]
        .into_iter()
        .map(|(p, proc_, exp, ns, n)| {
            (
                format!(
                    "{{range=\"fh\",protocol=\"{p}\",process=\"{proc_}\",user=\"root\",expected=\"{exp}\",netns=\"{ns}\"}}"
                ),
                n,
            )
        })
        .collect();
        assert_eq!(owners, want);
        // Namespace context: ip netns names; no container or pod here.
        let info: BTreeMap<String, f64> = m.named("portrange_netns_info").into_iter().collect();
        let want: BTreeMap<String, f64> = [
            (label(&l, l.host), ""),
            (l.blue.to_string(), "blue"),
            (l.green.to_string(), "green"),
            (l.solo.to_string(), ""),
        ]
        .into_iter()
        .map(|(ns, name)| {
            (
                format!(
                    "{{netns=\"{ns}\",name=\"{name}\",container=\"\",pod=\"\",namespace=\"\"}}"
                ),
                1.0,
            )
        })
        .collect();
        assert_eq!(info, want);
        assert_eq!(m.value("portrange_netns_unsampled"), 0.0);
        // No socket in a range, no series: empty and outside appear nowhere.
        for ns in [l.empty, l.outside] {
            assert!(!raw.contains(&format!("netns=\"{ns}\"")), "{ns}:\n{raw}");
        }
        // Every per-range series carries the label, but the trail's event
        // counters, which are summed over namespaces (README: containers
        // come and go; the events name the namespace).
        for line in raw.lines().filter(|x| {
            x.starts_with("portrange_")
                && x.contains("range=")
                && !x.starts_with("portrange_listener_events_total")
        }) {
            assert!(line.contains("netns=\""), "{line}");
        }
        assert!(
            exporter.stderr().contains("setns works"),
            "{}",
            exporter.stderr()
        );
        // The port map's status document has a map per namespace.
        let status: serde_json::Value =
            serde_json::from_str(&get(ADDR, "/api/v1/status", &[]).unwrap().text()).unwrap();
        assert_eq!(status["netns_collector"], true, "{status}");
        let mapped: BTreeSet<String> = status["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["netns"].as_str().unwrap().to_string())
            .collect();
        for ns in [l.blue, l.green, l.solo] {
            assert!(mapped.contains(&ns.to_string()), "{mapped:?}");
        }
        assert!(mapped.contains("host"), "{mapped:?}");

        // check: one table, a NETNS column, CRITICAL for the intruder.
        let check = |workers: &str| {
            let out = Command::new(EXPORTER)
                .args([
                    "--collector.netns",
                    "--collector.netns.workers",
                    workers,
                    "--path.procfs",
                    PROCFS,
                    "--config.file",
                ])
                .arg(&cfg)
                .arg("check")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (code, text) = check("2");
        assert_eq!(code, Some(2), "{text}");
        assert!(text.lines().nth(2).unwrap().starts_with("NETNS "), "{text}");
        // The first line names it too; the table row is the one to read.
        let intruder = text
            .lines()
            .skip(1)
            .find(|x| x.contains("intruder"))
            .unwrap();
        assert!(
            intruder.starts_with(&format!("{} (green) ", l.green)) && intruder.contains(" false "),
            "{intruder}"
        );
        assert!(text.contains(&format!("{} (blue) ", l.blue)), "{text}");
        // The namespaces dumped one by one, or on a pool larger than
        // their number, read the same as the default pool of two.
        for workers in ["1", "4"] {
            assert_eq!(
                check(workers),
                (code, text.clone()),
                "--collector.netns.workers {workers}"
            );
        }
        let _ = std::fs::remove_file(&cfg);
    });
}

#[test]
fn namespaces_that_go_away_leave_no_series_and_no_fd() {
    in_private_host("namespaces_that_go_away_leave_no_series_and_no_fd", |h| {
        let mut l = layout(h);
        let cfg = ranges_cfg();
        let exporter = start(&cfg, None);
        let settle = || {
            for _ in 0..2 {
                exporter.metrics();
            }
            std::thread::sleep(Duration::from_millis(200));
            fd_count(exporter.child.id())
        };
        let before = settle();
        // Namespaces come and go: each one's fds are opened, then closed.
        for round in 0..5 {
            let name = format!("late{round}");
            let ns = h.add(&name);
            let holder = hold_in(
                &["ip", "netns", "exec", &name],
                "CtxGfx",
                &["udp:0.0.0.0:3230"],
            );
            let m = exporter.metrics();
            assert_eq!(
                m.value(&format!(
                    "portrange_ports_in_use{{range=\"fh\",protocol=\"udp\",netns=\"{ns}\"}}"
                )),
                1.0
            );
            assert!(fd_count(exporter.child.id()) > before, "no fd for {name}?");
            holder.stop();
            h.del(&name);
            let raw = exporter.raw_metrics();
            assert!(
                !raw.contains(&format!("netns=\"{ns}\"")),
                "{name} stayed:\n{raw}"
            );
            let after = settle();
            assert!(after <= before, "round {round}: fds {before} -> {after}");
        }
        // An ip netns deleted while nothing holds it any more: gone at once.
        l.green_holder.take().unwrap().stop();
        h.del("green");
        // One held only by a process: gone when the process is.
        let solo = l.solo;
        l.solo_holder.stop();
        let raw = exporter.raw_metrics();
        for ns in [l.green, solo] {
            assert!(
                !raw.contains(&format!("netns=\"{ns}\"")),
                "{ns} stayed:\n{raw}"
            );
        }
        let m = Metrics::parse(&raw);
        assert_eq!(m.named("portrange_netns_info").len(), 2, "host and blue");
        assert!(settle() < before, "the fds of green and solo were closed");
        let _ = std::fs::remove_file(&cfg);
    });
}

/// `setpriv` arguments that keep root but take CAP_SYS_ADMIN away.
const NO_SYS_ADMIN: [&str; 3] = [
    "setpriv",
    "--inh-caps=-sys_admin",
    "--bounding-set=-sys_admin",
];

#[test]
fn without_cap_sys_admin_the_fallback_gives_the_same_numbers() {
    in_private_host(
        "without_cap_sys_admin_the_fallback_gives_the_same_numbers",
        |h| {
            let l = layout(h);
            let cfg = ranges_cfg();
            let scrape = |prefix: Option<&[&str]>| {
                let e = start(&cfg, prefix);
                let m = e.metrics();
                (m, e.stderr())
            };
            let (setns, setns_log) = scrape(None);
            let (fallback, fallback_log) = scrape(Some(&NO_SYS_ADMIN[..]));
            assert!(setns_log.contains("setns works"), "{setns_log}");
            assert!(
                fallback_log.contains(
                    "cannot enter other network namespaces (setns: Operation not permitted"
                ),
                "{fallback_log}"
            );
            let same = |m: &Metrics| -> BTreeMap<String, f64> {
                m.series
                    .iter()
                    .filter(|(k, _)| {
                        [
                            "portrange_ports",
                            "portrange_sockets",
                            "portrange_unexpected_listeners",
                            "portrange_unattributed_sockets",
                            "portrange_listener_info",
                            "portrange_netns_info",
                        ]
                        .iter()
                        .any(|f| {
                            k.starts_with(&format!("{f}{{")) || k.starts_with(&format!("{f}_"))
                        })
                    })
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            };
            let (a, b) = (same(&setns), same(&fallback));
            assert!(a.len() > 60, "{a:?}");
            assert_eq!(a, b, "the fallback differs");
            // What only setns can do: other namespaces' ephemeral ranges, and
            // a namespace no process is in ("empty" is sampled, not unknown).
            let overlap = |m: &Metrics| m.named("portrange_ephemeral_overlap_ports").len();
            assert_eq!(overlap(&setns), 8, "host, blue, green, solo × tcp, udp");
            assert_eq!(overlap(&fallback), 2, "host only");
            assert_eq!(setns.value("portrange_netns_unsampled"), 0.0);
            assert_eq!(
                fallback.value("portrange_netns_unsampled"),
                1.0,
                "empty has no process"
            );
            let _ = (l.empty, l.outside);
            let _ = std::fs::remove_file(&cfg);
        },
    );
}

#[test]
fn a_pid_that_exits_before_setns_is_handled() {
    use portrange_exporter::platform::Filter;
    use portrange_exporter::platform::linux::netns::{Mode, NetnsSampler, Paths};
    use portrange_exporter::ranges::PortSet;
    in_private_host("a_pid_that_exits_before_setns_is_handled", |h| {
        let filter = Filter {
            tcp: PortSet::from_intervals(vec![(3224, 3324)]),
            udp: PortSet::from_intervals(vec![(3224, 3324)]),
        };
        let probe = h.making_threads(|| NetnsSampler::new(Paths::new(PROCFS.into())).unwrap());
        assert_eq!(probe.mode(), Mode::Setns, "root can setns");
        let (own, dev) = probe.own();
        for mode in [Mode::Setns, Mode::ProcNet] {
            let mut s = NetnsSampler::with_mode(Paths::new(PROCFS.into()), mode, own, dev);
            let holder = hold_in(&["unshare", "-n"], "CtxGfx", &["udp:0.0.0.0:3224"]);
            let ns = netns_of(holder.pid());
            // Found while the holder lives...
            let d = s.discover();
            assert!(d.found.contains_key(&ns), "{mode:?}: {d:?}");
            let live = h
                .making_threads(|| s.sample_discovered(&d, &filter, soon()))
                .unwrap()
                .sockets;
            assert_eq!(live.iter().filter(|x| x.netns == ns).count(), 1, "{mode:?}");
            // ...and it exits between the next discovery and the setns (or
            // the /proc/<pid>/net read): the namespace is gone, not an error
            // and not "unsampled".
            let mut s2 = NetnsSampler::with_mode(Paths::new(PROCFS.into()), mode, own, dev);
            let d = s2.discover();
            assert!(d.found.contains_key(&ns));
            holder.stop();
            let got = h
                .making_threads(|| s2.sample_discovered(&d, &filter, soon()))
                .unwrap()
                .sockets;
            assert!(got.iter().all(|x| x.netns != ns), "{mode:?}: {got:?}");
            let after = s2.namespaces();
            assert!(after.list.iter().all(|n| n.id != ns), "{mode:?}");
            assert_eq!(after.unsampled, 0, "{mode:?}: gone is not unknown");
            assert!(after.list.iter().any(|n| n.host && n.id == own));
            // The first sampler's cached fds for it close on its next scrape.
            let cached = s.cached();
            h.making_threads(|| s.sample(&filter, soon())).unwrap();
            if mode == Mode::Setns {
                assert_eq!(s.cached(), cached - 1, "{mode:?}");
            }
        }
    });
}

/// A sampling deadline 5 s away.
fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Container and pod come from the holder's cgroup and /var/log/pods, the
/// way the kubelet lays them out (cgroupfs driver). This one test writes
/// outside its namespaces: it makes a cgroup (removed at the end).
#[test]
fn pod_and_container_come_from_the_cgroup_and_the_pod_log_directory() {
    in_private_host(
        "pod_and_container_come_from_the_cgroup_and_the_pod_log_directory",
        |_h| {
            let root = if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
                PathBuf::from("/sys/fs/cgroup") // cgroup v2
            } else {
                PathBuf::from("/sys/fs/cgroup/pids") // a v1 hierarchy
            };
            let uid = format!("6f1c1d2e-7a3b-4c5d-9e8f-{:012x}", std::process::id());
            let id = format!("{:064x}", u64::from(std::process::id()) * 7919 + 0xc0ffee);
            let pod_dir = root.join(format!("kubepods/besteffort/pod{uid}"));
            let dir = pod_dir.join(&id);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                if std::env::var_os("CI").is_some() {
                    panic!("cannot make a cgroup under {}: {e}", root.display());
                }
                eprintln!(
                    "SKIPPED pod labels: cannot make a cgroup under {}: {e}",
                    root.display()
                );
                return;
            }
            std::fs::create_dir(format!("/var/log/pods/shop_web-0_{uid}")).unwrap();
            let holder = hold_in(&["unshare", "-n"], "CtxGfx", &["udp:0.0.0.0:3224"]);
            std::fs::write(dir.join("cgroup.procs"), holder.pid().to_string()).unwrap();
            let ns = netns_of(holder.pid());
            let cfg = ranges_cfg();
            let exporter = start(&cfg, None);
            let m = exporter.metrics();
            let got = m.get(&format!(
            "portrange_netns_info{{netns=\"{ns}\",name=\"\",container=\"{id}\",pod=\"web-0\",namespace=\"shop\"}}"
        ));
            drop(exporter);
            holder.stop();
            let until = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir(&pod_dir);
            let _ = std::fs::remove_dir(root.join("kubepods/besteffort"));
            let _ = std::fs::remove_dir(root.join("kubepods"));
            let _ = std::fs::remove_file(&cfg);
            assert_eq!(got, Some(1.0), "{}", m.dump("portrange_netns_info"));
        },
    );
}

/// A kernel-held socket (a VXLAN endpoint) inside another namespace is
/// named after its device there. Telling a kernel socket from an unseen
/// process needs the host's pid namespace, so this test reads the real
/// /proc: it samples (read only) every namespace of the machine, and
/// asserts only about its own, on a port range of its own.
#[test]
fn a_kernel_held_socket_in_another_namespace_is_named_and_judged() {
    in_private_host(
        "a_kernel_held_socket_in_another_namespace_is_named_and_judged",
        |h| {
            let blue = h.add("vxblue");
            sh(
                "ip -n vxblue link add vx7 type vxlan id 7 dstport 47011 local 127.0.0.1 dev lo && ip -n vxblue link set vx7 up",
            );
            let cfg = config_file(
                "netns-kernel",
                "ranges:\n  - name: k\n    ports: 47000-47020\n    protocols: [udp]\n    per_port: false\n    expected:\n      - kernel: vx7\n",
            );
            let exporter =
                Exporter::start(&["--collector.netns", "--config.file", cfg.to_str().unwrap()]);
            let m = exporter.metrics();
            // Allowed, so counted by owner (per_port is off).
            let series = format!(
                "portrange_listeners{{range=\"k\",protocol=\"udp\",process=\"kernel (vx7)\",user=\"root\",expected=\"true\",netns=\"{blue}\"}}"
            );
            assert_eq!(
                m.get(&series),
                Some(1.0),
                "{}",
                m.dump("portrange_listeners")
            );
            assert_eq!(
            m.value(&format!("portrange_unattributed_sockets{{range=\"k\",protocol=\"udp\",netns=\"{blue}\"}}")),
            0.0
        );
            let _ = std::fs::remove_file(&cfg);
        },
    );
}
