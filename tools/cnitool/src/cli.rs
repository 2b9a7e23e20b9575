//! The command line and environment contract of upstream `cnitool` (docs/cni.md §4.5).
//!
//! `cnitool add|check|del|gc|status <net> <netns>`; environment: `NETCONFPATH` (default
//! `/etc/cni/net.d`), `CNI_PATH`, `CNI_IFNAME` (default `eth0` only when unset), `CNI_ARGS`
//! (`K=V;K=V`), `CAP_ARGS` (JSON object), and weft's `CNI_CACHE_DIR` (default `/var/lib/cni`;
//! results go to its `results/` sub-directory).

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use crate::cache::DEFAULT_CACHE_DIR;
use crate::error::Error;

/// Default configuration directory.
pub const DEFAULT_NETCONFPATH: &str = "/etc/cni/net.d";
/// Default container interface name.
pub const DEFAULT_IFNAME: &str = "eth0";

/// A cnitool command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Check,
    Del,
    Gc,
    Status,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub verb: Verb,
    pub network: String,
    /// The netns argument made absolute (Go `filepath.Abs`).
    pub netns: String,
}

/// The usage text (stderr, exit 1), in upstream's words.
pub fn usage(exe: &str) -> String {
    format!(
        "{exe}: Add, check, remove, gc or status network interfaces from a network namespace\n  \
         {exe} add    <net> <netns>\n  {exe} check  <net> <netns>\n  {exe} del    <net> <netns>\n  \
         {exe} gc     <net> <netns>\n  {exe} status <net> <netns>"
    )
}

/// Parses `argv` (program name first). `gc` and `status` need the netns argument too,
/// although they ignore it, as upstream.
pub fn parse_args(argv: &[String], cwd: &Path) -> Result<Invocation, Error> {
    let exe = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cnitool".into());
    let [_, verb, network, netns, ..] = argv else { return Err(Error::Usage(usage(&exe))) };
    let verb = match verb.as_str() {
        "add" => Verb::Add,
        "check" => Verb::Check,
        "del" => Verb::Del,
        "gc" => Verb::Gc,
        "status" => Verb::Status,
        _ => return Err(Error::Usage(usage(&exe))),
    };
    Ok(Invocation { verb, network: network.clone(), netns: absolute(netns, cwd) })
}

/// Go's `filepath.Abs`: joined to `cwd` when relative, then cleaned lexically (`.`, `..`,
/// repeated `/`), symlinks kept.
pub fn absolute(path: &str, cwd: &Path) -> String {
    let joined = if Path::new(path).is_absolute() { PathBuf::from(path) } else { cwd.join(path) };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// `cnitool-` + the first 20 hex digits of SHA-512 of the absolute netns path, so the same
/// path always maps to the same container ID (and cache file).
pub fn container_id(abs_netns: &str) -> String {
    let digest = Sha512::digest(abs_netns.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

/// The environment cnitool reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Env {
    pub netconfpath: PathBuf,
    pub cni_path: String,
    pub ifname: String,
    pub cni_args: Vec<[String; 2]>,
    pub cap_args: Map<String, Value>,
    pub cache_dir: PathBuf,
}

impl Env {
    /// Reads the environment through `get` (tests pass a map).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        Ok(Env {
            netconfpath: PathBuf::from(
                non_empty("NETCONFPATH").unwrap_or_else(|| DEFAULT_NETCONFPATH.into()),
            ),
            cni_path: get("CNI_PATH").unwrap_or_default(),
            // Set-but-empty stays empty (and is rejected before ADD), as upstream.
            ifname: get("CNI_IFNAME").unwrap_or_else(|| DEFAULT_IFNAME.into()),
            cni_args: parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?,
            cap_args: parse_cap_args(&get("CAP_ARGS").unwrap_or_default())?,
            cache_dir: PathBuf::from(non_empty("CNI_CACHE_DIR").unwrap_or_else(|| DEFAULT_CACHE_DIR.into())),
        })
    }
}

/// `K=V;K=V`: every pair needs exactly one `=`, a non-empty key and value (upstream rule).
pub fn parse_cni_args(raw: &str) -> Result<Vec<[String; 2]>, Error> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.split(';')
        .map(|pair| {
            let kv: Vec<&str> = pair.split('=').collect();
            match kv.as_slice() {
                [k, v] if !k.is_empty() && !v.is_empty() => Ok([k.to_string(), v.to_string()]),
                _ => Err(Error::Env { var: "CNI_ARGS", why: format!("invalid CNI_ARGS pair {pair:?}") }),
            }
        })
        .collect()
}

/// `CAP_ARGS`: a JSON object of capability arguments.
pub fn parse_cap_args(raw: &str) -> Result<Map<String, Value>, Error> {
    if raw.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Env { var: "CAP_ARGS", why: "must be a JSON object".into() }),
        Err(e) => Err(Error::Env { var: "CAP_ARGS", why: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn container_id_is_sha512_prefix_of_the_absolute_path() {
        // sha512("/var/run/netns/c1") starts with these 20 hex digits (checked with sha512sum).
        let expected = {
            let out = std::process::Command::new("sh")
                .args(["-c", "printf %s /var/run/netns/c1 | sha512sum"])
                .output()
                .unwrap();
            format!("cnitool-{}", &String::from_utf8(out.stdout).unwrap()[..20])
        };
        assert_eq!(container_id("/var/run/netns/c1"), expected);
        assert_eq!(container_id("/var/run/netns/c1").len(), "cnitool-".len() + 20);
        assert_ne!(container_id("/run/netns/c1"), container_id("/var/run/netns/c1"));
    }

    #[test]
    fn netns_path_is_made_absolute_lexically() {
        let cwd = Path::new("/var/run");
        assert_eq!(absolute("netns/c1", cwd), "/var/run/netns/c1");
        assert_eq!(absolute("./netns//x/../c1", cwd), "/var/run/netns/c1");
        assert_eq!(absolute("/run/netns/../netns/c1", cwd), "/run/netns/c1");
        assert_eq!(absolute("/../..", cwd), "/");
    }

    #[test]
    fn command_line() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let inv = parse_args(&argv("/usr/bin/cnitool add cbr0 /run/netns/p"), Path::new("/")).unwrap();
        assert_eq!((inv.verb, inv.network.as_str(), inv.netns.as_str()), (Verb::Add, "cbr0", "/run/netns/p"));
        assert!(matches!(parse_args(&argv("cnitool gc cbr0"), Path::new("/")), Err(Error::Usage(_))));
        assert!(matches!(parse_args(&argv("cnitool frob a b"), Path::new("/")), Err(Error::Usage(_))));
        assert_eq!(parse_args(&argv("cnitool status n x"), Path::new("/t")).unwrap().netns, "/t/x");
    }

    #[test]
    fn environment() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Env::from_lookup(&move |k| map.get(k).cloned())
        };
        let e = env(&[]).unwrap();
        assert_eq!(e.netconfpath, PathBuf::from("/etc/cni/net.d"));
        assert_eq!((e.ifname.as_str(), e.cache_dir.as_path()), ("eth0", Path::new("/var/lib/cni")));
        assert_eq!(env(&[("CNI_IFNAME", "")]).unwrap().ifname, "");
        let e =
            env(&[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"), ("CAP_ARGS", r#"{"portMappings":[]}"#)])
                .unwrap();
        assert_eq!(e.cni_args[1], ["K8S_POD_NAME".to_string(), "p".to_string()]);
        assert!(e.cap_args.contains_key("portMappings"));
        for bad in ["A", "A=", "=b", "A=b;", "A=b=c"] {
            let err = env(&[("CNI_ARGS", bad)]).unwrap_err().to_string();
            assert!(err.contains("invalid CNI_ARGS pair"), "{bad}: {err}");
        }
        assert!(env(&[("CAP_ARGS", "[1]")]).is_err());
        assert!(env(&[("CAP_ARGS", "{")]).is_err());
    }
}
