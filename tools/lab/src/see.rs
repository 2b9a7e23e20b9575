//! Running the `weft` operator tool inside a lab node: `weft path` with the node's CNI
//! directories, `weft doctor` with the lab's etcd; and pausing a node's flanneld (SIGSTOP by
//! PID) so a deliberate break holds while it is looked at.

use crate::cmd::Run;
use crate::error::{LabError, Result};
use crate::lab::Lab;

/// `weft path <args>` on node `i` (its CNI cache, host-local data and subnet file).
pub fn weft_path(lab: &Lab, i: usize, args: &[&str]) -> Result<Run> {
    crate::bins::require(&["weft"])?;
    let weft = crate::bins::bin_dir().join("weft").display().to_string();
    weft_on_node(lab, i, &weft, "path", args)
}

/// `<weft> <sub> <args>` inside node `i`'s namespace with the node's own CNI directories
/// (`--cni-cache-dir`, `--ipam-data-dir`, `--subnet-file`), as its operator would run it.
pub fn weft_on_node(lab: &Lab, i: usize, weft: &str, sub: &str, args: &[&str]) -> Result<Run> {
    let node = lab.node(i)?;
    let dirs = node.cni_dirs();
    let (cache, ipam, subnet) = (
        dirs.cache.display().to_string(),
        dirs.ipam_data.display().to_string(),
        dirs.subnet_file.display().to_string(),
    );
    let mut argv =
        vec![weft, sub, "--cni-cache-dir", &cache, "--ipam-data-dir", &ipam, "--subnet-file", &subnet];
    argv.extend_from_slice(args);
    Ok(node.ns().exec(&argv))
}

/// `weft doctor <args>` on node `i`, against the lab's etcd and prefix.
pub fn weft_doctor(lab: &Lab, i: usize, args: &[&str]) -> Result<Run> {
    crate::bins::require(&["weft"])?;
    let weft = crate::bins::bin_dir().join("weft").display().to_string();
    let eps = lab.etcd()?.endpoints();
    let mut argv =
        vec![weft.as_str(), "doctor", "--etcd-endpoints", &eps, "--etcd-prefix", lab.etcd_prefix()];
    argv.extend_from_slice(args);
    Ok(lab.node(i)?.ns().exec(&argv))
}

/// flanneld on a node, paused (SIGSTOP) until this is dropped (SIGCONT).
#[derive(Debug)]
pub struct Paused(nix::unistd::Pid);

impl Paused {
    /// Pauses node `i`'s flanneld.
    pub fn flanneld(lab: &Lab, i: usize) -> Result<Paused> {
        let pid = lab
            .node(i)?
            .flanneld_pid()
            .ok_or_else(|| LabError::Invalid(format!("flanneld does not run on node {i}")))?;
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| LabError::Invalid(format!("pid {pid} out of range")))?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
            .map_err(|e| LabError::Invalid(format!("SIGSTOP flanneld {pid}: {e}")))?;
        Ok(Paused(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}
