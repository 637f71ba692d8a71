//! systemd socket activation (`--web.systemd-socket`), as `sd_listen_fds`
//! does it: when `LISTEN_PID` names this process, `LISTEN_FDS` sockets
//! start at fd 3. Each must be a listening stream socket; they are taken
//! once, marked close-on-exec, and handed over as TCP listeners. The
//! environment is left as it is (changing it while other threads may read
//! it is not sound); a second call finds the fds already taken.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why socket activation failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "no sockets from systemd: LISTEN_PID/LISTEN_FDS are not set (start it from a .socket unit, e.g. deploy/systemd/portrange_exporter.socket, or drop --web.systemd-socket)"
    )]
    NotActivated,
    #[error(
        "LISTEN_PID is {0:?}, not this process ({1}): the sockets were meant for another process"
    )]
    OtherProcess(String, u32),
    #[error("LISTEN_FDS is {0:?}: expected a count of sockets of at least 1")]
    BadCount(String),
    #[error("the systemd sockets were already taken")]
    AlreadyTaken,
    #[error(
        "fd {fd} from systemd is not a listening TCP socket ({why}); use ListenStream= in the .socket unit"
    )]
    NotAListener { fd: i32, why: String },
}

/// Takes the listening sockets systemd passed to this process.
pub fn listeners() -> Result<Vec<std::net::TcpListener>, ActivationError> {
    let pid = std::env::var("LISTEN_PID").map_err(|_| ActivationError::NotActivated)?;
    let fds = std::env::var("LISTEN_FDS").map_err(|_| ActivationError::NotActivated)?;
    let me = std::process::id();
    if pid.trim().parse::<u32>() != Ok(me) {
        return Err(ActivationError::OtherProcess(pid, me));
    }
    let n: i32 = match fds.trim().parse() {
        Ok(n) if (1..=1024).contains(&n) => n,
        _ => return Err(ActivationError::BadCount(fds)),
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ActivationError::AlreadyTaken);
    }
    // Check every fd before taking any, so that a refusal leaves them alone.
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: the fd is only borrowed for the checks below; LISTEN_PID
        // names this process, so systemd opened it for us, and nothing in
        // this process closes it meanwhile.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        check_listener(borrowed).map_err(|why| ActivationError::NotAListener { fd, why })?;
    }
    let mut out = Vec::with_capacity(n as usize);
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: as above; `TAKEN` guarantees each fd is owned once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
        let listener = std::net::TcpListener::from(owned);
        listener
            .set_nonblocking(true)
            .map_err(|e| ActivationError::NotAListener {
                fd,
                why: e.to_string(),
            })?;
        out.push(listener);
    }
    Ok(out)
}

fn check_listener(fd: BorrowedFd<'_>) -> Result<(), String> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err("not a socket".into());
    }
    if sockopt::socket_type(fd).map_err(|e| e.to_string())? != SocketType::STREAM {
        return Err("not a stream socket".into());
    }
    let family = rustix::net::getsockname(fd)
        .map_err(|e| format!("getsockname: {e}"))?
        .address_family();
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Err("not an IPv4 or IPv6 socket".into());
    }
    if !sockopt::socket_acceptconn(fd).map_err(|e| e.to_string())? {
        return Err("not listening".into());
    }
    Ok(())
}
