//! A file system that stops answering hangs no scrape (issue 27 §1),
//! against the real binary, as root in a private network namespace. A
//! FUSE file system built here (tests/hung_fs.py, Debian's python3-fusepy)
//! holds a program and the link `ctxlink` to it; a listener started
//! through the link is named `ctxlink`, so judging `process: ctxlink`
//! makes the exporter look at the executable (the link's vouching). Then
//! every operation of the file system blocks, as on an NFS mount whose
//! server is gone, and the exporter starts. Before: no scrape answered
//! within 30 s, and `/-/healthy` said 200. Now: every scrape answers
//! within its deadline, the listener is "unknown", the stuck look is
//! counted in `portrange_collection_skipped`, named in the status document
//! and by `check`, it holds one thread and is not started again, and the
//! verdict comes back by itself once the file system answers.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The FUSE file system: mounted at `mnt`, blocking while `control`
/// exists. Dropped: unblocked first (processes stuck on it cannot be
/// killed until then), then unmounted and ended.
struct HungFs {
    dir: PathBuf,
    mnt: PathBuf,
    control: PathBuf,
    fs: Child,
}

impl HungFs {
    /// `None` (the test is skipped) where FUSE or fusepy is missing,
    /// outside CI.
    fn start(tag: &str) -> Option<HungFs> {
        let usable = Path::new("/dev/fuse").exists()
            && Command::new(SYSTEM_PYTHON)
                .args(["-c", "import fusepy"])
                .status()
                .is_ok_and(|s| s.success());
        if !usable {
            assert!(
                std::env::var_os("CI").is_none(),
                "no /dev/fuse or no python3-fusepy: .ci/run installs it"
            );
            eprintln!("SKIPPED: no /dev/fuse or no python3-fusepy here");
            return None;
        }
        // A root-only directory: the link's directories must be root's
        // for it to vouch for the name.
        let dir = PathBuf::from(format!("/opt/portrange-{tag}-{}", std::process::id()));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("mnt"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        let control = dir.join("hang");
        let fs = Command::new(SYSTEM_PYTHON)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hung_fs.py"))
            .arg(dir.join("mnt"))
            .arg(&control)
            .arg(std::fs::canonicalize(SYSTEM_PYTHON).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the FUSE file system");
        let h = HungFs {
            mnt: dir.join("mnt"),
            dir,
            control,
            fs,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !h.mnt.join("prog").exists() {
            assert!(Instant::now() < until, "the FUSE file system did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(h)
    }

    /// Every operation blocks from now on; the kernel's cached attributes
    /// (one second) are let expire, so that the next look reaches it.
    fn hang(&self) {
        std::fs::write(&self.control, b"").unwrap();
        std::thread::sleep(Duration::from_millis(1_300));
    }

    fn answer(&self) {
        let _ = std::fs::remove_file(&self.control);
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        self.answer();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.fs.kill();
        let _ = self.fs.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes the file system answer when dropped: declared after everything
/// that may be stuck on it, so that a failing assertion unblocks before
/// the exporter and the probes are killed and waited for.
struct AnswerOnDrop(PathBuf);

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `check` started now: the lines it prints within `within`, and the
/// process, which cannot end while a thread of it is stuck in the file
/// system (a FUSE request the daemon has read waits uninterruptibly).
fn check_lines(args: &[&str], within: Duration) -> (Vec<String>, Child) {
    let mut c = Command::new(EXPORTER)
        .arg("check")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running check");
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let until = Instant::now() + within;
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        lines.push(l);
    }
    (lines, c)
}

/// A holder run from the file system through its link; killed on drop.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scrape with Prometheus's timeout header, timed.
fn scrape(e: &Exporter, timeout: &str) -> (Duration, std::io::Result<Response>) {
    let t = Instant::now();
    let r = get(
        &e.addr,
        "/metrics",
        &[("X-Prometheus-Scrape-Timeout-Seconds", timeout)],
    );
    (t.elapsed(), r)
}

fn line<'a>(text: &'a str, prefix: &str, port: u16) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l.contains(&format!("port=\"{port}\"")))
}

#[test]
fn a_file_system_that_stops_answering_hangs_no_scrape() {
    if !enter_netns("a_file_system_that_stops_answering_hangs_no_scrape") {
        return;
    }
    let Some(fs) = HungFs::start("hungfs") else {
        return;
    };
    let mut child = Command::new(fs.mnt.join("ctxlink"))
        .arg(holder_script())
        .arg("udp:0.0.0.0:3290")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the holder from the FUSE file system");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("ready"), "{ready:?}");
    let holder = Listener(child);
    let cfg = config_file(
        "hungfs",
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    protocols: [udp]\n    expected:\n      - process: ctxlink\n",
    );
    let cfg_arg = cfg.to_str().unwrap();
    // While the file system answers, the link vouches for the name.
    let (code, out) = check(&["--config.file", cfg_arg, "-t", "5"]);
    assert_eq!(code, 0, "{out}");

    fs.hang();
    // The precondition, seen by another process: following the exe link
    // blocks (this stat stays stuck until the file system answers).
    let mut probe = Command::new("stat")
        .arg("-L")
        .arg(format!("/proc/{}/exe", holder.0.id()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        probe.try_wait().unwrap().is_none(),
        "stat of the exe link did not block: the test proves nothing"
    );

    let e = Exporter::start(&["--config.file", cfg_arg]);
    let answer_on_drop = AnswerOnDrop(fs.control.clone());
    for i in 0..3 {
        let (took, r) = scrape(&e, "4");
        let r = r.unwrap_or_else(|err| panic!("scrape {i}: no answer after {took:?}: {err}"));
        assert_eq!(r.status, 200, "scrape {i}");
        assert!(took < Duration::from_secs(4), "scrape {i} took {took:?}");
        let text = r.text();
        let l = line(&text, "portrange_listener_info{", 3290)
            .unwrap_or_else(|| panic!("scrape {i}: no listener series:\n{text}"));
        assert!(l.contains("expected=\"unknown\""), "scrape {i}: {l}");
        assert!(
            text.lines().any(|l| l
                .strip_prefix("portrange_collection_skipped{stage=\"attribution\"} ")
                .is_some_and(|v| v.parse::<f64>().unwrap() >= 1.0)),
            "scrape {i}:\n{text}"
        );
    }
    let status = status_json(&e.addr);
    let named = status["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .any(|s| {
            s["what"]
                .as_str()
                .is_some_and(|w| w.starts_with(&format!("the executable of pid {}", holder.0.id())))
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("has not returned"))
        });
    assert!(named, "{status}");
    let l = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == 3290)
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(l["expected"], "unknown", "{l}");
    // One thread holds the stuck look, started once.
    assert_eq!(threads_named(&e.child.id().to_string(), "exe-look"), 1);
    assert_eq!(
        get(&e.addr, "/-/healthy", &[]).unwrap().status,
        200,
        "the collector keeps its deadlines"
    );
    // check answers within its timeout, and names the stuck part.
    let (lines, mut checking) = check_lines(
        &["--config.file", cfg_arg, "-t", "2"],
        Duration::from_secs(5),
    );
    let out = lines.join("\n");
    assert!(
        out.starts_with("PORTRANGE WARNING - ") || out.starts_with("PORTRANGE CRITICAL - "),
        "{out}"
    );
    assert!(
        out.contains(&format!("the executable of pid {}", holder.0.id())),
        "{out}"
    );

    // The file system answers again: the verdict comes back by itself.
    drop(answer_on_drop);
    assert!(probe.wait().unwrap().success());
    assert_ne!(checking.wait().unwrap().code(), Some(0));
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, r) = scrape(&e, "4");
        let text = r.unwrap().text();
        let back = line(&text, "portrange_listener_info{", 3290)
            .is_some_and(|l| l.contains("expected=\"true\""))
            && text.contains("portrange_collection_skipped{stage=\"attribution\"} 0");
        if back {
            break;
        }
        assert!(Instant::now() < until, "never came back:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(e);
    drop(holder);
    drop(fs);
    let _ = std::fs::remove_file(cfg);
}
