//! weft-flannel: the `flannel` CNI meta-plugin (docs/flannel.md §12).
//!
//! It configures nothing itself. ADD reads flanneld's `subnet.env`, builds a bridge +
//! host-local config ([`delegate`]), saves it ([`scratch`]) and execs the delegate through the
//! CNI protocol; DEL replays the saved config. It never enters a namespace or touches the
//! kernel, so any delegate (ours or the reference one) can stand behind it.
//!
//! Differences from upstream, all in the direction of leaving less behind: a failed ADD
//! runs the delegate's DEL (best effort) and removes the saved config; DEL keeps the saved
//! config when the delegate's DEL fails, so a retried DEL can still finish; CHECK, GC and
//! STATUS are forwarded to the delegate instead of being no-ops.

pub mod config;
pub mod delegate;
pub mod error;
pub mod scratch;

use std::path::Path;

use serde_json::{Map, Value};
use tracing::{debug, warn};
use weft_common::cni::invoke;
use weft_common::cni::{CmdArgs, CniError, CniResult, Command, ErrorCode, Plugin};
use weft_common::flannel::SubnetEnv;

use config::FlannelConf;
use error::FlannelError;
use scratch::Scratch;

/// The plugin (stateless; all state is in the data directory).
#[derive(Debug, Default, Clone, Copy)]
pub struct Flannel;

/// Reads and strictly parses `subnet.env`, telling "not there yet" apart from "broken".
pub fn load_subnet_env(path: &Path) -> Result<SubnetEnv, FlannelError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FlannelError::SubnetEnvMissing { path: path.to_path_buf() })
        }
        Err(source) => return Err(FlannelError::SubnetEnvRead { path: path.to_path_buf(), source }),
    };
    SubnetEnv::parse(&text, &path.display().to_string()).map_err(FlannelError::SubnetEnvInvalid)
}

fn parse_conf(args: &CmdArgs) -> Result<FlannelConf, FlannelError> {
    FlannelConf::parse(&args.conf, &args.network).map_err(FlannelError::Config)
}

/// Config + subnet.env → the delegate object (validated first, nothing touched).
fn build_delegate(conf: &FlannelConf) -> Result<Map<String, Value>, FlannelError> {
    conf.validate_delegate().map_err(FlannelError::Config)?;
    let env = load_subnet_env(&conf.subnet_file)?;
    delegate::build(conf, &env).map_err(FlannelError::Config)
}

fn add(args: &CmdArgs) -> Result<CniResult, FlannelError> {
    let conf = parse_conf(args)?;
    let delegate = build_delegate(&conf)?;
    let bytes = delegate::render(&delegate);
    let kind = delegate::delegate_type(&delegate);
    debug!(delegate = %String::from_utf8_lossy(&bytes), "delegate config");
    let scratch = Scratch::new(&conf.data_dir);
    // Saved before the delegate runs: if we are killed half-way, DEL can still replay it.
    scratch.save(&args.container_id, &bytes)?;
    let version = delegate.get("cniVersion").and_then(Value::as_str).unwrap_or(&args.version);
    match invoke::delegate_add(kind, &args.path, &bytes, version) {
        Ok(result) => Ok(result),
        Err(err) => {
            // Undo whatever the delegate got done before failing, then forget the container:
            // a failed ADD leaves nothing for DEL to find.
            if let Err(del) = invoke::delegate(kind, Command::Del, &args.path, &bytes) {
                warn!(error = %del, "cleanup DEL after failed ADD failed");
            }
            if let Err(rm) = scratch.remove(&args.container_id) {
                warn!(error = %rm, "cannot remove saved delegate config after failed ADD");
            }
            Err(FlannelError::Delegate(err))
        }
    }
}

fn del(args: &CmdArgs) -> Result<(), FlannelError> {
    let conf = parse_conf(args)?;
    let scratch = Scratch::new(&conf.data_dir);
    let Some(bytes) = scratch.load(&args.container_id)? else {
        // Never added (or already deleted): DEL of something gone is success.
        return Ok(());
    };
    let saved = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => map,
        other => {
            // As upstream: tell, succeed, keep the file for a human to look at.
            let why = other.err().map(|e| e.to_string()).unwrap_or_else(|| "not an object".into());
            warn!(path = %scratch.path(&args.container_id).display(), %why, "saved delegate config unparseable");
            return Ok(());
        }
    };
    invoke::delegate(delegate::delegate_type(&saved), Command::Del, &args.path, &bytes)
        .map_err(FlannelError::Delegate)?;
    // Only now: if the delegate's DEL failed, a retried DEL still has the config.
    scratch.remove(&args.container_id)?;
    Ok(())
}

fn check(args: &CmdArgs) -> Result<(), FlannelError> {
    let conf = parse_conf(args)?;
    let scratch = Scratch::new(&conf.data_dir);
    let path = scratch.path(&args.container_id);
    let bytes = scratch.load(&args.container_id)?.ok_or(FlannelError::NotAdded { path: path.clone() })?;
    let mut saved = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(FlannelError::SavedCorrupt { path, details: "not an object".into() }),
        Err(e) => return Err(FlannelError::SavedCorrupt { path, details: e.to_string() }),
    };
    if let Some(prev) = args.conf.get("prevResult").filter(|v| !v.is_null()) {
        saved.insert("prevResult".into(), prev.clone());
    }
    let stdin = delegate::render(&saved);
    invoke::delegate(delegate::delegate_type(&saved), Command::Check, &args.path, &stdin)
        .map_err(FlannelError::Delegate)
}

/// GC and STATUS go to the delegate with a freshly built config (there is no container to
/// replay); GC also forwards the runtime's `cni.dev/*` attachment lists.
fn forward(args: &CmdArgs, command: Command) -> Result<(), FlannelError> {
    let conf = parse_conf(args)?;
    let mut delegate = match build_delegate(&conf) {
        Ok(d) => d,
        // Without a lease there is nothing the delegate could have allocated for us.
        Err(FlannelError::SubnetEnvMissing { path }) if command == Command::Gc => {
            warn!(path = %path.display(), "subnet.env missing: nothing to garbage-collect");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Value::Object(top) = &args.conf {
        for (k, v) in top.iter().filter(|(k, _)| k.starts_with("cni.dev/")) {
            delegate.insert(k.clone(), v.clone());
        }
    }
    let stdin = delegate::render(&delegate);
    invoke::delegate(delegate::delegate_type(&delegate), command, &args.path, &stdin)
        .map_err(FlannelError::Delegate)
}

impl Plugin for Flannel {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        add(args).map_err(CniError::from)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        del(args).map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        check(args).map_err(CniError::from)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        forward(args, Command::Gc).map_err(CniError::from)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        forward(args, Command::Status).map_err(|e| match e {
            // STATUS has its own code for "cannot serve ADD right now".
            e @ (FlannelError::SubnetEnvMissing { .. } | FlannelError::SubnetEnvInvalid(_)) => {
                let err = CniError::from(e);
                CniError::new(ErrorCode::PluginNotAvailable, err.msg, err.details)
            }
            e => CniError::from(e),
        })
    }
}
