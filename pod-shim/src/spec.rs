//! Translation of the CRI's sandbox and container configurations into Docker create requests:
//! names and labels of the Kubernetes convention, namespaces shared with the sandbox, mounts,
//! devices, security context and resources. Validation happens here too, before anything is
//! created.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, Mount as DockerMount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountImageOptions, MountType, PortBinding,
};
use dockpod_proto::cri::{
    security_profile::ProfileType, ContainerConfig, LinuxContainerResources, MountPropagation,
    NamespaceMode, PodSandboxConfig, PodSandboxMetadata, Protocol, SecurityProfile, Signal,
};
use dockpod_proto::engine_api::ApiVersion;
use dockpod_proto::labels;
use dockpod_proto::validate;

use crate::error::{Error, Result};
use crate::host::Host;

/// What the translation needs besides the request.
pub struct Context<'a> {
    pub instance: &'a str,
    pub shim_id: &'a str,
    pub host: Host,
    /// Pods get their network from CNI (the sandbox starts with none), not Docker's bridge.
    pub cni: bool,
    /// The engine's negotiated API version (see `dockpod_proto::engine_api`).
    pub api: ApiVersion,
    /// The pod's runtime handler: the name of one of the engine's OCI runtimes (`docker info`
    /// → `Runtimes`), or empty for the engine's default.
    pub runtime_handler: String,
    /// The daemon takes CDI device requests (it reports CDI spec directories). Asked of the
    /// engine only for a container that names CDI devices.
    pub cdi: bool,
}

/// OOM score of sandbox containers, as the kubelet's dockershim gave them.
const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

fn base_labels(
    ctx: &Context,
    meta: &PodSandboxMetadata,
    kind: &str,
    user: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = user.clone();
    for (k, v) in annotations {
        l.insert(format!("{}{k}", labels::ANNOTATION_PREFIX), v.clone());
    }
    l.insert(labels::DOCKER_TYPE.into(), kind.into());
    l.insert(labels::POD_NAME.into(), meta.name.clone());
    l.insert(labels::POD_NAMESPACE.into(), meta.namespace.clone());
    l.insert(labels::POD_UID.into(), meta.uid.clone());
    l.insert(labels::INSTANCE.into(), ctx.instance.into());
    l.insert(labels::SHIM_ID.into(), ctx.shim_id.into());
    l
}

fn mode(
    options: Option<&dockpod_proto::cri::NamespaceOption>,
    pick: fn(&dockpod_proto::cri::NamespaceOption) -> i32,
) -> NamespaceMode {
    options
        .map(pick)
        .and_then(|m| NamespaceMode::try_from(m).ok())
        .unwrap_or(NamespaceMode::Pod)
}

/// The sandbox ("pause") container of a pod.
pub fn sandbox(
    ctx: &Context,
    config: &PodSandboxConfig,
    image: &str,
) -> Result<(String, ContainerCreateBody)> {
    let meta = validate::sandbox_config(config)?;
    let name = labels::sandbox_name(&meta.name, &meta.namespace, &meta.uid, meta.attempt);
    let mut l = base_labels(
        ctx,
        meta,
        labels::TYPE_SANDBOX,
        &config.labels,
        &config.annotations,
    );
    l.insert(labels::CONTAINER_NAME.into(), "POD".into());
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.as_ref();
    let host_network = mode(ns, |o| o.network) == NamespaceMode::Node;
    let bridge = !host_network && !ctx.cni;
    let mut host = HostConfig {
        network_mode: Some(
            if host_network {
                "host"
            } else if ctx.cni {
                "none"
            } else {
                "bridge"
            }
            .into(),
        ),
        ipc_mode: Some(
            if mode(ns, |o| o.ipc) == NamespaceMode::Node {
                "host"
            } else {
                "shareable"
            }
            .into(),
        ),
        pid_mode: (mode(ns, |o| o.pid) == NamespaceMode::Node).then(|| "host".into()),
        oom_score_adj: Some(ctx.host.oom_score_adj(SANDBOX_OOM_SCORE_ADJ)),
        cgroup_parent: non_empty(&linux.cgroup_parent),
        privileged: Some(sc.privileged),
        readonly_rootfs: Some(sc.readonly_rootfs),
        security_opt: Some(security_opts(
            Seccomp {
                profile: sc.seccomp.as_ref(),
                deprecated_path: sc.deprecated_seccomp_path(),
                privileged: sc.privileged,
            },
            sc.apparmor.as_ref(),
            false,
        )?),
        group_add: list(sc.supplemental_groups.iter().map(|g| g.to_string())),
        runtime: non_empty(&ctx.runtime_handler),
        ..Default::default()
    };
    if !linux.sysctls.is_empty() {
        host.sysctls = Some(linux.sysctls.clone());
    }
    if let Some(dns) = &config.dns_config {
        if !host_network {
            host.dns = list(dns.servers.iter().cloned());
            host.dns_search = list(dns.searches.iter().cloned());
            host.dns_options = list(dns.options.iter().cloned());
        }
    }
    let mut exposed: HashMap<String, ()> = HashMap::new();
    // Under CNI, host ports are the portmap plugin's (the portMappings capability).
    if bridge && !config.port_mappings.is_empty() {
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for pm in &config.port_mappings {
            let proto = match Protocol::try_from(pm.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            if !(1..=65535).contains(&pm.container_port) {
                return Err(Error::InvalidArgument(format!(
                    "container port {} is out of range",
                    pm.container_port
                )));
            }
            let key = format!("{}/{proto}", pm.container_port);
            exposed.insert(key.clone(), ());
            if pm.host_port > 0 {
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: non_empty(&pm.host_ip),
                        host_port: Some(pm.host_port.to_string()),
                    });
            }
        }
        host.port_bindings = Some(bindings);
    }
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() {
        return Err(Error::InvalidArgument(
            "pod sandbox sets run_as_group without run_as_user".into(),
        ));
    }
    refuse_strict_groups(sc.supplemental_groups_policy, "the pod sandbox")?;
    let user = sc.run_as_user.as_ref().map(|u| match &sc.run_as_group {
        Some(g) => format!("{}:{}", u.value, g.value),
        None => u.value.to_string(),
    });
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: (!host_network)
            .then(|| non_empty(&config.hostname))
            .flatten(),
        labels: Some(l),
        user,
        exposed_ports: (!exposed.is_empty()).then_some(exposed.into_keys().collect()),
        host_config: Some(host),
        ..Default::default()
    };
    Ok((name, body))
}

/// An application container of the pod whose sandbox is `sandbox_id`.
pub fn container(
    ctx: &Context,
    sandbox_id: &str,
    sandbox: &PodSandboxConfig,
    config: &ContainerConfig,
    image: &str,
) -> Result<(String, ContainerCreateBody)> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("container metadata is missing".into()))?;
    validate::name("container name", &meta.name)?;
    validate::labels("labels", &config.labels)?;
    validate::labels("annotations", &config.annotations)?;
    let pod = validate::sandbox_config(sandbox)?;
    let log_file = validate::log_file(&sandbox.log_directory, &config.log_path)?;
    let name = labels::container_name(
        &meta.name,
        &pod.name,
        &pod.namespace,
        &pod.uid,
        meta.attempt,
    );
    let mut l = base_labels(
        ctx,
        pod,
        labels::TYPE_CONTAINER,
        &config.labels,
        &config.annotations,
    );
    l.insert(labels::CONTAINER_NAME.into(), meta.name.clone());
    l.insert(labels::SANDBOX_ID.into(), sandbox_id.into());
    if let Some(f) = &log_file {
        l.insert(labels::LOG_PATH.into(), f.display().to_string());
    }

    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.as_ref();
    validate::user_namespace("container", ns)?;
    let pod_ns = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let shared = format!("container:{sandbox_id}");
    let network_mode = if mode(pod_ns, |o| o.network) == NamespaceMode::Node {
        "host".to_string()
    } else {
        shared.clone()
    };
    let ipc_mode = if mode(pod_ns, |o| o.ipc) == NamespaceMode::Node {
        "host".to_string()
    } else {
        shared.clone()
    };
    let pid_mode = match mode(ns, |o| o.pid) {
        NamespaceMode::Pod => Some(shared.clone()),
        NamespaceMode::Node => Some("host".to_string()),
        NamespaceMode::Target => {
            let target = ns.map(|o| o.target_id.clone()).unwrap_or_default();
            validate::id("target container", &target)?;
            Some(format!("container:{target}"))
        }
        NamespaceMode::Container => None,
    };

    let (binds, mounts) = mounts(ctx, &config.mounts)?;
    let devices = config
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: Some(d.host_path.clone()),
            path_in_container: Some(d.container_path.clone()),
            cgroup_permissions: Some(if d.permissions.is_empty() {
                "rwm".into()
            } else {
                d.permissions.clone()
            }),
        })
        .collect::<Vec<_>>();

    let resources = linux.resources.clone().unwrap_or_default();
    let mut host = HostConfig {
        network_mode: Some(network_mode),
        ipc_mode: Some(ipc_mode),
        pid_mode,
        binds: list(binds.into_iter()),
        mounts: (!mounts.is_empty()).then_some(mounts),
        devices: (!devices.is_empty()).then_some(devices),
        privileged: Some(sc.privileged),
        readonly_rootfs: Some(sc.readonly_rootfs),
        cap_add: list(
            sc.capabilities
                .iter()
                .flat_map(|c| c.add_capabilities.iter().cloned()),
        ),
        cap_drop: list(
            sc.capabilities
                .iter()
                .flat_map(|c| c.drop_capabilities.iter().cloned()),
        ),
        group_add: list(sc.supplemental_groups.iter().map(|g| g.to_string())),
        security_opt: Some(security_opts(
            Seccomp {
                profile: sc.seccomp.as_ref(),
                deprecated_path: sc.deprecated_seccomp_path(),
                privileged: sc.privileged,
            },
            sc.apparmor.as_ref(),
            sc.no_new_privs,
        )?),
        masked_paths: (!sc.masked_paths.is_empty()).then(|| sc.masked_paths.clone()),
        readonly_paths: (!sc.readonly_paths.is_empty()).then(|| sc.readonly_paths.clone()),
        cgroup_parent: sandbox
            .linux
            .as_ref()
            .and_then(|l| non_empty(&l.cgroup_parent)),
        runtime: non_empty(&ctx.runtime_handler),
        device_requests: cdi_devices(ctx, config)?,
        ..Default::default()
    };
    apply_resources(&mut host, &resources, ctx.host);

    refuse_strict_groups(
        sc.supplemental_groups_policy,
        &format!("container {}", meta.name),
    )?;
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {} sets run_as_group without run_as_user or run_as_username",
            meta.name
        )));
    }
    let user = if let Some(u) = &sc.run_as_user {
        Some(match &sc.run_as_group {
            Some(g) => format!("{}:{}", u.value, g.value),
            None => u.value.to_string(),
        })
    } else if !sc.run_as_username.is_empty() {
        Some(match &sc.run_as_group {
            Some(g) => format!("{}:{}", sc.run_as_username, g.value),
            None => sc.run_as_username.clone(),
        })
    } else {
        None
    };
    let env = config
        .envs
        .iter()
        .map(|kv| {
            if kv.key.is_empty() || kv.key.contains('=') {
                return Err(Error::InvalidArgument(format!(
                    "environment variable name {:?} is invalid",
                    kv.key
                )));
            }
            // Docker's API takes each variable as a JSON string.
            let value = std::str::from_utf8(&kv.value).map_err(|_| {
                Error::InvalidArgument(format!(
                    "environment variable {} is not UTF-8, which Docker's API cannot carry",
                    kv.key
                ))
            })?;
            Ok(format!("{}={value}", kv.key))
        })
        .collect::<Result<Vec<_>>>()?;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: list(config.command.iter().cloned()),
        cmd: list(config.args.iter().cloned()),
        working_dir: non_empty(&config.working_dir),
        env: list(env.into_iter()),
        labels: Some(l),
        tty: Some(config.tty),
        open_stdin: Some(config.stdin),
        stdin_once: Some(config.stdin_once),
        attach_stdin: Some(config.stdin),
        user,
        stop_signal: stop_signal(config.stop_signal)?,
        host_config: Some(host),
        ..Default::default()
    };
    Ok((name, body))
}

/// Docker's `StopSignal` for the CRI's: none for `RUNTIME_DEFAULT` (the image's STOPSIGNAL,
/// else SIGTERM, as the CRI asks), else the signal's name as Docker parses it. Docker's
/// stop then sends it, and StopContainer asks nothing else.
fn stop_signal(value: i32) -> Result<Option<String>> {
    let signal = Signal::try_from(value).map_err(|_| {
        Error::InvalidArgument(format!("stop_signal {value} is not a signal the CRI knows"))
    })?;
    if signal == Signal::RuntimeDefault {
        return Ok(None);
    }
    let name = signal.as_str_name();
    // The CRI spells the real-time signals SIGRTMINPLUS3 and SIGRTMAXMINUS2; Docker (as the
    // kill(1) of Linux) SIGRTMIN+3 and SIGRTMAX-2.
    let name = if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        format!("SIGRTMIN+{n}")
    } else if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        format!("SIGRTMAX-{n}")
    } else {
        name.to_string()
    };
    Ok(Some(name))
}

/// The CDI devices (`CDI_devices`, fully qualified `vendor/class=name`) as one Docker device
/// request of driver `cdi`, which the daemon resolves through its CDI specs. A daemon with
/// CDI off has no such driver, and one older than API 1.46 cannot say whether it has: the
/// container is refused here, naming the devices, before Docker is asked anything.
fn cdi_devices(ctx: &Context, config: &ContainerConfig) -> Result<Option<Vec<DeviceRequest>>> {
    if config.cdi_devices.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    for name in &names {
        // vendor/class=device: the only form the CDI specification defines.
        let valid = name
            .split_once('=')
            .is_some_and(|(kind, device)| kind.contains('/') && !device.is_empty());
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "CDI device {name:?} is not a fully qualified vendor/class=name"
            )));
        }
    }
    if !ctx.cdi {
        return Err(Error::InvalidArgument(format!(
            "CDI_devices {names:?} need a Docker daemon with CDI enabled (its `docker info` lists CDI spec directories; API 1.46 and later); this engine speaks {}{}",
            ctx.api,
            if ctx.api.reports_cdi() { " and has CDI off" } else { "" }
        )));
    }
    Ok(Some(vec![DeviceRequest {
        driver: Some("cdi".into()),
        device_ids: Some(names),
        ..Default::default()
    }]))
}

/// Docker's view of the CRI's Linux resources; used at create and by
/// UpdateContainerResources.
pub fn apply_resources(host: &mut HostConfig, r: &LinuxContainerResources, h: Host) {
    let positive = |v: i64| (v > 0).then_some(v);
    host.cpu_period = positive(r.cpu_period);
    host.cpu_quota = positive(r.cpu_quota);
    host.cpu_shares = positive(r.cpu_shares);
    host.memory = positive(r.memory_limit_in_bytes);
    // No swap value means no swap, as the kubelet's NoSwap does: swap follows the memory
    // limit. Docker would otherwise give twice the limit at create, and refuse an update of
    // the limit alone on a container created without one ("Memory limit should be smaller
    // than already set memoryswap limit").
    host.memory_swap = match r.memory_swap_limit_in_bytes {
        v if v > 0 => Some(v),
        _ => host.memory,
    };
    host.cpuset_cpus = non_empty(&r.cpuset_cpus);
    host.cpuset_mems = non_empty(&r.cpuset_mems);
    if r.oom_score_adj != 0 {
        host.oom_score_adj = Some(h.oom_score_adj(r.oom_score_adj));
    }
}

/// The deprecated `seccomp_profile_path` of a sandbox's or container's security context:
/// kubelets from before the `seccomp` field still send it.
trait SeccompPath {
    fn deprecated_seccomp_path(&self) -> &str;
}

#[allow(deprecated)]
impl SeccompPath for dockpod_proto::cri::LinuxSandboxSecurityContext {
    fn deprecated_seccomp_path(&self) -> &str {
        &self.seccomp_profile_path
    }
}

#[allow(deprecated)]
impl SeccompPath for dockpod_proto::cri::LinuxContainerSecurityContext {
    fn deprecated_seccomp_path(&self) -> &str {
        &self.seccomp_profile_path
    }
}

/// What a sandbox or container asks of seccomp.
struct Seccomp<'a> {
    profile: Option<&'a SecurityProfile>,
    /// The deprecated `seccomp_profile_path`, which older kubelets send instead.
    deprecated_path: &'a str,
    privileged: bool,
}

impl Seccomp<'_> {
    /// Docker's `seccomp=` option for it, if any. The CRI's rules: an unset profile means
    /// unconfined (the kubelet asks for `RuntimeDefault` when it wants the runtime's default,
    /// which Docker applies when told nothing), and a privileged container runs without seccomp
    /// whatever it names, so nothing is passed for one (Docker 28 would apply a profile that is
    /// named explicitly, where 20.10 and 26 ignored it).
    fn option(&self) -> Result<Option<String>> {
        if self.privileged {
            return Ok(None);
        }
        let localhost = |path: &str| -> Result<Option<String>> {
            let profile = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {path:?} cannot be read: {e}"))
            })?;
            serde_json::from_str::<serde_json::Value>(&profile).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {path:?} is not JSON: {e}"))
            })?;
            Ok(Some(format!("seccomp={profile}")))
        };
        let unconfined = Ok(Some("seccomp=unconfined".to_string()));
        match self.profile {
            Some(p) => match ProfileType::try_from(p.profile_type) {
                Ok(ProfileType::RuntimeDefault) => Ok(None),
                Ok(ProfileType::Unconfined) => unconfined,
                Ok(ProfileType::Localhost) => {
                    localhost(p.localhost_ref.trim_start_matches("localhost/"))
                }
                Err(_) => Err(Error::InvalidArgument(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                ))),
            },
            None => match self.deprecated_path {
                "" | "unconfined" => unconfined,
                "runtime/default" | "docker/default" => Ok(None),
                path => match path.strip_prefix("localhost/") {
                    Some(path) => localhost(path),
                    None => Err(Error::InvalidArgument(format!(
                        "seccomp profile path {path:?} is none of runtime/default, unconfined or localhost/<path>"
                    ))),
                },
            },
        }
    }
}

fn security_opts(
    seccomp: Seccomp<'_>,
    apparmor: Option<&SecurityProfile>,
    no_new_privs: bool,
) -> Result<Vec<String>> {
    let mut opts = Vec::new();
    opts.extend(seccomp.option()?);
    if let Some(p) = apparmor {
        match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::Unconfined) => opts.push("apparmor=unconfined".to_string()),
            Ok(ProfileType::Localhost) => {
                let name = p.localhost_ref.trim_start_matches("localhost/");
                if name.is_empty() {
                    return Err(Error::InvalidArgument(
                        "apparmor profile name is empty".into(),
                    ));
                }
                opts.push(format!("apparmor={name}"));
            }
            _ => {}
        }
    }
    if no_new_privs {
        opts.push("no-new-privileges".to_string());
    }
    Ok(opts)
}

/// `Strict` supplemental groups cannot be honoured on Docker: the engine always adds the
/// groups the image's /etc/group gives the user (`Merge`), with no option to leave them out,
/// so Status does not advertise the feature and a request for it is refused.
fn refuse_strict_groups(policy: i32, what: &str) -> Result<()> {
    if policy == dockpod_proto::cri::SupplementalGroupsPolicy::Strict as i32 {
        return Err(Error::InvalidArgument(format!(
            "{what} asks for the Strict supplemental groups policy, which Docker cannot honour (it always merges the image's groups); only Merge is supported"
        )));
    }
    Ok(())
}

/// The container's mounts, as Docker takes them from this engine: `Binds` strings where the
/// engine's API predates 1.44 (a read-only bind is then read-only on its top mount only, as
/// the CRI's `readonly` means, and nothing can make it recursive), the Mounts API from 1.44
/// on, where a read-only bind would turn recursive unless told `ReadOnlyNonRecursive`, and
/// `recursive_read_only` is `ReadOnlyForceRecursive` (an error at start where the kernel
/// cannot, never a silently weaker mount).
fn mounts(
    ctx: &Context,
    requested: &[dockpod_proto::cri::Mount],
) -> Result<(Vec<String>, Vec<DockerMount>)> {
    let (mut binds, mut mounts) = (Vec::new(), Vec::new());
    let mut images = std::collections::HashSet::new();
    for m in requested {
        if let Some(image) = m.image.as_ref().filter(|i| !i.image.is_empty()) {
            // Docker names an image mount after its image: a second one of the same image
            // fails inside Docker ("mount already exists with name").
            if !images.insert(image.image.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "mount {:?}: image {:?} is mounted twice in one container, which Docker cannot do",
                    m.container_path, image.image
                )));
            }
        }
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount path {:?} is not absolute",
                m.container_path
            )));
        }
        if let Some(image) = m.image.as_ref().filter(|i| !i.image.is_empty()) {
            mounts.push(image_mount(ctx, m, &image.image)?);
            continue;
        }
        if !m.image_sub_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: image_sub_path {:?} is set without an image",
                m.container_path, m.image_sub_path
            )));
        }
        if m.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {:?} has no host path",
                m.container_path
            )));
        }
        let propagation = MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate);
        if m.recursive_read_only {
            if !m.readonly {
                return Err(Error::InvalidArgument(format!(
                    "mount {:?}: recursive_read_only needs readonly",
                    m.container_path
                )));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(Error::InvalidArgument(format!(
                    "mount {:?}: recursive_read_only needs private propagation",
                    m.container_path
                )));
            }
            if !ctx.api.recursive_read_only_binds() {
                return Err(Error::InvalidArgument(format!(
                    "mount {:?}: recursive read-only mounts need Docker Engine API 1.44 (Docker 25) or newer; this engine speaks {}",
                    m.container_path, ctx.api
                )));
            }
        }
        // Docker binds the symlink's target anyway; resolving it here keeps the bind valid
        // when the link is relative.
        let source = std::fs::canonicalize(&m.host_path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| m.host_path.clone());
        if ctx.api.recursive_read_only_binds() {
            mounts.push(DockerMount {
                target: Some(m.container_path.clone()),
                source: Some(source),
                typ: Some(MountType::BIND),
                read_only: Some(m.readonly),
                bind_options: Some(MountBindOptions {
                    propagation: Some(match propagation {
                        MountPropagation::PropagationHostToContainer => {
                            MountBindOptionsPropagationEnum::RSLAVE
                        }
                        MountPropagation::PropagationBidirectional => {
                            MountBindOptionsPropagationEnum::RSHARED
                        }
                        MountPropagation::PropagationPrivate => {
                            MountBindOptionsPropagationEnum::RPRIVATE
                        }
                    }),
                    // As a `Binds` entry does: a missing host path becomes a directory.
                    create_mountpoint: Some(true),
                    read_only_non_recursive: Some(m.readonly && !m.recursive_read_only),
                    read_only_force_recursive: Some(m.recursive_read_only),
                    ..Default::default()
                }),
                ..Default::default()
            });
        } else {
            let mut opts = vec![if m.readonly { "ro" } else { "rw" }];
            match propagation {
                MountPropagation::PropagationHostToContainer => opts.push("rslave"),
                MountPropagation::PropagationBidirectional => opts.push("rshared"),
                MountPropagation::PropagationPrivate => {}
            }
            binds.push(format!("{source}:{}:{}", m.container_path, opts.join(",")));
        }
    }
    Ok((binds, mounts))
}

/// An image volume (KEP-4639): the image's filesystem, or `image_sub_path` of it, read-only at
/// the mount's path, as Docker's image mounts give it from API 1.48. Older engines cannot,
/// and the container is refused rather than run without the volume.
fn image_mount(ctx: &Context, m: &dockpod_proto::cri::Mount, image: &str) -> Result<DockerMount> {
    if !m.host_path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {:?} names both an image and host path {:?}",
            m.container_path, m.host_path
        )));
    }
    if !ctx.api.image_mounts() {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: image volumes (image {image:?}) need Docker Engine API {} (Docker 28) or newer; this engine speaks {}",
            m.container_path,
            dockpod_proto::engine_api::IMAGE_MOUNTS,
            ctx.api
        )));
    }
    let sub_path = m.image_sub_path.trim_start_matches('/');
    if sub_path.split('/').any(|part| part == "..") {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: image_sub_path {:?} leaves the image",
            m.container_path, m.image_sub_path
        )));
    }
    Ok(DockerMount {
        target: Some(m.container_path.clone()),
        source: Some(image.to_string()),
        typ: Some(MountType::IMAGE),
        // Every image mount is read-only, whatever the request's `readonly` says (the CRI).
        read_only: Some(true),
        image_options: (!sub_path.is_empty()).then(|| MountImageOptions {
            subpath: Some(sub_path.to_string()),
        }),
        ..Default::default()
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn list(items: impl Iterator<Item = String>) -> Option<Vec<String>> {
    let v: Vec<String> = items.collect();
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockpod_proto::cri::*;

    fn ctx() -> Context<'static> {
        Context {
            instance: "inst",
            shim_id: "shim",
            host: Host {
                min_oom_score_adj: Some(0),
            },
            cni: false,
            api: ApiVersion::new(1, 41),
            runtime_handler: String::new(),
            cdi: false,
        }
    }

    #[test]
    fn under_cni_the_sandbox_has_no_network_and_publishes_nothing() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            port_mappings: vec![PortMapping {
                container_port: 80,
                host_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (_, bridge) = sandbox(&ctx(), &config, "pause").expect("bridge sandbox");
        let host = bridge.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert!(host.port_bindings.is_some());
        let cni = Context { cni: true, ..ctx() };
        let (_, body) = sandbox(&cni, &config, "pause").expect("cni sandbox");
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.port_bindings.is_none(), "portmap publishes host ports");
    }

    #[test]
    fn the_pods_runtime_handler_runs_the_sandbox_and_every_container() {
        let crun = Context {
            runtime_handler: "crun".into(),
            ..ctx()
        };
        let (_, sandbox) = sandbox(&crun, &pod(), "pause").expect("sandbox");
        let host = sandbox.host_config.expect("host config");
        assert_eq!(host.runtime.as_deref(), Some("crun"));
        let (_, app) = container(&crun, "sb", &pod(), &app_config(), "img").expect("container");
        assert_eq!(
            app.host_config.and_then(|h| h.runtime).as_deref(),
            Some("crun")
        );
        // The default handler leaves the choice to the engine.
        let (_, app) = container(&ctx(), "sb", &pod(), &app_config(), "img").expect("container");
        assert_eq!(app.host_config.and_then(|h| h.runtime), None);
    }

    fn app_config() -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stop_signals_are_spelled_as_docker_parses_them() {
        assert_eq!(
            stop_signal(Signal::RuntimeDefault as i32).expect("default"),
            None
        );
        assert_eq!(
            stop_signal(Signal::Sigquit as i32)
                .expect("quit")
                .as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(
            stop_signal(Signal::Sigrtminplus3 as i32)
                .expect("rt")
                .as_deref(),
            Some("SIGRTMIN+3")
        );
        assert_eq!(
            stop_signal(Signal::Sigrtmaxminus2 as i32)
                .expect("rt")
                .as_deref(),
            Some("SIGRTMAX-2")
        );
        assert!(stop_signal(-1).is_err());
    }

    fn pod() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 1,
            }),
            log_directory: "/var/log/pods/x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_names_labels_and_oom_clamp() {
        let (name, body) = sandbox(&ctx(), &pod(), "pause").expect("sandbox");
        assert_eq!(name, "k8s_POD_web_default_u1_1");
        let l = body.labels.expect("labels");
        assert_eq!(l[labels::DOCKER_TYPE], "podsandbox");
        assert_eq!(l[labels::INSTANCE], "inst");
        let host = body.host_config.expect("host config");
        assert_eq!(host.oom_score_adj, Some(0));
        assert_eq!(host.ipc_mode.as_deref(), Some("shareable"));
    }

    #[test]
    fn container_shares_the_sandbox_namespaces() {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "true".into()],
            envs: vec![KeyValue {
                key: "A".into(),
                value: "b=c".into(),
            }],
            log_path: "app/0.log".into(),
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/nonexistent/dockpod".into(),
                readonly: true,
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (name, body) = container(&ctx(), "sb", &pod(), &config, "sha256:x").expect("container");
        assert_eq!(name, "k8s_app_web_default_u1_0");
        assert_eq!(body.env, Some(vec!["A=b=c".to_string()]));
        let l = body.labels.as_ref().expect("labels");
        assert_eq!(l[labels::LOG_PATH], "/var/log/pods/x/app/0.log");
        assert_eq!(l[labels::SANDBOX_ID], "sb");
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("container:sb"));
        assert_eq!(host.pid_mode.as_deref(), Some("container:sb"));
        assert_eq!(
            host.binds,
            Some(vec!["/nonexistent/dockpod:/data:ro,rslave".to_string()])
        );
    }

    #[test]
    fn rejects_escaping_log_paths_and_bad_names() {
        let mut config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            log_path: "../../etc/x".into(),
            ..Default::default()
        };
        assert!(matches!(
            container(&ctx(), "sb", &pod(), &config, "i"),
            Err(Error::InvalidArgument(_))
        ));
        config.log_path = "/etc/x".into();
        assert!(matches!(
            container(&ctx(), "sb", &pod(), &config, "i"),
            Err(Error::InvalidArgument(_))
        ));
        config.log_path = String::new();
        config.metadata = None;
        assert!(matches!(
            container(&ctx(), "sb", &pod(), &config, "i"),
            Err(Error::InvalidArgument(_))
        ));
        let mut p = pod();
        p.metadata = None;
        assert!(matches!(
            sandbox(&ctx(), &p, "pause"),
            Err(Error::InvalidArgument(_))
        ));
    }

    fn mount(path: &str, readonly: bool, recursive: bool, propagation: MountPropagation) -> Mount {
        Mount {
            container_path: path.into(),
            host_path: "/tmp".into(),
            readonly,
            recursive_read_only: recursive,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn read_only_binds_are_exactly_as_recursive_as_asked_on_every_engine() {
        let private = MountPropagation::PropagationPrivate;
        let asked = [
            mount("/ro", true, false, private),
            mount(
                "/rw",
                false,
                false,
                MountPropagation::PropagationHostToContainer,
            ),
        ];
        // Before API 1.44 a read-only bind is non-recursive by itself: plain `Binds`.
        let (binds, mounts) = mounts(&ctx(), &asked).expect("1.41");
        assert_eq!(binds, vec!["/tmp:/ro:ro", "/tmp:/rw:rw,rslave"]);
        assert!(mounts.is_empty());
        let rro = [mount("/rro", true, true, private)];
        match super::mounts(&ctx(), &rro) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("1.44"), "{m}"),
            other => panic!("a recursive read-only mount on API 1.41: {other:?}"),
        }

        // From 1.44 on the engine would make `ro` recursive: the Mounts API says it is not.
        let new = Context {
            api: ApiVersion::new(1, 45),
            ..ctx()
        };
        let (binds, mounts) = super::mounts(&new, &asked).expect("1.45");
        assert!(binds.is_empty());
        let ro = mounts[0].bind_options.as_ref().expect("bind options");
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(ro.read_only_non_recursive, Some(true));
        assert_eq!(ro.read_only_force_recursive, Some(false));
        assert_eq!(ro.create_mountpoint, Some(true));
        let rw = mounts[1].bind_options.as_ref().expect("bind options");
        assert_eq!(mounts[1].read_only, Some(false));
        assert_eq!(rw.read_only_non_recursive, Some(false));
        assert_eq!(
            rw.propagation,
            Some(MountBindOptionsPropagationEnum::RSLAVE)
        );
        let (_, mounts) = super::mounts(&new, &rro).expect("rro on 1.45");
        let rro_opts = mounts[0].bind_options.as_ref().expect("bind options");
        assert_eq!(rro_opts.read_only_force_recursive, Some(true));
        assert_eq!(rro_opts.read_only_non_recursive, Some(false));

        // Recursive read-only is read-only and private, or nothing.
        for bad in [
            mount("/x", false, true, private),
            mount("/x", true, true, MountPropagation::PropagationBidirectional),
        ] {
            assert!(matches!(
                super::mounts(&new, &[bad]),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}
