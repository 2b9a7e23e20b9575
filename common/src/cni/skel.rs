//! The plugin entry point: environment + stdin → [`CmdArgs`] → [`Plugin`] → stdout, exit code.
//!
//! Checks run in the reference skel's order (reference/cni.md §2.2): `CNI_*` variables,
//! then stdin, the network name, the command and the version. The "CNI_NETNS is my own
//! namespace" check runs *before* ADD/CHECK do any work (the reference runs it after).
//!
//! A panic (a bug: plugins never panic on input) still answers the runtime: [`run`] installs a
//! hook that prints the spec's error document (code 999, the panic message and location in
//! `details`) on stdout and exits 1, before the release profile's `panic = "abort"` would end
//! the process with SIGABRT and an empty stdout, which a runtime reports as an unparsable result.

use std::io::{Read, Write};
use std::panic::PanicHookInfo;
use std::sync::OnceLock;

use serde_json::Value;

use super::conf::{self, COMMON_KEYS};
use super::error::{CniError, ErrorCode};
use super::result::CniResult;
use super::version::{self, Version};

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// Everything a plugin is invoked with.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; may be empty for DEL, GC and STATUS.
    pub netns: String,
    pub ifname: String,
    /// Raw `CNI_ARGS`.
    pub args: String,
    /// Raw `CNI_PATH` (`:`-separated).
    pub path: String,
    /// The exact stdin bytes (delegates get them unchanged).
    pub stdin: Vec<u8>,
    /// stdin parsed, with the common keys case-folded.
    pub conf: Value,
    /// The validated network name.
    pub network: String,
    /// The request's `cniVersion` (`"0.1.0"` when absent).
    pub version: String,
}

/// What a plugin implements. GC and STATUS default to success.
pub trait Plugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// The outcome of one invocation: what goes to stdout and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
}

/// Runs `plugin` as a CNI plugin process and exits. `name` is used in the "about" text.
pub fn run<P: Plugin>(plugin: P, name: &str) -> ! {
    crate::log::init_plugin();
    install_panic_hook();
    let outcome = dispatch(&plugin, name, &|k| std::env::var(k).ok(), &mut std::io::stdin());
    if !outcome.stderr.is_empty() {
        let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit)
}

/// The `cniVersion` a panic's error document carries: the request's, once it is known.
static ANSWER_VERSION: OnceLock<String> = OnceLock::new();

/// Makes a panic answer with the spec's error document on stdout and exit status 1 (see the
/// module docs). The default hook still prints the message (and backtrace) on stderr. No
/// stdout has been written when the plugin runs: [`run`] writes the outcome only at the end.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let version = ANSWER_VERSION.get().map_or(version::CURRENT, String::as_str);
        let doc = panic_error(info).to_json(version);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(doc.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
        drop(out);
        default_hook(info);
        std::process::exit(1);
    }));
}

/// Code 999 with the panic message and where it happened.
fn panic_error(info: &PanicHookInfo<'_>) -> CniError {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let details = match info.location() {
        Some(l) => format!("{message} (at {}:{}:{})", l.file(), l.line(), l.column()),
        None => message.to_string(),
    };
    CniError::internal("internal error: plugin panicked", details)
}

fn fail(err: CniError, version: &str) -> Outcome {
    Outcome { stdout: err.to_json(version), stderr: String::new(), exit: 1 }
}

/// Validates a container ID (reference/cni.md §2.2).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if !conf::is_valid_id(id) {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "invalid characters in containerID (CNI_CONTAINERID)",
            id.to_string(),
        ));
    }
    Ok(())
}

/// Validates an interface name (1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        "interface name is empty"
    } else if name.len() > 15 {
        "interface name is too long (at most 15 bytes)"
    } else if name == "." || name == ".." {
        "interface name is . or .."
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        "interface name contains / or : or whitespace characters"
    } else {
        return Ok(());
    };
    Err(CniError::new(ErrorCode::InvalidEnvironment, format!("invalid CNI_IFNAME: {why}"), name.to_string()))
}

/// The whole protocol, with the environment and stdin passed in (tests call this directly).
pub fn dispatch<P: Plugin>(
    plugin: &P,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Outcome {
    let fallback_version = version::CURRENT;
    let Some(cmd_text) = env("CNI_COMMAND").filter(|s| !s.is_empty()) else {
        return Outcome {
            stdout: String::new(),
            stderr: format!(
                "CNI {name} plugin (weft) v{}\nCNI protocol versions supported: {}\n",
                env!("CARGO_PKG_VERSION"),
                version::SUPPORTED.join(", ")
            ),
            exit: 0,
        };
    };
    let Some(command) = Command::parse(&cmd_text) else {
        return fail(
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("unknown CNI_COMMAND: {cmd_text}"),
                "CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, GC, STATUS",
            ),
            fallback_version,
        );
    };
    if command == Command::Version {
        let doc = serde_json::json!({
            "cniVersion": version::CURRENT,
            "supportedVersions": version::SUPPORTED,
        });
        return Outcome { stdout: format!("{doc}\n"), stderr: String::new(), exit: 0 };
    }

    // Required variables, in the reference's order.
    let attach = matches!(command, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(command, Command::Add | Command::Check);
    let get = |k: &str| env(k).unwrap_or_default();
    let (container_id, netns, ifname, path) =
        (get("CNI_CONTAINERID"), get("CNI_NETNS"), get("CNI_IFNAME"), get("CNI_PATH"));
    let mut missing = Vec::new();
    if attach && container_id.is_empty() {
        missing.push("CNI_CONTAINERID");
    }
    if needs_netns && netns.is_empty() {
        missing.push("CNI_NETNS");
    }
    if attach && ifname.is_empty() {
        missing.push("CNI_IFNAME");
    }
    if path.is_empty() {
        missing.push("CNI_PATH");
    }
    if attach && !container_id.is_empty() {
        if let Err(e) = validate_container_id(&container_id) {
            return fail(e, fallback_version);
        }
    }
    if attach && !ifname.is_empty() {
        if let Err(e) = validate_ifname(&ifname) {
            return fail(e, fallback_version);
        }
    }
    if !missing.is_empty() {
        return fail(
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
                "",
            ),
            fallback_version,
        );
    }

    let mut bytes = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut bytes) {
        return fail(
            CniError::new(ErrorCode::Io, "error reading from stdin", e.to_string()),
            fallback_version,
        );
    }
    let mut conf_value = match conf::parse_json(&bytes) {
        Ok(v) => v,
        Err(e) => return fail(e, fallback_version),
    };
    conf::fold_keys(&mut conf_value, &[COMMON_KEYS]);
    let requested = match conf_value.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_string(),
        Some(Value::String(s)) if s.is_empty() => "0.1.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return fail(
                CniError::new(
                    ErrorCode::Decode,
                    "invalid cniVersion",
                    format!("must be a string, got {other}"),
                ),
                fallback_version,
            )
        }
    };
    // For a panic's answer; a process serves one request (tests call dispatch many times).
    let _ = ANSWER_VERSION.set(requested.clone());
    let network = match conf::validate_network_name(conf_value.get("name")) {
        Ok(n) => n,
        Err(e) => return fail(e, &requested),
    };
    match conf_value.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => {
            return fail(
                CniError::new(
                    ErrorCode::InvalidConfig,
                    "missing type",
                    "the configuration has no plugin \"type\"",
                ),
                &requested,
            )
        }
    }
    let parsed = match version::check_supported(&requested) {
        Ok(v) => v,
        Err(e) => return fail(e, &requested),
    };
    let minimum = match command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = minimum {
        if parsed < min {
            return fail(
                CniError::new(
                    ErrorCode::IncompatibleVersion,
                    format!("config version does not allow {}", command.as_str()),
                    format!("cniVersion {requested} is older than {min}"),
                ),
                &requested,
            );
        }
    }
    if needs_netns {
        if let Err(e) = crate::netns::ensure_not_own_netns(&netns, env) {
            return fail(e, &requested);
        }
    }

    let args = CmdArgs {
        command,
        container_id,
        netns,
        ifname,
        args: get("CNI_ARGS"),
        path,
        stdin: bytes,
        conf: conf_value,
        network,
        version: requested.clone(),
    };
    let ok = |stdout: String| Outcome { stdout, stderr: String::new(), exit: 0 };
    let outcome = match command {
        Command::Add => plugin.add(&args).and_then(|r| r.render(&requested)).and_then(|v| {
            serde_json::to_string_pretty(&v)
                .map_err(|e| CniError::internal("encode the result", e.to_string()))
        }),
        Command::Del => plugin.del(&args).map(|()| String::new()),
        Command::Check => plugin.check(&args).map(|()| String::new()),
        Command::Gc => plugin.gc(&args).map(|()| String::new()),
        Command::Status => plugin.status(&args).map(|()| String::new()),
        Command::Version => Ok(String::new()),
    };
    match outcome {
        Ok(out) => ok(out),
        Err(e) => fail(e, &requested),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::IpConfig;
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, _a: &CmdArgs) -> Result<CniResult, CniError> {
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.1.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _a: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _a: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |k: &str| map.get(k).cloned();
        dispatch(&Fake, "fake", &env, &mut stdin.as_bytes())
    }

    fn code(o: &Outcome) -> u64 {
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["code"].as_u64().unwrap()
    }

    const ENV_DEL: &[(&str, &str)] =
        &[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")];

    #[test]
    fn version_needs_nothing() {
        let o = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(o.exit, 0);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn no_command_prints_about_on_stderr() {
        let o = run_with(&[], "");
        assert_eq!((o.exit, o.stdout.as_str()), (0, ""));
        assert!(o.stderr.contains("CNI protocol versions supported"));
    }

    #[test]
    fn env_errors_name_the_variable() {
        let o = run_with(&[("CNI_COMMAND", "ADD")], "{}");
        assert_eq!(code(&o), 4);
        assert!(o.stdout.contains("CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"));
        let o = run_with(&[("CNI_COMMAND", "BOGUS")], "{}");
        assert_eq!(code(&o), 4);
        assert!(o.stdout.contains("CNI_COMMAND"));
        let o = run_with(
            &[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "a/b"), ("CNI_PATH", "/x")],
            "{}",
        );
        assert_eq!(code(&o), 4);
        assert!(o.stdout.contains("CNI_IFNAME"));
        let o = run_with(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "0123456789abcdef"),
                ("CNI_PATH", "/x"),
            ],
            "{}",
        );
        assert_eq!(code(&o), 4);
    }

    #[test]
    fn stdin_and_version_errors() {
        assert_eq!(code(&run_with(ENV_DEL, "")), 6);
        assert_eq!(code(&run_with(ENV_DEL, "not json")), 6);
        assert_eq!(code(&run_with(ENV_DEL, r#"{"cniVersion":"1.0.0","type":"x"}"#)), 7);
        assert_eq!(code(&run_with(ENV_DEL, r#"{"cniVersion":"1.0.0","name":"n"}"#)), 7);
        assert_eq!(code(&run_with(ENV_DEL, r#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#)), 1);
        assert_eq!(code(&run_with(ENV_DEL, r#"{"cniVersion":"1.0.0","name":"../n","type":"x"}"#)), 7);
        let ok = run_with(ENV_DEL, r#"{"cniVersion":"1.0.0","name":"n","type":"x"}"#);
        assert_eq!((ok.exit, ok.stdout.as_str()), (0, ""));
    }

    #[test]
    fn check_needs_0_4_0_and_gc_1_1_0() {
        let mut env = ENV_DEL.to_vec();
        env[0] = ("CNI_COMMAND", "GC");
        assert_eq!(code(&run_with(&env, r#"{"cniVersion":"1.0.0","name":"n","type":"x"}"#)), 1);
        assert_eq!(run_with(&env, r#"{"cniVersion":"1.1.0","name":"n","type":"x"}"#).exit, 0);
    }

    #[test]
    fn missing_version_means_0_1_0() {
        let mut env = ENV_DEL.to_vec();
        env[0] = ("CNI_COMMAND", "ADD");
        env.push(("CNI_NETNS", "/nonexistent/ns"));
        let o = run_with(&env, r#"{"name":"n","type":"x"}"#);
        // the netns check fails first since the path does not exist
        assert_eq!(code(&o), 4);
    }

    /// Whatever the runtime sends, the skeleton answers: success, or the spec's error JSON on
    /// stdout with a code and a message, and a non-zero exit. It never panics.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;
        use serde_json::json;

        const COMMANDS: &[&str] = &["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "add", ""];
        const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9", ""];

        fn assert_answer(o: &Outcome) -> Result<(), TestCaseError> {
            if o.exit == 0 {
                return Ok(());
            }
            let v: Value = serde_json::from_str(&o.stdout)
                .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {:?}", o.stdout)))?;
            prop_assert!(v["code"].as_u64().is_some(), "{}", o.stdout);
            prop_assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{}", o.stdout);
            Ok(())
        }

        proptest! {
            #[test]
            fn arbitrary_stdin_bytes(cmd in 0..COMMANDS.len(), stdin in proptest::collection::vec(any::<u8>(), 0..300)) {
                let env = [("CNI_COMMAND", COMMANDS[cmd]), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"),
                           ("CNI_PATH", "/x"), ("CNI_NETNS", "")];
                let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let get = move |k: &str| map.get(k).cloned();
                assert_answer(&dispatch(&Fake, "fake", &get, &mut stdin.as_slice()))?;
            }

            #[test]
            fn config_shaped_stdin_and_odd_environment(
                cmd in 0..COMMANDS.len(),
                version in 0..VERSIONS.len(),
                name in "[a-z./-]{0,12}",
                id in "\\PC{0,20}",
                ifname in "\\PC{0,20}",
                args in "\\PC{0,40}",
                prev in prop_oneof![Just(Value::Null), Just(json!({})), Just(json!({"ips": [{"address": "x"}]})),
                                    Just(json!({"ips": [{"address": "10.0.0.2/24", "interface": 99}]})),
                                    Just(json!({"interfaces": "no"})), Just(json!([1, 2]))],
            ) {
                let conf = json!({"cniVersion": VERSIONS[version], "name": name, "type": "x", "prevResult": prev});
                let env = [("CNI_COMMAND", COMMANDS[cmd]), ("CNI_CONTAINERID", id.as_str()),
                           ("CNI_IFNAME", ifname.as_str()), ("CNI_ARGS", args.as_str()), ("CNI_PATH", "/x")];
                let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let get = move |k: &str| map.get(k).cloned();
                let stdin = conf.to_string();
                assert_answer(&dispatch(&Fake, "fake", &get, &mut stdin.as_bytes()))?;
            }
        }
    }
}
