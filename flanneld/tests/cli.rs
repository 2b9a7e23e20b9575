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
