//! Removing what an interrupted lab left behind, found by name prefix: processes inside the
//! lab's namespaces (ended by PID), the namespaces, and the temp dirs under `<tmp>/weft-lab`.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::sh;
use crate::error::{LabError, Result};

/// Names of all named network namespaces (`ip netns list`).
pub fn netns_names() -> Result<Vec<String>> {
    let r = sh(&["ip", "netns", "list"]).check("ip netns list")?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(r.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// What [`cleanup_prefix`] removed.
#[derive(Debug, Default, Clone)]
pub struct Cleaned {
    pub namespaces: Vec<String>,
    pub pids: Vec<i32>,
    pub dirs: Vec<String>,
}

/// Removes every namespace whose name starts with `prefix` (first ending, by PID, the
/// processes running inside it: a lab only runs its own daemons there), and every lab temp dir
/// whose name starts with `prefix`. An empty prefix is refused.
pub fn cleanup_prefix(prefix: &str) -> Result<Cleaned> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(LabError::Invalid(format!("refusing to clean up by prefix {prefix:?}")));
    }
    let mut cleaned = Cleaned::default();
    let names: Vec<String> = netns_names()?.into_iter().filter(|n| n.starts_with(prefix)).collect();
    for name in &names {
        cleaned.pids.extend(pids_in(name));
    }
    end_pids(&cleaned.pids);
    for name in names {
        if sh(&["ip", "netns", "del", &name]).ok() {
            cleaned.namespaces.push(name);
        }
    }
    let root = std::env::temp_dir().join(crate::lab::LAB_TMP);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && std::fs::remove_dir_all(e.path()).is_ok() {
                cleaned.dirs.push(name);
            }
        }
    }
    remove_root_if_empty();
    Ok(cleaned)
}

/// Removes `<tmp>/weft-lab` once no lab uses it (`remove_dir` fails on a non-empty directory,
/// so a lab being created meanwhile keeps it).
pub(crate) fn remove_root_if_empty() {
    let _ = std::fs::remove_dir(std::env::temp_dir().join(crate::lab::LAB_TMP));
}

/// PIDs of the processes whose network namespace is `name` (`ip netns pids`).
pub fn pids_in(name: &str) -> Vec<i32> {
    sh(&["ip", "netns", "pids", name]).stdout.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// SIGTERM each PID, wait up to 5 s, SIGKILL the survivors.
pub(crate) fn end_pids(pids: &[i32]) {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')) == Some(false))
            .unwrap_or(false)
    };
    for &p in pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids {
        if alive(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}
