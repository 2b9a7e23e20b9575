//! weft-lab: network-namespace labs for tests and the demo.
//!
//! Everything a lab creates is named with a per-run prefix and removed when its guard drops
//! (also on panic). Nothing here touches the root network namespace: commands that change
//! network state always run inside a namespace the lab created.
//!
//! Entry points: [`Lab::new`] for a bare lab built step by step, [`Lab::flannel`] for the
//! standard one (nodes, etcd, flanneld, pods), [`cleanup::cleanup_prefix`] for leftovers of an
//! interrupted run. Library only, blocking, no tokio.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_lab::{FlannelSpec, Lab};
//!
//! fn scenario() -> weft_lab::Result<()> {
//!     // 3 nodes × 2 pods, one etcd member, flanneld everywhere, routes converged.
//!     let mut lab = Lab::flannel("wtlab", FlannelSpec::default())?;
//!     assert!(lab.ping_matrix()?.all_ok());
//!     lab.kill_flanneld(0)?; // SIGKILL by PID
//!     lab.restart_flanneld(0)?; // waits for subnet.env
//!     lab.wait_converged()?;
//!     println!("{}", lab.inspect(0)?); // lease, routes, neighbours, FDB
//!     lab.etcd_mut()?.stop();
//!     lab.etcd_mut()?.restart()?;
//!     let to = lab.pod(3)?.ip();
//!     lab.wait_ping(0, to, Duration::from_secs(5))?;
//!     Ok(()) // dropping `lab` removes namespaces, processes and temp dir
//! }
//! ```

pub mod backend;
pub mod bins;
pub mod cleanup;
pub mod cmd;
pub mod cni;
pub mod daemon;
pub mod dual;
pub mod error;
pub mod etcd;
pub mod flannel;
pub mod iperf;
pub mod iperf6;
pub mod lab;
pub mod ns;
pub mod outside;
pub mod pods;
pub mod scenario;
pub mod see;
pub mod signals;
pub mod tcp;
pub mod wait;

pub use backend::Backend;
pub use cleanup::cleanup_prefix;
pub use error::{LabError, Result};
pub use lab::{Lab, Node};
pub use pods::{PingMatrix, Pod};
pub use scenario::FlannelSpec;

/// The repository root (where `test-configs/` lives), fixed at build time.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
