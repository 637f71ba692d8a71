//! Socket sampling: one snapshot of the host's TCP and UDP sockets whose
//! local port lies in a watched range. On Linux the snapshot comes from
//! NETLINK_SOCK_DIAG with an in-kernel port filter ([`netlink`]); elsewhere
//! from the `netstat2` crate ([`portable`]). Both return the same [`Socket`]
//! records, so everything downstream is platform-free.

use std::net::IpAddr;

use crate::ranges::{PortSet, Protocol};

#[cfg(target_os = "linux")]
pub mod netlink;
pub mod portable;

/// One socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    /// Kernel socket state (`TCP_ESTABLISHED` = 1 ... `TCP_NEW_SYN_RECV` = 12);
    /// UDP uses 1 for connected and 7 (`TCP_CLOSE`) for unconnected.
    pub state: u8,
    pub local: IpAddr,
    pub port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// The socket owner's uid (the creator's effective uid).
    pub uid: u32,
    /// The socket inode; 0 for sockets no process holds (TIME_WAIT, SYN_RECV).
    pub inode: u64,
    /// The owning pid when the backend knows it already (netstat2 does);
    /// `None` on Linux, where [`crate::attribution`] finds it.
    pub pid_hint: Option<u32>,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// The `state` label values, per protocol. Every one is exported (also at
/// zero), so the set is bounded and fixed.
pub const TCP_STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];
pub const UDP_STATES: [&str; 2] = ["unconn", "established"];

pub fn state_names(protocol: Protocol) -> &'static [&'static str] {
    match protocol {
        Protocol::Tcp => &TCP_STATES,
        Protocol::Udp => &UDP_STATES,
    }
}

impl Socket {
    /// A listener is a TCP socket in LISTEN or a UDP socket with no peer.
    pub fn is_listener(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == TCP_LISTEN,
            Protocol::Udp => self.remote_port == 0,
        }
    }

    /// Whether the socket holds its port (everything but TIME_WAIT).
    pub fn holds_port(&self) -> bool {
        !(self.protocol == Protocol::Tcp && self.state == TCP_TIME_WAIT)
    }

    /// The `state` label value; always one of [`state_names`].
    pub fn state_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Udp => {
                if self.state == TCP_ESTABLISHED {
                    "established"
                } else {
                    "unconn"
                }
            }
            Protocol::Tcp => match self.state {
                1 => "established",
                2 => "syn_sent",
                // 12 is TCP_NEW_SYN_RECV, the kernel's request-socket state.
                3 | 12 => "syn_recv",
                4 => "fin_wait1",
                5 => "fin_wait2",
                6 => "time_wait",
                8 => "close_wait",
                9 => "last_ack",
                10 => "listen",
                11 => "closing",
                _ => "close",
            },
        }
    }
}

/// What to sample: the watched ports per protocol (an empty set skips that
/// protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub tcp: PortSet,
    pub udp: PortSet,
}

impl Filter {
    pub fn from_config(cfg: &crate::config::Config) -> Filter {
        Filter {
            tcp: cfg.watched_ports(Protocol::Tcp),
            udp: cfg.watched_ports(Protocol::Udp),
        }
    }

    pub fn ports(&self, protocol: Protocol) -> &PortSet {
        match protocol {
            Protocol::Tcp => &self.tcp,
            Protocol::Udp => &self.udp,
        }
    }
}

/// Why a sample failed. The message names the dump and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("{dump} dump: sending the request: {source}")]
    Send {
        dump: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dump} dump: reading the reply: {source}")]
    Recv {
        dump: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dump} dump: no complete answer from the kernel within {seconds} s")]
    Timeout { dump: String, seconds: u64 },
    #[error("{dump} dump: the kernel refused it: {message}{hint}")]
    Kernel {
        dump: String,
        message: String,
        hint: &'static str,
    },
    #[error("{dump} dump: malformed reply: {source}")]
    Decode {
        dump: String,
        #[source]
        source: DecodeError,
    },
    #[error("socket sampling is not supported here: {0}")]
    Unsupported(String),
    #[error(
        "injected failure ({0} further samples will fail; set by PORTRANGE_EXPORTER_TEST_FAIL_SAMPLES)"
    )]
    Injected(u64),
}

/// A reply that does not follow the netlink / inet_diag layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{0} trailing bytes are too short for a netlink header")]
    ShortHeader(usize),
    #[error("message length {len} is invalid with {available} bytes left")]
    BadLength { len: usize, available: usize },
    #[error("inet_diag_msg payload of {0} bytes is shorter than 72")]
    ShortPayload(usize),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unexpected message type {0}")]
    MessageType(u16),
    #[error("the kernel sent more than {0} bytes before ending the dump")]
    TooLarge(usize),
}

/// Takes one snapshot of the sockets in `filter`'s ports.
#[cfg(target_os = "linux")]
pub fn sample(filter: &Filter, timeout: std::time::Duration) -> Result<Vec<Socket>, SampleError> {
    netlink::sample(filter, timeout)
}

/// Takes one snapshot of the sockets in `filter`'s ports.
#[cfg(not(target_os = "linux"))]
pub fn sample(filter: &Filter, _timeout: std::time::Duration) -> Result<Vec<Socket>, SampleError> {
    portable::sample(filter)
}
