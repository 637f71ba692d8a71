//! Windows behind the platform boundary. Sockets come from the IP Helper
//! socket tables with their owning pids (`GetExtendedTcpTable` and
//! `GetExtendedUdpTable` through the `netstat2` crate, shared with
//! [`super::portable`]); holders from the processes themselves
//! ([`attribution`]: image name and path, token user and SID; pid 4 is the
//! kernel); the dynamic and excluded port ranges from `netsh` ([`netsh`]);
//! the service control manager ([`service`]) and the event log
//! ([`eventlog`]) when run as a service; `process_*` metrics from the
//! process's own counters ([`process_metrics`]). Sockets carry no uid here
//! ([`super::NO_UID`]): the user is the owning process's. There is no
//! reload signal; a service parameter change (`sc control
//! portrange_exporter paramchange`) reloads instead. In Linux test builds
//! only [`netsh`]'s parsers are compiled.

pub mod netsh;

#[cfg(windows)]
pub mod attribution;
#[cfg(windows)]
pub mod eventlog;
#[cfg(windows)]
pub mod process_metrics;
#[cfg(windows)]
pub mod service;
#[cfg(windows)]
mod wide;

#[cfg(windows)]
pub use host::*;

#[cfg(windows)]
mod host {
    use std::sync::Arc;
    use std::time::Instant;

    use super::{attribution, netsh, service};
    use crate::platform::{
        Attribution, EphemeralPorts, Filter, Platform, Sample, SampleError, TCP_TIME_WAIT,
        UserLookup, UserResolver, portable,
    };
    use crate::ranges::{PortSet, Protocol};

    /// The Windows platform: the owner cache and the port settings.
    pub struct WindowsPlatform {
        attributor: attribution::Attributor,
        settings: netsh::Settings,
        missing: Vec<&'static str>,
        /// When the last sample was taken (FILETIME), so that a process
        /// created after it is never taken for a socket's owner.
        sampled_at: u64,
    }

    impl Default for WindowsPlatform {
        fn default() -> Self {
            Self::new()
        }
    }

    impl WindowsPlatform {
        pub fn new() -> WindowsPlatform {
            WindowsPlatform {
                attributor: attribution::Attributor::new(),
                settings: netsh::Settings::default(),
                missing: attribution::missing_privileges(),
                sampled_at: 0,
            }
        }
    }

    impl Platform for WindowsPlatform {
        fn sample(&mut self, filter: &Filter, _deadline: Instant) -> Result<Sample, SampleError> {
            self.sampled_at = attribution::now_filetime();
            let mut sockets = portable::sample(filter)?;
            for s in &mut sockets {
                // TIME_WAIT rows carry pid 0: no process holds them.
                if s.protocol == Protocol::Tcp && s.state == TCP_TIME_WAIT {
                    s.pid_hint = None;
                }
            }
            Ok(Sample {
                sockets,
                ..Sample::default()
            })
        }

        fn attribute(&mut self, sample: &Sample, deadline: Instant) -> Attribution {
            self.attributor
                .attribute(&sample.sockets, self.sampled_at, deadline)
        }

        fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
            Ok(EphemeralPorts {
                tcp: self.settings.ephemeral(Protocol::Tcp)?,
                udp: self.settings.ephemeral(Protocol::Udp)?,
            })
        }

        /// Only the ranges a service reserved: an administered exclusion
        /// can still be bound explicitly.
        fn excluded_ports(&self, protocol: Protocol) -> Result<Option<PortSet>, String> {
            self.settings.excluded(protocol).map(|x| Some(x.reserved))
        }

        fn user_resolver(&self) -> UserResolver {
            // Sockets carry no uid here; owners carry their account.
            Arc::new(|_| Ok(UserLookup::NoEntry))
        }

        fn missing_privileges(&self) -> Vec<&'static str> {
            self.missing.clone()
        }
    }

    /// Process-wide setup: nothing on Windows.
    pub fn init_process() {}

    /// Whether this is Wine rather than Windows (its ntdll exports
    /// `wine_get_version`). Wine's socket tables give every socket pid 0.
    pub fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        let ntdll = super::wide::to_wide("ntdll.dll");
        // SAFETY: the name is NUL-terminated; ntdll is always loaded, and
        // the handle of a loaded module needs no release.
        let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
        if module.is_null() {
            return false;
        }
        // SAFETY: the module handle is valid and the symbol name is a
        // NUL-terminated byte string.
        unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }.is_some()
    }

    /// Windows has no per-process open-file limit to raise.
    pub fn raise_open_file_limit() {}

    /// Windows has no per-process open-file limit to respect.
    pub fn open_file_limit() -> Option<u64> {
        None
    }

    /// Completes on Ctrl-C, Ctrl-Break, the console closing, system
    /// shutdown, or a stop request from the service control manager.
    pub async fn shutdown_signal() -> &'static str {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        let mut brk = ctrl_break().ok();
        let mut close = ctrl_close().ok();
        let mut shutdown = ctrl_shutdown().ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = async { match brk.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => "Ctrl-Break",
            _ = async { match close.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => "the console closing",
            _ = async { match shutdown.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => "system shutdown",
            _ = service::STOP.notified() => "a stop request from the service control manager",
        }
    }

    /// Reload requests: a service parameter change.
    pub struct ReloadSignals;

    /// Starts listening for reload requests.
    pub fn reload_signals() -> ReloadSignals {
        ReloadSignals
    }

    impl ReloadSignals {
        /// Waits for the next request.
        pub async fn recv(&mut self) -> Option<&'static str> {
            service::RELOAD.notified().await;
            Some("a service parameter change")
        }
    }
}
