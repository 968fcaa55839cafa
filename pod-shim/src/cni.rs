//! The runtime side of CNI (the specification's "runtime" role): ADD, DEL and CHECK of a
//! network configuration list for the pod's network namespace, with chained `prevResult`,
//! version negotiation, runtime capabilities (`portMappings`, `bandwidth`, `dns`, `ipRanges`)
//! and a record of each attachment, so that DEL and CHECK use exactly what ADD used, also
//! after the configuration changed or the sandbox container is gone.
//!
//! dockpod keeps its records in the pod's own state directory. libcni's cache directory
//! belongs to libcni (cri-dockerd's, on a node that ran it): it is only read, for pods adopted
//! from cri-dockerd, in libcni's own format, and an entry there is removed only by the DEL of
//! the attachment it describes, as libcni itself does.
//!
//! Written here rather than taken from a crate: the Rust CNI crates are plugin-side (rscni,
//! cni-plugin) or an early runtime without caching or validation (rust-cni), and the runtime
//! side is one process invocation per plugin with JSON in and out.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dockpod_proto::cni_conf::{find_cni_network, CniNetwork};
use dockpod_proto::cri::{PodSandboxConfig, Protocol};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

mod plugin_process;
mod versions;
pub use versions::VersionCache;

/// Interface name inside the pod, as every Kubernetes runtime uses.
pub const IF_NAME: &str = "eth0";
/// How long one plugin invocation may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Marks the cache format (as libcni's cache does).
const CACHE_KIND: &str = "cniCacheV1";
/// Annotations the kubelet's bandwidth convention reads, in bits per second.
const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Where CNI configurations, plugins and recorded attachments are.
#[derive(Debug, Clone)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// dockpod's records of this pod's attachments: the pod's state directory.
    pub records_dir: PathBuf,
    /// libcni's cache directory (cri-dockerd's `--cni-cache-dir`), read for adopted pods.
    pub libcni_cache_dir: PathBuf,
    /// The node's pod CIDRs (comma-separated), offered as the `ipRanges` capability.
    pub pod_cidr: String,
    /// The VERSION answers of the node's plugins, shared by its shims.
    pub versions: versions::VersionCache,
}

/// One ADD, as DEL and CHECK must repeat it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    kind: String,
    pub container_id: String,
    pub network_name: String,
    pub cni_version: String,
    plugins: Vec<Value>,
    if_name: String,
    cni_args: Vec<(String, String)>,
    capability_args: Map<String, Value>,
    /// The chain's final result; absent while ADD runs.
    pub result: Option<Value>,
    /// The file this record was read from or written to; DEL removes it.
    #[serde(skip)]
    file: PathBuf,
}

/// One entry of libcni's cache (`cachedInfo` in libcni's `api.go`), as cri-dockerd's libcni
/// wrote it for each network it attached a sandbox to.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LibcniEntry {
    kind: String,
    container_id: String,
    /// The configuration (list) ADD ran with: its bytes, base64-encoded as Go encodes `[]byte`.
    config: String,
    if_name: String,
    network_name: String,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    #[serde(default)]
    capability_args: Map<String, Value>,
    #[serde(default)]
    result: Option<Value>,
}

/// The network cri-dockerd attaches every sandbox to beside the pod's own, for its `lo`.
pub const CRI_DOCKERD_LOOPBACK: &str = "cni-loopback";

impl Cni {
    /// Attaches the network namespace `netns` of sandbox `sandbox_id` to the first valid
    /// network configuration. On failure whatever part of the chain ran is deleted again.
    /// The record of the whole chain is written and its flush under way: the caller reports
    /// the network once `Flushing::done` says it is on the disk, and may save its own record
    /// beside that flush (each waits behind the other's disk otherwise). A caller that fails
    /// before it deletes the attachment itself (the record on the disk names it).
    pub async fn add(
        &self,
        sandbox_id: &str,
        netns: &str,
        config: &PodSandboxConfig,
    ) -> Result<(Attachment, Flushing)> {
        let (conf_dir, bin_dirs) = (self.conf_dir.clone(), self.bin_dirs.clone());
        let network = tokio::task::spawn_blocking(move || find_cni_network(&conf_dir, &bin_dirs))
            .await
            .map_err(|e| Error::Network(format!("reading the CNI configuration: {e}")))?
            .map_err(Error::Network)?;
        let mut attachment = Attachment::new(&network, sandbox_id, config, &self.pod_cidr)?;
        attachment.file = self.record_path(&network.name);
        // Recorded before the first plugin runs, so that a shim dying half-way through still
        // knows what to delete.
        let mut flushing = self.write(&attachment).await?;
        let mut partial = None;
        let added = self
            .add_chain(&attachment, netns, &mut partial, &mut flushing)
            .await;
        match added {
            Ok(result) => {
                attachment.result = Some(result);
                Ok((attachment, flushing))
            }
            Err(e) => {
                // DEL gets the result as far as the chain got, so that plugins which act on
                // it (firewall rules for the pod's IPs, say) can undo their part.
                attachment.result = partial;
                if let Err(undo) = self.del(&attachment, netns).await {
                    tracing::error!(error = %undo, "deleting a failed network attachment");
                }
                Err(e)
            }
        }
    }

    /// Runs ADD through the chain; `prev` holds the result as far as the chain got, and
    /// `flushing` the flush of the last record written (each plugin's result is recorded).
    async fn add_chain(
        &self,
        a: &Attachment,
        netns: &str,
        prev: &mut Option<Value>,
        flushing: &mut Flushing,
    ) -> Result<Value> {
        for plugin in &a.plugins {
            self.negotiate(a, plugin_type(plugin)?).await?;
        }
        for plugin in &a.plugins {
            let conf = plugin_conf(a, plugin, prev.as_ref());
            let result = self
                .invoke(plugin_type(plugin)?, "ADD", a, netns, &conf)
                .await?;
            if result.is_null() {
                return Err(Error::Network(format!(
                    "CNI plugin {} returned no result for ADD",
                    plugin_type(plugin)?
                )));
            }
            *prev = Some(result);
            // Recorded as far as the chain got, so that the DEL after a shim died half-way
            // hands the plugins the IPs they acted on (the firewall plugin finds its rules
            // by them). The record before it was flushed while the plugin ran.
            let partial = Attachment {
                result: prev.clone(),
                ..a.clone()
            };
            flushing.done().await?;
            *flushing = self.write(&partial).await?;
        }
        prev.clone()
            .ok_or_else(|| Error::Network("the CNI network has no plugins".into()))
    }

    /// Deletes the attachment (plugins in reverse order) and the record it was read from.
    /// `netns` may be empty when the sandbox's namespace is gone; plugins still release what
    /// they hold.
    pub async fn del(&self, a: &Attachment, netns: &str) -> Result<()> {
        let prev = a
            .result
            .as_ref()
            .filter(|_| version_at_least(&a.cni_version, (0, 4, 0)));
        for plugin in a.plugins.iter().rev() {
            let conf = plugin_conf(a, plugin, prev);
            self.invoke(plugin_type(plugin)?, "DEL", a, netns, &conf)
                .await?;
        }
        let file = a.file.clone();
        on_disk(move || match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", file.display()))(e)),
        })
        .await
    }

    /// Asks every plugin whether the attachment is still as ADD left it; configurations older
    /// than CNI 0.4.0 have no CHECK and pass.
    pub async fn check(&self, a: &Attachment, netns: &str) -> Result<()> {
        let Some(result) = a.result.as_ref() else {
            return Err(Error::Network(format!(
                "the network attachment of {} never completed",
                a.container_id
            )));
        };
        if !version_at_least(&a.cni_version, (0, 4, 0)) {
            return Ok(());
        }
        for plugin in &a.plugins {
            let conf = plugin_conf(a, plugin, Some(result));
            self.invoke(plugin_type(plugin)?, "CHECK", a, netns, &conf)
                .await?;
        }
        Ok(())
    }

    /// The recorded attachment of a sandbox to a network, if any: dockpod's own record, else
    /// libcni's cache entry (a pod adopted from cri-dockerd, or one an older dockpod recorded
    /// there in its own format).
    pub async fn load(&self, network_name: &str, sandbox_id: &str) -> Result<Option<Attachment>> {
        let own = self.record_path(network_name);
        let libcni = self.libcni_path(network_name, sandbox_id);
        on_disk(move || match read_attachment(&own)? {
            Some(a) => Ok(Some(a)),
            None => read_attachment(&libcni),
        })
        .await
    }

    /// Every attachment libcni's cache holds for the sandbox, by network name.
    pub async fn libcni_attachments(&self, sandbox_id: &str) -> Result<Vec<Attachment>> {
        let dir = self.libcni_cache_dir.join("results");
        let suffix = format!("-{sandbox_id}-{IF_NAME}");
        on_disk(move || {
            let mut found = read_attachments(&dir, |n| n.ends_with(&suffix))?;
            found.sort_by(|a, b| a.network_name.cmp(&b.network_name));
            Ok(found)
        })
        .await
    }

    /// Every attachment recorded in dockpod's records directory.
    pub async fn recorded(&self) -> Result<Vec<Attachment>> {
        let dir = self.records_dir.clone();
        let suffix = format!("-{IF_NAME}.json");
        on_disk(move || read_attachments(&dir, |n| n.starts_with("cni-") && n.ends_with(&suffix)))
            .await
    }

    /// Writes the record into place (a shim that dies from then on leaves it to the DEL) and
    /// starts its flush, which runs beside the plugin that comes next.
    async fn write(&self, a: &Attachment) -> Result<Flushing> {
        let data = serde_json::to_vec(a)
            .map_err(|e| Error::Network(format!("encoding the CNI record: {e}")))?;
        let file = a.file.clone();
        let replaced = on_disk(move || {
            dockpod_proto::files::replace_for_flush(&file, &data, 0o600)
                .map_err(Error::io(format!("writing {}", file.display())))
        })
        .await?;
        let file = a.file.clone();
        Ok(Flushing(Some(tokio::task::spawn_blocking(move || {
            replaced
                .flush()
                .map_err(Error::io(format!("flushing {}", file.display())))
        }))))
    }

    fn record_path(&self, network_name: &str) -> PathBuf {
        self.records_dir
            .join(format!("cni-{network_name}-{IF_NAME}.json"))
    }

    /// libcni's layout: `<cache dir>/results/<network>-<container>-<interface>`.
    fn libcni_path(&self, network_name: &str, sandbox_id: &str) -> PathBuf {
        self.libcni_cache_dir
            .join("results")
            .join(format!("{network_name}-{sandbox_id}-{IF_NAME}"))
    }

    /// Checks that the plugin speaks the configuration's CNI version, from the node's cache
    /// of VERSION answers when it holds this build of the plugin.
    async fn negotiate(&self, a: &Attachment, plugin: &str) -> Result<()> {
        let binary = self.binary(plugin)?;
        let identity = versions::Identity::of(&binary).await;
        let cached = match &identity {
            Some(identity) => self.versions.get(&binary, identity).await,
            None => None,
        };
        let supported = match cached {
            Some(supported) => supported,
            None => {
                let reply = self
                    .invoke(
                        plugin,
                        "VERSION",
                        a,
                        "",
                        &json!({ "cniVersion": a.cni_version }),
                    )
                    .await?;
                let supported: Vec<String> = reply
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(identity) = identity {
                    self.versions.put(&binary, identity, &supported).await;
                }
                supported
            }
        };
        if supported.contains(&a.cni_version) {
            Ok(())
        } else {
            Err(Error::Network(format!(
                "CNI plugin {plugin} does not support version {} of network {:?} (it supports {})",
                a.cni_version,
                a.network_name,
                supported.join(", ")
            )))
        }
    }

    /// The plugin's binary: the first of the plugin directories that holds it.
    fn binary(&self, plugin: &str) -> Result<PathBuf> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Network(format!(
                    "CNI plugin {plugin} not found in {:?}",
                    self.bin_dirs
                ))
            })
    }

    /// Runs one plugin command; its JSON output (null when it printed nothing), or its error
    /// as the plugin reported it.
    async fn invoke(
        &self,
        plugin: &str,
        command: &str,
        a: &Attachment,
        netns: &str,
        stdin: &Value,
    ) -> Result<Value> {
        let binary = self.binary(plugin)?;
        let args: Vec<String> = a.cni_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = std::env::join_paths(&self.bin_dirs)
            .map_err(|e| Error::Network(format!("CNI plugin directories: {e}")))?;
        let cni_args = args.join(";");
        let env: [(&str, &std::ffi::OsStr); 6] = [
            ("CNI_COMMAND", command.as_ref()),
            ("CNI_CONTAINERID", a.container_id.as_ref()),
            ("CNI_NETNS", netns.as_ref()),
            ("CNI_IFNAME", a.if_name.as_ref()),
            ("CNI_ARGS", cni_args.as_ref()),
            ("CNI_PATH", path.as_ref()),
        ];
        // Dies with the shim (see `plugin_process`): left running after a shim killed inside
        // ADD, it would finish its ADD (firewall rules, say) after the next shim's clean-up
        // DEL has run, and what it added then would never be deleted.
        let child = plugin_process::spawn(&binary, &env).map_err(Error::io(format!(
            "starting CNI plugin {}",
            binary.display()
        )))?;
        let input = serde_json::to_vec(stdin)
            .map_err(|e| Error::Network(format!("encoding the plugin's input: {e}")))?;
        // The plugin is killed when its time is up (dropped with the output's future).
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.output(&input))
            .await
            .map_err(|_| {
                Error::DeadlineExceeded(format!(
                    "CNI plugin {plugin} {command} took longer than {PLUGIN_TIMEOUT:?}"
                ))
            })?
            .map_err(Error::io(format!("running CNI plugin {plugin}")))?;
        if output.status.success() {
            if output.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&output.stdout).map_err(|e| {
                Error::Network(format!(
                    "CNI plugin {plugin} {command} printed invalid JSON: {e}"
                ))
            });
        }
        Err(Error::Network(plugin_error(
            plugin,
            command,
            &output.stdout,
            &output.stderr,
        )))
    }
}

impl Attachment {
    fn new(
        network: &CniNetwork,
        sandbox_id: &str,
        config: &PodSandboxConfig,
        pod_cidr: &str,
    ) -> Result<Attachment> {
        let meta = config.metadata.clone().unwrap_or_default();
        let cni_args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".into(), meta.namespace),
            ("K8S_POD_NAME".into(), meta.name),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.to_string()),
            ("K8S_POD_UID".into(), meta.uid),
        ];
        Ok(Attachment {
            kind: CACHE_KIND.into(),
            container_id: sandbox_id.to_string(),
            network_name: network.name.clone(),
            cni_version: network.cni_version.clone(),
            plugins: network.plugin_confs.clone(),
            if_name: IF_NAME.into(),
            cni_args,
            capability_args: capability_args(config, pod_cidr)?,
            result: None,
            file: PathBuf::new(),
        })
    }

    /// An attachment as libcni recorded it: the configuration it ran with decides the
    /// version and the plugins (a list, or a single plugin's configuration).
    fn from_libcni(entry: LibcniEntry) -> Result<Attachment> {
        use base64::Engine as _;
        if entry.kind != CACHE_KIND {
            return Err(Error::Network(format!(
                "libcni cache entry of kind {:?}; only {CACHE_KIND} is known",
                entry.kind
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(entry.config.as_bytes())
            .map_err(|e| Error::Network(format!("its config is not base64: {e}")))?;
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Network(format!("its config is not JSON: {e}")))?;
        let cni_version = config
            .get("cniVersion")
            .and_then(Value::as_str)
            // What libcni assumes of a configuration that names no version.
            .unwrap_or("0.1.0")
            .to_string();
        let plugins = match config.get("plugins").and_then(Value::as_array) {
            Some(list) => list.clone(),
            None => vec![config],
        };
        Ok(Attachment {
            kind: entry.kind,
            container_id: entry.container_id,
            network_name: entry.network_name,
            cni_version,
            plugins,
            if_name: entry.if_name,
            cni_args: entry.cni_args,
            capability_args: entry.capability_args,
            result: entry.result,
            file: PathBuf::new(),
        })
    }

    /// The pod's IPs from the result, IPv4 first (the kubelet's primary), then IPv6.
    pub fn ips(&self) -> Vec<String> {
        self.result.as_ref().map(result_ips).unwrap_or_default()
    }
}

/// A record's flush under way on the blocking pool (`Cni::write`), until it is waited for.
#[derive(Default)]
pub struct Flushing(Option<tokio::task::JoinHandle<Result<()>>>);

impl Flushing {
    /// Returns once the record is on the disk, or why it is not (the first time it is asked;
    /// a flush never asked for, `Flushing::default()`, is done).
    pub async fn done(&mut self) -> Result<()> {
        match self.0.take() {
            Some(flush) => flush
                .await
                .map_err(|e| Error::Network(format!("flushing a CNI record: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Runs work on the records' files on the blocking pool, so that the shim's thread never
/// waits on the disk they are on.
async fn on_disk<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Network(format!("reading or writing a CNI record: {e}")))?
}

/// Every attachment recorded in `dir` in a file whose name passes `wanted`; none when `dir`
/// does not exist.
fn read_attachments(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<Attachment>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()))(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("reading {}", dir.display())))?;
        if entry.file_name().to_str().is_some_and(&wanted) {
            found.extend(read_attachment(&entry.path())?);
        }
    }
    Ok(found)
}

/// The attachment recorded at `path`, in dockpod's format or libcni's (which carries the
/// configuration ADD ran with as `config`), or None when there is no such file.
fn read_attachment(path: &Path) -> Result<Option<Attachment>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    if data.is_empty() {
        // Written and renamed into place, then cut by a crash of the machine before its
        // flush, which ran beside the plugin it came before: the network namespace and the
        // plugins' rules did not outlive that crash either (an address the IPAM plugin
        // stored may stay taken, as after libcni's own cache, which is never flushed).
        tracing::warn!(path = %path.display(), "an empty CNI record, cut before its flush: nothing to delete by it");
        return Ok(None);
    }
    let mut attachment = parse_attachment(&data)
        .map_err(|e| Error::Network(format!("damaged CNI record {}: {e}", path.display())))?;
    attachment.file = path.to_path_buf();
    Ok(Some(attachment))
}

/// An attachment record's bytes, in dockpod's format or libcni's.
pub fn parse_attachment(data: &[u8]) -> std::result::Result<Attachment, String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if value.get("config").is_some() {
        let entry: LibcniEntry = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Attachment::from_libcni(entry).map_err(|e| e.to_string())
    } else {
        serde_json::from_value::<Attachment>(value).map_err(|e| e.to_string())
    }
}

fn plugin_type(plugin: &Value) -> Result<&str> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Network("a CNI plugin configuration has no type".into()))
}

/// A plugin's configuration as the chain hands it over: the list's name and version, the
/// previous plugin's result, and the runtime capabilities the plugin declares.
fn plugin_conf(a: &Attachment, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(a.network_name.clone()));
    conf.insert("cniVersion".into(), Value::String(a.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        for (name, enabled) in caps {
            if enabled.as_bool() == Some(true) {
                if let Some(arg) = a.capability_args.get(name) {
                    runtime.insert(name.clone(), arg.clone());
                }
            }
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// The runtime capabilities a pod asks for: host ports, bandwidth limits from its
/// annotations, its DNS settings and the node's pod CIDRs.
fn capability_args(config: &PodSandboxConfig, pod_cidr: &str) -> Result<Map<String, Value>> {
    let mut caps = Map::new();
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|pm| pm.host_port > 0)
        .map(|pm| {
            let protocol = match Protocol::try_from(pm.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            let mut m = json!({
                "hostPort": pm.host_port,
                "containerPort": pm.container_port,
                "protocol": protocol,
            });
            if let (false, Some(m)) = (pm.host_ip.is_empty(), m.as_object_mut()) {
                m.insert("hostIP".into(), Value::String(pm.host_ip.clone()));
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports));
    }
    let ingress = bandwidth(&config.annotations, INGRESS_BANDWIDTH)?;
    let egress = bandwidth(&config.annotations, EGRESS_BANDWIDTH)?;
    if ingress.is_some() || egress.is_some() {
        // No burst limit, as the kubelet's dockershim set it.
        let burst = i32::MAX;
        let mut b = Map::new();
        if let Some(rate) = ingress {
            b.insert("ingressRate".into(), rate.into());
            b.insert("ingressBurst".into(), burst.into());
        }
        if let Some(rate) = egress {
            b.insert("egressRate".into(), rate.into());
            b.insert("egressBurst".into(), burst.into());
        }
        caps.insert("bandwidth".into(), Value::Object(b));
    }
    if let Some(dns) = &config.dns_config {
        caps.insert(
            "dns".into(),
            json!({ "servers": dns.servers, "searches": dns.searches, "options": dns.options }),
        );
    }
    let ranges: Vec<Value> = pod_cidr
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| json!([{ "subnet": c }]))
        .collect();
    if !ranges.is_empty() {
        caps.insert("ipRanges".into(), Value::Array(ranges));
    }
    Ok(caps)
}

/// A bandwidth annotation in bits per second (a Kubernetes quantity such as `10M`).
fn bandwidth(annotations: &HashMap<String, String>, key: &str) -> Result<Option<u64>> {
    let Some(value) = annotations.get(key) else {
        return Ok(None);
    };
    let bits = parse_quantity(value).ok_or_else(|| {
        Error::InvalidArgument(format!("annotation {key}: {value:?} is not a quantity"))
    })?;
    // The kubelet's limits: at least 1 kbit/s, at most 1 Pbit/s.
    if !(1_000..=1_000_000_000_000_000).contains(&bits) {
        return Err(Error::InvalidArgument(format!(
            "annotation {key}: {value} is outside 1k..1P"
        )));
    }
    Ok(Some(bits))
}

/// A Kubernetes quantity (`1.5M`, `100Ki`, `2000`) as a whole number, rounded up.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value = (number * factor).ceil();
    (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then_some(value as u64)
}

/// IPs of a result of any CNI version: `ips` (0.3.0 on) or `ip4`/`ip6` (0.1 and 0.2).
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut addresses: Vec<&str> = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        addresses.extend(
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str)),
        );
    }
    for key in ["ip4", "ip6"] {
        if let Some(ip) = result
            .get(key)
            .and_then(|v| v.get("ip"))
            .and_then(Value::as_str)
        {
            addresses.push(ip);
        }
    }
    let mut ips: Vec<std::net::IpAddr> = addresses
        .iter()
        .filter_map(|a| a.split('/').next())
        .filter_map(|a| a.parse().ok())
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips.into_iter().map(|ip| ip.to_string()).collect()
}

/// Characters of a plugin's own words kept in an error (its `msg`, `details` or stderr).
pub const PLUGIN_WORDS: usize = 2000;

/// The message of a failed plugin: its error JSON (`code`, `msg`, `details`) when it printed
/// one, else what it wrote to stderr; each part cut at `PLUGIN_WORDS` characters.
pub fn plugin_error(plugin: &str, command: &str, stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = err.get("msg").and_then(Value::as_str) {
            let code = err.get("code").and_then(Value::as_u64).unwrap_or(0);
            let msg: String = msg.chars().take(PLUGIN_WORDS).collect();
            let details = err
                .get("details")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {}", d.chars().take(PLUGIN_WORDS).collect::<String>()))
                .unwrap_or_default();
            return format!("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}");
        }
    }
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    format!(
        "CNI plugin {plugin} {command} failed: {}",
        text.trim().chars().take(PLUGIN_WORDS).collect::<String>()
    )
}

/// Whether CNI version `v` (`a.b.c`) is at least `min`.
pub fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let parsed = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    parsed >= min
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use dockpod_proto::cri::{DnsConfig, PortMapping};

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("1Ki"), Some(1024));
        assert_eq!(parse_quantity("2000"), Some(2000));
        assert_eq!(parse_quantity("10X"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("-5"), None);
    }

    #[test]
    fn ips_of_every_result_version() {
        let v1 = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24"}]});
        assert_eq!(result_ips(&v1), vec!["10.1.0.5", "fd00::5"]);
        let v02 = json!({"ip4": {"ip": "10.2.0.7/16"}, "ip6": {"ip": "fd01::7/64"}});
        assert_eq!(result_ips(&v02), vec!["10.2.0.7", "fd01::7"]);
        assert!(result_ips(&json!({})).is_empty());
    }

    #[test]
    fn capabilities_reach_only_plugins_that_declare_them() {
        let config = PodSandboxConfig {
            port_mappings: vec![
                PortMapping {
                    protocol: Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                PortMapping {
                    container_port: 80,
                    ..Default::default()
                },
            ],
            dns_config: Some(DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["ns.svc".into()],
                options: vec!["ndots:5".into()],
            }),
            annotations: [(INGRESS_BANDWIDTH.to_string(), "10M".to_string())].into(),
            ..Default::default()
        };
        let network = CniNetwork {
            file: "x.conflist".into(),
            name: "pods".into(),
            cni_version: "1.0.0".into(),
            plugins: vec!["bridge".into(), "portmap".into()],
            plugin_confs: vec![
                json!({"type": "bridge"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true, "dns": false}}),
            ],
        };
        let a = Attachment::new(&network, "sb", &config, "10.88.0.0/16").expect("attachment");
        let bridge = plugin_conf(&a, &a.plugins[0], None);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["name"], "pods");
        let prev = json!({"ips": []});
        let portmap = plugin_conf(&a, &a.plugins[1], Some(&prev));
        assert_eq!(portmap["prevResult"], prev);
        let rc = &portmap["runtimeConfig"];
        assert_eq!(
            rc["portMappings"],
            json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}])
        );
        assert!(rc.get("dns").is_none(), "dns is declared false");
        assert_eq!(a.capability_args["bandwidth"]["ingressRate"], 10_000_000);
        assert_eq!(
            a.capability_args["ipRanges"],
            json!([[{"subnet": "10.88.0.0/16"}]])
        );
        assert!(a
            .cni_args
            .contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "sb".into())));
    }

    #[test]
    fn plugin_errors_carry_the_plugins_message() {
        let msg = plugin_error(
            "bridge",
            "ADD",
            br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#,
            b"",
        );
        assert_eq!(
            msg,
            "CNI plugin bridge ADD failed (code 11): failed to allocate: range full"
        );
        assert!(plugin_error("x", "DEL", b"", b"boom\n").ends_with("failed: boom"));
    }

    fn cni_in(dir: &Path) -> Cni {
        Cni {
            conf_dir: dir.join("net.d"),
            bin_dirs: vec![dir.join("bin")],
            records_dir: dir.join("pod"),
            libcni_cache_dir: dir.join("libcni"),
            pod_cidr: String::new(),
            versions: VersionCache::default(),
        }
    }

    /// An entry as libcni's `cacheAdd` writes it: Go's `[]byte` as base64, `[][2]string` as
    /// pairs, `omitempty` fields left out.
    fn libcni_entry(network: &str, sandbox: &str, conf: &Value, result: Option<Value>) -> Value {
        use base64::Engine as _;
        let mut entry = json!({
            "kind": "cniCacheV1",
            "containerId": sandbox,
            "config": base64::engine::general_purpose::STANDARD.encode(conf.to_string()),
            "ifName": "eth0",
            "networkName": network,
            "netns": "/proc/4242/ns/net",
            "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", "shop"],
                        ["K8S_POD_NAME", "web"], ["K8S_POD_INFRA_CONTAINER_ID", sandbox]],
            "capabilityArgs": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]},
        });
        if let Some(result) = result {
            entry["result"] = result;
        }
        entry
    }

    #[test]
    fn a_record_read_writes_back_to_the_same_record() {
        // Found by the `cni` fuzz target: a float in a record came back one ULP off.
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]});
        let mut entry = libcni_entry("net", "sb1", &list, None);
        entry["capabilityArgs"]["portMappings"][0]["hostPort"] = json!(8.08e36);
        let read = parse_attachment(entry.to_string().as_bytes()).expect("a libcni record");
        let again = parse_attachment(&serde_json::to_vec(&read).expect("written"))
            .expect("dockpod's record");
        assert_eq!(
            serde_json::to_value(&read).expect("value"),
            serde_json::to_value(&again).expect("value")
        );
        assert_eq!(
            read.capability_args["portMappings"][0]["hostPort"],
            json!(8.08e36)
        );
    }

    /// A record a crash of the machine left empty (renamed into place, never flushed) is
    /// no record, and the clean-up goes on; one that is damaged otherwise is an error.
    #[tokio::test]
    async fn an_empty_record_is_none_and_a_damaged_one_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cni = cni_in(dir.path());
        std::fs::create_dir_all(&cni.records_dir).expect("mkdir");
        let empty = cni.record_path("net");
        std::fs::write(&empty, b"").expect("write");
        assert!(cni.recorded().await.expect("read").is_empty());
        std::fs::write(&empty, b"{\"cniVersion\": ").expect("write");
        let err = cni.recorded().await.expect_err("damaged");
        assert!(err.to_string().contains("damaged CNI record"), "{err}");
    }

    #[tokio::test]
    async fn reads_libcnis_cache_as_cri_dockerd_left_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cni = cni_in(dir.path());
        let results = dir.path().join("libcni/results");
        std::fs::create_dir_all(&results).expect("mkdir");
        let list = json!({"cniVersion": "1.0.0", "name": "crilab", "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ]});
        let result = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.22.0.5/16"}]});
        let main = libcni_entry("crilab", "sb1", &list, Some(result.clone()));
        std::fs::write(results.join("crilab-sb1-eth0"), main.to_string()).expect("write");
        let lo = json!({"cniVersion": "0.2.0", "name": CRI_DOCKERD_LOOPBACK, "plugins": [{"type": "loopback"}]});
        let lo_entry = libcni_entry(
            CRI_DOCKERD_LOOPBACK,
            "sb1",
            &lo,
            Some(json!({"ip4": {"ip": "127.0.0.1/8"}})),
        );
        std::fs::write(results.join("cni-loopback-sb1-eth0"), lo_entry.to_string()).expect("write");
        std::fs::write(results.join("crilab-sb2-eth0"), b"{}").expect("write");

        let a = cni
            .load("crilab", "sb1")
            .await
            .expect("load")
            .expect("found");
        assert_eq!(a.cni_version, "1.0.0");
        assert_eq!(a.plugins.len(), 2);
        assert_eq!(a.ips(), vec!["10.22.0.5"]);
        assert!(a.cni_args.contains(&("K8S_POD_NAME".into(), "web".into())));
        let portmap = plugin_conf(&a, &a.plugins[1], a.result.as_ref());
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert_eq!(portmap["prevResult"], result);
        assert_eq!(a.file, results.join("crilab-sb1-eth0"));

        let all = cni.libcni_attachments("sb1").await.expect("list");
        let names: Vec<&str> = all.iter().map(|a| a.network_name.as_str()).collect();
        assert_eq!(names, vec![CRI_DOCKERD_LOOPBACK, "crilab"]);
        assert_eq!(all[0].cni_version, "0.2.0");

        // A damaged entry is an error naming the file, not a silent miss.
        let err = cni.load("crilab", "sb2").await.expect_err("damaged");
        assert!(err.to_string().contains("crilab-sb2-eth0"), "{err}");
        assert!(cni.load("other", "sb1").await.expect("load").is_none());
    }

    #[tokio::test]
    async fn a_single_plugin_configuration_in_libcnis_cache_is_a_chain_of_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cni = cni_in(dir.path());
        let results = dir.path().join("libcni/results");
        std::fs::create_dir_all(&results).expect("mkdir");
        let conf = json!({"cniVersion": "0.4.0", "name": "solo", "type": "bridge"});
        let entry = libcni_entry("solo", "sb", &conf, None);
        std::fs::write(results.join("solo-sb-eth0"), entry.to_string()).expect("write");
        let a = cni.load("solo", "sb").await.expect("load").expect("found");
        assert_eq!((a.cni_version.as_str(), a.plugins.len()), ("0.4.0", 1));
        assert_eq!(a.plugins[0]["type"], "bridge");
        assert!(a.result.is_none());
    }

    #[tokio::test]
    async fn dockpods_records_stay_out_of_libcnis_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cni = cni_in(dir.path());
        std::fs::create_dir_all(&cni.records_dir).expect("mkdir");
        let network = CniNetwork {
            file: "x.conflist".into(),
            name: "pods".into(),
            cni_version: "1.0.0".into(),
            plugins: vec!["bridge".into()],
            plugin_confs: vec![json!({"type": "bridge"})],
        };
        let mut a =
            Attachment::new(&network, "sb", &PodSandboxConfig::default(), "").expect("attachment");
        a.file = cni.record_path("pods");
        a.result = Some(json!({"ips": [{"address": "10.1.0.9/24"}]}));
        let mut flushing = cni.write(&a).await.expect("write");
        flushing.done().await.expect("flush");
        assert!(!dir.path().join("libcni").exists());
        let back = cni.load("pods", "sb").await.expect("load").expect("found");
        assert_eq!(back.ips(), vec!["10.1.0.9"]);
        let recorded = cni.recorded().await.expect("recorded");
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].network_name, "pods");
        assert_eq!(back.file, cni.record_path("pods"));

        // A record an older dockpod kept in libcni's directory, in its own format, is read.
        let legacy = cni.libcni_path("old", "sb");
        std::fs::create_dir_all(legacy.parent().expect("parent")).expect("mkdir");
        std::fs::write(&legacy, serde_json::to_vec(&a).expect("encode")).expect("write");
        let old = cni.load("old", "sb").await.expect("load").expect("found");
        assert_eq!(
            (old.network_name.as_str(), old.file == legacy),
            ("pods", true)
        );
    }

    #[test]
    fn versions() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
    }
}
