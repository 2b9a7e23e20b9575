//! The built binary's command line: exit statuses and messages (no root, no etcd needed).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn flanneld(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flanneld"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("FLANNELD_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .output()
        .unwrap()
}

#[test]
fn bad_flag_exits_2_with_message() {
    let out = flanneld(&["-no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flag provided but not defined: -no-such-flag"), "{err}");
    assert!(err.contains("--etcd-endpoints"), "usage missing: {err}");
    assert_eq!(flanneld(&["-ip-masq=maybe"]).status.code(), Some(2));
    assert_eq!(flanneld(&["--public-ip", "300.1.1.1"]).status.code(), Some(2));
}

#[test]
fn version_and_help_exit_0() {
    let out = flanneld(&["-version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), env!("CARGO_PKG_VERSION"));
    assert!(out.stdout.is_empty());
    assert_eq!(flanneld(&["-help"]).status.code(), Some(0));
}

#[test]
fn invalid_renew_margin_exits_1() {
    for m in ["0", "1440", "-5"] {
        let out = flanneld(&[&format!("-subnet-lease-renew-margin={m}")]);
        assert_eq!(out.status.code(), Some(1), "{m}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("subnet-lease-renew-margin"));
    }
}

#[test]
fn unknown_interface_exits_1() {
    let out = flanneld(&["-iface", "wtfd-does-not-exist"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable interface"));
}

#[test]
fn unreadable_tls_files_exit_1_naming_the_file() {
    // Interface selection only reads the kernel's tables; `lo` exists everywhere.
    let out = flanneld(&[
        "-iface=lo",
        "-etcd-keyfile=/nonexistent/wtfd.key",
        "-etcd-certfile=/nonexistent/wtfd.crt",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/wtfd.crt"), "{err}");
}

#[test]
fn etcd_username_without_password_exits_2_naming_both() {
    for args in [&["-etcd-username=flannel"][..], &["--etcd-password", "secret"][..]] {
        let out = flanneld(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--etcd-username") && err.contains("--etcd-password"), "{err}");
    }
}

/// Warnings are logged before any startup check; an invalid renew margin then stops the
/// binary (exit 1) before it touches anything.
fn warnings_of(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("-subnet-lease-renew-margin=0");
    let out = flanneld(&all);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn metrics_without_healthz_port_warns_at_startup() {
    let err = warnings_of(&["-metrics"]);
    assert!(err.contains("WARN") && err.contains("--metrics has no effect"), "{err}");
    assert!(err.contains("--healthz-port"), "{err}");
    assert!(!warnings_of(&["-metrics", "-healthz-port=8471"]).contains("--metrics has no effect"));
}

#[test]
fn ignored_kube_and_klog_flags_warn_once_naming_each() {
    let err = warnings_of(&[
        "-kube-api-url=https://198.18.0.9:6443",
        "-net-config-path=/etc/wtfx/net-conf.json",
        "-set-node-network-unavailable=false",
        "-vmodule=x=2",
        "-log_backtrace_at=main.go:10",
    ]);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("accepts but does not use")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for flag in [
        "-kube-api-url=https://198.18.0.9:6443",
        "-net-config-path=/etc/wtfx/net-conf.json",
        "-set-node-network-unavailable=false",
        "-vmodule=x=2",
        "-log_backtrace_at=main.go:10",
    ] {
        assert!(lines[0].contains(flag), "{flag}: {err}");
    }
    assert!(!warnings_of(&["-kube-annotation-prefix=flannel.alpha.coreos.com"]).contains("does not use"));
}

/// docs/flannel.md §1.3, the upstream flag table: `(name, type)` for every flag it names (the
/// backticked words of a row's first cell, defaults in parentheses left out).
fn upstream_flags() -> Vec<(String, String)> {
    let doc = include_str!("../../docs/flannel.md");
    let section = doc.split("### 1.3 ").nth(1).unwrap().split("\n### ").next().unwrap();
    let mut out = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        let mut names = names.to_string();
        while let (Some(a), Some(b)) = (names.find('('), names.find(')')) {
            names.replace_range(a..=b, "");
        }
        for name in names.split('`').skip(1).step_by(2) {
            out.push((name.to_string(), kind.to_string()));
        }
    }
    out
}

/// A value of the documented type (booleans aside).
fn sample(name: &str, kind: &str) -> &'static str {
    match kind {
        "IPv4" | "IP" => "198.18.0.2",
        "IPv6" => "2001:db8::2",
        "klog" if name == "v" => "1",
        k if k.starts_with("int") => "7",
        _ => "/wtH11",
    }
}

/// Issue 11 item 9: every flag of upstream flanneld (docs/flannel.md §1.3) is accepted in Go's
/// spellings (`-name=value`, `--name value`, a bare boolean), with its documented type; the
/// flags weft adds are exactly its documented extras.
#[test]
fn every_upstream_flag_is_accepted() {
    use weft_flanneld::cli::{flags, parse, Kind, Parsed};
    let upstream = upstream_flags();
    assert!(upstream.len() >= 30, "§1.3 not read: {upstream:?}");
    let ours = flags();
    for (name, kind) in &upstream {
        let ours = ours.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
        let Some(ours) = ours else { panic!("upstream flag -{name} is not defined") };
        match kind.as_str() {
            "bool" => assert_eq!(ours, Kind::Bool, "{name}"),
            "repeatable" => assert_eq!(ours, Kind::Repeat, "{name}"),
            _ => {}
        }
        let value = if ours == Kind::Bool { "false" } else { sample(name, kind) };
        let mut spellings =
            vec![vec![format!("-{name}={value}")], vec![format!("--{name}"), value.to_string()]];
        if ours == Kind::Bool {
            spellings[1] = vec![format!("--{name}")];
        }
        for args in spellings {
            let argv: Vec<String> = std::iter::once("flanneld".to_string()).chain(args.clone()).collect();
            match parse(&argv, |_| None) {
                Parsed::Run(..) | Parsed::Version => {}
                // Only the credentials' pairing rule may refuse one of them alone.
                Parsed::Error(e) if name.starts_with("etcd-user") || name.starts_with("etcd-pass") => {
                    assert!(e.contains("needs both"), "{args:?}: {e}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
    let mut extras: Vec<&str> =
        ours.iter().map(|(n, _)| n.as_str()).filter(|n| !upstream.iter().any(|(u, _)| u == n)).collect();
    extras.sort_unstable();
    assert_eq!(extras, ["debug-dataplane", "metrics", "reconcile-interval", "vtep-mac-file"]);
}
