//! The release downloads, as an operator installs them (`deploy/release`
//! into `target/release-artifacts/`, which `.ci/run` builds before the
//! tests): the static binaries in a root with no C library and under
//! qemu, the Debian packages' contents, lintian, and install, upgrade and
//! purge in a throwaway overlay of this machine, the container image under
//! Docker and Podman, the checksums. Without the artifacts a test prints
//! SKIPPED; in CI (`CI` set) it fails instead, so a release that was not
//! built never passes unseen. Tests that need root say so and skip
//! likewise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Metrics, enter_netns, hold};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn artifacts(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release-artifacts");
    if dir.join("sha256sums.txt").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: no {} in CI: deploy/release must run before the tests",
            dir.display()
        );
    }
    eprintln!("SKIPPED {test}: no release artifacts (run deploy/release first)");
    None
}

fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI runs as root");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) -> String {
    run(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

/// A fresh directory others can enter (tests run from clones in 0700 homes).
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portrange-release-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that what `extract` writes to stdout is a static binary for
/// `arch` (Debian's or RPM's name for it).
fn assert_static_binary(arch: &str, extract: &str) {
    let elf = sh(&format!("{extract} | file -"));
    let machine = if arch == "amd64" || arch == "x86_64" {
        "x86-64"
    } else {
        "ARM aarch64"
    };
    assert!(
        elf.contains(machine) && elf.contains("statically linked"),
        "{arch}: {elf}"
    );
}

/// Unpacks a release tarball into `into`; returns its top directory.
fn unpack(artifacts: &Path, arch: &str, into: &Path) -> PathBuf {
    let name = format!("portrange_exporter-{VERSION}.linux-{arch}");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(artifacts.join(format!("{name}.tar.gz")))
        .arg("-C")
        .arg(into));
    into.join(name)
}

#[test]
fn checksums_cover_every_artifact() {
    let Some(dir) = artifacts("checksums_cover_every_artifact") else {
        return;
    };
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("sha256sums.txt")
        .current_dir(&dir));
    let listed = std::fs::read_to_string(dir.join("sha256sums.txt")).unwrap();
    let mut expected = vec![
        format!("portrange_exporter-{VERSION}.linux-amd64.tar.gz"),
        format!("portrange_exporter-{VERSION}.linux-arm64.tar.gz"),
        format!("portrange-exporter_{VERSION}-1_amd64.deb"),
        format!("portrange-exporter_{VERSION}-1_arm64.deb"),
        format!("portrange_exporter-{VERSION}-1.x86_64.rpm"),
        format!("portrange_exporter-{VERSION}-1.aarch64.rpm"),
    ];
    if std::env::var_os("CI").is_some()
        || dir
            .join(format!("portrange_exporter-{VERSION}.windows-amd64.zip"))
            .exists()
    {
        expected.push(format!("portrange_exporter-{VERSION}.windows-amd64.zip"));
        expected.push(format!("portrange_exporter-{VERSION}.windows-amd64.msi"));
    }
    for name in &expected {
        assert!(
            listed.lines().any(|l| l.ends_with(&format!("  {name}"))),
            "{name} missing from sha256sums.txt:\n{listed}"
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        expected.len() + 1,
        "every file is listed, nothing else is there"
    );
}

#[test]
fn tarballs_hold_what_an_operator_needs() {
    let Some(dir) = artifacts("tarballs_hold_what_an_operator_needs") else {
        return;
    };
    for arch in ["amd64", "arm64"] {
        let list = run(Command::new("tar")
            .arg("-tzf")
            .arg(dir.join(format!("portrange_exporter-{VERSION}.linux-{arch}.tar.gz"))));
        let top = format!("portrange_exporter-{VERSION}.linux-{arch}/");
        for file in [
            "portrange_exporter",
            "LICENSE",
            "README.md",
            "ranges.yml",
            "systemd/portrange_exporter.service",
            "systemd/portrange_exporter.socket",
            "systemd/portrange_exporter.default",
            "rules/portrange.rules.yml",
            "dashboards/portrange-host.json",
            "dashboards/portrange-fleet.json",
            "grafana/provisioning/dashboards/portrange.yml",
            "grafana/provisioning/datasources/portrange.yml",
        ] {
            assert!(
                list.lines().any(|l| l == format!("{top}{file}")),
                "{arch}: no {file} in\n{list}"
            );
        }
        assert!(
            list.lines().all(|l| l.starts_with(&top)),
            "one top directory:\n{list}"
        );
        assert_static_binary(
            arch,
            &format!(
                "tar -xzOf {}/portrange_exporter-{VERSION}.linux-{arch}.tar.gz {top}portrange_exporter",
                dir.display()
            ),
        );
    }
}

#[test]
fn the_amd64_binary_runs_in_a_root_with_no_c_library() {
    let test = "the_amd64_binary_runs_in_a_root_with_no_c_library";
    let Some(dir) = artifacts(test) else { return };
    if !is_root(test) || !enter_netns(test) {
        return;
    }
    let work = scratch("amd64");
    let top = unpack(&dir, "amd64", &work);
    // The root holds the binary and an empty /proc to mount: nothing else.
    let root = work.join("root");
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy(
        top.join("portrange_exporter"),
        root.join("portrange_exporter"),
    )
    .unwrap();
    let listing = sh(&format!("cd {} && find . | sort", root.display()));
    assert_eq!(listing, ".\n./portrange_exporter\n./proc\n");

    let version = run(Command::new("chroot")
        .arg(&root)
        .arg("/portrange_exporter")
        .arg("--version"));
    assert!(
        version.contains(&format!("version {VERSION} ")),
        "{version}"
    );
    assert!(!version.contains("revision: unknown"), "{version}");
    assert!(
        version.contains("target:           x86_64-unknown-linux-musl"),
        "{version}"
    );
    assert!(
        version.contains("platform:         linux/amd64"),
        "{version}"
    );

    // `check` in that root, with its own /proc, sees a socket this test's
    // namespace holds and names the process.
    let holder = hold("CtxGfx", &["udp:0.0.0.0:3230"]);
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "bash", "-c"])
        .arg(format!(
            "mount -t proc proc {root}/proc && exec chroot {root} /portrange_exporter check",
            root = root.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "CRITICAL for an unexpected listener:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("PORTRANGE CRITICAL - 1 unexpected listener: CtxGfx"),
        "{text}"
    );
    assert!(text.contains("0.0.0.0:3230"), "{text}");
    holder.stop();
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_arm64_binary_serves_metrics_under_qemu() {
    let test = "the_arm64_binary_serves_metrics_under_qemu";
    let Some(dir) = artifacts(test) else { return };
    if !is_root(test) || !enter_netns(test) {
        return;
    }
    let qemu = Path::new("/usr/bin/qemu-aarch64-static");
    if !qemu.exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: no {} in CI (.ci/run installs qemu-user-static)",
                qemu.display()
            );
        }
        eprintln!("SKIPPED {test}: no {}", qemu.display());
        return;
    }
    let work = scratch("arm64");
    let top = unpack(&dir, "arm64", &work);
    let binary = top.join("portrange_exporter");
    let version = run(Command::new(qemu).arg(&binary).arg("--version"));
    assert!(
        version.contains("target:           aarch64-unknown-linux-musl"),
        "{version}"
    );
    assert!(
        version.contains("platform:         linux/arm64"),
        "{version}"
    );

    let holder = hold("CtxGfx", &["udp:0.0.0.0:3250"]);
    let addr = "127.0.0.1:10231";
    let mut child = Command::new(qemu)
        .arg(&binary)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let metrics = loop {
        if let Ok(r) = common::get(addr, "/metrics", &[])
            && r.status == 200
        {
            break Metrics::parse(&r.text());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the arm64 exporter did not answer"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    holder.stop();
    assert_eq!(metrics.value("portrange_up"), 1.0);
    assert_eq!(
        metrics.value(r#"portrange_ports_in_use{range="framehawk",protocol="udp"}"#),
        1.0,
        "{}",
        metrics.dump("portrange_")
    );
    assert_eq!(
        metrics.value(r#"portrange_listeners{range="framehawk",protocol="udp",process="CtxGfx",user="root",expected="false"}"#),
        1.0,
        "{}",
        metrics.dump("portrange_listeners")
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The files of a .deb, its control fields, conffiles and its unit.
struct Deb {
    files: String,
    control: String,
    conffiles: String,
    unit: String,
}

fn read_deb(path: &Path) -> Deb {
    let files = run(Command::new("dpkg-deb").arg("-c").arg(path));
    let control = run(Command::new("dpkg-deb").arg("-f").arg(path));
    let ctrl = run(Command::new("bash").arg("-c").arg(format!(
        "dpkg-deb --ctrl-tarfile {} | tar -xOf - ./conffiles",
        path.display()
    )));
    let unit = run(Command::new("bash").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | tar -xOf - ./lib/systemd/system/portrange_exporter.service",
        path.display()
    )));
    Deb {
        files,
        control,
        conffiles: ctrl,
        unit,
    }
}

#[test]
fn debian_packages_have_their_files_and_pass_lintian() {
    let Some(dir) = artifacts("debian_packages_have_their_files_and_pass_lintian") else {
        return;
    };
    for arch in ["amd64", "arm64"] {
        let path = dir.join(format!("portrange-exporter_{VERSION}-1_{arch}.deb"));
        let deb = read_deb(&path);
        for file in [
            "./usr/bin/portrange_exporter",
            "./lib/systemd/system/portrange_exporter.service",
            "./lib/systemd/system/portrange_exporter.socket",
            "./etc/default/portrange_exporter",
            "./etc/portrange_exporter/ranges.yml",
            "./usr/share/doc/portrange-exporter/copyright",
            "./usr/share/doc/portrange-exporter/changelog.Debian.gz",
            "./usr/share/portrange_exporter/rules/portrange.rules.yml",
            "./usr/share/portrange_exporter/dashboards/portrange-host.json",
            "./usr/share/portrange_exporter/grafana/provisioning/dashboards/portrange.yml",
            "./usr/share/portrange_exporter/grafana/provisioning/datasources/portrange.yml",
        ] {
            assert!(
                deb.files.lines().any(|l| l.ends_with(&format!(" {file}"))),
                "{arch}: no {file} in\n{}",
                deb.files
            );
        }
        assert!(
            deb.control.contains(&format!("Architecture: {arch}\n")),
            "{}",
            deb.control
        );
        assert!(
            deb.control.contains(&format!("Version: {VERSION}-1\n")),
            "{}",
            deb.control
        );
        assert_eq!(
            deb.conffiles,
            "/etc/default/portrange_exporter\n/etc/portrange_exporter/ranges.yml\n"
        );
        assert!(
            deb.unit
                .contains("\nExecStart=/usr/bin/portrange_exporter $PORTRANGE_EXPORTER_ARGS\n"),
            "{}",
            deb.unit
        );
        for hardening in [
            "User=portrange_exporter",
            "AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
            "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "EnvironmentFile=-/etc/default/portrange_exporter",
        ] {
            assert!(
                deb.unit.lines().any(|l| l == hardening),
                "{arch}: the unit lacks {hardening}:\n{}",
                deb.unit
            );
        }
        let ours = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/portrange_exporter.service"),
        )
        .unwrap();
        let body = |u: &str| -> Vec<String> {
            u.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("ExecStart="))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            body(&deb.unit),
            body(&ours),
            "{arch}: the packaged unit is deploy/systemd's"
        );
        if Command::new("lintian").arg("--version").output().is_err() {
            if std::env::var_os("CI").is_some() {
                panic!("no lintian in CI (.ci/run installs it)");
            }
            eprintln!("SKIPPED lintian: not installed");
            continue;
        }
        let out = Command::new("lintian")
            .args(["--fail-on", "error", "--tag-display-limit", "0"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "lintian {arch}: {}\n{said}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !said.lines().any(|l| l.starts_with("E: ")),
            "lintian {arch}:\n{said}"
        );
    }
}

/// Install, upgrade with an edited conffile, and purge the amd64 package in
/// an overlay of this machine's root (the machine itself is never changed):
/// the user, the unit's enablement and the conffiles come and go, the
/// operator's edit survives the upgrade, and purge leaves the root as it
/// was.
#[test]
fn the_debian_package_installs_upgrades_and_purges_cleanly() {
    let test = "the_debian_package_installs_upgrades_and_purges_cleanly";
    let Some(dir) = artifacts(test) else { return };
    if !is_root(test) {
        return;
    }
    let work = scratch("deb");
    let deb = dir.join(format!("portrange-exporter_{VERSION}-1_amd64.deb"));
    // The next version of the same package, as an upgrade brings it.
    let next = work.join("next.deb");
    sh(&format!(
        "d={w}/next && dpkg-deb -R {deb} $d && sed -i 's/^Version: .*/Version: {VERSION}-2/' $d/DEBIAN/control && dpkg-deb --root-owner-group -b $d {next} >/dev/null",
        w = work.display(),
        deb = deb.display(),
        next = next.display()
    ));
    let script = format!(
        r#"
        w={w}
        mkdir -p $w/upper $w/work $w/merged
        mount -t tmpfs tmpfs $w/upper
        mkdir -p $w/upper/u $w/upper/w
        mount -t overlay overlay -o lowerdir=/,upperdir=$w/upper/u,workdir=$w/upper/w $w/merged
        for d in proc sys dev; do mount --rbind /$d $w/merged/$d; done
        cp {deb} $w/merged/tmp/p1.deb; cp {next} $w/merged/tmp/p2.deb
        c() {{ chroot $w/merged "$@"; }}
        snapshot() {{ {{ c find /etc /lib/systemd /usr/bin /usr/share/portrange_exporter /usr/share/doc/portrange-exporter /var/lib/systemd -xdev 2>/dev/null || true; }} | sort; }}
        snapshot > $w/before
        cp $w/merged/etc/passwd $w/passwd.before; cp $w/merged/etc/group $w/group.before
        c dpkg -i /tmp/p1.deb >/dev/null
        echo "user: $(c getent passwd portrange_exporter | cut -d: -f1,6,7)"
        echo "config: $(c stat -c '%U:%G %a' /etc/portrange_exporter /etc/portrange_exporter/ranges.yml | tr '\n' ' ')"
        echo "enabled: $(c readlink /etc/systemd/system/multi-user.target.wants/portrange_exporter.service)"
        echo "version: $(c /usr/bin/portrange_exporter --version | head -n 1 | cut -d' ' -f3)"
        echo '# edited by the operator' >> $w/merged/etc/portrange_exporter/ranges.yml
        c dpkg -i /tmp/p2.deb >/dev/null
        echo "upgraded: $(c dpkg-query -W -f='${{Version}} ${{Status}}' portrange-exporter)"
        echo "kept: $(tail -n 1 $w/merged/etc/portrange_exporter/ranges.yml)"
        c dpkg --purge portrange-exporter >/dev/null
        echo "purged: $(c dpkg-query -W -f='${{Status}}' portrange-exporter 2>&1 | head -n 1)"
        snapshot > $w/after
        diff $w/before $w/after && echo "files: as before"
        cmp $w/passwd.before $w/merged/etc/passwd && cmp $w/group.before $w/merged/etc/group && echo "accounts: as before"
        "#,
        w = work.display(),
        deb = deb.display(),
        next = next.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "bash", "-euo", "pipefail", "-c"])
        .arg(&script)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        out.status.success(),
        "{}\n{said}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines,
        vec![
            "user: portrange_exporter:/nonexistent:/usr/sbin/nologin",
            "config: root:portrange_exporter 750 root:portrange_exporter 640 ",
            "enabled: /lib/systemd/system/portrange_exporter.service",
            &format!("version: {VERSION}"),
            &format!("upgraded: {VERSION}-2 install ok installed"),
            "kept: # edited by the operator",
            "purged: dpkg-query: no packages found matching portrange-exporter",
            "files: as before",
            "accounts: as before",
        ],
        "{said}"
    );
}

#[test]
fn the_two_dockerfiles_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker");
    let release = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let source = std::fs::read_to_string(root.join("Dockerfile.source")).unwrap();
    // The last stage of each: what the image is.
    let last = |text: &str| -> String {
        let at = text.rfind("\nFROM ").unwrap();
        text[at..].to_string()
    };
    let directive = |text: &str, word: &str| -> Vec<String> {
        let joined = text.replace("\\\n", " ");
        joined
            .lines()
            .filter(|l| l.starts_with(&format!("{word} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let (a, b) = (last(&release), last(&source));
    for word in ["USER", "EXPOSE", "ENTRYPOINT", "LABEL", "ARG"] {
        assert_eq!(directive(&a, word), directive(&b, word), "{word} differs");
        assert!(!directive(&a, word).is_empty(), "no {word}");
    }
    let caps = |text: &str| -> String {
        let at = text.find("setcap cap_").expect("setcap");
        text[at..].split_whitespace().nth(1).unwrap().to_string()
    };
    let script = std::fs::read_to_string(root.join("build")).unwrap();
    assert_eq!(caps(&script), caps(&source), "the same file capabilities");
    assert_eq!(caps(&script), "cap_sys_ptrace,cap_dac_read_search=ep");
}

/// A container engine's daemon (Docker) or storage (Podman) private to
/// this test, in its network namespace.
struct Engine {
    name: &'static str,
    dir: PathBuf,
    daemon: Option<std::process::Child>,
}

impl Engine {
    fn command(&self) -> Command {
        match self.name {
            "docker" => {
                let mut c = Command::new("/usr/bin/docker");
                c.env(
                    "DOCKER_HOST",
                    format!("unix://{}/docker.sock", self.dir.display()),
                )
                .env("DOCKER_BUILDKIT", "0");
                c
            }
            _ => {
                let mut c = Command::new("podman");
                c.arg("--root")
                    .arg(self.dir.join("root"))
                    .arg("--runroot")
                    .arg(self.dir.join("run"))
                    .args([
                        "--storage-driver",
                        "vfs",
                        "--runtime",
                        "runc",
                        "--cgroup-manager",
                        "cgroupfs",
                        "--events-backend",
                        "none",
                    ]);
                c
            }
        }
    }

    fn start(name: &'static str) -> Engine {
        let dir = scratch(name);
        let mut engine = Engine {
            name,
            dir,
            daemon: None,
        };
        if name == "docker" {
            let d = &engine.dir;
            let child = Command::new("dockerd")
                .arg(format!("--host=unix://{}/docker.sock", d.display()))
                .arg(format!("--data-root={}/data", d.display()))
                .arg(format!("--exec-root={}/exec", d.display()))
                .arg(format!("--pidfile={}/docker.pid", d.display()))
                .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
                .spawn()
                .expect("dockerd (docker.io)");
            engine.daemon = Some(child);
            let started = Instant::now();
            while !engine
                .command()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
            {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "dockerd did not start: {}",
                    std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        engine
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.name == "docker" {
            let _ = self.command().args(["rm", "-f", "portrange-test"]).output();
        } else {
            let _ = self.command().args(["rm", "-f", "portrange-test"]).output();
            let _ = self.command().args(["system", "reset", "--force"]).output();
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid; touches no memory.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        let _ = Command::new("umount").arg("-R").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn image_runs_and_names_a_host_socket(name: &'static str) {
    let test = format!("image_under_{name}");
    let Some(_) = artifacts(&test) else { return };
    if !is_root(&test) || !enter_netns(&test) {
        return;
    }
    let have = match name {
        "docker" => Command::new("dockerd").arg("--version").output().is_ok(),
        _ => Command::new("podman").arg("--version").output().is_ok(),
    };
    if !have {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: {name} is not installed in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED {test}: {name} is not installed");
        return;
    }
    let engine = Engine::start(name);
    let tag = format!("portrange_exporter:{VERSION}");
    // deploy/docker/build, with this test's engine (its daemon or storage).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/build");
    let shim = engine.dir.join("engine");
    let cmd = engine.command();
    let mut line = format!("exec {}", cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        line.push_str(&format!(" '{}'", a.to_string_lossy()));
    }
    let envs: String = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            v.map(|v| format!("export {}='{}'\n", k.to_string_lossy(), v.to_string_lossy()))
        })
        .collect();
    std::fs::write(&shim, format!("#!/bin/sh\n{envs}{line} \"$@\"\n")).unwrap();
    run(Command::new("chmod").arg("0755").arg(&shim));
    run(Command::new(&script)
        .arg("--engine")
        .arg(&shim)
        .arg("--tag")
        .arg(&tag));

    // What the image says about itself.
    let inspect =
        run(engine
            .command()
            .args(["image", "inspect", "--format", "{{json .Config}}", &tag]));
    let config: serde_json::Value = serde_json::from_str(inspect.trim()).unwrap();
    assert_eq!(config["User"], "10224:10224", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/portrange_exporter"])
    );
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"], VERSION,
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"], "Apache-2.0",
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| r.len() == 12),
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.source"].is_string(),
        "{labels}"
    );

    // A process of the host (this test's namespace) holds a port in the
    // range; the container, run as the README says, names it.
    let holder = hold("CtxGfx", &["udp:0.0.0.0:3240"]);
    let port = if name == "docker" { "10232" } else { "10233" };
    let mut run_cmd = engine.command();
    run_cmd.args([
        "run",
        "-d",
        "--name",
        "portrange-test",
        "--network",
        "host",
        "--pid",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "DAC_READ_SEARCH",
        "-v",
        "/proc:/host/proc:ro",
        "-v",
        "/etc/passwd:/etc/passwd:ro",
        "-v",
        "/etc/group:/etc/group:ro",
    ]);
    if name == "podman" {
        run_cmd.args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
    }
    run_cmd.arg(&tag).args([
        "--path.procfs=/host/proc",
        &format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    run(&mut run_cmd);
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let metrics = loop {
        if let Ok(r) = common::get(&addr, "/metrics", &[])
            && r.status == 200
        {
            let m = Metrics::parse(&r.text());
            if m.get(r#"portrange_ports_in_use{range="framehawk",protocol="udp"}"#) == Some(1.0) {
                break m;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let logs = engine
                .command()
                .args(["logs", "portrange-test"])
                .output()
                .unwrap();
            panic!(
                "{name}: no answer with the socket counted: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    holder.stop();
    assert_eq!(
        metrics.value(r#"portrange_listeners{range="framehawk",protocol="udp",process="CtxGfx",user="root",expected="false"}"#),
        1.0,
        "{name}: the host's CtxGfx is named:\n{}",
        metrics.dump("portrange_listener")
    );
    // It runs as uid 10224, not root, with only the two capabilities.
    let pid =
        run(engine
            .command()
            .args(["inspect", "--format", "{{.State.Pid}}", "portrange-test"]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let field = |name: &str| -> String {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        field("Uid:"),
        "10224 10224 10224 10224",
        "{name}:\n{status}"
    );
    // CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19), nothing else.
    let two = format!("{:016x}", (1u64 << 2) | (1u64 << 19));
    assert_eq!(field("CapEff:"), two, "{name}:\n{status}");
    assert_eq!(field("CapBnd:"), two, "{name}:\n{status}");
}

#[test]
fn the_image_runs_under_docker_and_names_a_host_socket() {
    image_runs_and_names_a_host_socket("docker");
}

#[test]
fn the_image_runs_under_podman_and_names_a_host_socket() {
    image_runs_and_names_a_host_socket("podman");
}

/// The static binary has no NSS (musl): an account in `/etc/passwd` is
/// named by the C library, one only NSS knows (here through
/// libnss-extrausers, as LDAP or SSSD would) through the host's `getent`,
/// and in a root without `getent` (a `FROM scratch` image) that account
/// stays unresolved: shown as its uid, its `user:` entry undecided
/// (`unknown`, a WARNING), never a wrong verdict.
#[test]
fn the_static_binary_names_users_from_passwd_and_nss_and_degrades_without_getent() {
    let test = "the_static_binary_names_users_from_passwd_and_nss_and_degrades_without_getent";
    let Some(dir) = artifacts(test) else { return };
    if !is_root(test) || !enter_netns(test) {
        return;
    }
    if !Path::new("/usr/lib/libnss_extrausers.so.2").exists()
        && !Path::new("/lib/x86_64-linux-gnu/libnss_extrausers.so.2").exists()
    {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: libnss-extrausers is not installed in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED {test}: libnss-extrausers is not installed");
        return;
    }
    let work = scratch("nss");
    let top = unpack(&dir, "amd64", &work);
    let root = work.join("root");
    for d in ["proc", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(
        top.join("portrange_exporter"),
        root.join("portrange_exporter"),
    )
    .unwrap();
    std::fs::copy("/etc/passwd", root.join("etc/passwd")).unwrap();
    std::fs::copy("/etc/group", root.join("etc/group")).unwrap();
    let config = "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    protocols: [udp]\n    expected:\n      - user: ldap7\n      - user: nobody\n";
    std::fs::write(root.join("ranges.yml"), config).unwrap();
    let script = format!(
        r#"
        w={w}
        printf 'passwd: files extrausers\ngroup: files extrausers\n' > $w/nsswitch.conf
        mount --bind $w/nsswitch.conf /etc/nsswitch.conf
        mount -t tmpfs tmpfs /var/lib/extrausers
        echo 'ldap7:x:4242:4242:only NSS knows me:/nonexistent:/usr/sbin/nologin' > /var/lib/extrausers/passwd
        echo 'ldap7:x:4242:' > /var/lib/extrausers/group
        getent passwd 4242 >/dev/null || {{ echo "extrausers is not in effect"; exit 1; }}
        hold='import socket,sys,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",int(sys.argv[1]))); time.sleep(60)'
        # Debian's python3: another user cannot enter root's (pyenv) one.
        setpriv --reuid=4242 --regid=4242 --clear-groups /usr/bin/python3 -c "$hold" 3260 & a=$!
        setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c "$hold" 3261 & b=$!
        for i in $(seq 50); do [ "$(ss -Hulpn 'sport >= :3260 and sport <= :3261' | wc -l)" = 2 ] && break; sleep 0.1; done
        mount -t proc proc $w/root/proc
        set +e
        $w/root/portrange_exporter check -v --config.file=$w/root/ranges.yml > $w/host.out 2> $w/host.err; echo "host: $?"
        chroot $w/root /portrange_exporter check -v --config.file=/ranges.yml > $w/scratch.out 2> $w/scratch.err; echo "scratch: $?"
        kill $a $b
        "#,
        w = work.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "bash", "-uo", "pipefail", "-c"])
        .arg(&script)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let host = std::fs::read_to_string(work.join("host.out")).unwrap_or_default();
    let bare = std::fs::read_to_string(work.join("scratch.out")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On the host: both named, both allowed.
    assert!(said.contains("host: 0"), "{said}\n{host}");
    assert!(host.starts_with("PORTRANGE OK"), "{host}");
    let row = |text: &str, port: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("udp ") && l.contains(&format!(":{port} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row(&host, "3260").contains(" ldap7 "), "{host}");
    assert!(row(&host, "3261").contains(" nobody "), "{host}");
    // Without getent: nobody (in /etc/passwd) is still named and allowed;
    // ldap7 is its uid and undecided: a WARNING, not OK, not CRITICAL.
    assert!(said.contains("scratch: 1"), "{said}\n{bare}");
    assert!(bare.starts_with("PORTRANGE WARNING"), "{bare}");
    assert!(row(&bare, "3261").contains(" nobody "), "{bare}");
    let ldap = row(&bare, "3260");
    assert!(
        ldap.contains(" 4242 ") && ldap.contains("unknown"),
        "{bare}"
    );
}

/// The RPM packages (x86_64, aarch64), read with Debian's `rpm`: their
/// files, the configuration files kept over an upgrade, the scriptlets and
/// the unit.
#[test]
fn rpm_packages_have_their_files_config_and_scripts() {
    let Some(dir) = artifacts("rpm_packages_have_their_files_config_and_scripts") else {
        return;
    };
    for arch in ["x86_64", "aarch64"] {
        let path = dir.join(format!("portrange_exporter-{VERSION}-1.{arch}.rpm"));
        let q = |args: &[&str]| run(Command::new("rpm").arg("-qp").args(args).arg(&path));
        assert_eq!(
            q(&["--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}"]),
            format!("portrange_exporter {VERSION} 1 {arch}")
        );
        let files = q(&["-l"]);
        for file in [
            "/usr/bin/portrange_exporter",
            "/usr/lib/systemd/system/portrange_exporter.service",
            "/usr/lib/systemd/system/portrange_exporter.socket",
            "/usr/lib/sysusers.d/portrange_exporter.conf",
            "/etc/sysconfig/portrange_exporter",
            "/etc/portrange_exporter/ranges.yml",
            "/usr/share/portrange_exporter/rules/portrange.rules.yml",
            "/usr/share/portrange_exporter/dashboards/portrange-host.json",
            "/usr/share/portrange_exporter/dashboards/portrange-fleet.json",
            "/usr/share/portrange_exporter/grafana/provisioning/dashboards/portrange.yml",
            "/usr/share/portrange_exporter/grafana/provisioning/datasources/portrange.yml",
            "/usr/share/licenses/portrange_exporter/LICENSE",
        ] {
            assert!(
                files.lines().any(|l| l == file),
                "{arch}: no {file} in\n{files}"
            );
        }
        // %config(noreplace): an upgrade keeps the operator's edits.
        assert_eq!(
            q(&["-c"]),
            "/etc/portrange_exporter/ranges.yml\n/etc/sysconfig/portrange_exporter\n"
        );
        let noreplace = q(&["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
        for file in [
            "/etc/portrange_exporter/ranges.yml",
            "/etc/sysconfig/portrange_exporter",
        ] {
            assert!(
                noreplace.lines().any(|l| l == format!("{file} cn")),
                "{arch}: {file} is not %config(noreplace):\n{noreplace}"
            );
        }
        let modes = q(&[
            "--qf",
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]",
        ]);
        for line in [
            "drwxr-x--- root:portrange_exporter /etc/portrange_exporter",
            "-rw-r----- root:portrange_exporter /etc/portrange_exporter/ranges.yml",
            "-rwxr-xr-x root:root /usr/bin/portrange_exporter",
        ] {
            assert!(
                modes.lines().any(|l| l == line),
                "{arch}: no {line:?} in\n{modes}"
            );
        }
        let scripts = q(&["--scripts"]);
        for part in [
            "preinstall scriptlet",
            "useradd -r -g portrange_exporter -d / -s /sbin/nologin",
            "systemctl --no-reload preset portrange_exporter.service",
            "systemctl --no-reload disable --now portrange_exporter.socket portrange_exporter.service",
            "systemctl try-restart portrange_exporter.service",
        ] {
            assert!(scripts.contains(part), "{arch}: no {part:?} in\n{scripts}");
        }
        // A static binary requires no library.
        let requires = q(&["-R"]);
        assert!(
            !requires.contains(".so"),
            "{arch}: requires libraries:\n{requires}"
        );
        assert_static_binary(
            arch,
            &format!(
                "rpm2cpio {} | cpio -i --quiet --to-stdout ./usr/bin/portrange_exporter",
                path.display()
            ),
        );
    }
}

/// The x86_64 RPM installed with `rpm --root` into a root made for the test
/// (this machine's /usr under a throwaway overlay, so the scriptlets find
/// a shell and useradd; nothing of the machine changes), then its unit's
/// ExecStart line run there as the unit runs it: as the service user, with
/// the flags of /etc/sysconfig/portrange_exporter. It serves metrics of the
/// packaged configuration.
#[test]
fn the_rpm_installs_into_a_fresh_root_and_its_unit_runs() {
    let test = "the_rpm_installs_into_a_fresh_root_and_its_unit_runs";
    let Some(dir) = artifacts(test) else { return };
    if !is_root(test) || !enter_netns(test) {
        return;
    }
    let work = scratch("rpm");
    let rpm = dir.join(format!("portrange_exporter-{VERSION}-1.x86_64.rpm"));
    let log = work.join("exporter.log");
    // One private mount namespace for the install and the run.
    let script = format!(
        r#"
R={w}/root
mkdir -p $R/usr $R/etc $R/proc $R/dev $R/tmp $R/run {w}/up {w}/work
mount -t overlay overlay -o lowerdir=/usr,upperdir={w}/up,workdir={w}/work $R/usr
for d in bin sbin lib lib64; do [ -e /$d ] && ln -s usr/$d $R/$d; done
cp /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/login.defs $R/etc/
touch $R/dev/null && mount --bind /dev/null $R/dev/null
mount -t proc proc $R/proc
rpm --root $R --initdb
# Debian's rpm warns that it is not Debian's way; any other error fails.
rpm --root $R -i --nodeps {rpm} 2> {w}/rpm.err || {{ cat {w}/rpm.err; exit 1; }}
rpm --root $R -q portrange_exporter
grep '^portrange_exporter:' $R/etc/passwd
chroot $R stat -c '%a %U:%G %n' /etc/portrange_exporter /etc/portrange_exporter/ranges.yml
unit=$R/usr/lib/systemd/system/portrange_exporter.service
grep -x 'EnvironmentFile=-/etc/sysconfig/portrange_exporter' $unit
exec_start=$(sed -n 's/^ExecStart=//p' $unit)
echo "ExecStart=$exec_start"
# As systemd runs it: the environment file's variables, then the line.
chroot --userspec=portrange_exporter:portrange_exporter $R /bin/sh -c \
  "set -a; . /etc/sysconfig/portrange_exporter; set +a; exec $exec_start" > {log} 2>&1 &
pid=$!
for i in $(seq 100); do
  if curl -fsS http://127.0.0.1:10224/metrics > {w}/metrics 2>/dev/null; then break; fi
  sleep 0.1
done
kill $pid; wait $pid || true
"#,
        w = work.display(),
        rpm = rpm.display(),
        log = log.display()
    );
    let out = run(Command::new("unshare").args(["-m", "bash", "-euo", "pipefail", "-c", &script]));
    assert!(
        out.contains(&format!("portrange_exporter-{VERSION}-1.x86_64\n")),
        "{out}"
    );
    assert!(
        out.contains("750 root:portrange_exporter /etc/portrange_exporter\n")
            && out.contains("640 root:portrange_exporter /etc/portrange_exporter/ranges.yml\n"),
        "{out}"
    );
    assert!(
        out.contains("ExecStart=/usr/bin/portrange_exporter $PORTRANGE_EXPORTER_ARGS\n"),
        "{out}"
    );
    let metrics = std::fs::read_to_string(work.join("metrics")).unwrap_or_default();
    let exporter_log = std::fs::read_to_string(&log).unwrap_or_default();
    let m = Metrics::parse(&metrics);
    assert_eq!(m.value("portrange_up"), 1.0, "{exporter_log}\n{metrics}");
    // The packaged ranges.yml was read (its path is in the start line).
    assert!(
        exporter_log.contains("config=/etc/portrange_exporter/ranges.yml"),
        "{exporter_log}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
