//! weft-cnitool: a drop-in `cnitool` (docs/cni.md §4.5).
//!
//! [`cli`] reads the command line and environment, [`conflist`] loads the network like
//! libcni, [`request`] builds each plugin's stdin, [`commands`] runs the list through
//! `weft_common::cni::invoke`, and [`cache`] keeps results in libcni's `cniCacheV1` files.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod conflist;
pub mod error;
pub mod request;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use cache::Cache;
use cli::{Env, Invocation, Verb};
use commands::Runtime;
pub use error::Error;

/// Runs one cnitool invocation. Returns what goes to stdout (only `add` prints).
pub fn run(argv: &[String], env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Result<String, Error> {
    let Invocation { verb, network, netns } = cli::parse_args(argv, cwd)?;
    let env = Env::from_lookup(env)?;
    let list = conflist::load(&env.netconfpath, &network)?;
    let rt = Runtime {
        container_id: cli::container_id(&netns),
        netns,
        ifname: env.ifname,
        cni_args: env.cni_args,
        cap_args: env.cap_args,
        cni_path: env.cni_path,
        cache: Cache::new(&env.cache_dir),
    };
    match verb {
        Verb::Add => commands::add(&list, &rt).map(|r| pretty(&r)),
        Verb::Check => commands::check(&list, &rt).map(|()| String::new()),
        Verb::Del => commands::del(&list, &rt).map(|()| String::new()),
        Verb::Gc => commands::gc(&list, &rt).map(|()| String::new()),
        Verb::Status => commands::status(&list, &rt).map(|()| String::new()),
    }
}

/// 4-space indented JSON, no trailing newline (Go `json.MarshalIndent(r, "", "    ")`).
pub fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => value.to_string(),
    }
}
