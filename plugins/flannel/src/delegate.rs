//! Building the delegate config from the flannel config and `subnet.env` (pure).
//!
//! Rules of upstream `flannel_linux.go` (docs/flannel.md §12.3): the `delegate` object is
//! the base; `name`, `cniVersion` and `runtimeConfig` are imposed; `type`, `ipMasq`, `mtu` and
//! `isGateway` are defaults the operator may override; `ipam` is rebuilt with flannel's subnet
//! as the only range set(s) and the cluster network(s) appended to the routes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use weft_common::cni::{conf, CniError};
use weft_common::flannel::SubnetEnv;

use crate::config::FlannelConf;

/// The delegate used when `delegate.type` is absent.
pub const DEFAULT_DELEGATE_TYPE: &str = "bridge";
/// The IPAM plugin used when `ipam.type` is absent.
pub const DEFAULT_IPAM_TYPE: &str = "host-local";

/// A route as the Go `types.Route` re-serialises it: `gw`, `mtu`, `advmss`, `priority` only
/// when set and non-zero (`omitempty`), `table`/`scope` whenever present, unknown keys dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IpamRoute {
    dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    mtu: Option<i64>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    advmss: Option<i64>,
    #[serde(default, skip_serializing_if = "none_or_zero")]
    priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<i64>,
}

fn none_or_zero(v: &Option<i64>) -> bool {
    matches!(v, None | Some(0))
}

/// Only `routes` of the input `ipam` is interpreted; decoding the whole object gives errors
/// the path `ipam.routes[0].dst`.
#[derive(Debug, Deserialize)]
struct IpamRoutes {
    #[serde(default)]
    routes: Option<Vec<IpamRoute>>,
}

/// Builds the delegate config object. Expects [`FlannelConf::validate_delegate`] to have
/// passed; fails (code 7) only when `ipam.routes` does not decode.
pub fn build(conf: &FlannelConf, env: &SubnetEnv) -> Result<Map<String, Value>, CniError> {
    let mut d = conf.delegate.clone();
    d.insert("name".into(), json!(conf.name));
    if !d.contains_key("type") {
        d.insert("type".into(), json!(DEFAULT_DELEGATE_TYPE));
    }
    // flanneld masquerades pod traffic itself with --ip-masq; only otherwise the bridge must.
    if !d.contains_key("ipMasq") {
        d.insert("ipMasq".into(), json!(!env.ipmasq));
    }
    if !d.contains_key("mtu") {
        d.insert("mtu".into(), json!(env.mtu));
    }
    if d.get("type") == Some(&json!(DEFAULT_DELEGATE_TYPE)) && !d.contains_key("isGateway") {
        d.insert("isGateway".into(), json!(true));
    }
    if !conf.cni_version.is_empty() {
        d.insert("cniVersion".into(), json!(conf.cni_version));
    }
    if let Some(rc) = &conf.runtime_config {
        d.insert("runtimeConfig".into(), rc.clone());
    }
    d.insert("ipam".into(), Value::Object(build_ipam(conf, env)?));
    Ok(d)
}

fn build_ipam(conf: &FlannelConf, env: &SubnetEnv) -> Result<Map<String, Value>, CniError> {
    let mut ipam = conf.ipam.clone().unwrap_or_default();
    if !ipam.contains_key("type") {
        ipam.insert("type".into(), json!(DEFAULT_IPAM_TYPE));
    }
    // One range set per family, v4 first: the node's whole subnet, nothing else.
    let ranges: Vec<Value> = [env.subnet_network(), env.ipv6_subnet_network()]
        .into_iter()
        .flatten()
        .map(|subnet| json!([{ "subnet": subnet.to_string() }]))
        .collect();
    ipam.insert("ranges".into(), Value::Array(ranges));

    let wire: IpamRoutes = conf::decode(&Value::Object(ipam.clone()), "ipam")?;
    let mut routes = wire.routes.unwrap_or_default();
    // The cluster networks are reached through the bridge gateway (no `gw`: host-local and
    // bridge fill in the range's gateway).
    routes.extend(env.networks.iter().chain(&env.ipv6_networks).map(|net| IpamRoute {
        dst: *net,
        gw: None,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }));
    let routes = serde_json::to_value(routes)
        .map_err(|e| CniError::internal("failed to encode ipam.routes", e.to_string()))?;
    ipam.insert("routes".into(), routes);
    Ok(ipam)
}

/// The bytes sent to the delegate and saved for DEL: keys sorted, compact, no newline.
pub fn render(delegate: &Map<String, Value>) -> Vec<u8> {
    weft_common::json::to_sorted_compact(&Value::Object(delegate.clone()))
}

/// The delegate's plugin type (defaults applied by [`build`], so normally present).
pub fn delegate_type(delegate: &Map<String, Value>) -> &str {
    delegate.get("type").and_then(Value::as_str).unwrap_or(DEFAULT_DELEGATE_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, a few levels deep, with keys biased towards the ones flannel reads.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9./:]{0,12}".prop_map(Value::String),
            Just(json!("10.244.0.0/16")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let key = prop_oneof![
                Just("type".to_string()),
                Just("routes".to_string()),
                Just("dst".to_string()),
                Just("gw".to_string()),
                Just("name".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_delegate_and_ipam_never_panic(delegate in any_json(), ipam in any_json()) {
            let conf = json!({"cniVersion": "0.3.1", "name": "n", "delegate": delegate, "ipam": ipam});
            let _ = build_from(&conf, ENV);
        }
    }

    /// The example of docs/flannel.md §12.3, byte for byte.
    const GOLDEN: &str = r#"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#;

    const ENV: &str =
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn stock_plugin() -> Value {
        // The flannel entry of the stock conflist as libcni sends it (name/cniVersion injected).
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../test-configs/10-flannel.conflist"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut p = list["plugins"][0].clone();
        p["name"] = list["name"].clone();
        p["cniVersion"] = list["cniVersion"].clone();
        p
    }

    fn build_from(conf: &Value, env: &str) -> Result<String, CniError> {
        let c = FlannelConf::parse(conf, conf["name"].as_str().unwrap())?;
        c.validate_delegate()?;
        let env = SubnetEnv::parse(env, "subnet.env").unwrap();
        Ok(String::from_utf8(render(&build(&c, &env)?)).unwrap())
    }

    #[test]
    fn stock_conflist_gives_the_golden_delegate() {
        assert_eq!(build_from(&stock_plugin(), ENV).unwrap(), GOLDEN);
    }

    #[test]
    fn golden_subnet_env_lies_in_the_shipped_network_config() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../test-configs/flannel-network-config.json"
        ))
        .unwrap();
        let config: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(config["Backend"]["Type"], "vxlan");
        let network: IpNetwork = config["Network"].as_str().unwrap().parse().unwrap();
        let env = SubnetEnv::parse(ENV, "subnet.env").unwrap();
        assert_eq!(env.networks, [network]);
        assert!(network.contains(env.subnet_network().unwrap().network()));
    }

    #[test]
    fn delegate_values_win_over_defaults_but_not_over_imposed_keys() {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "net", "type": "flannel",
            "delegate": {"type": "bridge", "ipMasq": true, "mtu": 1400, "isGateway": false,
                         "cniVersion": "0.2.0", "bridge": "br9", "runtimeConfig": {"x": 1}},
            "runtimeConfig": {"portMappings": []},
            "dns": {"nameservers": ["10.0.0.10"]}, "hairpinMode": true
        });
        let out: Value = serde_json::from_str(&build_from(&conf, ENV).unwrap()).unwrap();
        assert_eq!(out["ipMasq"], true);
        assert_eq!(out["mtu"], 1400);
        assert_eq!(out["isGateway"], false);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["bridge"], "br9");
        assert_eq!(out["runtimeConfig"], json!({"portMappings": []}));
        // top-level extras are not forwarded
        assert!(out.get("dns").is_none());
        assert!(out.get("hairpinMode").is_none());
    }

    #[test]
    fn other_delegate_types_get_no_is_gateway_and_ipmasq_follows_flanneld() {
        let conf = json!({"cniVersion": "0.3.1", "name": "n", "delegate": {"type": "ipvlan"}});
        let env = ENV.replace("IPMASQ=true", "IPMASQ=false");
        let out: Value = serde_json::from_str(&build_from(&conf, &env).unwrap()).unwrap();
        assert!(out.get("isGateway").is_none());
        assert_eq!(out["ipMasq"], true);
        assert_eq!(out["type"], "ipvlan");
    }

    #[test]
    fn ipam_keeps_extra_keys_replaces_ranges_and_appends_routes() {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "n",
            "ipam": {"type": "host-local", "dataDir": "/tmp/d",
                     "ranges": [[{"subnet": "192.168.0.0/24"}]],
                     "routes": [{"dst": "192.168.5.0/24", "gw": "10.244.1.254", "priority": 0,
                                 "table": 0, "junk": 1}]}
        });
        let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
                   FLANNEL_IPV6_NETWORK=fd00:42::/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\n\
                   FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        let out: Value = serde_json::from_str(&build_from(&conf, env).unwrap()).unwrap();
        assert_eq!(
            out["ipam"],
            json!({
                "type": "host-local", "dataDir": "/tmp/d",
                "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:42:0:1::/64"}]],
                "routes": [{"dst": "192.168.5.0/24", "gw": "10.244.1.254", "table": 0},
                           {"dst": "10.244.0.0/16"}, {"dst": "fd00:42::/56"}]
            })
        );
    }

    /// Dual stack with the stock conflist: one range set per family (IPv4 first), a route per
    /// cluster network of each family, byte for byte what upstream's `getDelegateIPAM` builds
    /// (docs/flannel.md §12.3). The MTU is flanneld's, here one that fits VXLAN over IPv6.
    #[test]
    fn dual_stack_subnet_env_gives_one_range_per_family() {
        let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
                   FLANNEL_IPV6_NETWORK=fd00:42::/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\n\
                   FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n";
        assert_eq!(
            build_from(&stock_plugin(), env).unwrap(),
            r#"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:42:0:1::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00:42::/56"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1430,"name":"cbr0","type":"bridge"}"#
        );
        // IPv6 only (no IPv4 pair): one IPv6 range set and route.
        let only = "FLANNEL_IPV6_NETWORK=fd00:42::/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\n\
                    FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        let out: Value = serde_json::from_str(&build_from(&stock_plugin(), only).unwrap()).unwrap();
        assert_eq!(out["ipam"]["ranges"], json!([[{"subnet": "fd00:42:0:1::/64"}]]));
        assert_eq!(out["ipam"]["routes"], json!([{"dst": "fd00:42::/56"}]));
        // Cluster networks are used as networks (Go's net.ParseCIDR), duplicates dropped.
        let hosty = "FLANNEL_NETWORK=10.244.0.1/16,10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
                     FLANNEL_IPV6_NETWORK=fd00:42::9/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\n\
                     FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        let out: Value = serde_json::from_str(&build_from(&stock_plugin(), hosty).unwrap()).unwrap();
        assert_eq!(out["ipam"]["routes"], json!([{"dst": "10.244.0.0/16"}, {"dst": "fd00:42::/56"}]));
    }

    #[test]
    fn bad_ipam_route_names_the_field() {
        let conf = json!({"name": "n", "ipam": {"routes": [{"dst": "nope"}]}});
        let e = build_from(&conf, ENV).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "invalid ipam.routes[0].dst"));
    }

    #[test]
    fn missing_cni_version_keeps_the_delegates_own() {
        let conf = json!({"name": "n", "delegate": {"cniVersion": "0.4.0"}});
        let out: Value = serde_json::from_str(&build_from(&conf, ENV).unwrap()).unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
    }
}
