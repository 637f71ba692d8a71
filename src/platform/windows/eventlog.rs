//! Log lines to the Windows event log (Application log, source
//! `portrange_exporter`), where the service writes. The installer registers
//! the source with `%SystemRoot%\System32\EventCreate.exe` as its message
//! file (as windows_exporter does), whose message for event ids 1 to 1000
//! is the text itself: id 1 is information, 2 a warning, 3 an error.

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::EventLog::{
    EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE, RegisterEventSourceW,
    ReportEventW,
};

use super::wide::to_wide;

/// The event source name.
pub const SOURCE: &str = "portrange_exporter";

/// An open event source.
pub struct EventLog(HANDLE);

// SAFETY: an event source handle may be used from any thread; ReportEventW
// is thread-safe.
unsafe impl Send for EventLog {}
// SAFETY: as above; the handle is never mutated after opening.
unsafe impl Sync for EventLog {}

impl EventLog {
    /// Opens the source on this machine.
    pub fn open() -> Result<EventLog, std::io::Error> {
        let name = to_wide(SOURCE);
        // SAFETY: `name` is NUL-terminated; a null server is this machine.
        let h = unsafe { RegisterEventSourceW(std::ptr::null(), name.as_ptr()) };
        if h.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventLog(h))
    }

    /// Writes one event.
    pub fn write(&self, level: log::Level, message: &str) {
        let (kind, id) = match level {
            log::Level::Error => (EVENTLOG_ERROR_TYPE, 3),
            log::Level::Warn => (EVENTLOG_WARNING_TYPE, 2),
            _ => (EVENTLOG_INFORMATION_TYPE, 1),
        };
        // An event string is limited to 31,839 characters.
        let text: String = message.chars().take(31_000).collect();
        let wide = to_wide(&text);
        let strings = [wide.as_ptr()];
        // SAFETY: the handle is open; `strings` holds one NUL-terminated
        // string that outlives the call; no binary data is passed.
        unsafe {
            ReportEventW(
                self.0,
                kind,
                0,
                id,
                std::ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                std::ptr::null(),
            )
        };
    }
}
