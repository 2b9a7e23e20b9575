//! cnitool's errors. Each is printed on stderr as one line and exits 1.

use weft_common::cni::CniError;

use crate::cache::CacheError;
use crate::conflist::ConfError;

/// Everything cnitool can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Wrong command line: the usage text.
    #[error("{0}")]
    Usage(String),
    /// A bad environment variable (`CNI_ARGS`, `CAP_ARGS`, …).
    #[error("invalid {var}: {why}")]
    Env { var: &'static str, why: String },
    /// The network could not be loaded.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The network list cannot be run (bad name, container ID, ifname; unsupported command).
    #[error("{0}")]
    Invalid(String),
    /// A plugin failed (libcni's wording: `plugin type="bridge" failed (add): …`).
    #[error("plugin type={plugin:?} failed ({verb}): {source}")]
    Plugin { plugin: String, verb: &'static str, source: CniError },
    /// The result cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Several failures (GC collects them all).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
}
