//! Parsers of untrusted input (etcd keys and values, the network config, subnet.env, argv)
//! never panic on arbitrary input.

use proptest::prelude::*;
use weft_flanneld::cli;
use weft_flanneld::lease::{LeaseAttrs, LeaseKey};
use weft_flanneld::network::parse_config;
use weft_flanneld::state::parse_previous_subnet;

proptest! {
    #[test]
    fn lease_key_never_panics(s in "\\PC*") {
        if let Ok(k) = LeaseKey::parse(&s) {
            // Whatever parses renders back to something that parses to the same key.
            prop_assert_eq!(LeaseKey::parse(&k.render()).ok(), Some(k));
        }
    }

    #[test]
    fn lease_key_like_inputs(a in 0u8..=255, b in 0u8..=255, len in 0u8..40, v6 in proptest::option::of("[0-9a-f:]{0,12}-[0-9]{1,3}")) {
        let s = match v6 { Some(v) => format!("10.{a}.{b}.0-{len}&{v}"), None => format!("10.{a}.{b}.0-{len}") };
        let _ = LeaseKey::parse(&s);
    }

    #[test]
    fn lease_attrs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(a) = LeaseAttrs::parse(&bytes) {
            let _ = a.vxlan_data();
            prop_assert!(LeaseAttrs::parse(&a.render()).is_ok());
        }
    }

    #[test]
    fn json_shaped_attrs_never_panic(ip in "[0-9.]{0,16}", mac in "[0-9a-fA-F:-]{0,20}", vni in any::<i64>()) {
        let text = format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"}}}}"#);
        if let Ok(a) = LeaseAttrs::parse(text.as_bytes()) {
            let _ = a.vxlan_data();
        }
    }

    #[test]
    fn network_config_never_panics(net in "[0-9./]{0,20}", len in any::<i64>(), min in "[0-9.]{0,16}", typ in "[a-zA-Z]{0,6}") {
        let text = format!(r#"{{"Network":"{net}","SubnetLen":{len},"SubnetMin":"{min}","Backend":{{"Type":"{typ}"}}}}"#);
        let _ = parse_config(text.as_bytes());
    }

    #[test]
    fn subnet_env_never_panics(s in "\\PC*") {
        let _ = parse_previous_subnet(&s);
    }

    #[test]
    fn argv_never_panics(args in proptest::collection::vec("-{0,3}[a-z-]{0,12}(=[a-z0-9.]{0,6})?", 0..6)) {
        let mut argv = vec!["flanneld".to_string()];
        argv.extend(args);
        let _ = cli::parse(&argv, |_| None);
    }
}
