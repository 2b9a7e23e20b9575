//! The lab's error type: every failure names what was being done and carries the evidence
//! (the failed command with its output, the condition that timed out and what was last seen).

use std::path::PathBuf;
use std::time::Duration;

use crate::cmd::Run;

/// Why a lab step failed.
#[derive(thiserror::Error)]
pub enum LabError {
    /// A helper command exited non-zero, timed out or could not start.
    #[error("{what}: {run}")]
    Command { what: String, run: Box<Run> },
    /// A condition did not become true in time.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout { what: String, waited: Duration, last: String },
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A binary the lab needs has not been built or installed.
    #[error("{what} not found at {}: {hint}", .path.display())]
    Missing { what: String, path: PathBuf, hint: String },
    /// Output of a tool or a file could not be understood.
    #[error("cannot parse {what}: {why}")]
    Parse { what: String, why: String },
    /// The lab was asked for something it does not have or cannot do.
    #[error("{0}")]
    Invalid(String),
    /// A waited-for condition can no longer become true (e.g. the daemon exited); waits
    /// stop at once instead of running into their timeout.
    #[error("{0}")]
    Hopeless(String),
    /// SIGINT/SIGTERM arrived (see [`crate::signals`]); the lab is being torn down.
    #[error("interrupted by a signal")]
    Interrupted,
}

// Tests that return `Result<(), LabError>` print the error with `{:?}`: show the readable form.
impl std::fmt::Debug for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;

impl LabError {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { op, path, source }
    }

    /// A parse failure of `what`.
    pub fn parse(what: impl Into<String>, why: impl std::fmt::Display) -> LabError {
        LabError::Parse { what: what.into(), why: why.to_string() }
    }
}

impl Run {
    /// `Ok(self)` when the command succeeded, else [`LabError::Command`] naming `what`.
    pub fn check(self, what: &str) -> Result<Run> {
        if self.ok() {
            Ok(self)
        } else {
            Err(LabError::Command { what: what.to_string(), run: Box::new(self) })
        }
    }
}
