//! The plugin entry point: environment + stdin → [`CmdArgs`] → [`Plugin`] → stdout, exit code.
//!
//! Checks run in the reference skel's order (docs/cni.md §2.2): `CNI_*` variables,
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
use crate::netns::NetNs;

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

/// Validates a container ID (docs/cni.md §2.2).
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
/// No `CNI_COMMAND` prints the "about" text; otherwise [`invoke`] runs the steps and the
/// outcome is its stdout, or the error document at the version known by then.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Outcome {
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
    match invoke(plugin, &cmd_text, env, stdin) {
        Ok(stdout) => Outcome { stdout, stderr: String::new(), exit: 0 },
        Err(Stop { error, version }) => fail(error, &version),
    }
}

/// An invocation that ends in an error, with the `cniVersion` to answer in: the plugin's
/// current one until the request's is known.
struct Stop {
    error: CniError,
    version: String,
}

impl Stop {
    fn early(error: CniError) -> Stop {
        Stop { error, version: version::CURRENT.to_string() }
    }
}

/// The steps: the command, the `CNI_*` variables, the request on stdin, its checks, the
/// namespace, then the plugin. Returns what goes to stdout.
fn invoke<P: Plugin>(
    plugin: &P,
    cmd_text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<String, Stop> {
    let command = Command::parse(cmd_text).ok_or_else(|| {
        Stop::early(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("unknown CNI_COMMAND: {cmd_text}"),
            "CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, GC, STATUS",
        ))
    })?;
    if command == Command::Version {
        let doc = serde_json::json!({
            "cniVersion": version::CURRENT,
            "supportedVersions": version::SUPPORTED,
        });
        return Ok(format!("{doc}\n"));
    }
    let vars = read_env(command, env).map_err(Stop::early)?;
    let request = read_request(stdin).map_err(Stop::early)?;
    // For a panic's answer; a process serves one request (tests call dispatch many times).
    let _ = ANSWER_VERSION.set(request.version.clone());
    let at_version = |error| Stop { error, version: request.version.clone() };
    let network = check_request(command, &request).map_err(at_version)?;
    if matches!(command, Command::Add | Command::Check) {
        ensure_not_own_netns(&vars.netns, env).map_err(at_version)?;
    }
    let version = request.version.clone();
    let args = CmdArgs {
        command,
        container_id: vars.container_id,
        netns: vars.netns,
        ifname: vars.ifname,
        args: env("CNI_ARGS").unwrap_or_default(),
        path: vars.path,
        stdin: request.bytes,
        conf: request.conf,
        network,
        version: version.clone(),
    };
    run_command(plugin, &args).map_err(|error| Stop { error, version })
}

/// The `CNI_*` variables a command needs.
struct EnvVars {
    container_id: String,
    netns: String,
    ifname: String,
    path: String,
}

/// Reads and checks the variables, in the reference's order: a malformed container ID or
/// interface name is reported before the list of missing variables.
fn read_env(command: Command, env: &dyn Fn(&str) -> Option<String>) -> Result<EnvVars, CniError> {
    let attach = matches!(command, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(command, Command::Add | Command::Check);
    let get = |k: &str| env(k).unwrap_or_default();
    let vars = EnvVars {
        container_id: get("CNI_CONTAINERID"),
        netns: get("CNI_NETNS"),
        ifname: get("CNI_IFNAME"),
        path: get("CNI_PATH"),
    };
    let mut missing = Vec::new();
    if attach && vars.container_id.is_empty() {
        missing.push("CNI_CONTAINERID");
    }
    if needs_netns && vars.netns.is_empty() {
        missing.push("CNI_NETNS");
    }
    if attach && vars.ifname.is_empty() {
        missing.push("CNI_IFNAME");
    }
    if vars.path.is_empty() {
        missing.push("CNI_PATH");
    }
    if attach && !vars.container_id.is_empty() {
        validate_container_id(&vars.container_id)?;
    }
    if attach && !vars.ifname.is_empty() {
        validate_ifname(&vars.ifname)?;
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("required env variables [{}] missing", missing.join(",")),
            "",
        ));
    }
    Ok(vars)
}

/// The request on stdin: its bytes, parsed with the common keys case-folded, and its
/// `cniVersion`.
struct Request {
    bytes: Vec<u8>,
    conf: Value,
    /// `"0.1.0"` when absent or empty, as in the reference.
    version: String,
}

fn read_request(stdin: &mut dyn Read) -> Result<Request, CniError> {
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(ErrorCode::Io, "error reading from stdin", e.to_string()))?;
    let mut conf = conf::parse_json(&bytes)?;
    conf::fold_keys(&mut conf, &[COMMON_KEYS]);
    let version = match conf.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_string(),
        Some(Value::String(s)) if s.is_empty() => "0.1.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(CniError::new(
                ErrorCode::Decode,
                "invalid cniVersion",
                format!("must be a string, got {other}"),
            ))
        }
    };
    Ok(Request { bytes, conf, version })
}

/// The network name, the plugin type and the version (supported, and new enough for the
/// command); returns the validated network name.
fn check_request(command: Command, request: &Request) -> Result<String, CniError> {
    let network = conf::validate_network_name(request.conf.get("name"))?;
    match request.conf.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "missing type",
                "the configuration has no plugin \"type\"",
            ))
        }
    }
    let parsed = version::check_supported(&request.version)?;
    let minimum = match command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = minimum.filter(|min| parsed < *min) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version does not allow {}", command.as_str()),
            format!("cniVersion {} is older than {min}", request.version),
        ));
    }
    Ok(network)
}

/// Refuses a `CNI_NETNS` that is missing, not a namespace, or the plugin's own namespace
/// (code 4 / 8), unless `CNI_NETNS_OVERRIDE` is `1`/`true`. Runs before ADD/CHECK do any work.
fn ensure_not_own_netns(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CniError> {
    let ns = NetNs::open(path).map_err(|e| CniError::invalid_env("CNI_NETNS", e.to_string()))?;
    let override_set =
        env("CNI_NETNS_OVERRIDE").map(|v| v == "1" || v.eq_ignore_ascii_case("true")).unwrap_or(false);
    if override_set {
        return Ok(());
    }
    let own = NetNs::current().map_err(|e| CniError::internal("cannot read own netns", e.to_string()))?;
    if let (Ok(a), Ok(b)) = (ns.id(), own.id()) {
        if a == b {
            return Err(CniError::new(
                ErrorCode::InvalidNetns,
                "plugin's netns and netns from CNI_NETNS should not be the same",
                path.to_string(),
            ));
        }
    }
    Ok(())
}

/// Calls the plugin; ADD's result is rendered at the request's version.
fn run_command<P: Plugin>(plugin: &P, args: &CmdArgs) -> Result<String, CniError> {
    match args.command {
        Command::Add => {
            let rendered = plugin.add(args)?.render(&args.version)?;
            serde_json::to_string_pretty(&rendered)
                .map_err(|e| CniError::internal("encode the result", e.to_string()))
        }
        Command::Del => plugin.del(args).map(|()| String::new()),
        Command::Check => plugin.check(args).map(|()| String::new()),
        Command::Gc => plugin.gc(args).map(|()| String::new()),
        Command::Status => plugin.status(args).map(|()| String::new()),
        Command::Version => Ok(String::new()),
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
    fn own_namespace_is_refused() {
        let e = ensure_not_own_netns("/proc/self/ns/net", &|_| None).unwrap_err();
        assert_eq!(e.code, 8);
        assert!(ensure_not_own_netns("/proc/self/ns/net", &|_| Some("true".into())).is_ok());
        assert_eq!(ensure_not_own_netns("/nope", &|_| None).unwrap_err().code, 4);
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
