//! Work that may block (NSS, a `/proc` scan of thousands of processes) run
//! on a thread of its own, so that the caller waits for it only until a
//! deadline: the one helper behind the user-name lookups ([`crate::users`]),
//! the allowlist user check at load ([`crate::config`]) and the background
//! `/proc` scan of attribution. A [`Job`] is the running thread's output
//! channel: the caller takes what arrived by its deadline and keeps the job
//! to take the rest later; it never joins a thread that hangs. Three
//! outcomes are told apart, because each means something else to an
//! operator: the thread could not be started ([`Late::Spawn`], an OS
//! resource limit), it did not answer in time ([`Late::TimedOut`]), or it
//! ended without answering ([`Late::Ended`], a panic in the work).
//! Platform-free: only `std` threads and channels.

use std::sync::mpsc;
use std::time::Instant;

/// A thread's output, one value or a stream of them.
pub struct Job<T> {
    name: String,
    rx: mpsc::Receiver<T>,
}

impl<T> std::fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Job({:?})", self.name)
    }
}

/// Why no value came back by the deadline.
#[derive(thiserror::Error)]
pub enum Late<T> {
    #[error("cannot start a {name} thread: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// Still running: take its answer later from the job.
    #[error("the {} thread did not answer in time", .0.name)]
    TimedOut(Job<T>),
    #[error("the {0} thread ended without an answer (it panicked)")]
    Ended(String),
}

impl<T> std::fmt::Debug for Late<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// What one wait on a job found.
#[derive(Debug)]
pub enum Next<T> {
    Value(T),
    /// Nothing yet: the thread still runs.
    Pending,
    /// The thread has ended and everything it sent was taken.
    Ended,
}

/// Starts `work` on a thread named `name`; it sends its values on the
/// sender it is given and ends when done (a send that fails means the
/// caller gave up: stop).
pub fn spawn_stream<T, F>(name: &str, work: F) -> Result<Job<T>, Late<T>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) + Send + 'static,
{
    spawn_stream_on(std::thread::Builder::new(), name, work)
}

/// Starts `work` on a thread named `name`; its return value is the job's
/// one value.
pub fn spawn<T, F>(name: &str, work: F) -> Result<Job<T>, Late<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_stream(name, move |tx| {
        let _ = tx.send(work());
    })
}

/// Runs `work` on a thread named `name` and returns its value, or why
/// there is none by `deadline`; a thread still running is left to run and
/// handed back in [`Late::TimedOut`].
pub fn run<T, F>(name: &str, deadline: Instant, work: F) -> Result<T, Late<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn(name, work)?.finish(deadline)
}

pub(crate) fn spawn_stream_on<T, F>(
    builder: std::thread::Builder,
    name: &str,
    work: F,
) -> Result<Job<T>, Late<T>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    match builder.name(name.to_string()).spawn(move || work(tx)) {
        Ok(_) => Ok(Job {
            name: name.to_string(),
            rx,
        }),
        Err(source) => Err(Late::Spawn {
            name: name.to_string(),
            source,
        }),
    }
}

impl<T> Job<T> {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next value, waiting for it no later than `deadline`.
    pub fn next_until(&self, deadline: Instant) -> Next<T> {
        match self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(v) => Next::Value(v),
            Err(mpsc::RecvTimeoutError::Timeout) => Next::Pending,
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Ended,
        }
    }

    /// The next value if one is there now.
    pub fn try_next(&self) -> Next<T> {
        match self.rx.try_recv() {
            Ok(v) => Next::Value(v),
            Err(mpsc::TryRecvError::Empty) => Next::Pending,
            Err(mpsc::TryRecvError::Disconnected) => Next::Ended,
        }
    }

    /// The one value of the job, by `deadline`; a job still running comes
    /// back in [`Late::TimedOut`].
    pub fn finish(self, deadline: Instant) -> Result<T, Late<T>> {
        match self.next_until(deadline) {
            Next::Value(v) => Ok(v),
            Next::Pending => Err(Late::TimedOut(self)),
            Next::Ended => Err(Late::Ended(self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn returns_the_value() {
        assert_eq!(run("t-value", soon(), || 6 * 7).unwrap(), 42);
    }

    #[test]
    fn a_stream_arrives_in_order_then_ends() {
        let job = spawn_stream("t-stream", |tx| {
            for i in 0..3 {
                tx.send(i).unwrap();
            }
        })
        .unwrap();
        for want in 0..3 {
            assert!(matches!(job.next_until(soon()), Next::Value(v) if v == want));
        }
        assert!(matches!(job.next_until(soon()), Next::Ended));
    }

    #[test]
    fn times_out_at_the_deadline_without_waiting_for_the_thread() {
        let (release, gate) = mpsc::channel::<()>();
        let started = Instant::now();
        let late = run(
            "t-hang",
            Instant::now() + Duration::from_millis(100),
            move || {
                let _ = gate.recv();
                "late"
            },
        )
        .unwrap_err();
        let waited = started.elapsed();
        // The thread is still blocked on the gate: the call came back at
        // the deadline, not when the work ended.
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(late.to_string(), "the t-hang thread did not answer in time");
        let Late::TimedOut(job) = late else {
            panic!("{late}")
        };
        assert!(matches!(job.try_next(), Next::Pending));
        // Its answer is kept for a later caller.
        release.send(()).unwrap();
        assert_eq!(job.finish(soon()).unwrap(), "late");
    }

    #[test]
    fn a_panic_in_the_work_is_an_end_without_an_answer() {
        let e = run("t-panic", soon(), || -> u32 { panic!("boom") }).unwrap_err();
        assert!(matches!(e, Late::Ended(_)));
        assert_eq!(
            e.to_string(),
            "the t-panic thread ended without an answer (it panicked)"
        );
    }

    #[test]
    fn reports_a_spawn_failure_as_such() {
        // A stack larger than any address space: the OS refuses the thread.
        let e = spawn_stream_on(
            std::thread::Builder::new().stack_size(1 << 60),
            "t-spawn",
            |tx: mpsc::Sender<u32>| {
                let _ = tx.send(1);
            },
        )
        .unwrap_err();
        let Late::Spawn { ref source, .. } = e else {
            panic!("{e}")
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot start a t-spawn thread: "),
            "{shown}"
        );
        assert!(shown.ends_with(&source.to_string()), "{shown}");
    }
}
