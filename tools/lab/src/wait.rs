//! Waiting on conditions (never on bare sleeps), with a deadline and interruption by signals.

use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// Polls `probe` every `every` until it returns `Ok(Some(v))`, giving up after `timeout`.
///
/// `probe` returns `Ok(None)` (or `Err`) while the condition is false; the last error or the
/// `describe`d state is reported in the timeout so a failure shows what was actually there.
/// A probe returning [`LabError::Hopeless`] or [`LabError::Interrupted`] ends the wait at once.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if crate::signals::interrupted() {
            return Err(LabError::Interrupted);
        }
        let last = match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::from("condition false"),
            Err(e @ (LabError::Interrupted | LabError::Hopeless(_))) => return Err(e),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout { what: what.to_string(), waited: start.elapsed(), last });
        }
        std::thread::sleep(every);
    }
}

/// [`until`] for a boolean condition, polled every 200 ms.
pub fn until_true(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<bool>) -> Result<()> {
    until(what, timeout, Duration::from_millis(200), || Ok(probe()?.then_some(())))
}

/// Sleeps for `d` in small steps, returning early with [`LabError::Interrupted`] on a signal.
/// Only for scenario timing that is itself the point (e.g. "etcd down for 30 s").
pub fn hold(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if crate::signals::interrupted() {
            return Err(LabError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())));
    }
    Ok(())
}
