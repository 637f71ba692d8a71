//! The exporter's own `process_*` metrics on Windows, named as the Go
//! client's Windows collector names them: CPU time and start time from
//! `GetProcessTimes`, working set and private bytes from
//! `K32GetProcessMemoryInfo`, handles from `GetProcessHandleCount`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::ProcessStatus::{
    K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS, PROCESS_MEMORY_COUNTERS_EX,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessHandleCount, GetProcessTimes,
};

const FAMILIES: [(&str, &str, MetricType); 6] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        MetricType::COUNTER,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        MetricType::GAUGE,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        MetricType::GAUGE,
    ),
];

/// 100 ns units between 1601-01-01 and 1970-01-01.
const EPOCH_DIFFERENCE: u64 = 116_444_736_000_000_000;

/// Collects the process metrics of the exporter itself.
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
                .expect("a valid metric name")
            })
            .collect();
        ProcessCollector { descs }
    }
}

fn ft(t: FILETIME) -> u64 {
    (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime)
}

/// (cpu seconds, start time, working set, private bytes, handles).
fn read() -> Option<(f64, f64, f64, f64, f64)> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the current-process pseudo-handle is always valid; the
    // FILETIMEs are writable.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return None;
    }
    // SAFETY: PROCESS_MEMORY_COUNTERS_EX is plain data; zero is valid.
    let mut mem: PROCESS_MEMORY_COUNTERS_EX = unsafe { std::mem::zeroed() };
    mem.cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS_EX>() as u32;
    // SAFETY: `mem` is writable and `cb` its true size; the EX structure
    // begins with the plain one, as the API expects.
    let ok = unsafe {
        K32GetProcessMemoryInfo(
            GetCurrentProcess(),
            (&mut mem as *mut PROCESS_MEMORY_COUNTERS_EX).cast::<PROCESS_MEMORY_COUNTERS>(),
            mem.cb,
        )
    };
    if ok == 0 {
        return None;
    }
    let mut handles = 0u32;
    // SAFETY: the pseudo-handle is valid; `handles` is writable.
    unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut handles) };
    let cpu = (ft(kernel) + ft(user)) as f64 / 1e7;
    let start = ft(created).saturating_sub(EPOCH_DIFFERENCE) as f64 / 1e7;
    Some((
        cpu,
        start,
        mem.WorkingSetSize as f64,
        mem.PrivateUsage as f64,
        f64::from(handles),
    ))
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some((cpu, start, rss, private, handles)) = read() else {
            return Vec::new();
        };
        // The Go client reports 16 Mi handles as the per-process maximum.
        let values = [cpu, start, rss, private, handles, 16_777_216.0];
        FAMILIES
            .iter()
            .zip(values)
            .map(|((name, help, kind), value)| {
                let m = if *kind == MetricType::COUNTER {
                    let mut c = Counter::default();
                    c.set_value(value);
                    let mut m = Metric::default();
                    m.set_counter(c);
                    m
                } else {
                    let mut g = Gauge::default();
                    g.set_value(value);
                    Metric::from_gauge(g)
                };
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                f.set_metric(vec![m]);
                f
            })
            .collect()
    }
}
