//! Records the git revision and the rustc version for
//! `portrange_exporter_build_info`, and the branch, build date and
//! platform and target for `--version` (Prometheus style). `PORTRANGE_REVISION`,
//! `PORTRANGE_BRANCH` and `SOURCE_DATE_EPOCH` override what git and the
//! clock say, for reproducible builds. On Linux targets it also compiles
//! the BPF socket iterator (src/platform/linux/port_sharing.bpf.c) with
//! clang (`CLANG` names another one) and libbpf's headers into
//! `$OUT_DIR/port_sharing.bpf.o`, and sets `cfg(portrange_bpf)`; without
//! clang or the headers the build goes on with a warning and the binary
//! counts the ephemeral headroom conservatively (it says so at run time),
//! unless `PORTRANGE_BPF=required` (set by deploy/release and .ci/run)
//! makes that an error.

use std::process::Command;

/// Compiles the BPF object for Linux targets; `Err` says why not.
fn bpf_object() -> Result<(), String> {
    let source = "src/platform/linux/port_sharing.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=PORTRANGE_BPF");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?)
        .join("port_sharing.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The object's byte order is the target's (records are read as native).
    let bpf = match std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", bpf, "-Wall", "-c", source, "-o"])
        .arg(&out)
        .output()
        .map_err(|e| {
            format!("cannot run {clang} (Debian: apt-get install clang libbpf-dev): {e}")
        })?;
    if !output.status.success() {
        return Err(format!(
            "{clang} failed on {source} (libbpf's headers come with Debian's libbpf-dev): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(portrange_bpf)");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        match bpf_object() {
            Ok(()) => println!("cargo:rustc-cfg=portrange_bpf"),
            Err(e) if std::env::var("PORTRANGE_BPF").as_deref() == Ok("required") => {
                panic!("PORTRANGE_BPF=required, but the BPF object was not built: {e}")
            }
            Err(e) => println!(
                "cargo:warning=built without the BPF socket iterator, the ephemeral TCP headroom will be counted conservatively: {e}"
            ),
        }
    }
    let revision = std::env::var("PORTRANGE_REVISION").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    println!(
        "cargo:rustc-env=PORTRANGE_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTRANGE_RUSTC_VERSION={version}");

    let branch = std::env::var("PORTRANGE_BRANCH").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--abbrev-ref", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    println!(
        "cargo:rustc-env=PORTRANGE_BRANCH={}",
        branch.unwrap_or_else(|| "unknown".into())
    );
    // As Prometheus prints it: 20261126-09:30:00 (UTC).
    let mut date = Command::new("date");
    date.arg("-u");
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        date.arg("-d").arg(format!("@{}", epoch.trim()));
    }
    let built = date
        .arg("+%Y%m%d-%H:%M:%S")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTRANGE_BUILD_DATE={built}");
    // Go's names, which Prometheus users read: linux/amd64, linux/arm64.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_else(|_| "unknown".into());
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "amd64".to_string(),
        Ok("aarch64") => "arm64".to_string(),
        Ok("x86") => "386".to_string(),
        Ok(a) => a.to_string(),
        Err(_) => "unknown".to_string(),
    };
    println!("cargo:rustc-env=PORTRANGE_PLATFORM={os}/{arch}");
    // The Rust target, which tells a static (musl) build from a glibc one.
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=PORTRANGE_TARGET={target}");
    println!("cargo:rerun-if-env-changed=PORTRANGE_BRANCH");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=PORTRANGE_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
