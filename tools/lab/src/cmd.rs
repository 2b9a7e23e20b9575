//! Running helper commands with a timeout, logging command, output and exit code on failure.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A finished command.
#[derive(Debug, Clone)]
pub struct Run {
    pub cmdline: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics with the full record unless the command succeeded (for tests).
    pub fn expect_ok(self) -> Run {
        assert!(self.ok(), "command failed: {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exit {:?}\nstdout: {}\nstderr: {}",
            self.cmdline, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `argv` with `env` and `stdin`, killing it after `timeout`.
pub fn run(argv: &[&str], env: &[(&str, &str)], stdin: &[u8], timeout: Duration) -> Run {
    let cmdline = argv.join(" ");
    let Some((prog, rest)) = argv.split_first() else {
        return Run { cmdline, status: None, stdout: String::new(), stderr: "empty argv".into() };
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Run { cmdline, status: None, stdout: String::new(), stderr: e.to_string() },
    };
    // Drain both pipes while the command runs: one that fills a pipe (64 KiB) would otherwise
    // block until the timeout kills it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                break child.wait().ok().and_then(|s| s.code());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break None,
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Run {
        cmdline,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a command with a 30 s timeout and no stdin.
pub fn sh(argv: &[&str]) -> Run {
    run(argv, &[], b"", Duration::from_secs(30))
}
