//! How each TCP port of the exporter's own network namespace was taken,
//! which sock_diag does not say: a BPF socket iterator (`iter/tcp`, Linux
//! 5.9+ with BTF at /sys/kernel/btf/vmlinux; source in
//! `port_sharing.bpf.c`, compiled by build.rs) writes per socket its
//! local port and its bind bucket's `fastreuse`/`fastreuseport`, which
//! are both -1 only for a bucket `connect()` made (the port is shared
//! across destinations) and 0 or 1 for one `bind()` made (gone for every
//! destination). Loaded through aya (no C library) on first use; loading
//! needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN). A failed load is
//! kept and reported on each call (no retry: privileges and kernels do
//! not change under a running process). The iterator walks the namespace
//! of the thread that creates its file: call [`PortWalker::walk`] from a
//! thread in the exporter's own namespace. The decoder ([`decode`]) is
//! pure and tested on byte arrays.
//!
//! Loading parses the kernel's whole BTF (5 MB of type records, about
//! 32 MiB once aya holds them), which doubled the exporter's peak memory.
//! So the exporter's binary loads in a child of itself ([`serve_loader`]:
//! `/proc/self/exe` with [`LOADER_ENV`] set, the same privileges), which
//! sends the program's fd back over a socket pair and exits; the exporter
//! keeps one iterator link and opens a file from it per walk, with two
//! `bpf(2)` calls aya does not expose for a program it did not load. A
//! program that is not the exporter's binary (a test) loads in its own
//! process. Tested by `tests/ephemeral.rs`
//! `the_iterator_is_loaded_outside_the_exporters_memory`.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::platform::PortSharing;

/// One record of the iterator (`struct record` in port_sharing.bpf.c).
const RECORD: usize = 8;

#[derive(Clone, Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "this binary was built without the BPF socket iterator (clang or libbpf-dev missing at build time)"
    )]
    NotBuilt,
    #[error("cannot load the BPF socket iterator: {0}")]
    Load(String),
    #[error("the BPF socket iterator failed: {0}")]
    Run(String),
    #[error("the BPF socket iterator wrote {0} bytes, not a whole number of {RECORD}-byte records")]
    Truncated(usize),
}

/// Decodes the iterator's records into the ports of namespace `netns` by
/// how they were taken. Sockets in no bind bucket (closed, or not bound
/// yet) are left out: their ports stay unknown.
pub fn decode(bytes: &[u8], netns: u64) -> Result<PortSharing, WalkError> {
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(WalkError::Truncated(bytes.len()));
    }
    let mut sharing = PortSharing::new(netns);
    for r in bytes.chunks_exact(RECORD) {
        let port = u16::from_ne_bytes([r[0], r[1]]);
        let bound = r[3] != 0;
        let (fastreuse, fastreuseport) = (r[4] as i8, r[5] as i8);
        if bound && port != 0 {
            sharing.insert(port, fastreuse == -1 && fastreuseport == -1);
        }
    }
    Ok(sharing)
}

/// The loaded iterator (its link, from which each walk opens a file), or
/// why it could not be loaded.
pub struct PortWalker {
    loaded: Option<Result<OwnedFd, WalkError>>,
}

impl Default for PortWalker {
    fn default() -> PortWalker {
        PortWalker::new()
    }
}

/// The program's name in the object.
#[cfg(portrange_bpf)]
const PROGRAM: &str = "port_sharing";

/// Set in the environment of the exporter's own loader process
/// ([`serve_loader`]).
pub const LOADER_ENV: &str = "PORTRANGE_EXPORTER_BPF_LOADER";

/// Whether this process is the exporter's binary (its `main` said so), so
/// that `/proc/self/exe` started with [`LOADER_ENV`] is the loader. A test
/// binary or another program using the crate loads in its own process.
static LOADER_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Called by the exporter's `main` (through `init_process`): the loader
/// may run as a child of this binary.
pub fn enable_loader_process() {
    LOADER_AVAILABLE.store(true, Ordering::Relaxed);
}

/// How long the loader process may take before it counts as failed.
const LOADER_TIMEOUT: Duration = Duration::from_secs(20);

impl PortWalker {
    /// Loads nothing yet: the first [`PortWalker::walk`] does.
    pub fn new() -> PortWalker {
        PortWalker { loaded: None }
    }

    /// Loads the program and attaches it as an iterator: in a child process
    /// of the exporter's binary where there is one (parsing the kernel's
    /// BTF, 5 MB of type records, took 32 MiB of the exporter's own peak
    /// memory: the child takes it and exits), else here.
    fn load() -> Result<OwnedFd, WalkError> {
        let program = if LOADER_AVAILABLE.load(Ordering::Relaxed) {
            match load_in_child() {
                Ok(fd) => fd,
                // A refusal (no CAP_BPF) would be the same here; anything
                // else (the binary gone, no process allowed) is tried here.
                Err(e @ WalkError::Load(_)) => return Err(e),
                Err(e) => {
                    log::debug!("the BPF loader process failed ({e}); loading in the exporter");
                    load_program()?
                }
            }
        } else {
            load_program()?
        };
        sys::link_create_iter(&program)
            .map_err(|e| WalkError::Load(format!("BPF_LINK_CREATE: {e}")))
    }

    /// Walks the TCP sockets of the calling thread's network namespace
    /// (whose id is `netns`).
    pub fn walk(&mut self, netns: u64) -> Result<PortSharing, WalkError> {
        let loaded = self.loaded.get_or_insert_with(PortWalker::load);
        let link = loaded.as_ref().map_err(|e| e.clone())?;
        // One file per walk (an iterator's file reads once), from one link.
        let mut file = sys::iter_create(link)
            .map(std::fs::File::from)
            .map_err(|e| WalkError::Run(format!("BPF_ITER_CREATE: {e}")))?;
        let mut bytes = Vec::with_capacity(64 * 1024);
        file.read_to_end(&mut bytes)
            .map_err(|e| WalkError::Run(e.to_string()))?;
        decode(&bytes, netns)
    }
}

/// Loads the program through aya (which reads the kernel's BTF to relocate
/// the fields the program reads and to find `bpf_iter_tcp`); returns its
/// fd, which keeps it loaded once aya's objects are dropped.
#[cfg(portrange_bpf)]
fn load_program() -> Result<OwnedFd, WalkError> {
    let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port_sharing.bpf.o"));
    let load = || -> Result<OwnedFd, String> {
        let btf = aya::Btf::from_sys_fs()
            .map_err(|e| format!("no kernel BTF at /sys/kernel/btf/vmlinux: {e}"))?;
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(&btf))
            .load(object)
            .map_err(|e| e.to_string())?;
        let program: &mut aya::programs::Iter = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| format!("no program {PROGRAM} in the object"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program.load("tcp", &btf).map_err(|e| {
            // The verifier's log or the errno: EPERM means no CAP_BPF and
            // CAP_PERFMON.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })?;
        let fd = program.fd().map_err(|e| e.to_string())?;
        fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
    };
    load().map_err(WalkError::Load)
}

#[cfg(not(portrange_bpf))]
fn load_program() -> Result<OwnedFd, WalkError> {
    Err(WalkError::NotBuilt)
}

/// Starts `/proc/self/exe` as the loader ([`serve_loader`]) and receives the
/// loaded program's fd over a socket pair, or the loader's error.
fn load_in_child() -> Result<OwnedFd, WalkError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let child_error = |e: String| WalkError::Run(format!("the loader process: {e}"));
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| child_error(e.to_string()))?;
    rustix::net::sockopt::set_socket_timeout(
        &ours,
        rustix::net::sockopt::Timeout::Recv,
        Some(LOADER_TIMEOUT),
    )
    .map_err(|e| child_error(e.to_string()))?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .env(LOADER_ENV, "1")
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| child_error(format!("cannot start /proc/self/exe: {e}")))?;
    let received = sys::receive(&ours);
    if received.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    match received.map_err(|e| child_error(e.to_string()))? {
        (_, Some(fd)) => Ok(fd),
        (text, None) if text.is_empty() => Err(child_error("it ended without an answer".into())),
        (text, None) => Err(WalkError::Load(String::from_utf8_lossy(&text).into_owned())),
    }
}

/// The loader process's work: loads the program and sends its fd (or the
/// error's text) over the socket the exporter gave it as stdin, then the
/// process exits. Returns the exit status.
pub fn serve_loader() -> i32 {
    // SAFETY: fd 0 is the socket the exporter passed as stdin and nothing
    // else in this short process uses or closes it.
    let socket = unsafe { BorrowedFd::borrow_raw(0) };
    let sent = match load_program() {
        Ok(fd) => sys::send(socket, b"ok", Some(fd.as_fd())),
        Err(WalkError::Load(e)) => sys::send(socket, e.as_bytes(), None),
        Err(e) => sys::send(socket, e.to_string().as_bytes(), None),
    };
    i32::from(sent.is_err())
}

/// The three system calls aya does not expose for a program loaded
/// elsewhere: creating an iterator link from a program fd, an iterator
/// file from a link, and passing an fd over a socket.
mod sys {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    /// `bpf(2)` commands and the attach type (include/uapi/linux/bpf.h).
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_ITER_CREATE: libc::c_long = 33;
    const BPF_TRACE_ITER: u32 = 28;

    /// `union bpf_attr` as `BPF_LINK_CREATE` reads it (no iterator info:
    /// the TCP iterator takes none).
    #[repr(C)]
    #[derive(Default)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        iter_info: u64,
        iter_info_len: u32,
        _pad: u32,
    }

    /// `union bpf_attr` as `BPF_ITER_CREATE` reads it.
    #[repr(C)]
    #[derive(Default)]
    struct IterCreate {
        link_fd: u32,
        flags: u32,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
        // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of
        // `union bpf_attr` for `cmd`, and its size is passed with it; the
        // kernel only reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const T,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: on success both commands return a new fd that nothing
        // else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    pub fn link_create_iter(program: &OwnedFd) -> std::io::Result<OwnedFd> {
        let attr = LinkCreate {
            prog_fd: program.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..LinkCreate::default()
        };
        bpf(BPF_LINK_CREATE, &attr)
    }

    pub fn iter_create(link: &OwnedFd) -> std::io::Result<OwnedFd> {
        let attr = IterCreate {
            link_fd: link.as_raw_fd() as u32,
            flags: 0,
        };
        bpf(BPF_ITER_CREATE, &attr)
    }

    /// Sends `text` and, when given, `fd` (SCM_RIGHTS) in one message.
    pub fn send(
        socket: BorrowedFd<'_>,
        text: &[u8],
        fd: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
        let fds = fd.as_slice();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        sendmsg(
            socket,
            &[std::io::IoSlice::new(text)],
            &mut control,
            SendFlags::empty(),
        )?;
        Ok(())
    }

    /// Receives one message: its text and the fd it carried, if any.
    pub fn receive(socket: &OwnedFd) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
        let mut text = vec![0u8; 64 * 1024];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut text)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        text.truncate(got.bytes);
        let mut fd = None;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received in fds {
                    fd.get_or_insert(received);
                }
            }
        }
        Ok((text, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Sharing;

    fn record(port: u16, state: u8, bound: bool, fastreuse: i8, fastreuseport: i8) -> Vec<u8> {
        let mut r = port.to_ne_bytes().to_vec();
        r.extend([state, u8::from(bound), fastreuse as u8, fastreuseport as u8]);
        r.extend(2u16.to_ne_bytes());
        r
    }

    #[test]
    fn buckets_connect_made_are_shared_those_bind_made_exclusive() {
        let mut bytes = Vec::new();
        // connect() alone: shared, TIME_WAIT too.
        bytes.extend(record(40000, 1, true, -1, -1));
        bytes.extend(record(40001, 6, true, -1, -1));
        // bind((addr, 0)) then connect(); with SO_REUSEADDR; a listener.
        bytes.extend(record(40002, 1, true, 0, 0));
        bytes.extend(record(40003, 1, true, 1, 0));
        bytes.extend(record(40004, 10, true, 0, -1));
        // A socket in no bucket: nothing known.
        bytes.extend(record(40005, 7, false, 0, 0));
        // Port 40006 seen both ways (two buckets, one per VRF): exclusive.
        bytes.extend(record(40006, 1, true, -1, -1));
        bytes.extend(record(40006, 1, true, 0, 0));
        let sh = decode(&bytes, 7).unwrap();
        assert_eq!(sh.netns, 7);
        let of: Vec<Sharing> = (40000..=40007).map(|p| sh.of(p)).collect();
        use Sharing::*;
        assert_eq!(
            of,
            vec![
                Shared, Shared, Exclusive, Exclusive, Exclusive, Unknown, Exclusive, Unknown
            ]
        );
    }

    #[test]
    fn a_partial_record_is_an_error_not_a_guess() {
        let mut bytes = record(40000, 1, true, -1, -1);
        bytes.push(0);
        assert!(matches!(decode(&bytes, 0), Err(WalkError::Truncated(9))));
        assert_eq!(decode(&[], 0).unwrap().of(40000), Sharing::Unknown);
    }
}
