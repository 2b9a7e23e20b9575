//! Attaching pods: the conflists a lab node uses and the runner that executes them.
//!
//! Pods are attached the way an operator would: `cnitool add <net> <netns>` with `NETCONFPATH`,
//! `CNI_PATH` and `CNI_CACHE_DIR` pointing into the lab. Until weft's `cnitool` is built the lab
//! runs the conflist itself (each plugin with the `CNI_*` environment, `prevResult` chained,
//! DEL in reverse), which is what cnitool does.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde_json::{json, Value};

use crate::cmd::run;
use crate::error::{LabError, Result};

/// Name of the stock flannel network (kube-flannel's conflist).
pub const FLANNEL_NET: &str = "cbr0";
/// Conflist file name inside a node's `NETCONFPATH`.
pub const CONFLIST_FILE: &str = "10-flannel.conflist";
/// Interface name inside pods.
pub const POD_IFNAME: &str = "eth0";

/// Per-node state locations a conflist points at (all inside the lab's temp dir).
#[derive(Debug, Clone)]
pub struct NodeCniDirs {
    /// Directory holding the conflist (`NETCONFPATH`).
    pub netconf: PathBuf,
    /// `CNI_CACHE_DIR` for cnitool.
    pub cache: PathBuf,
    /// flannel plugin `dataDir`.
    pub flannel_data: PathBuf,
    /// host-local `dataDir`.
    pub ipam_data: PathBuf,
    /// flanneld's `--subnet-file`, the flannel plugin's `subnetFile`.
    pub subnet_file: PathBuf,
}

/// The stock kube-flannel conflist (flannel → bridge delegate, then portmap), or
/// `test-configs/10-flannel.conflist` when the repository has one, with every state path
/// pointed into `dirs`.
pub fn flannel_conflist(dirs: &NodeCniDirs) -> Result<Value> {
    let shipped = crate::workspace_root().join("test-configs").join(CONFLIST_FILE);
    let mut conf = if shipped.is_file() {
        let text = std::fs::read_to_string(&shipped).map_err(LabError::io("read", &shipped))?;
        serde_json::from_str(&text).map_err(|e| LabError::parse(shipped.display().to_string(), e))?
    } else {
        json!({
            "name": FLANNEL_NET,
            "cniVersion": "0.3.1",
            "plugins": [
                {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    };
    let plugins = conf.get_mut("plugins").and_then(Value::as_array_mut);
    let flannel = plugins
        .into_iter()
        .flatten()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("flannel"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| LabError::parse("flannel conflist", "no plugin of type flannel"))?;
    flannel.insert("subnetFile".into(), json!(dirs.subnet_file));
    flannel.insert("dataDir".into(), json!(dirs.flannel_data));
    let ipam = flannel.entry("ipam").or_insert_with(|| json!({"type": "host-local"}));
    if let Some(ipam) = ipam.as_object_mut() {
        ipam.insert("dataDir".into(), json!(dirs.ipam_data));
    }
    Ok(conf)
}

/// Sets `key` in the flannel plugin's `delegate` (the bridge configuration it builds).
pub fn set_delegate(conf: &mut Value, key: &str, value: Value) -> Result<()> {
    let flannel = conf
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("flannel"))
        .ok_or_else(|| LabError::parse("flannel conflist", "no plugin of type flannel"))?;
    let delegate = flannel
        .as_object_mut()
        .map(|f| f.entry("delegate").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| LabError::parse("flannel conflist", "delegate is not an object"))?;
    delegate.insert(key.into(), value);
    Ok(())
}

/// A flannel-less conflist for exercising the lab with the reference plugins: `bridge`
/// (cni0, gateway) with host-local handing out `subnet` and a route to `network`.
pub fn plain_bridge_conflist(
    dirs: &NodeCniDirs,
    network: Ipv4Network,
    subnet: Ipv4Network,
    mtu: u32,
) -> Value {
    json!({
        "name": FLANNEL_NET,
        "cniVersion": "1.0.0",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "mtu": mtu,
            "ipam": {
                "type": "host-local",
                "dataDir": dirs.ipam_data,
                "ranges": [[{"subnet": subnet.to_string()}]],
                // An explicit gateway: the reference bridge's CHECK looks for the route exactly
                // as the result states it, and without `gw` the result and the kernel differ.
                "routes": [{"dst": network.to_string(), "gw": gateway(subnet).to_string()}]
            }
        }]
    })
}

/// The first host address of `subnet` (the bridge's gateway address).
fn gateway(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// Writes `conflist` as the only network config in `dirs.netconf`.
pub fn write_conflist(dirs: &NodeCniDirs, conflist: &Value) -> Result<PathBuf> {
    std::fs::create_dir_all(&dirs.netconf).map_err(LabError::io("create", &dirs.netconf))?;
    let path = dirs.netconf.join(CONFLIST_FILE);
    let text = serde_json::to_string_pretty(conflist).map_err(|e| LabError::parse("conflist", e))?;
    std::fs::write(&path, text).map_err(LabError::io("write", &path))?;
    Ok(path)
}

/// How conflists are executed.
#[derive(Debug, Clone)]
pub enum Runner {
    /// weft's (or upstream's) `cnitool` binary.
    Cnitool(PathBuf),
    /// The lab runs the plugins itself (no cnitool built yet).
    Direct,
}

impl Runner {
    /// `cnitool` from the weft bin dir when built, else [`Runner::Direct`].
    pub fn detect() -> Runner {
        let p = crate::bins::bin_dir().join("cnitool");
        if p.is_file() {
            Runner::Cnitool(p)
        } else {
            Runner::Direct
        }
    }
}

/// One CNI operation on a pod.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub dirs: &'a NodeCniDirs,
    /// `CNI_PATH` (colon-separated).
    pub cni_path: &'a str,
    /// The pod namespace path (`/run/netns/<name>`).
    pub netns: &'a str,
    /// Container id used by the direct runner (cnitool derives its own).
    pub container_id: &'a str,
    /// Namespace in which the plugins run (the node's).
    pub node_netns: &'a str,
}

const CNI_TIMEOUT: Duration = Duration::from_secs(60);

/// `add`: returns the final result JSON.
pub fn add(runner: &Runner, inv: &Invocation<'_>) -> Result<Value> {
    match runner {
        Runner::Cnitool(tool) => {
            let out = cnitool(tool, "add", inv)?;
            serde_json::from_str(&out).map_err(|e| LabError::parse(format!("cnitool add result {out:?}"), e))
        }
        Runner::Direct => direct(inv, "ADD", None),
    }
}

/// `del` (for the direct runner, `prev` is the result of the ADD).
pub fn del(runner: &Runner, inv: &Invocation<'_>, prev: Option<&Value>) -> Result<()> {
    match runner {
        Runner::Cnitool(tool) => cnitool(tool, "del", inv).map(|_| ()),
        Runner::Direct => direct(inv, "DEL", prev).map(|_| ()),
    }
}

/// `check`.
pub fn check(runner: &Runner, inv: &Invocation<'_>, prev: Option<&Value>) -> Result<()> {
    match runner {
        Runner::Cnitool(tool) => cnitool(tool, "check", inv).map(|_| ()),
        Runner::Direct => direct(inv, "CHECK", prev).map(|_| ()),
    }
}

fn cnitool(tool: &Path, verb: &str, inv: &Invocation<'_>) -> Result<String> {
    let tool = tool.display().to_string();
    let netconf = inv.dirs.netconf.display().to_string();
    let cache = inv.dirs.cache.display().to_string();
    let argv = ["ip", "netns", "exec", inv.node_netns, &tool, verb, FLANNEL_NET, inv.netns];
    let env = [
        ("NETCONFPATH", netconf.as_str()),
        ("CNI_PATH", inv.cni_path),
        ("CNI_CACHE_DIR", cache.as_str()),
        ("CNI_IFNAME", POD_IFNAME),
    ];
    let r = run(&argv, &env, b"", CNI_TIMEOUT).check(&format!("cnitool {verb} {}", inv.netns))?;
    Ok(r.stdout)
}

/// Runs the conflist in `dirs.netconf` the way cnitool/libcni does.
fn direct(inv: &Invocation<'_>, command: &str, prev: Option<&Value>) -> Result<Value> {
    let path = inv.dirs.netconf.join(CONFLIST_FILE);
    let text = std::fs::read_to_string(&path).map_err(LabError::io("read", &path))?;
    let list: Value =
        serde_json::from_str(&text).map_err(|e| LabError::parse(path.display().to_string(), e))?;
    let name = list.get("name").cloned().unwrap_or(Value::Null);
    let version = list.get("cniVersion").cloned().unwrap_or(Value::Null);
    let mut plugins: Vec<Value> = list.get("plugins").and_then(Value::as_array).cloned().unwrap_or_default();
    if command == "DEL" {
        plugins.reverse();
    }
    let mut result = prev.cloned();
    for mut plugin in plugins {
        let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        let exe = inv.cni_path.split(':').map(|d| Path::new(d).join(&ty)).find(|p| p.is_file()).ok_or_else(
            || LabError::Missing {
                what: format!("CNI plugin {ty:?}"),
                path: PathBuf::from(inv.cni_path),
                hint: "build the workspace or install containernetworking-plugins".into(),
            },
        )?;
        if let Some(obj) = plugin.as_object_mut() {
            obj.insert("name".into(), name.clone());
            obj.insert("cniVersion".into(), version.clone());
            if let Some(r) = &result {
                obj.insert("prevResult".into(), r.clone());
            }
        }
        let stdin = serde_json::to_vec(&plugin).map_err(|e| LabError::parse("plugin conf", e))?;
        let exe = exe.display().to_string();
        let argv = ["ip", "netns", "exec", inv.node_netns, &exe];
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", inv.container_id),
            ("CNI_NETNS", inv.netns),
            ("CNI_IFNAME", POD_IFNAME),
            ("CNI_PATH", inv.cni_path),
        ];
        let r = run(&argv, &env, &stdin, CNI_TIMEOUT).check(&format!("{ty} {command} {}", inv.netns))?;
        if command == "ADD" {
            result = Some(
                serde_json::from_str(&r.stdout).map_err(|e| LabError::parse(format!("{ty} result"), e))?,
            );
        }
    }
    Ok(result.unwrap_or(Value::Null))
}

/// The pod's first IPv4 address from a CNI result (0.3.0+ `ips[].address`, 0.2.0 `ip4.ip`).
pub fn result_ipv4(result: &Value) -> Option<Ipv4Network> {
    let from_ips = result.get("ips").and_then(Value::as_array).into_iter().flatten().filter_map(|ip| {
        ip.get("address").and_then(Value::as_str).and_then(|a| a.parse::<Ipv4Network>().ok())
    });
    let legacy =
        result.pointer("/ip4/ip").and_then(Value::as_str).and_then(|a| a.parse::<Ipv4Network>().ok());
    from_ips.chain(legacy).next()
}

/// The address part of [`result_ipv4`].
pub fn result_ip(result: &Value) -> Option<Ipv4Addr> {
    result_ipv4(result).map(|n| n.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> NodeCniDirs {
        let d = PathBuf::from("/tmp/weft-lab/x/n0");
        NodeCniDirs {
            netconf: d.join("net.d"),
            cache: d.join("cache"),
            flannel_data: d.join("fd"),
            ipam_data: d.join("ipam"),
            subnet_file: d.join("subnet.env"),
        }
    }

    #[test]
    fn stock_conflist_points_every_state_path_into_the_lab() {
        let c = flannel_conflist(&dirs()).unwrap();
        let f = &c["plugins"][0];
        assert_eq!(f["type"], "flannel");
        assert_eq!(f["subnetFile"], "/tmp/weft-lab/x/n0/subnet.env");
        assert_eq!(f["dataDir"], "/tmp/weft-lab/x/n0/fd");
        assert_eq!(f["ipam"]["dataDir"], "/tmp/weft-lab/x/n0/ipam");
        assert_eq!(f["ipam"]["type"], "host-local");
        assert_eq!(c["name"], FLANNEL_NET);
    }

    #[test]
    fn a_delegate_key_is_set_beside_the_stock_ones() {
        let mut c = flannel_conflist(&dirs()).unwrap();
        set_delegate(&mut c, "ipMasq", json!(false)).unwrap();
        assert_eq!(c["plugins"][0]["delegate"]["ipMasq"], false);
        assert_eq!(c["plugins"][0]["delegate"]["hairpinMode"], true);
        assert!(set_delegate(&mut json!({"plugins": []}), "ipMasq", json!(false)).is_err());
    }

    #[test]
    fn pod_ip_comes_from_any_result_version() {
        let v1 = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.244.1.2/24", "gateway": "10.244.1.1"}]});
        assert_eq!(result_ip(&v1), Some(Ipv4Addr::new(10, 244, 1, 2)));
        let v020 = json!({"ip4": {"ip": "10.1.2.3/16"}});
        assert_eq!(result_ip(&v020), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(result_ip(&json!({"ips": []})), None);
        assert_eq!(result_ip(&json!("garbage")), None);
    }

    #[test]
    fn plain_conflist_routes_the_network_via_the_bridge_gateway() {
        let c = plain_bridge_conflist(
            &dirs(),
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
        );
        let ipam = &c["plugins"][0]["ipam"];
        assert_eq!(ipam["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(ipam["routes"][0], json!({"dst": "10.244.0.0/16", "gw": "10.244.3.1"}));
        assert_eq!(c["plugins"][0]["mtu"], 1450);
    }
}
