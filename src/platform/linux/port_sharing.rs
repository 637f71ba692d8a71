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

use std::io::Read;

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

/// The loaded iterator, or why it could not be loaded.
pub struct PortWalker {
    loaded: Option<Result<aya::Ebpf, WalkError>>,
}

impl Default for PortWalker {
    fn default() -> PortWalker {
        PortWalker::new()
    }
}

/// The program's name in the object.
#[cfg(portrange_bpf)]
const PROGRAM: &str = "port_sharing";

impl PortWalker {
    /// Loads nothing yet: the first [`PortWalker::walk`] does.
    pub fn new() -> PortWalker {
        PortWalker { loaded: None }
    }

    #[cfg(portrange_bpf)]
    fn load() -> Result<aya::Ebpf, WalkError> {
        Self::try_load().map_err(WalkError::Load)
    }

    #[cfg(portrange_bpf)]
    fn try_load() -> Result<aya::Ebpf, String> {
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port_sharing.bpf.o"));
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
        Ok(ebpf)
    }

    #[cfg(not(portrange_bpf))]
    fn load() -> Result<aya::Ebpf, WalkError> {
        Err(WalkError::NotBuilt)
    }

    /// Walks the TCP sockets of the calling thread's network namespace
    /// (whose id is `netns`).
    pub fn walk(&mut self, netns: u64) -> Result<PortSharing, WalkError> {
        let loaded = self.loaded.get_or_insert_with(PortWalker::load);
        let ebpf = loaded.as_mut().map_err(|e| e.clone())?;
        let bytes = Self::read(ebpf).map_err(WalkError::Run)?;
        decode(&bytes, netns)
    }

    #[cfg(portrange_bpf)]
    fn read(ebpf: &mut aya::Ebpf) -> Result<Vec<u8>, String> {
        let program: &mut aya::programs::Iter = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| format!("no program {PROGRAM}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        // One link and one file per walk: an iterator's file reads once.
        let id = program.attach().map_err(|e| e.to_string())?;
        let link = program.take_link(id).map_err(|e| e.to_string())?;
        let mut file = link.into_file().map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(64 * 1024);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    #[cfg(not(portrange_bpf))]
    fn read(_ebpf: &mut aya::Ebpf) -> Result<Vec<u8>, String> {
        Err(WalkError::NotBuilt.to_string())
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
