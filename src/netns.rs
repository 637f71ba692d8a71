//! The `netns` collector's part of the report (`--collector.netns`): the
//! network namespaces that have series, and how many were found but not
//! sampled. Plain data: [`crate::collect`] builds it, the projections
//! render it.

/// A network namespace that has series (`portrange_netns_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsInfo {
    /// The `netns` label value: `host`, or the namespace's id in decimal.
    pub label: String,
    pub name: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

/// The namespaces of a per-namespace collection (the `netns` collector).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsReport {
    /// Host first, then by id.
    pub namespaces: Vec<NetnsInfo>,
    /// Namespaces found but not sampled: what they hold is unknown.
    pub unsampled: u32,
}
