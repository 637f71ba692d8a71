//! The Windows service: `portrange_exporter.exe --windows.service ...` is
//! what the installer registers. [`run`] hands the main thread to the
//! service control dispatcher; the service thread reports "running", runs
//! the exporter, and reports "stopped" with its exit code. A stop or
//! shutdown request completes [`super::shutdown_signal`] through [`STOP`]
//! (the HTTP server then drains and the process exits 0); a parameter
//! change (`sc control portrange_exporter paramchange`) reloads the
//! configuration through [`RELOAD`].

use std::ffi::OsString;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

/// The service's name, as the installer registers it.
pub const SERVICE_NAME: &str = "portrange_exporter";

/// Notified when the service control manager asks the service to stop.
pub static STOP: Notify = Notify::const_new();
/// Notified when the service control manager passes a parameter change.
pub static RELOAD: Notify = Notify::const_new();

type Body = Box<dyn FnOnce() -> i32 + Send>;
static BODY: Mutex<Option<Body>> = Mutex::new(None);
static EXIT: AtomicI32 = AtomicI32::new(1);

define_windows_service!(ffi_service_main, service_main);

/// Runs `body` (the exporter) as the service and returns its exit code;
/// fails when the process was not started by the service control manager.
pub fn run(body: impl FnOnce() -> i32 + Send + 'static) -> Result<i32, String> {
    *BODY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(body));
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
        format!(
            "--windows.service: cannot connect to the service control manager ({e}); \
             it is for the installed service only: run without it in a console"
        )
    })?;
    Ok(EXIT.load(Ordering::SeqCst))
}

fn status(state: ServiceState, accept: ServiceControlAccept, code: i32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: if code == 0 {
            ServiceExitCode::NO_ERROR
        } else {
            ServiceExitCode::ServiceSpecific(code as u32)
        },
        checkpoint: 0,
        wait_hint: Duration::from_secs(if state == ServiceState::StopPending {
            30
        } else {
            0
        }),
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            log::info!("the service control manager asks the service to stop");
            STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::ParamChange => {
            RELOAD.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(h) => h,
        Err(e) => {
            log::error!("cannot register the service control handler: {e}");
            return;
        }
    };
    let accept = ServiceControlAccept::STOP
        | ServiceControlAccept::SHUTDOWN
        | ServiceControlAccept::PARAM_CHANGE;
    if let Err(e) = handle.set_service_status(status(ServiceState::Running, accept, 0)) {
        log::error!("cannot report the service running: {e}");
    }
    let body = BODY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let code = body.map_or(1, |f| f());
    EXIT.store(code, Ordering::SeqCst);
    if let Err(e) = handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        code,
    )) {
        log::error!("cannot report the service stopped: {e}");
    }
}
