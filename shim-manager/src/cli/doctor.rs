//! `shim-manager doctor`: checks the host before the first pod, with the flags `serve` would
//! run with, and prints one line per check: OK, WARN or FAIL, what was found and what to do.
//! Any FAIL makes the exit status non-zero. Nothing is changed on the host.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use dockpod_proto::engine_api::{self, ApiVersion, MOUNT_SETATTR_KERNEL};
use dockpod_proto::procfs::{capability_effective, CAP_SYS_RESOURCE};

use crate::config::{NetworkPlugin, ServeConfig};
use crate::docker::Engine;

/// How long Docker may take to answer one question before it counts as unreachable.
const DOCKER_WAIT: Duration = Duration::from_secs(10);
/// The kubelet's cgroup driver when its configuration names none.
const KUBELET_DEFAULT_DRIVER: &str = "cgroupfs";
/// The kubelet's runtime endpoint when its configuration names none (containerd's).
const KUBELET_DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// The first Linux release with `pidfd_open`.
const PIDFD_KERNEL: (u32, u32) = (5, 3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was found, and for WARN and FAIL what to do about it.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict,
            detail: detail.into(),
        }
    }

    pub fn line(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Ok => "OK  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        format!("{verdict} {}: {}", self.name, self.detail)
    }
}

/// Every check, in the order printed.
pub async fn run(config: &ServeConfig, kubelet_config: Option<&Path>) -> Vec<Check> {
    let (mut checks, api) = docker_checks(config, kubelet_config).await;
    checks.push(network(config));
    checks.push(capabilities());
    let kubelet = kubelet_config.and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(text) = &kubelet {
        checks.push(kubelet_endpoints(text, &config.container_runtime_endpoint));
    }
    checks.extend(kernel(
        &engine_api::kernel_release(),
        Path::new("/sys/fs/cgroup"),
        api,
        kubelet.as_deref(),
    ));
    checks.push(directory(
        "root directory",
        &config.root_directory,
        0o077,
        "chmod 0700",
    ));
    checks.push(directory(
        "run directory",
        &config.run_directory,
        0o022,
        "chmod 0755",
    ));
    checks.push(other_front(&config.root_directory));
    checks
}

/// Docker reachable, then what is read from it: live-restore, the cgroup driver, the sandbox
/// image; and the API version negotiated, for the checks that depend on it. With Docker
/// unreachable the others are FAIL too, naming the first.
async fn docker_checks(
    config: &ServeConfig,
    kubelet_config: Option<&Path>,
) -> (Vec<Check>, Option<ApiVersion>) {
    let endpoint = &config.docker_endpoint;
    let answer = async {
        let engine = Engine::connect(endpoint).map_err(|e| e.to_string())?;
        let negotiated = engine.negotiate().await.map_err(|e| e.to_string())?;
        let version = engine.version().await.map_err(|e| e.to_string())?;
        let info = engine.info().await.map_err(|e| e.to_string())?;
        let image = engine
            .inspect_image(&config.pod_infra_container_image)
            .await
            .map_err(|e| e.to_string())?;
        let negotiated = ApiVersion::new(negotiated.major_version, negotiated.minor_version);
        Ok::<_, String>((negotiated, version, info, image.is_some()))
    };
    let (negotiated, version, info, image_present) =
        match tokio::time::timeout(DOCKER_WAIT, answer).await {
            Ok(Ok(found)) => found,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {DOCKER_WAIT:?}"),
                };
                let unreachable =
                    |name| Check::new(name, Verdict::Fail, "not checked: Docker is not reachable");
                let checks = vec![
                    Check::new(
                        "docker",
                        Verdict::Fail,
                        format!(
                            "cannot reach Docker at {endpoint}: {why}; start dockerd \
                         (contrib/setup.sh does) or pass --docker-endpoint"
                        ),
                    ),
                    unreachable("live-restore"),
                    unreachable("cgroup driver"),
                    unreachable("sandbox image"),
                    unreachable("runtimes"),
                    unreachable("cdi"),
                ];
                return (checks, None);
            }
        };
    let mut checks = vec![Check::new(
        "docker",
        Verdict::Ok,
        format!(
            "Docker {} (API {}) at {endpoint}",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
    )];
    checks.push(if info.live_restore_enabled == Some(true) {
        Check::new("live-restore", Verdict::Ok, "on")
    } else {
        Check::new(
            "live-restore",
            Verdict::Warn,
            "off: a restart of dockerd stops every container of every pod; set \
             \"live-restore\": true in /etc/docker/daemon.json",
        )
    });
    let docker_driver = crate::daemon::cgroup_driver(&info);
    checks.push(cgroup_driver(&docker_driver, kubelet_config));
    checks.push(if image_present {
        Check::new(
            "sandbox image",
            Verdict::Ok,
            format!("{} is present", config.pod_infra_container_image),
        )
    } else {
        Check::new(
            "sandbox image",
            Verdict::Warn,
            format!(
                "{} is not present: the first RunPodSandbox pulls it, and fails if that pull \
                 does; pull, build (contrib/setup.sh) or load it beforehand, or pass \
                 --pod-infra-container-image",
                config.pod_infra_container_image
            ),
        )
    });
    checks.push(runtimes(&info));
    checks.push(cdi(&info, negotiated));
    (checks, Some(negotiated))
}

/// The engine's OCI runtimes: the RuntimeClass handlers a pod may name.
fn runtimes(info: &bollard::models::SystemInfo) -> Check {
    let names = crate::daemon::runtimes(info);
    let default = info.default_runtime.as_deref().unwrap_or("runc");
    Check::new(
        "runtimes",
        Verdict::Ok,
        format!(
            "RuntimeClass handlers: {} (the empty handler is {default}); add one with dockerd's \
             --add-runtime or \"runtimes\" in daemon.json",
            names.join(", ")
        ),
    )
}

/// Whether Docker takes CDI device requests: containers naming `CDI_devices` are refused
/// without it (GPUs and other devices through CDI).
fn cdi(info: &bollard::models::SystemInfo, api: ApiVersion) -> Check {
    let dirs = info.cdi_spec_dirs.clone().unwrap_or_default();
    if api.reports_cdi() && !dirs.is_empty() {
        Check::new(
            "cdi",
            Verdict::Ok,
            format!("on (specs in {})", dirs.join(", ")),
        )
    } else {
        Check::new(
            "cdi",
            Verdict::Ok,
            format!(
                "off (API {api}): containers naming CDI devices are refused; CDI needs Docker \
                 27.1 or newer with CDI enabled (\"features\": {{\"cdi\": true}} in daemon.json \
                 before Docker 28.2)"
            ),
        )
    }
}

/// Docker's cgroup driver against the kubelet's, from the kubelet's configuration file.
fn cgroup_driver(docker: &str, kubelet_config: Option<&Path>) -> Check {
    let Some(path) = kubelet_config else {
        return Check::new(
            "cgroup driver",
            Verdict::Ok,
            format!("Docker uses {docker} (pass --kubelet-config to compare with the kubelet's)"),
        );
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return Check::new(
                "cgroup driver",
                Verdict::Fail,
                format!(
                    "cannot read the kubelet's configuration {}: {e}",
                    path.display()
                ),
            )
        }
    };
    let kubelet = kubelet_cgroup_driver(&text).unwrap_or_else(|| KUBELET_DEFAULT_DRIVER.into());
    if kubelet == docker {
        Check::new(
            "cgroup driver",
            Verdict::Ok,
            format!("Docker and the kubelet both use {docker}"),
        )
    } else {
        Check::new(
            "cgroup driver",
            Verdict::Fail,
            format!(
                "Docker uses {docker}, the kubelet ({}) {kubelet}: set \"exec-opts\": \
                 [\"native.cgroupdriver={kubelet}\"] in /etc/docker/daemon.json, or \
                 cgroupDriver: {docker} in the kubelet's configuration",
                path.display()
            ),
        )
    }
}

/// Whether the kubelet's configuration points its runtime (and image service, when it names
/// one of its own) at this front's socket. The kubelet's default runtime is containerd's.
fn kubelet_endpoints(kubelet: &str, ours: &str) -> Check {
    let same =
        |theirs: &str| theirs.trim_start_matches("unix://") == ours.trim_start_matches("unix://");
    let runtime = kubelet_setting(kubelet, "containerRuntimeEndpoint")
        .unwrap_or_else(|| format!("{KUBELET_DEFAULT_ENDPOINT} (its default)"));
    let image = kubelet_setting(kubelet, "imageServiceEndpoint");
    let wrong = if !same(&runtime) {
        Some(("containerRuntimeEndpoint", runtime))
    } else {
        image
            .filter(|i| !same(i))
            .map(|i| ("imageServiceEndpoint", i))
    };
    match wrong {
        None => Check::new(
            "kubelet endpoint",
            Verdict::Ok,
            format!("the kubelet's runtime is {ours}"),
        ),
        Some((key, theirs)) => Check::new(
            "kubelet endpoint",
            Verdict::Fail,
            format!(
                "the kubelet's {key} is {theirs}, not this runtime: set {key}: {ours} in its \
                 configuration"
            ),
        ),
    }
}

/// The `cgroupDriver` of a KubeletConfiguration, in YAML or JSON. Read by its one top-level
/// line rather than with a YAML parser: the field is a plain scalar at the top level, and the
/// Rust YAML crates that would parse the whole file are unmaintained.
pub fn kubelet_cgroup_driver(config: &str) -> Option<String> {
    kubelet_setting(config, "cgroupDriver")
}

/// A top-level scalar `key` of a KubeletConfiguration, in YAML or JSON.
fn kubelet_setting(config: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    config.lines().find_map(|line| {
        let line = line.trim_start_matches(|c: char| c == '{' || c.is_whitespace());
        let rest = line
            .strip_prefix(key)
            .or_else(|| line.strip_prefix(quoted.as_str()))?;
        let value = rest.trim_start().strip_prefix(':')?;
        let value = value.split('#').next().unwrap_or_default();
        let value = value
            .trim()
            .trim_end_matches([',', '}'])
            .trim()
            .trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The pod network: Docker's bridge, or a valid CNI configuration whose plugins are present.
fn network(config: &ServeConfig) -> Check {
    if config.network_plugin != NetworkPlugin::Cni {
        return Check::new(
            "pod network",
            Verdict::Ok,
            "Docker's default bridge (no --network-plugin)",
        );
    }
    match dockpod_proto::cni_conf::find_cni_network(&config.cni_conf_dir, &config.cni_bin_dir) {
        Ok(net) => Check::new(
            "pod network",
            Verdict::Ok,
            format!(
                "CNI network {:?} ({}) from {}",
                net.name,
                net.plugins.join(" -> "),
                net.file.display()
            ),
        ),
        Err(e) => Check::new(
            "pod network",
            Verdict::Fail,
            format!(
                "{e}; install a network configuration in {} and its plugins in {}",
                config.cni_conf_dir.display(),
                config
                    .cni_bin_dir
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        ),
    }
}

/// Capabilities whose absence changes what dockpod does.
fn capabilities() -> Check {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match capability_effective(&status, CAP_SYS_RESOURCE) {
        Some(true) => Check::new("capabilities", Verdict::Ok, "CAP_SYS_RESOURCE held"),
        Some(false) => Check::new(
            "capabilities",
            Verdict::Warn,
            "no CAP_SYS_RESOURCE (a container host?): Docker cannot set negative OOM scores, \
             so dockpod raises them to the lowest the host allows (sandboxes' -998 included)",
        ),
        None => Check::new(
            "capabilities",
            Verdict::Warn,
            "cannot read CapEff from /proc/self/status",
        ),
    }
}

/// Kernel features dockpod uses: the cgroup hierarchy (at `cgroup_root`), pidfds (a shim's
/// death noticed through its pidfd) and mount_setattr (recursive read-only mounts, which also
/// need an engine that asks runc for them: `api`, when Docker answered).
/// The hierarchy, then the kernel's features. cgroup v1 is refused by kubelets from 1.35
/// (KEP-5573) unless their configuration (`kubelet`, when given) sets `failCgroupV1: false`.
fn kernel(
    release: &str,
    cgroup_root: &Path,
    api: Option<ApiVersion>,
    kubelet: Option<&str>,
) -> Vec<Check> {
    let v1 = "cgroup v1: kubelets from 1.35 refuse to start on it (KEP-5573) unless their \
              configuration sets failCgroupV1: false; boot the host with cgroup v2 \
              (systemd.unified_cgroup_hierarchy=1 on the kernel's command line)";
    let cgroup = if cgroup_root.join("cgroup.controllers").exists() {
        Check::new("cgroups", Verdict::Ok, "cgroup v2 (unified)")
    } else if cgroup_root.is_dir() {
        match kubelet.map(|k| kubelet_setting(k, "failCgroupV1")) {
            Some(Some(allowed)) if allowed == "false" => Check::new(
                "cgroups",
                Verdict::Warn,
                "cgroup v1, which the kubelet is told to accept (failCgroupV1: false); it is \
                 deprecated: move the host to cgroup v2",
            ),
            Some(_) => Check::new("cgroups", Verdict::Fail, v1),
            None => Check::new("cgroups", Verdict::Warn, v1),
        }
    } else {
        Check::new(
            "cgroups",
            Verdict::Fail,
            format!(
                "no cgroup hierarchy at {}: mount cgroup2 there",
                cgroup_root.display()
            ),
        )
    };
    let version = engine_api::kernel_version(release);
    // Ok with the OK check when the kernel has the feature, Err with the WARN one when not.
    let feature = |name, (major, minor): (u32, u32), missing: &str| match version {
        Some(v) if v >= (major, minor) => Ok(Check::new(
            name,
            Verdict::Ok,
            format!("kernel {release} has it (since {major}.{minor})"),
        )),
        Some(_) => Err(Check::new(
            name,
            Verdict::Warn,
            format!("kernel {release} is older than {major}.{minor}: {missing}"),
        )),
        None => Err(Check::new(
            name,
            Verdict::Warn,
            format!("cannot tell the kernel's version from {release:?}: {missing}"),
        )),
    };
    let pidfd = feature(
        "pidfd",
        PIDFD_KERNEL,
        "shim deaths are noticed by polling their PIDs, which a reused PID can hide",
    )
    .unwrap_or_else(|warn| warn);
    let refused = "recursive read-only mounts are refused";
    let mount_setattr = match (feature("mount_setattr", MOUNT_SETATTR_KERNEL, refused), api) {
        (Err(warn), _) => warn,
        (Ok(ok), None) => ok,
        (Ok(ok), Some(api)) if api.recursive_read_only_binds() => Check {
            detail: format!("{}; Docker API {api} asks runc for them", ok.detail),
            ..ok
        },
        (Ok(ok), Some(api)) => Check::new(
            ok.name,
            Verdict::Warn,
            format!(
                "{}, but Docker API {api} cannot ask runc for recursive read-only mounts \
                 (that takes API 1.44, Docker 25): they are refused; upgrade Docker to make them",
                ok.detail
            ),
        ),
    };
    vec![cgroup, pidfd, mount_setattr]
}

/// A directory of dockpod's: absent is fine (created on start); present it must be a
/// directory of this user with none of `forbidden`'s permission bits.
fn directory(name: &'static str, path: &Path, forbidden: u32, fix: &str) -> Check {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::new(
                name,
                Verdict::Ok,
                format!("{} does not exist yet (created on start)", path.display()),
            )
        }
        Err(e) => {
            return Check::new(
                name,
                Verdict::Fail,
                format!("cannot read {}: {e}", path.display()),
            )
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() {
        Check::new(
            name,
            Verdict::Fail,
            format!("{} is not a directory", path.display()),
        )
    } else if meta.uid() != uid {
        Check::new(
            name,
            Verdict::Fail,
            format!(
                "{} belongs to UID {}, not to the front's UID {uid}: chown it",
                path.display(),
                meta.uid()
            ),
        )
    } else if mode & forbidden != 0 {
        Check::new(
            name,
            Verdict::Fail,
            format!(
                "{} has mode {mode:04o}, open to others: {fix} {}",
                path.display(),
                path.display()
            ),
        )
    } else {
        Check::new(
            name,
            Verdict::Ok,
            format!("{} (mode {mode:04o})", path.display()),
        )
    }
}

/// Whether a front already serves the root directory: a second one would refuse to start.
fn other_front(root: &Path) -> Check {
    let lock = root.join(dockpod_proto::owner::LOCK_FILE);
    if !lock.exists() {
        return Check::new("other front", Verdict::Ok, "none has used this root yet");
    }
    match dockpod_proto::owner::take_within(root, "shim-manager", Duration::ZERO) {
        Ok(_released) => Check::new(
            "other front",
            Verdict::Ok,
            format!("none serves {}", root.display()),
        ),
        Err(e) => Check::new(
            "other front",
            Verdict::Warn,
            format!("{e} (a second front on this root would refuse to start)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubelets_cgroup_driver_in_yaml_and_json() {
        let yaml = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd # as kubeadm sets it\n";
        assert_eq!(kubelet_cgroup_driver(yaml).as_deref(), Some("systemd"));
        let quoted = "cgroupDriver: \"cgroupfs\"\n";
        assert_eq!(kubelet_cgroup_driver(quoted).as_deref(), Some("cgroupfs"));
        let json =
            "{\"kind\": \"KubeletConfiguration\",\n \"cgroupDriver\": \"systemd\",\n \"x\": 1}";
        assert_eq!(kubelet_cgroup_driver(json).as_deref(), Some("systemd"));
        let nested =
            "kind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\n";
        assert_eq!(kubelet_cgroup_driver(nested), None);
    }

    #[test]
    fn the_kubelets_endpoints_must_be_this_runtime() {
        let ours = "unix:///run/dockpod/cri.sock";
        let verdict = |kubelet: &str| kubelet_endpoints(kubelet, ours).verdict;
        let shipped = include_str!("../../../contrib/kubelet-config.yaml");
        assert_eq!(verdict(shipped), Verdict::Ok);
        assert_eq!(
            verdict("containerRuntimeEndpoint: /run/dockpod/cri.sock\n"),
            Verdict::Ok
        );
        // None named: the kubelet's default is containerd's.
        assert_eq!(verdict("kind: KubeletConfiguration\n"), Verdict::Fail);
        let other_images = "containerRuntimeEndpoint: unix:///run/dockpod/cri.sock\n\
                            imageServiceEndpoint: unix:///run/containerd/containerd.sock\n";
        let check = kubelet_endpoints(other_images, ours);
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(
            check.detail.contains("imageServiceEndpoint"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn kernel_features_by_release_hierarchy_and_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = dir.path();
        let verdicts = |release, root: &Path, api| {
            kernel(release, root, api, None)
                .into_iter()
                .map(|c| (c.name, c.verdict))
                .collect::<Vec<_>>()
        };
        let new_engine = Some(ApiVersion::new(1, 51));
        assert_eq!(
            verdicts("6.1.0-28-amd64", v1, new_engine),
            [
                ("cgroups", Verdict::Warn),
                ("pidfd", Verdict::Ok),
                ("mount_setattr", Verdict::Ok)
            ]
        );
        // A kubelet of today refuses v1 unless told otherwise.
        let told = |config| kernel("6.1.0", v1, new_engine, Some(config))[0].verdict;
        assert_eq!(told("kind: KubeletConfiguration\n"), Verdict::Fail);
        assert_eq!(told("failCgroupV1: true\n"), Verdict::Fail);
        assert_eq!(told("failCgroupV1: false\n"), Verdict::Warn);
        // Docker 20.10 cannot ask for recursive read-only mounts whatever the kernel.
        let old_engine = verdicts("6.1.0-28-amd64", v1, Some(ApiVersion::new(1, 41)));
        assert_eq!(old_engine[2], ("mount_setattr", Verdict::Warn));
        // Unreachable Docker is the docker check's FAIL; the kernel is judged alone.
        assert_eq!(
            verdicts("6.1.0", v1, None)[2],
            ("mount_setattr", Verdict::Ok)
        );
        assert_eq!(
            verdicts("5.10.0-30-amd64", v1, new_engine)[1..],
            [("pidfd", Verdict::Ok), ("mount_setattr", Verdict::Warn)]
        );
        assert_eq!(
            verdicts("4.19.0", v1, new_engine)[1..],
            [("pidfd", Verdict::Warn), ("mount_setattr", Verdict::Warn)]
        );
        assert_eq!(
            verdicts("garbage", v1, new_engine)[1..],
            [("pidfd", Verdict::Warn), ("mount_setattr", Verdict::Warn)]
        );

        std::fs::write(v1.join("cgroup.controllers"), b"cpu memory pids\n").expect("write");
        let v2 = kernel("6.1.0", v1, new_engine, Some("failCgroupV1: true\n"));
        assert_eq!(
            (v2[0].verdict, v2[0].detail.as_str()),
            (Verdict::Ok, "cgroup v2 (unified)")
        );
        let none = kernel("6.1.0", &dir.path().join("absent"), new_engine, None);
        assert_eq!(none[0].verdict, Verdict::Fail);
    }

    #[test]
    fn cgroup_drivers_compared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("kubelet.yaml");
        std::fs::write(&config, "cgroupDriver: systemd\n").expect("write");
        assert_eq!(cgroup_driver("systemd", Some(&config)).verdict, Verdict::Ok);
        assert_eq!(
            cgroup_driver("cgroupfs", Some(&config)).verdict,
            Verdict::Fail
        );
        std::fs::write(&config, "kind: KubeletConfiguration\n").expect("write");
        assert_eq!(
            cgroup_driver("cgroupfs", Some(&config)).verdict,
            Verdict::Ok,
            "the kubelet's default is cgroupfs"
        );
        let missing = dir.path().join("absent.yaml");
        assert_eq!(
            cgroup_driver("systemd", Some(&missing)).verdict,
            Verdict::Fail
        );
        assert_eq!(cgroup_driver("systemd", None).verdict, Verdict::Ok);
    }

    #[test]
    fn directories_judged_by_owner_kind_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        assert_eq!(
            directory("root", &root, 0o077, "chmod 0700").verdict,
            Verdict::Ok
        );
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(
            directory("root", &root, 0o077, "chmod 0700").verdict,
            Verdict::Ok
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let open = directory("root", &root, 0o077, "chmod 0700");
        assert_eq!(open.verdict, Verdict::Fail);
        assert!(open.detail.contains("chmod 0700"), "{}", open.detail);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        assert_eq!(
            directory("root", &file, 0o077, "chmod 0700").verdict,
            Verdict::Fail
        );
    }
}
