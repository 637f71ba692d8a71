//! The sysctls (under `/proc/sys/net`) that decide which ports of a range outgoing
//! connections can take: `net.ipv4.ip_local_port_range` (the ephemeral
//! range, which also governs IPv6) minus `net.ipv4.ip_local_reserved_ports`.
//! Both are per network namespace and read through `--path.procfs`.

use std::path::{Path, PathBuf};

use crate::ranges::{PortError, PortSet};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {text:?}: {reason}")]
    Parse {
        path: PathBuf,
        text: String,
        reason: String,
    },
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(text: &str) -> Result<PortSet, String> {
    let mut it = text.split_whitespace();
    let (Some(lo), Some(hi), None) = (it.next(), it.next(), it.next()) else {
        return Err("expected two numbers".into());
    };
    let lo: u16 = lo.parse().map_err(|e| format!("{lo}: {e}"))?;
    let hi: u16 = hi.parse().map_err(|e| format!("{hi}: {e}"))?;
    if lo > hi {
        return Err(PortError::Reversed(lo, hi).to_string());
    }
    Ok(PortSet::from_intervals(vec![(lo, hi)]))
}

/// The ports outgoing connections can be given: the ephemeral range minus
/// the reserved ports.
pub fn ephemeral_ports(procfs: &Path) -> Result<PortSet, SysctlError> {
    let range_path = procfs.join("sys/net/ipv4/ip_local_port_range");
    let reserved_path = procfs.join("sys/net/ipv4/ip_local_reserved_ports");
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| SysctlError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let text = read(&range_path)?;
    let range = parse_port_range(&text).map_err(|reason| SysctlError::Parse {
        path: range_path.clone(),
        text: text.clone(),
        reason,
    })?;
    let reserved_text = read(&reserved_path)?;
    let reserved = PortSet::parse_kernel_list(&reserved_text).map_err(|e| SysctlError::Parse {
        path: reserved_path.clone(),
        text: reserved_text.clone(),
        reason: e.to_string(),
    })?;
    Ok(range.difference(&reserved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_range() {
        assert_eq!(parse_port_range("32768\t60999\n").unwrap().len(), 28232);
        assert!(parse_port_range("5 3").is_err());
        assert!(parse_port_range("5").is_err());
        assert!(parse_port_range("1 2 3").is_err());
    }

    #[test]
    fn fake_tree() {
        let root = std::env::temp_dir().join(format!("portrange-kernel-{}", std::process::id()));
        let dir = root.join("sys/net/ipv4");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ip_local_port_range"), "3300\t60999\n").unwrap();
        std::fs::write(dir.join("ip_local_reserved_ports"), "3310-3319\n").unwrap();
        let eph = ephemeral_ports(&root).unwrap();
        let framehawk = PortSet::from_intervals(vec![(3224, 3324)]);
        assert_eq!(framehawk.intersect(&eph).len(), 25 - 10);
        std::fs::write(dir.join("ip_local_reserved_ports"), "junk\n").unwrap();
        let e = ephemeral_ports(&root).unwrap_err().to_string();
        assert!(
            e.contains("ip_local_reserved_ports") && e.contains("junk"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn live_host_is_readable() {
        let eph = ephemeral_ports(Path::new("/proc")).unwrap();
        assert!(!eph.is_empty());
    }
}
