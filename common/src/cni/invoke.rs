//! Executing another plugin through the CNI protocol (delegation, chains, cnitool).
//!
//! Mirrors libcni `pkg/invoke`: the plugin is the first regular file named `type` in the
//! `CNI_PATH` directories; it inherits our environment with the given `CNI_*` overrides;
//! stdout is the result or the error document; stderr is passed on to ours.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use super::error::{CniError, ErrorCode};
use super::result::CniResult;
use super::skel::Command;

/// Finds `plugin` in the `:`-separated `cni_path`.
pub fn find_plugin(plugin: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::invalid_config("type", format!("invalid plugin name {plugin:?}")));
    }
    let dirs: Vec<&str> = cni_path.split(':').filter(|d| !d.is_empty()).collect();
    for dir in &dirs {
        let candidate = Path::new(dir).join(plugin);
        if candidate.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Ok(candidate);
        }
    }
    Err(CniError::new(
        ErrorCode::InvalidConfig,
        format!("failed to find plugin {plugin:?} in path {dirs:?}"),
        "check CNI_PATH and the plugin's type",
    ))
}

/// Runs `plugin` (a path) with `command`, the given environment overrides and `stdin`.
/// Returns stdout on success; on failure the plugin's own error (code and message kept).
pub fn exec(
    plugin: &Path,
    command: Command,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    start(plugin, command, env, stdin)?.finish()
}

/// A plugin process started by [`start`], its stdin already written and closed.
#[derive(Debug)]
pub struct Running {
    plugin: PathBuf,
    child: Child,
}

/// Starts `plugin` as [`exec`] does, without waiting for it: the caller may work meanwhile
/// and collect the answer with [`Running::finish`]. The process starts in the calling thread's
/// network namespace.
pub fn start(
    plugin: &Path,
    command: Command,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<Running, CniError> {
    let mut attempt = 0;
    let mut child = loop {
        let mut cmd = Process::new(plugin);
        cmd.env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match cmd.spawn() {
            Ok(c) => break c,
            // A binary being replaced in place ("text file busy"): libcni retries too.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(CniError::internal(
                    format!("failed to execute plugin {}", plugin.display()),
                    e.to_string(),
                ))
            }
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION); a broken pipe is not our error.
        // Dropping `input` closes the pipe, so the plugin sees the end of its input.
        let _ = input.write_all(stdin);
    }
    Ok(Running { plugin: plugin.to_path_buf(), child })
}

impl Running {
    /// Waits for the plugin: its stdout on success, else its own error (code and message
    /// kept) or one naming the plugin and its exit status.
    pub fn finish(self) -> Result<Vec<u8>, CniError> {
        let plugin = self.plugin;
        let output = self.child.wait_with_output().map_err(|e| {
            CniError::internal(format!("failed to wait for plugin {}", plugin.display()), e.to_string())
        })?;
        if !output.stderr.is_empty() {
            let _ = std::io::stderr().write_all(&output.stderr);
        }
        if output.status.success() {
            return Ok(output.stdout);
        }
        if let Ok(err) = serde_json::from_slice::<CniError>(&output.stdout) {
            return Err(err);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        Err(CniError::internal(
            format!("plugin {} failed ({})", plugin.display(), output.status),
            if stdout.trim().is_empty() { stderr.trim().to_string() } else { stdout.trim().to_string() },
        ))
    }
}

/// Delegates ADD to `plugin_type` found in `cni_path` and parses its result; a result
/// without `cniVersion` is taken to be in `version`.
pub fn delegate_add(
    plugin_type: &str,
    cni_path: &str,
    stdin: &[u8],
    version: &str,
) -> Result<CniResult, CniError> {
    start_delegate_add(plugin_type, cni_path, stdin, version)?.wait()
}

/// A delegate ADD in flight: [`start_delegate_add`], then [`PendingAdd::wait`].
#[derive(Debug)]
pub struct PendingAdd {
    plugin_type: String,
    version: String,
    running: Running,
}

/// Starts [`delegate_add`] without waiting for the delegate.
pub fn start_delegate_add(
    plugin_type: &str,
    cni_path: &str,
    stdin: &[u8],
    version: &str,
) -> Result<PendingAdd, CniError> {
    let plugin = find_plugin(plugin_type, cni_path)?;
    let running = start(&plugin, Command::Add, &[], stdin)?;
    Ok(PendingAdd { plugin_type: plugin_type.to_string(), version: version.to_string(), running })
}

impl PendingAdd {
    /// Waits for the delegate and parses its result.
    pub fn wait(self) -> Result<CniResult, CniError> {
        let out = self.running.finish()?;
        let value: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("failed to decode the result of {}", self.plugin_type),
                e.to_string(),
            )
        })?;
        CniResult::parse(&value, &self.version)
    }
}

/// Delegates DEL, CHECK, GC or STATUS to `plugin_type`; only the exit status matters.
pub fn delegate(plugin_type: &str, command: Command, cni_path: &str, stdin: &[u8]) -> Result<(), CniError> {
    start_delegate(plugin_type, command, cni_path, stdin)?.finish().map(|_| ())
}

/// Starts [`delegate`] without waiting for the delegate ([`Running::finish`] it).
pub fn start_delegate(
    plugin_type: &str,
    command: Command,
    cni_path: &str,
    stdin: &[u8],
) -> Result<Running, CniError> {
    let plugin = find_plugin(plugin_type, cni_path)?;
    start(&plugin, command, &[], stdin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_plugin_names_path() {
        let e = find_plugin("host-local", "/nonexistent:/also-not").unwrap_err();
        assert!(e.msg.contains("host-local"));
        assert!(e.msg.contains("/also-not"));
        assert!(find_plugin("../x", "/bin").is_err());
    }

    #[test]
    fn finds_first_regular_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sh")).unwrap();
        let path = format!("{}:/bin", d.path().display());
        assert_eq!(find_plugin("sh", &path).unwrap(), Path::new("/bin/sh"));
    }

    #[test]
    fn passes_plugin_error_through() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("failer");
        std::fs::write(&p, "#!/bin/sh\necho '{\"code\":11,\"msg\":\"busy\"}'\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = exec(&p, Command::Add, &[], b"{}").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
    }
}
