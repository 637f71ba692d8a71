//! The portable platform, on top of the `netstat2` crate: the backend on
//! macOS and the BSDs, and the socket sampler the Windows platform builds
//! on (on Linux the tests use netstat2 directly as an independent oracle).
//! netstat2 reports owning pids itself, so sockets from here carry
//! `pid_hint`; process names are not resolved by this backend, so every
//! holder is unknown and every listener's `expected` is "unknown" (fail
//! closed). Signals: Ctrl-C stops; there is no reload signal.

use std::sync::Arc;
use std::time::Instant;

use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo, TcpState};

use super::{
    Attribution, EphemeralPorts, Filter, Platform, Sample, SampleError, Socket, TCP_CLOSE,
    TCP_ESTABLISHED, UserResolver,
};
use crate::ranges::Protocol;

/// The netstat2 platform.
#[derive(Default)]
pub struct PortablePlatform;

impl PortablePlatform {
    pub fn new() -> PortablePlatform {
        PortablePlatform
    }
}

impl Platform for PortablePlatform {
    fn sample(&mut self, filter: &Filter, _deadline: Instant) -> Result<Sample, SampleError> {
        Ok(Sample {
            sockets: sample(filter)?,
            ..Sample::default()
        })
    }

    fn attribute(&mut self, sample: &Sample, _deadline: Instant) -> Attribution {
        Attribution {
            holders: vec![None; sample.sockets.len()],
            ..Attribution::default()
        }
    }

    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
        Err("the ephemeral port range is not read on this platform".into())
    }

    fn user_resolver(&self) -> UserResolver {
        Arc::new(|uid| {
            Err(format!(
                "user {uid}: names are not resolved on this platform"
            ))
        })
    }

    fn missing_privileges(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// Process-wide setup: nothing on this platform.
pub fn init_process() {}

/// Raising the open-file limit: not applicable here.
pub fn raise_open_file_limit() {}

/// The open-file limit: not applicable here.
pub fn open_file_limit() -> Option<u64> {
    None
}

/// Completes on Ctrl-C.
pub async fn shutdown_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// No reload signal on this platform.
pub struct ReloadSignals;

pub fn reload_signals() -> ReloadSignals {
    ReloadSignals
}

impl ReloadSignals {
    pub async fn recv(&mut self) -> Option<&'static str> {
        std::future::pending().await
    }
}

/// Samples through netstat2 and keeps the sockets in `filter`'s ports.
pub fn sample(filter: &Filter) -> Result<Vec<Socket>, SampleError> {
    let mut protocols = ProtocolFlags::empty();
    if !filter.tcp.is_empty() {
        protocols |= ProtocolFlags::TCP;
    }
    if !filter.udp.is_empty() {
        protocols |= ProtocolFlags::UDP;
    }
    if protocols.is_empty() {
        return Ok(Vec::new());
    }
    let infos = netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        protocols,
    )
    .map_err(|e| SampleError::Unsupported(format!("netstat2: {e}")))?;
    Ok(infos
        .iter()
        .filter_map(convert)
        .filter(|s| filter.ports(s.protocol).contains(s.port))
        .collect())
}

/// Converts one netstat2 record.
pub fn convert(info: &netstat2::SocketInfo) -> Option<Socket> {
    let pid_hint = info.associated_pids.first().copied();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let (uid, inode) = (info.uid, u64::from(info.inode));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let (uid, inode) = (super::NO_UID, 0u64);
    Some(match &info.protocol_socket_info {
        ProtocolSocketInfo::Tcp(t) => Socket {
            protocol: Protocol::Tcp,
            state: tcp_state(&t.state),
            local: t.local_addr,
            port: t.local_port,
            remote: t.remote_addr,
            remote_port: t.remote_port,
            uid,
            inode,
            pid_hint,
            netns: 0,
        },
        ProtocolSocketInfo::Udp(u) => Socket {
            protocol: Protocol::Udp,
            // netstat2 reports no UDP peer; treat the socket as unconnected.
            state: TCP_CLOSE,
            local: u.local_addr,
            port: u.local_port,
            remote: if u.local_addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            remote_port: 0,
            uid,
            inode,
            pid_hint,
            netns: 0,
        },
    })
}

fn tcp_state(s: &TcpState) -> u8 {
    match s {
        TcpState::Established => TCP_ESTABLISHED,
        TcpState::SynSent => 2,
        TcpState::SynReceived => 3,
        TcpState::FinWait1 => 4,
        TcpState::FinWait2 => 5,
        TcpState::TimeWait => 6,
        TcpState::Closed => 7,
        TcpState::CloseWait => 8,
        TcpState::LastAck => 9,
        TcpState::Listen => 10,
        TcpState::Closing => 11,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::PortSet;

    #[test]
    fn finds_an_own_socket_with_its_pid() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let filter = Filter {
            tcp: PortSet::from_intervals(vec![(port, port)]),
            udp: PortSet::default(),
        };
        let got = sample(&filter).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].port, port);
        assert_eq!(got[0].state_name(), "listen");
        #[cfg(windows)]
        if crate::platform::windows::under_wine() {
            // Wine's socket tables give pid 0 for every socket.
            assert_eq!(got[0].pid_hint, Some(0));
            return;
        }
        assert_eq!(got[0].pid_hint, Some(std::process::id()));
    }
}
