//! Background processes (etcd, flanneld, iperf3 servers) run inside a lab namespace, logged to
//! a file, and ended by their own PID: SIGTERM, then SIGKILL if they linger. Dropping a
//! [`Daemon`] ends it, so a panicking test leaves no process behind.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// How long a SIGTERMed daemon gets before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A process started by the lab; ended by PID on [`Daemon::stop`], [`Daemon::kill`] or drop.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Daemon {
    /// Starts `argv` inside namespace `netns` (via `ip netns exec`, which execs in place, so the
    /// PID is the program's own), stdout and stderr appended to `log`, `env` added.
    ///
    /// The process gets its own process group so a terminal Ctrl-C reaches only the lab, which
    /// then stops its daemons in order.
    pub fn spawn(
        label: &str,
        netns: &str,
        argv: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Daemon> {
        let out =
            File::options().create(true).append(true).open(log).map_err(LabError::io("open log", log))?;
        let err = out.try_clone().map_err(LabError::io("dup log", log))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).args(argv).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| LabError::Io {
            op: "spawn",
            path: PathBuf::from(argv.first().copied().unwrap_or("")),
            source: e,
        })?;
        let pid = child.id();
        Ok(Daemon { label: label.to_string(), child: Some(child), pid, log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the daemon is, e.g. `flanneld on wtlab1a2n0`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Some(exit code or -signal)` once the process has exited, `None` while it runs.
    pub fn exited(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                Some(status.code().or_else(|| status.signal().map(|s| -s)).unwrap_or(-1))
            }
            Ok(None) => None,
            Err(_) => Some(-1),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL; returns the exit code (or `-signal`).
    pub fn stop(mut self) -> Option<i32> {
        self.end(Signal::SIGTERM, TERM_GRACE)
    }

    /// SIGKILL immediately (a crash, as far as the program can tell).
    pub fn kill(mut self) -> Option<i32> {
        self.end(Signal::SIGKILL, Duration::ZERO)
    }

    fn end(&mut self, signal: Signal, grace: Duration) -> Option<i32> {
        let code = self.exited();
        if code.is_some() {
            self.child = None;
            return code;
        }
        let pid = Pid::from_raw(i32::try_from(self.pid).ok()?);
        let _ = kill(pid, signal);
        let start = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                self.child = None;
                return Some(code);
            }
            if start.elapsed() >= grace {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        self.child.take().and_then(|mut c| c.wait().ok()).map(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().or_else(|| s.signal().map(|n| -n)).unwrap_or(-1)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.end(Signal::SIGTERM, Duration::from_secs(3));
        }
    }
}
