//! A CNI network of the test's own, built from Debian's reference plugins: a configuration
//! directory with one conflist (loopback, bridge with host-local addresses in a private 10.x
//! range, portmap), its own Linux bridge, address store and result cache. Dropping it deletes
//! the bridge; everything else lives in its temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

/// Where Debian's containernetworking-plugins package installs the plugins.
pub const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

pub struct CniNet {
    dir: tempfile::TempDir,
    pub name: String,
    pub bridge: String,
    /// The network's /24, e.g. `10.213.7.0/24`.
    pub subnet: String,
    /// Its IPv6 /64, on a dual-stack network.
    pub subnet6: Option<String>,
}

impl CniNet {
    /// A network whose chain is loopback, bridge (host-local IPAM), firewall and portmap.
    pub fn new() -> CniNet {
        CniNet::with_chain_end(Vec::new())
    }

    /// Like [`CniNet::new`], with `extra` plugin configurations appended to the chain; a test
    /// plugin can be put into [`CniNet::plugin_dir`].
    pub fn with_chain_end(extra: Vec<Value>) -> CniNet {
        CniNet::build(extra, false)
    }

    /// Like [`CniNet::new`], with host-local handing out an IPv6 address (from a unique
    /// local /64 of its own) beside the IPv4 one.
    pub fn dual_stack() -> CniNet {
        CniNet::build(Vec::new(), true)
    }

    fn build(extra: Vec<Value>, dual_stack: bool) -> CniNet {
        crate::reaper::reap_once();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Private addresses only; a distinct /24 and bridge per network of this process.
        let subnet = format!(
            "10.213.{}.0/24",
            (pid.wrapping_mul(31).wrapping_add(n)) % 250
        );
        let bridge = format!("dp{}n{n}", pid % 100_000);
        let name = format!("dockpod-test-{pid}-{n}");
        let mut ranges = vec![json!([{"subnet": subnet}])];
        let subnet6 = dual_stack.then(|| {
            // A unique local address range (fd00::/8), distinct per network of this process.
            format!("fd00:d0c:{:x}:{n:x}::/64", pid % 0x1_0000)
        });
        if let Some(subnet6) = &subnet6 {
            ranges.push(json!([{ "subnet": subnet6 }]));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["net.d", "bin", "ipam", "cache"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let mut plugins = vec![
            json!({"type": "loopback"}),
            json!({
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.path().join("ipam"),
                    "ranges": ranges,
                },
            }),
            // Docker sets the FORWARD policy to DROP, and bridged traffic passes iptables.
            json!({"type": "firewall"}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ];
        plugins.extend(extra);
        let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            dir.path().join("net.d/10-test.conflist"),
            serde_json::to_vec_pretty(&conf).expect("json"),
        )
        .expect("write conflist");
        CniNet {
            dir,
            name,
            bridge,
            subnet,
            subnet6,
        }
    }

    /// Directory for test-only plugins (searched after Debian's).
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The front's arguments for this network.
    pub fn front_args(&self) -> Vec<String> {
        vec![
            "--network-plugin".into(),
            "cni".into(),
            "--cni-conf-dir".into(),
            self.dir.path().join("net.d").display().to_string(),
            "--cni-bin-dir".into(),
            format!("{DEBIAN_PLUGINS},{}", self.plugin_dir().display()),
            "--cni-cache-dir".into(),
            self.dir.path().join("cache").display().to_string(),
        ]
    }

    /// Addresses host-local holds for this network right now.
    pub fn allocated(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam").join(&self.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// What host-local recorded as the owner of `ip` (`<container id>\r\n<ifname>`).
    pub fn owner_of(&self, ip: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("ipam").join(&self.name).join(ip))
            .unwrap_or_default()
    }

    /// Host-side veths attached to the network's bridge.
    pub fn veths(&self) -> Vec<String> {
        crate::list_dir(&Path::new("/sys/class/net").join(&self.bridge).join("brif"))
    }

    /// Entries of libcni's cache directory (the front's `--cni-cache-dir`): what
    /// [`CniNet::attach_as_cri_dockerd`] wrote there. dockpod keeps its own records elsewhere.
    pub fn cached(&self) -> Vec<String> {
        crate::list_dir(&self.libcni_results())
    }

    /// `results` of libcni's cache directory.
    pub fn libcni_results(&self) -> PathBuf {
        self.dir.path().join("cache/results")
    }

    /// What cri-dockerd's CNI plugin does through libcni when it sets up a sandbox: ADD of its
    /// loopback network (`cni-loopback`, CNI 0.2.0), then ADD of this network's chain, each
    /// with the runtime configuration cri-dockerd builds and each cached as libcni's
    /// `cacheAdd` writes it. Returns the chain's result.
    pub fn attach_as_cri_dockerd(
        &self,
        sandbox: &str,
        pid: i64,
        pod: &str,
        namespace: &str,
        port_mappings: Value,
    ) -> Value {
        let netns = format!("/proc/{pid}/ns/net");
        let args = [
            ["IgnoreUnknown", "1"],
            ["K8S_POD_NAMESPACE", namespace],
            ["K8S_POD_NAME", pod],
            ["K8S_POD_INFRA_CONTAINER_ID", sandbox],
        ];
        let capability_args = json!({
            "portMappings": port_mappings,
            "ipRanges": [[{"subnet": self.subnet}]],
        });
        // cri-dockerd's literal loopback list, byte for byte.
        let loopback = "{\n  \"cniVersion\": \"0.2.0\",\n  \"name\": \"cni-loopback\",\n  \"plugins\":[{\n    \"type\": \"loopback\"\n  }]\n}";
        let conflist =
            std::fs::read(self.dir.path().join("net.d/10-test.conflist")).expect("read conflist");
        let mut result = Value::Null;
        for list in [loopback.as_bytes(), conflist.as_slice()] {
            result = self.libcni_add(list, sandbox, &netns, &args, &capability_args);
        }
        result
    }

    /// libcni's `AddNetworkList` and `cacheAdd` for one configuration list.
    fn libcni_add(
        &self,
        list_bytes: &[u8],
        sandbox: &str,
        netns: &str,
        args: &[[&str; 2]],
        capability_args: &Value,
    ) -> Value {
        use base64::Engine as _;
        let list: Value = serde_json::from_slice(list_bytes).expect("conflist JSON");
        let (name, version) = (&list["name"], &list["cniVersion"]);
        let mut prev = Value::Null;
        for plugin in list["plugins"].as_array().expect("plugins") {
            let mut conf = plugin.clone();
            conf["name"] = name.clone();
            conf["cniVersion"] = version.clone();
            if !prev.is_null() {
                conf["prevResult"] = prev.clone();
            }
            let mut runtime = serde_json::Map::new();
            if let Some(caps) = plugin["capabilities"].as_object() {
                for (cap, on) in caps {
                    if on.as_bool() == Some(true) && !capability_args[cap].is_null() {
                        runtime.insert(cap.clone(), capability_args[cap].clone());
                    }
                }
            }
            if !runtime.is_empty() {
                conf["runtimeConfig"] = Value::Object(runtime);
            }
            prev = self.run_plugin("ADD", plugin_type(plugin), sandbox, netns, args, &conf);
        }
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": sandbox,
            "config": base64::engine::general_purpose::STANDARD.encode(list_bytes),
            "ifName": "eth0",
            "networkName": name,
            "netns": netns,
            "cniArgs": args,
            "capabilityArgs": capability_args,
            "result": prev,
        });
        let results = self.libcni_results();
        std::fs::create_dir_all(&results).expect("libcni cache dir");
        let file = results.join(format!("{}-{sandbox}-eth0", name.as_str().expect("name")));
        std::fs::write(file, serde_json::to_vec(&entry).expect("json")).expect("write cache");
        prev
    }

    /// The network's chain driven directly, as libcni's `AddNetworkList` does (no runtime in
    /// between): every plugin's ADD in order, each given the previous result. Returns the
    /// chain's result. The floor a runtime's network set-up is measured against.
    pub fn add_directly(&self, sandbox: &str, netns: &str) -> Value {
        let list = self.conflist();
        let mut prev = Value::Null;
        for plugin in list["plugins"].as_array().expect("plugins") {
            let mut conf = self.plugin_conf(&list, plugin);
            if !prev.is_null() {
                conf["prevResult"] = prev.clone();
            }
            prev = self.run_plugin("ADD", plugin_type(plugin), sandbox, netns, &[], &conf);
        }
        prev
    }

    /// libcni's `DelNetworkList` for what [`CniNet::add_directly`] set up: every plugin's DEL
    /// in reverse order, each given the chain's ADD result.
    pub fn del_directly(&self, sandbox: &str, netns: &str, added: &Value) {
        let list = self.conflist();
        for plugin in list["plugins"].as_array().expect("plugins").iter().rev() {
            let mut conf = self.plugin_conf(&list, plugin);
            conf["prevResult"] = added.clone();
            self.run_plugin("DEL", plugin_type(plugin), sandbox, netns, &[], &conf);
        }
    }

    fn conflist(&self) -> Value {
        let bytes =
            std::fs::read(self.dir.path().join("net.d/10-test.conflist")).expect("read conflist");
        serde_json::from_slice(&bytes).expect("conflist JSON")
    }

    fn plugin_conf(&self, list: &Value, plugin: &Value) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf
    }

    fn run_plugin(
        &self,
        command: &str,
        plugin: &str,
        sandbox: &str,
        netns: &str,
        args: &[[&str; 2]],
        conf: &Value,
    ) -> Value {
        use std::io::Write;
        let cni_args: Vec<String> = args.iter().map(|[k, v]| format!("{k}={v}")).collect();
        let mut child = std::process::Command::new(Path::new(DEBIAN_PLUGINS).join(plugin))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", sandbox)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", cni_args.join(";"))
            .env("CNI_PATH", DEBIAN_PLUGINS)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write plugin input");
        let out = child.wait_with_output().expect("plugin");
        assert!(
            out.status.success(),
            "{plugin} {command}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if command == "DEL" {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("plugin result JSON")
    }

    /// iptables rules (every table) that name this network's addresses or its name: what
    /// the firewall and portmap plugins add for a pod and their DEL removes.
    pub fn iptables_rules(&self) -> Vec<String> {
        let prefix = self.subnet.trim_end_matches("0/24");
        let out = std::process::Command::new("iptables-save")
            .output()
            .expect("iptables-save");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(prefix) || l.contains(&self.name))
            .map(str::to_string)
            .collect()
    }

    /// Whether `ip` is in this network's IPv6 /64.
    pub fn contains6(&self, ip: &str) -> bool {
        let Some(subnet6) = &self.subnet6 else {
            return false;
        };
        let network = |text: &str| {
            text.parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|a| a.segments()[..4].to_vec())
        };
        let base = subnet6.trim_end_matches("/64");
        network(ip).is_some() && network(ip) == network(base)
    }

    /// Whether `ip` is in this network's /24.
    pub fn contains(&self, ip: &str) -> bool {
        let prefix = self.subnet.trim_end_matches("0/24");
        ip.starts_with(prefix)
    }
}

impl Default for CniNet {
    fn default() -> Self {
        CniNet::new()
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        let prefix = self.subnet.trim_end_matches("0/24");
        crate::iptables::delete_rules("filter", &[prefix]);
        crate::iptables::delete_rules("nat", &[prefix, &self.name]);
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn plugin_type(plugin: &Value) -> &str {
    plugin["type"].as_str().expect("a plugin's type")
}
