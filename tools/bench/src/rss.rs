//! Peak RSS of a process tree, read from each process's own memory map.
//!
//! `ru_maxrss` cannot answer this: when a process execs, the kernel folds the high-water mark
//! of the memory map it leaves into the process's `maxrss`, and a child started with vfork or
//! fork leaves its parent's map. So a plugin's `ru_maxrss` is never below the peak RSS of
//! whatever spawned it (this probe included), and an IPAM plugin's never below its plugin's.
//! Instead the probe traces the tree (ptrace, following fork, vfork and clone) and, when each
//! process stops at its exit, reads `VmHWM` from `/proc/<pid>/status`: the high-water mark of
//! the map that process built after its exec, nothing inherited.

use std::process::Command;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// One traced process at its exit: its command name and its own peak RSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPeak {
    pub tgid: i32,
    pub comm: String,
    pub vm_hwm_kib: u64,
    /// Resident anonymous (heap, stack, written data) and file-backed pages at exit.
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
}

/// What a traced run produced: the root's exit code and every process's peak.
#[derive(Debug)]
pub struct TreePeaks {
    pub exit_code: i32,
    pub processes: Vec<ProcessPeak>,
}

impl TreePeaks {
    /// The largest peak of any one process in the tree.
    pub fn max_kib(&self) -> u64 {
        self.processes.iter().map(|p| p.vm_hwm_kib).max().unwrap_or(0)
    }
}

/// Runs argv (inheriting stdin, stdout, stderr and the environment) under ptrace and collects
/// each process's `VmHWM` at its exit. It waits for any child of the calling process, so the
/// caller must have no other children running.
pub fn trace_peaks(argv: &[String]) -> Result<TreePeaks, String> {
    if argv.is_empty() {
        return Err("nothing to run".into());
    }
    // The program must be traced from its first instruction, without forking by hand (the
    // workspace has no unsafe code): a shell stops itself, is attached while stopped, and
    // once continued execs argv. Its own memory does not count: VmHWM belongs to the map
    // built by the exec.
    let child = Command::new("sh")
        .args(["-c", "kill -STOP $$ && exec \"$@\"", "sh"])
        .args(argv)
        .spawn()
        .map_err(|e| format!("spawn sh: {e}"))?;
    let root = Pid::from_raw(child.id() as i32);
    match waitpid(root, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        other => return Err(format!("traced child did not stop before exec: {other:?}")),
    }
    let opts = Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEEXIT
        | Options::PTRACE_O_EXITKILL;
    ptrace::seize(root, opts).map_err(|e| format!("ptrace seize: {e}"))?;
    kill(root, Signal::SIGCONT).map_err(|e| format!("SIGCONT: {e}"))?;

    let mut processes = Vec::new();
    let mut exit_code = 1;
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(s) => s,
            Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        };
        // A traced process may vanish between its stop and our request (SIGKILL); ESRCH from
        // ptrace::cont is therefore not an error.
        match status {
            WaitStatus::PtraceEvent(pid, _, ev) if ev == Event::PTRACE_EVENT_EXIT as i32 => {
                // Every thread of a process stops here, all reporting the one map they share.
                if let Some(p) = read_peak(pid) {
                    if !processes.iter().any(|q: &ProcessPeak| q.tgid == p.tgid) {
                        processes.push(p);
                    }
                }
                let _ = ptrace::cont(pid, None);
            }
            // fork/vfork/clone/exec events, a new child's first stop and group-stops (all
            // reported as events under PTRACE_SEIZE): the program goes on.
            WaitStatus::PtraceEvent(pid, _, _) => {
                let _ = ptrace::cont(pid, None);
            }
            // A signal for the program: delivered as it would be untraced.
            WaitStatus::Stopped(pid, sig) => {
                let _ = ptrace::cont(pid, Some(sig));
            }
            WaitStatus::Exited(pid, code) if pid == root => exit_code = code,
            WaitStatus::Signaled(pid, sig, _) if pid == root => exit_code = 128 + sig as i32,
            _ => {}
        }
    }
    Ok(TreePeaks { exit_code, processes })
}

/// `VmHWM` and `comm` of a process stopped at its exit; threads report their process's map.
fn read_peak(pid: Pid) -> Option<ProcessPeak> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let v = status.lines().find_map(|l| l.strip_prefix(name))?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some(ProcessPeak {
        tgid: i32::try_from(field("Tgid:")?).ok()?,
        comm: comm.trim().to_string(),
        vm_hwm_kib: field("VmHWM:")?,
        rss_anon_kib: field("RssAnon:").unwrap_or(0),
        rss_file_kib: field("RssFile:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A tracer waits for any child of its process: two traces at once would take each
    /// other's events, so the tests trace one at a time.
    static ONE_TRACE: Mutex<()> = Mutex::new(());

    #[test]
    fn peaks_cover_every_process_of_the_tree() {
        // sh forks two children; each exits and is seen with its own command name.
        let argv = ["sh", "-c", "cat /dev/null; ls / >/dev/null; exit 3"].map(String::from);
        let _one = ONE_TRACE.lock().unwrap_or_else(|e| e.into_inner());
        let t = trace_peaks(&argv).expect("trace");
        assert_eq!(t.exit_code, 3);
        let comms: Vec<&str> = t.processes.iter().map(|p| p.comm.as_str()).collect();
        for want in ["sh", "cat", "ls"] {
            assert!(comms.contains(&want), "{want} missing from {comms:?}");
        }
        assert!(t.processes.iter().all(|p| p.vm_hwm_kib > 0), "{:?}", t.processes);
    }

    #[test]
    fn a_child_does_not_inherit_its_spawners_peak() {
        // The spawner (sh holding a 32 MiB variable) is far larger than what it then runs.
        let argv =
            ["sh", "-c", "x=$(head -c 33554432 /dev/zero | tr '\\0' a); /bin/true; echo ${#x} >/dev/null"]
                .map(String::from);
        let _one = ONE_TRACE.lock().unwrap_or_else(|e| e.into_inner());
        let t = trace_peaks(&argv).expect("trace");
        let sh = t.processes.iter().filter(|p| p.comm == "sh").map(|p| p.vm_hwm_kib).max();
        let tru = t.processes.iter().find(|p| p.comm == "true").map(|p| p.vm_hwm_kib);
        let (Some(sh), Some(tru)) = (sh, tru) else { panic!("{:?}", t.processes) };
        assert!(sh > 32 * 1024, "sh peaked at {sh} KiB");
        assert!(tru < 8 * 1024, "true reported {tru} KiB, inherited from sh?");
    }

    #[test]
    fn a_missing_program_exits_127() {
        let _one = ONE_TRACE.lock().unwrap_or_else(|e| e.into_inner());
        let t = trace_peaks(&["/nonexistent/weft-rss-probe".to_string()]).expect("trace");
        assert_eq!(t.exit_code, 127);
    }
}
