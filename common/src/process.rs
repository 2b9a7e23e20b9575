//! Running a system tool (`iptables-save`, `iptables-restore`, `nft`): one child process, a
//! script on stdin, stdout and stderr captured. The one process runner of the workspace: the
//! masquerade firewall, the bridge's `macspoofchk` and flanneld's rules all use it.
//!
//! The child inherits the calling thread's network namespace, so a caller inside a
//! [`crate::netns::NetnsGuard`] runs the tool in that namespace (see the hazard in
//! [`crate::netns`]). Scripts are written to stdin before the output is read: they are a few
//! KiB at most, below the pipe buffer, so this cannot block on a child that is itself blocked
//! writing output.

use std::io::Write;
use std::process::{Child, Command, Stdio};

/// A tool that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It could not be started (see [`ToolError::is_not_found`]) or its pipes failed.
    #[error("failed to run {tool}: {source}")]
    Spawn { tool: &'static str, source: std::io::Error },
    /// It ran and exited non-zero (or was killed: `status` `None`).
    #[error("{tool} {args} failed (exit {status:?}): {stderr}")]
    Failed {
        tool: &'static str,
        /// The arguments, space-separated.
        args: String,
        status: Option<i32>,
        /// Trimmed.
        stderr: String,
        /// The script it was given (empty when none).
        stdin: String,
    },
}

impl ToolError {
    /// True when the tool is not installed.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ToolError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A started tool; [`Pending::wait`] collects its output. Lets two tools run at once.
#[derive(Debug)]
pub struct Pending {
    tool: &'static str,
    args: String,
    stdin: String,
    child: Child,
}

/// Starts `tool args…` with `stdin` written to it (empty: no input).
pub fn start(tool: &'static str, args: &[&str], stdin: &str) -> Result<Pending, ToolError> {
    let spawn = |source| ToolError::Spawn { tool, source };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).map_err(spawn)?;
    }
    Ok(Pending { tool, args: args.join(" "), stdin: stdin.to_string(), child })
}

impl Pending {
    /// Waits for the tool: its stdout on exit 0, else [`ToolError::Failed`] with its stderr.
    pub fn wait(self) -> Result<String, ToolError> {
        let tool = self.tool;
        let out = self.child.wait_with_output().map_err(|source| ToolError::Spawn { tool, source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(ToolError::Failed {
            tool,
            args: self.args,
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            stdin: self.stdin,
        })
    }
}

/// Runs `tool args…` with `stdin` and waits for it: its stdout on exit 0.
pub fn run(tool: &'static str, args: &[&str], stdin: &str) -> Result<String, ToolError> {
    start(tool, args, stdin)?.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_exit_status_and_missing_tools() {
        assert_eq!(run("cat", &[], "a script\n").unwrap(), "a script\n");
        assert_eq!(run("echo", &["-n", "x"], "").unwrap(), "x");
        match run("sh", &["-c", "cat >/dev/null; echo oops >&2; exit 3"], "in") {
            Err(ToolError::Failed { tool, args, status, stderr, stdin }) => {
                assert_eq!(
                    (tool, args.as_str(), status, stderr.as_str(), stdin.as_str()),
                    ("sh", "-c cat >/dev/null; echo oops >&2; exit 3", Some(3), "oops", "in")
                );
            }
            other => panic!("{other:?}"),
        }
        let e = run("weft-no-such-tool", &[], "").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.to_string().split(':').next(), Some("failed to run weft-no-such-tool"));
        // Two at once.
        let (a, b) = (start("echo", &["a"], "").unwrap(), start("echo", &["b"], "").unwrap());
        assert_eq!((b.wait().unwrap(), a.wait().unwrap()), ("b\n".to_string(), "a\n".to_string()));
    }
}
