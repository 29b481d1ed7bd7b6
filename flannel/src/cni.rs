//! The `flannel` CNI plugin: the same binary, reached through a link named `flannel` in the
//! CNI plugin directory (k3s's trick). It is a meta-plugin, as flannel's own is: it reads the
//! node's `subnet.env`, fills in a `bridge` + `host-local` configuration for the node's subnet,
//! saves it under `dataDir/<containerID>` and hands the call to the real `bridge` plugin, so
//! DEL replays exactly what ADD used even if `subnet.env` changed meanwhile.
//!
//! The dispatcher reads its environment and stdin through arguments (testable), and every
//! error leaves as CNI error JSON on stdout with exit code 1, as the spec asks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use crate::network::SubnetEnv;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// CNI error codes from the spec.
const ERR_INCOMPATIBLE_VERSION: u32 = 1;
const ERR_INVALID_ENV: u32 = 4;
const ERR_IO: u32 = 5;
const ERR_DECODE: u32 = 6;
const ERR_INVALID_CONFIG: u32 = 7;
const ERR_TRY_AGAIN: u32 = 11;

#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    fn to_json(&self, version: &str) -> Vec<u8> {
        let mut body = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            body["details"] = json!(self.details);
        }
        let mut out = serde_json::to_vec(&body).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Run one CNI call. Returns what goes to stdout and the exit code.
pub fn dispatch(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> (Vec<u8>, i32) {
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|conf| conf["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".to_string());
    match handle(env, stdin) {
        Ok(out) => (out, 0),
        Err(error) => (error.to_json(&version), 1),
    }
}

fn handle(env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let command = env("CNI_COMMAND")
        .ok_or_else(|| CniError::new(ERR_INVALID_ENV, "CNI_COMMAND is not set"))?;
    if command == "VERSION" {
        let body = json!({ "cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS });
        return Ok(serde_json::to_vec(&body).unwrap_or_default());
    }
    let conf: Map<String, Value> = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ERR_DECODE,
            format!("the network configuration on stdin is not JSON: {e}"),
        )
    })?;
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.3.0");
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            ERR_INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version} is not supported; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let required = |name: &str| {
        env(name).ok_or_else(|| CniError::new(ERR_INVALID_ENV, format!("{name} is not set")))
    };
    let data_dir = PathBuf::from(
        conf.get("dataDir")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_DATA_DIR),
    );
    match command.as_str() {
        "ADD" => {
            let container = required("CNI_CONTAINERID")?;
            let subnet_file = conf
                .get("subnetFile")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_SUBNET_FILE);
            let text = std::fs::read_to_string(subnet_file).map_err(|e| {
                CniError::new(
                    ERR_TRY_AGAIN,
                    format!(
                        "reading {subnet_file}: {e} (is the flannel daemon running on this node?)"
                    ),
                )
            })?;
            let subnet_env = SubnetEnv::parse(&text)
                .map_err(|e| CniError::new(ERR_INVALID_CONFIG, e.to_string()))?;
            let delegate = delegate_config(&conf, &subnet_env)?;
            save(&data_dir, &container, &delegate)?;
            let result = invoke_delegate(env, &delegate, "ADD");
            if result.is_err() {
                let _ = std::fs::remove_file(data_dir.join(&container));
            }
            result
        }
        "DEL" => {
            let container = required("CNI_CONTAINERID")?;
            let path = data_dir.join(&container);
            let saved = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Nothing saved: ADD never completed, or DEL already ran. Both are success.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(CniError::new(
                        ERR_IO,
                        format!("reading {}: {e}", path.display()),
                    ))
                }
            };
            let delegate: Map<String, Value> = serde_json::from_slice(&saved).map_err(|e| {
                CniError::new(ERR_DECODE, format!("{} is not JSON: {e}", path.display()))
            })?;
            let out = invoke_delegate(env, &delegate, "DEL")?;
            let _ = std::fs::remove_file(&path);
            Ok(out)
        }
        "CHECK" => {
            let container = required("CNI_CONTAINERID")?;
            let path = data_dir.join(&container);
            let saved = std::fs::read(&path).map_err(|e| {
                CniError::new(
                    ERR_IO,
                    format!(
                        "no saved configuration for {container} ({}): {e}",
                        path.display()
                    ),
                )
            })?;
            let mut delegate: Map<String, Value> = serde_json::from_slice(&saved).map_err(|e| {
                CniError::new(ERR_DECODE, format!("{} is not JSON: {e}", path.display()))
            })?;
            if let Some(prev) = conf.get("prevResult") {
                delegate.insert("prevResult".into(), prev.clone());
            }
            invoke_delegate(env, &delegate, "CHECK")
        }
        "STATUS" => {
            let subnet_file = conf
                .get("subnetFile")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_SUBNET_FILE);
            if Path::new(subnet_file).exists() {
                Ok(Vec::new())
            } else {
                // Code 50: "the plugin is not available", so the runtime will not schedule ADDs yet.
                Err(CniError::new(
                    50,
                    format!("{subnet_file} does not exist yet: flannel has no lease"),
                ))
            }
        }
        other => Err(CniError::new(
            ERR_INVALID_ENV,
            format!("unknown CNI_COMMAND {other}"),
        )),
    }
}

/// The delegate configuration, filling only what the user left unset (as flannel does).
pub fn delegate_config(
    conf: &Map<String, Value>,
    subnet_env: &SubnetEnv,
) -> Result<Map<String, Value>, CniError> {
    let mut delegate = match conf.get("delegate") {
        Some(Value::Object(d)) => d.clone(),
        Some(_) => {
            return Err(CniError::new(
                ERR_INVALID_CONFIG,
                "\"delegate\" must be an object",
            ))
        }
        None => Map::new(),
    };
    let set_default = |d: &mut Map<String, Value>, key: &str, value: Value| {
        d.entry(key.to_string()).or_insert(value);
    };
    delegate.insert(
        "name".into(),
        conf.get("name").cloned().unwrap_or(json!("cbr0")),
    );
    if let Some(version) = conf.get("cniVersion") {
        delegate.insert("cniVersion".into(), version.clone());
    }
    set_default(&mut delegate, "type", json!("bridge"));
    // flanneld masquerades itself when started with --ip-masq; otherwise the bridge must.
    set_default(&mut delegate, "ipMasq", json!(!subnet_env.ipmasq));
    set_default(&mut delegate, "mtu", json!(subnet_env.mtu));
    if delegate.get("type") == Some(&json!("bridge")) {
        set_default(&mut delegate, "isGateway", json!(true));
    }
    let mut ipam = match conf.get("ipam") {
        Some(Value::Object(i)) => i.clone(),
        _ => Map::new(),
    };
    set_default(&mut ipam, "type", json!("host-local"));
    let node_subnet = subnet_env.subnet.trunc();
    ipam.insert(
        "ranges".into(),
        json!([[{ "subnet": node_subnet.to_string() }]]),
    );
    let mut routes = match ipam.get("routes") {
        Some(Value::Array(r)) => r.clone(),
        _ => Vec::new(),
    };
    routes.push(json!({ "dst": subnet_env.network.to_string() }));
    ipam.insert("routes".into(), Value::Array(routes));
    delegate.insert("ipam".into(), Value::Object(ipam));
    Ok(delegate)
}

fn save(dir: &Path, container: &str, delegate: &Map<String, Value>) -> Result<(), CniError> {
    if container.contains('/') || container.is_empty() {
        return Err(CniError::new(
            ERR_INVALID_ENV,
            format!("CNI_CONTAINERID `{container}` is not a valid ID"),
        ));
    }
    let io = |e: std::io::Error| {
        CniError::new(
            ERR_IO,
            format!(
                "saving the delegate configuration in {}: {e}",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(
        dir.join(container),
        serde_json::to_vec(delegate).unwrap_or_default(),
    )
    .map_err(io)
}

/// Run the delegate plugin found on `CNI_PATH` with our environment and `conf` on stdin;
/// its stdout is our result, its error JSON our error.
fn invoke_delegate(
    env: &dyn Fn(&str) -> Option<String>,
    conf: &Map<String, Value>,
    command: &str,
) -> Result<Vec<u8>, CniError> {
    let plugin = conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("bridge")
        .to_string();
    let search =
        env("CNI_PATH").ok_or_else(|| CniError::new(ERR_INVALID_ENV, "CNI_PATH is not set"))?;
    let path = std::env::split_paths(&search)
        .map(|dir| dir.join(&plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ERR_INVALID_CONFIG,
                format!("delegate plugin `{plugin}` not found in CNI_PATH {search}"),
            )
        })?;
    let mut child = Command::new(&path);
    for name in [
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        if let Some(value) = env(name) {
            child.env(name, value);
        }
    }
    let mut child = child
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::new(ERR_IO, format!("running {}: {e}", path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&serde_json::to_vec(conf).unwrap_or_default());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CniError::new(ERR_IO, format!("waiting for {}: {e}", path.display())))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(err) => Err(CniError {
            code: err["code"].as_u64().unwrap_or(u64::from(ERR_IO)) as u32,
            msg: format!("{plugin}: {}", err["msg"].as_str().unwrap_or("failed")),
            details: err["details"].as_str().unwrap_or_default().to_string(),
        }),
        Err(_) => Err(CniError::new(
            ERR_IO,
            format!("{plugin} failed ({}) without an error JSON", output.status),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet_env() -> SubnetEnv {
        SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap()
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn delegate_is_bridge_with_host_local_over_the_node_subnet() {
        let conf: Map<String, Value> = serde_json::from_str(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true}}"#).unwrap();
        let delegate = delegate_config(&conf, &subnet_env()).unwrap();
        assert_eq!(
            Value::Object(delegate),
            json!({
                "cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "hairpinMode": true,
                "ipMasq": false, "mtu": 1450, "isGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "10.244.0.0/16"}]}
            })
        );
    }

    #[test]
    fn user_settings_win_over_defaults() {
        let conf: Map<String, Value> = serde_json::from_str(
            r#"{"name":"n","delegate":{"mtu":1400,"ipMasq":true},"ipam":{"dataDir":"/x"}}"#,
        )
        .unwrap();
        let delegate = delegate_config(&conf, &subnet_env()).unwrap();
        assert_eq!(delegate["mtu"], 1400);
        assert_eq!(delegate["ipMasq"], true);
        assert_eq!(delegate["ipam"]["dataDir"], "/x");
    }

    #[test]
    fn version_and_errors_follow_the_spec() {
        let (out, code) = dispatch(&env_of(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(code, 0);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0")));

        let (out, code) = dispatch(&env_of(&[]), b"{}");
        assert_eq!(code, 1);
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (e["code"].as_u64(), e["msg"].as_str()),
            (Some(4), Some("CNI_COMMAND is not set"))
        );

        let (out, _) = dispatch(&env_of(&[("CNI_COMMAND", "ADD")]), b"{not json");
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["code"], 6);

        let (out, _) = dispatch(
            &env_of(&[("CNI_COMMAND", "ADD")]),
            br#"{"cniVersion":"9.9.9"}"#,
        );
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["code"], 1);

        let conf = br#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"/nonexistent/subnet.env"}"#;
        let (out, code) = dispatch(
            &env_of(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]),
            conf,
        );
        assert_eq!(code, 1);
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["code"], 11);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("is the flannel daemon running"),
            "{e}"
        );
    }

    #[test]
    fn del_without_saved_state_is_success() {
        let conf = br#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","dataDir":"/nonexistent/flannel"}"#;
        let (out, code) = dispatch(
            &env_of(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "gone")]),
            conf,
        );
        assert_eq!((code, out.len()), (0, 0));
    }
}
