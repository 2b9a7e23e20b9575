//! Running the firewall tools (`iptables-save`, `iptables-restore`, `nft`): one process, a script on
//! stdin, output captured. The process inherits the calling thread's network namespace.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use super::FirewallError;

/// A started tool whose output is collected by [`Pending::wait`]; lets two reads run concurrently.
pub(crate) struct Pending {
    tool: &'static str,
    child: Child,
}

/// Starts `tool args…` with `stdin` written to it (empty = no input).
pub(crate) fn start(tool: &'static str, args: &[&str], stdin: &str) -> Result<Pending, FirewallError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FirewallError::Spawn { tool, source })?;
    if let Some(mut input) = child.stdin.take() {
        // Scripts are a few hundred bytes, far below the pipe buffer, so this cannot block on a
        // child that is itself blocked writing output.
        input.write_all(stdin.as_bytes()).map_err(|source| FirewallError::Spawn { tool, source })?;
    }
    Ok(Pending { tool, child })
}

impl Pending {
    /// Waits for the tool; its stdout on exit 0, else [`FirewallError::Tool`] with stderr.
    pub(crate) fn wait(self, script: &str) -> Result<String, FirewallError> {
        let tool = self.tool;
        let out = self.child.wait_with_output().map_err(|source| FirewallError::Spawn { tool, source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(FirewallError::Tool {
            tool,
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            script: script.to_string(),
        })
    }
}

/// Runs `tool args…` with `stdin` and waits for it.
pub(crate) fn run(tool: &'static str, args: &[&str], stdin: &str) -> Result<String, FirewallError> {
    start(tool, args, stdin)?.wait(stdin)
}
