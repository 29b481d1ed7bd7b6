//! Calling CNI plugins exactly as the CNI spec (and libcni, which kubelet's runtimes use) does.
//!
//! * The network is the first configuration file in the node's config directory
//!   (`/etc/cni/net.d`, lexical order; `.conflist`, `.conf` or `.json`).
//! * ADD runs the list's plugins in order; each gets the plugin's own object plus the list's
//!   `name` and `cniVersion`, the previous plugin's result as `prevResult`, and the runtime's
//!   values for the capabilities it declares (`portMappings`) as `runtimeConfig`. The
//!   environment carries `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//!   `CNI_ARGS` and `CNI_PATH`.
//! * The final result is cached (libcni's `cniCacheV1` file under `<cacheDir>/results/`),
//!   because DEL and CHECK need it as `prevResult` and DEL must replay the configuration ADD
//!   used, even if the file in `/etc/cni/net.d` changed since.
//! * DEL runs the plugins in reverse order and succeeds when there is nothing to delete.
//! * A plugin's error JSON (`{"code":…,"msg":…}`) becomes a [`CniError`] naming the plugin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

/// What a runtime passes for one call: the container, its netns, and the pod it belongs to.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs; kubelet sends `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, …
    pub args: Vec<(String, String)>,
    /// Values for plugins' `capabilities` (e.g. `portMappings`), by capability name.
    pub capabilities: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network configuration in {0} (is the network plugin installed on this node?)")]
    NoConfig(PathBuf),
    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin `{plugin}` not found in {path}")]
    PluginNotFound { plugin: String, path: String },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        plugin: String,
        command: String,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("running CNI plugin {plugin}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the result cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A network configuration list, and the bytes it was read from (cached for DEL).
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    pub bytes: Vec<u8>,
}

impl NetworkConfigList {
    /// Parse a `.conflist`, or a single-plugin `.conf` as a list of one.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        let bad = |reason: String| CniError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let conf: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let name = conf
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"name\"".into()))?
            .to_string();
        let cni_version = conf
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.3.0")
            .to_string();
        let plugins = match conf.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|p| {
                    p.as_object()
                        .cloned()
                        .ok_or_else(|| bad("a plugin is not an object".into()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            None => vec![conf.clone()],
        };
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        if let Some(p) = plugins
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str).is_none())
        {
            return Err(bad(format!(
                "a plugin has no \"type\": {}",
                Value::Object(p.clone())
            )));
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// The first configuration in `dir`, in lexical order, as libcni picks it.
    pub fn load_default(dir: &Path) -> Result<NetworkConfigList, CniError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|_| CniError::NoConfig(dir.to_path_buf()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        let first = files
            .first()
            .ok_or_else(|| CniError::NoConfig(dir.to_path_buf()))?;
        let bytes = std::fs::read(first).map_err(|e| CniError::BadConfig {
            path: first.clone(),
            reason: e.to_string(),
        })?;
        NetworkConfigList::parse(first, &bytes)
    }
}

/// Where plugins are found and results cached: a runtime's CNI settings.
#[derive(Debug, Clone)]
pub struct Cni {
    pub plugin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

impl Cni {
    /// ADD the container to the network; returns the final result.
    pub fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value, CniError> {
        self.add_timed(list, rt).map(|(result, _)| result)
    }

    /// ADD, and how long each plugin of the list took (for the runtime's log).
    pub fn add_timed(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(Value, Vec<(String, std::time::Duration)>), CniError> {
        let mut prev: Option<Value> = None;
        let mut took = Vec::with_capacity(list.plugins.len());
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, plugin, prev.as_ref(), rt);
            let began = std::time::Instant::now();
            prev = Some(
                self.exec(plugin, "ADD", &stdin, rt)?
                    .unwrap_or_else(|| json!({})),
            );
            let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
            took.push((kind.to_string(), began.elapsed()));
        }
        let result = prev.unwrap_or_else(|| json!({}));
        self.write_cache(list, rt, &result)?;
        Ok((result, took))
    }

    /// DEL, in reverse order, with the configuration and result that ADD cached.
    pub fn del(
        &self,
        current: Option<&NetworkConfigList>,
        rt: &RuntimeConf,
    ) -> Result<(), CniError> {
        let cached = self.read_cache(current.map(|l| l.name.as_str()), rt);
        let (list, prev) = match (&cached, current) {
            (Some((list, result)), _) => (list.clone(), Some(result.clone())),
            (None, Some(list)) => (list.clone(), None),
            (None, None) => return Ok(()), // never added, and nothing to replay
        };
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_stdin(&list, plugin, prev.as_ref(), rt);
            self.exec(plugin, "DEL", &stdin, rt)?;
        }
        let path = self.cache_path(&list.name, rt);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::Cache { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// CHECK every plugin against the cached result.
    pub fn check(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        let prev = self
            .read_cache(Some(&list.name), rt)
            .map(|(_, result)| result);
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list, plugin, prev.as_ref(), rt);
            self.exec(plugin, "CHECK", &stdin, rt)?;
        }
        Ok(())
    }

    fn exec(
        &self,
        plugin: &Map<String, Value>,
        command: &str,
        stdin: &[u8],
        rt: &RuntimeConf,
    ) -> Result<Option<Value>, CniError> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let search = std::env::join_paths(&self.plugin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = self
            .plugin_dirs
            .iter()
            .map(|dir| dir.join(&kind))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: kind.clone(),
                path: search.clone(),
            })?;
        let cni_args = rt
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut child = Command::new(&path)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", &search)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CniError::Exec {
                plugin: kind.clone(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let output = child.wait_with_output().map_err(|source| CniError::Exec {
            plugin: kind.clone(),
            source,
        })?;
        if output.status.success() {
            return Ok(serde_json::from_slice(&output.stdout).ok());
        }
        let error: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            json!({ "code": 999, "msg": format!("{} and no error JSON; stderr: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()) })
        });
        Err(CniError::Plugin {
            plugin: kind,
            command: command.to_string(),
            code: error["code"].as_u64().unwrap_or(999),
            msg: error["msg"].as_str().unwrap_or("failed").to_string(),
            details: error["details"].as_str().unwrap_or_default().to_string(),
        })
    }

    fn cache_path(&self, network: &str, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", rt.container_id, rt.ifname))
    }

    fn write_cache(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        result: &Value,
    ) -> Result<(), CniError> {
        use base64::Engine as _;
        let path = self.cache_path(&list.name, rt);
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "config": base64::engine::general_purpose::STANDARD.encode(&list.bytes),
            "ifName": rt.ifname,
            "networkName": list.name,
            "netns": rt.netns,
            "cniArgs": rt.args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "capabilities": rt.capabilities,
            "result": result,
        });
        let io = |source| CniError::Cache {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&path, serde_json::to_vec(&entry).unwrap_or_default()).map_err(io)
    }

    /// The cached list and result for `rt`. With no network name, any cached entry of the
    /// container and interface (the runtime may not know the name any more).
    fn read_cache(
        &self,
        network: Option<&str>,
        rt: &RuntimeConf,
    ) -> Option<(NetworkConfigList, Value)> {
        use base64::Engine as _;
        let path = match network {
            Some(name) => self.cache_path(name, rt),
            None => {
                let suffix = format!("-{}-{}", rt.container_id, rt.ifname);
                std::fs::read_dir(self.cache_dir.join("results"))
                    .ok()?
                    .filter_map(|e| Some(e.ok()?.path()))
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(&suffix))
                    })?
            }
        };
        let entry: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(entry["config"].as_str()?)
            .ok()?;
        let list = NetworkConfigList::parse(&path, &bytes).ok()?;
        Some((list, entry["result"].clone()))
    }
}

/// What one plugin of a list reads on stdin.
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &Map<String, Value>,
    prev: Option<&Value>,
    rt: &RuntimeConf,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut runtime_config = Map::new();
    if let Some(Value::Object(wanted)) = plugin.get("capabilities") {
        for (capability, enabled) in wanted {
            if enabled == &json!(true) {
                if let Some(value) = rt.capabilities.get(capability) {
                    runtime_config.insert(capability.clone(), value.clone());
                }
            }
        }
    }
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL_LIST: &str = r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[
        {"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    fn list() -> NetworkConfigList {
        NetworkConfigList::parse(Path::new("10-flannel.conflist"), FLANNEL_LIST.as_bytes()).unwrap()
    }

    #[test]
    fn each_plugin_gets_name_version_prev_result_and_its_capabilities() {
        let list = list();
        let mut rt = RuntimeConf::default();
        rt.capabilities.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let first: Value =
            serde_json::from_slice(&plugin_stdin(&list, &list.plugins[0], None, &rt)).unwrap();
        assert_eq!(
            first,
            json!({"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true},"name":"cbr0","cniVersion":"1.0.0"})
        );
        let prev = json!({"cniVersion":"1.0.0","ips":[{"address":"10.244.1.2/24"}]});
        let second: Value =
            serde_json::from_slice(&plugin_stdin(&list, &list.plugins[1], Some(&prev), &rt))
                .unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    }

    #[test]
    fn single_plugin_conf_is_a_list_of_one_and_bad_configs_say_why() {
        let one = NetworkConfigList::parse(
            Path::new("a.conf"),
            br#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        assert_eq!((one.plugins.len(), one.cni_version.as_str()), (1, "0.4.0"));
        for (bad, why) in [
            ("{", "not JSON"),
            (r#"{"plugins":[]}"#, "no \"name\""),
            (r#"{"name":"n","plugins":[]}"#, "empty"),
            (r#"{"name":"n","plugins":[{}]}"#, "no \"type\""),
        ] {
            let err = NetworkConfigList::parse(Path::new("x.conflist"), bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("x.conflist: ") && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn first_file_in_lexical_order_wins() {
        let dir = std::env::temp_dir().join(format!("knetsim-cni-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("20-other.conflist"),
            r#"{"name":"other","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("10-flannel.conflist"), FLANNEL_LIST).unwrap();
        std::fs::write(dir.join("README"), "not a config").unwrap();
        assert_eq!(NetworkConfigList::load_default(&dir).unwrap().name, "cbr0");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            NetworkConfigList::load_default(&dir),
            Err(CniError::NoConfig(_))
        ));
    }

    #[test]
    fn del_with_nothing_cached_and_no_config_is_success() {
        let cni = Cni {
            plugin_dirs: vec![],
            cache_dir: "/nonexistent".into(),
        };
        assert!(cni
            .del(
                None,
                &RuntimeConf {
                    container_id: "x".into(),
                    ifname: "eth0".into(),
                    ..Default::default()
                }
            )
            .is_ok());
    }
}
