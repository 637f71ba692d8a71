//! The traffic counters' side of the platform boundary
//! (`--collector.traffic`): a [`TrafficTable`] installs counting rules for
//! a list of [`TrafficRule`]s (one per watched range and protocol), reads
//! them back as [`RuleReading`]s and removes them. On Linux it is one
//! nftables table of the exporter's own, spoken to over netlink (built by
//! [`crate::platform::traffic_table`]); elsewhere there is none
//! ([`Unavailable`]): Windows has no per-port packet counters a service
//! can read without a filter driver (the Windows Filtering Platform needs
//! a callout driver to count, and its audit events log every connection,
//! remote addresses included), so the collector reports itself
//! unavailable there. The platform-free logic (which rules, counters into
//! the report, offsets across rebuilds) is [`crate::traffic`].

use std::time::Instant;

use crate::ranges::Protocol;

/// What one rule counts: packets to `intervals` of `protocol`, under the
/// name `range` (a configured range name, `[a-z0-9_]+`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRule {
    pub range: String,
    pub protocol: Protocol,
    pub intervals: Vec<(u16, u16)>,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// One rule's counters as read: everything received for the range, what
/// of it no socket could take (`closed`), TCP connection attempts (SYN
/// without ACK) of both, and the closed ports seen in the last
/// [`PORT_WINDOW_SECS`] with their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleReading {
    pub all: Counter,
    pub closed: Counter,
    pub attempts_all: u64,
    pub attempts_closed: u64,
    /// Closed ports that received traffic, each with what it received
    /// since it was first seen, at most [`PORT_WINDOW_SECS`] ago.
    pub closed_ports: Vec<(u16, Counter)>,
}

/// At most this many closed ports are recorded per range and protocol
/// and window; a scan of more records the first ones seen.
pub const PORT_SET_SIZE: usize = 4096;

/// How long a closed port stays in the per-port set after its first
/// packet: the per-port counts cover at most this window.
pub const PORT_WINDOW_SECS: u64 = 60;

/// Why the traffic counters cannot be installed or read. The message
/// names the table, and the capability when one is missing.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrafficError {
    #[error(
        "the nftables table inet {table} cannot be {action}: missing CAP_NET_ADMIN in the exporter's network namespace ({detail})"
    )]
    Permission {
        table: String,
        action: &'static str,
        detail: String,
    },
    #[error(
        "the nftables table inet {table} is held by another process (netlink port id {owner}): is another exporter with the same listen port running in this network namespace?"
    )]
    Held { table: String, owner: u32 },
    #[error("the nftables table inet {table} is not installed")]
    NotInstalled { table: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("the nftables table inet {table}: {action}: {detail}")]
    Failed {
        table: String,
        action: &'static str,
        detail: String,
    },
}

impl TrafficError {
    /// Whether the error is a missing capability (logged once, by name).
    pub fn is_permission(&self) -> bool {
        matches!(self, TrafficError::Permission { .. })
    }
}

/// The counting rules, installed by the exporter. No call waits past
/// its `deadline` (the collection's).
pub trait TrafficTable: Send {
    /// Installs `rules`, replacing any table of ours (a stale one from a
    /// crashed run, or the previous rules on reload). The table lasts as
    /// long as this value: dropping it (or any exit of the process)
    /// removes it.
    fn install(&mut self, rules: &[TrafficRule], deadline: Instant) -> Result<(), TrafficError>;

    /// Reads the counters of `rules` (index for index), as installed by
    /// this process or another one (`check` reads the exporter's).
    fn read(
        &mut self,
        rules: &[TrafficRule],
        deadline: Instant,
    ) -> Result<Vec<RuleReading>, TrafficError>;

    /// Removes the table; no table is not an error.
    fn remove(&mut self, deadline: Instant) -> Result<(), TrafficError>;
}

/// Where there are no traffic counters.
pub struct Unavailable;

/// Why [`Unavailable`] is.
pub const UNAVAILABLE: &str = "traffic counters need nftables (Linux); this platform has none a service can read without a filter driver";

impl TrafficTable for Unavailable {
    fn install(&mut self, _rules: &[TrafficRule], _: Instant) -> Result<(), TrafficError> {
        Err(TrafficError::Unavailable(UNAVAILABLE.into()))
    }
    fn read(
        &mut self,
        _rules: &[TrafficRule],
        _: Instant,
    ) -> Result<Vec<RuleReading>, TrafficError> {
        Err(TrafficError::Unavailable(UNAVAILABLE.into()))
    }
    fn remove(&mut self, _: Instant) -> Result<(), TrafficError> {
        Ok(())
    }
}
