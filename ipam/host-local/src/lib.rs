//! weft-host-local: the `host-local` IPAM plugin, a drop-in for the reference Go plugin.
//!
//! It shares the reference's on-disk state (docs/cni.md §8.4) and lock, so a node can
//! switch between the two implementations in either direction without losing an allocation.
//! Modules: [`config`] (wire types → [`config::Spec`]), [`range`] (validated ranges and the walk
//! order), [`allocator`] (pure logic over a [`store::Store`]), [`store`] (disk format, memory
//! store for tests), [`resolv`] (`resolvConf`). This file maps everything onto the CNI commands
//! and every internal error onto a CNI error code, in one place.

pub mod allocator;
pub mod config;
pub mod range;
pub mod resolv;
pub mod store;

use serde::Deserialize;
use serde_json::Value;
use weft_common::cni::conf::decode;
use weft_common::cni::{CmdArgs, CniError, CniResult, ErrorCode, IpConfig, Plugin};

use crate::allocator::{AllocError, Attachment};
use crate::config::Spec;
use crate::store::disk::DiskStore;
use crate::store::StoreError;

/// The plugin (`skel::run(HostLocal, "host-local")`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLocal;

/// GC's request keys: the current name first, then the name first published (libcni sends both).
const GC_KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/// One `{containerID, ifname}` entry of a GC request.
#[derive(Debug, Deserialize)]
struct GcAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

impl HostLocal {
    fn open(spec: &Spec, args: &CmdArgs) -> Result<DiskStore, CniError> {
        DiskStore::open(&spec.data_dir, &args.network).map_err(store_error)
    }
}

fn spec(args: &CmdArgs) -> Result<Spec, CniError> {
    config::parse(&args.conf, &args.version, &args.args)
}

fn who(args: &CmdArgs) -> Attachment<'_> {
    Attachment { id: &args.container_id, ifname: &args.ifname }
}

impl Plugin for HostLocal {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let spec = spec(args)?;
        // Read before allocating so a bad file leaves nothing to undo.
        let dns = match &spec.resolv_conf {
            Some(path) => resolv::read_resolv(path).map_err(|e| {
                CniError::new(ErrorCode::Io, format!("read resolvConf {}", path.display()), e.to_string())
            })?,
            None => Default::default(),
        };
        let mut store = Self::open(&spec, args)?;
        let allocated = allocator::allocate(&mut store, &spec.range_sets, &spec.requested, who(args))
            .map_err(alloc_error)?;
        Ok(CniResult {
            cni_version: args.version.clone(),
            interfaces: Vec::new(),
            ips: allocated
                .into_iter()
                .map(|a| IpConfig { address: a.address, gateway: Some(a.gateway), interface: None })
                .collect(),
            routes: spec.routes,
            dns,
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        // Like the reference, an invalid config fails DEL: it cannot say which directory to use.
        let spec = spec(args)?;
        let mut store = Self::open(&spec, args)?;
        allocator::release(&mut store, who(args)).map_err(store_error)?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = spec(args)?;
        let mut store = Self::open(&spec, args)?;
        if allocator::holds_any(&mut store, who(args)).map_err(store_error)? {
            Ok(())
        } else {
            Err(CniError::internal(
                format!("host-local: Failed to find address added by container {}", args.container_id),
                format!(
                    "no reservation in {} belongs to ({}, {})",
                    store.dir().display(),
                    args.container_id,
                    args.ifname
                ),
            ))
        }
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = spec(args)?;
        // No list at all (e.g. cnitool) means "nothing to do", not "nothing is valid".
        let Some(valid) = valid_attachments(&args.conf)? else { return Ok(()) };
        let mut store = Self::open(&spec, args)?;
        let released = allocator::gc(&mut store, &valid).map_err(store_error)?;
        tracing::info!(network = %args.network, released = released.len(), "gc done");
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = spec(args)?;
        let mut store = Self::open(&spec, args)?;
        match allocator::first_exhausted(&mut store, &spec.range_sets).map_err(store_error)? {
            None => Ok(()),
            Some(n) => {
                let set = spec.range_sets.get(n).map(ToString::to_string).unwrap_or_default();
                Err(CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!("no IP addresses available in range set {n}: {set}"),
                    format!("every address of range set {n} is reserved in {}", store.dir().display()),
                ))
            }
        }
    }
}

/// The GC list: `cni.dev/valid-attachments`, else `cni.dev/attachments`, else `None`.
fn valid_attachments(conf: &Value) -> Result<Option<Vec<(String, String)>>, CniError> {
    for key in GC_KEYS {
        match conf.get(key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                let list: Vec<GcAttachment> = decode(v, key)?;
                return Ok(Some(list.into_iter().map(|a| (a.container_id, a.ifname)).collect()));
            }
        }
    }
    Ok(None)
}

/// Maps a store error onto a CNI error (the one place that chooses its code).
fn store_error(e: StoreError) -> CniError {
    match &e {
        StoreError::InvalidName { what: "container ID", value } => {
            CniError::invalid_env("CNI_CONTAINERID", format!("{e}; got {value:?}"))
        }
        StoreError::InvalidName { .. } => CniError::invalid_config("name", e.to_string()),
        StoreError::Io { op, path, source } => {
            CniError::new(ErrorCode::Io, format!("{op} {}", path.display()), source.to_string())
        }
    }
}

/// Maps an allocation error onto a CNI error: the reference's text, code 999, except store
/// failures which keep the store's code.
fn alloc_error(e: AllocError) -> CniError {
    match e {
        AllocError::Duplicate { .. }
        | AllocError::Exhausted { .. }
        | AllocError::RequestedGateway { .. }
        | AllocError::RequestedUnavailable { .. }
        | AllocError::RequestedLeftOver { .. } => CniError::internal(e.to_string(), ""),
        AllocError::Store { set, source } => {
            let inner = store_error(source);
            CniError { msg: format!("failed to allocate for range {set}: {}", inner.msg), ..inner }
        }
        AllocError::Access(source) => store_error(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gc_list_prefers_valid_attachments_and_absent_means_none() {
        let both = json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                          "cni.dev/attachments": [{"containerID": "b", "ifname": "eth0"}]});
        assert_eq!(valid_attachments(&both).unwrap(), Some(vec![("a".into(), "eth0".into())]));
        let legacy = json!({"cni.dev/attachments": []});
        assert_eq!(valid_attachments(&legacy).unwrap(), Some(vec![]));
        assert_eq!(valid_attachments(&json!({})).unwrap(), None);
        let bad = json!({"cni.dev/valid-attachments": [{"containerID": 5}]});
        assert_eq!(valid_attachments(&bad).unwrap_err().code, 7);
    }

    #[test]
    fn error_codes() {
        let exhausted = AllocError::Exhausted { set: 0, range_set: "10.9.0.1-10.9.0.2".into() };
        let e = alloc_error(exhausted);
        assert_eq!(e.code, 999);
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
        );
        let io = StoreError::Io {
            op: "lock",
            path: "/x/lock".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let e = alloc_error(AllocError::Store { set: 1, source: io });
        assert_eq!(e.code, 5);
        assert!(e.msg.starts_with("failed to allocate for range 1: lock /x/lock"), "{}", e.msg);
        let bad = store_error(StoreError::InvalidName { what: "network name", value: "..".into() });
        assert_eq!(bad.code, 7);
    }
}
