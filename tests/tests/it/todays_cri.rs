//! The CRI of today's kubelets (cri-api 0.33–0.36), field by field against the real dockerd:
//! each field added since 1.31 reaches Docker as asked, or is refused with a message naming
//! it where the engine cannot honour it, and the new RPCs answer.

use std::collections::BTreeSet;
use std::time::Duration;

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{api_version, docker, image_id, TOOL_IMAGE};
use dockpod_tests::front::Front;
use futures_util::StreamExt;
use tonic::Code;

/// Generous: a stop by the container's own signal takes well under a second; a stop that fell
/// back to SIGKILL after the grace period would take `GRACE`.
const GRACE: i64 = 60;

async fn inspect(id: &str) -> bollard::models::ContainerInspectResponse {
    docker()
        .await
        .inspect_container(id, None)
        .await
        .expect("docker inspect")
}

/// `ContainerConfig.stop_signal` becomes Docker's `StopSignal`, ContainerStatus reports it, and
/// StopContainer stops the container with it (the container traps it and exits 7; SIGTERM
/// would have been ignored and the stop would have waited for SIGKILL).
#[tokio::test]
async fn the_stop_signal_reaches_docker_and_stops_the_container() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "stopsig").await;
    let mut config = container_config("app", &["sh", "-c"]);
    config.args =
        vec!["trap '' TERM; trap 'exit 7' USR1; echo ready; while :; do sleep 0.2; done".into()];
    config.stop_signal = Signal::Sigusr1 as i32;
    let id = run_container(&mut rt, &p.id, &p.config, config).await;
    wait_for_log(&p, "app", "ready").await;
    assert_eq!(
        inspect(&id)
            .await
            .config
            .and_then(|c| c.stop_signal)
            .as_deref(),
        Some("SIGUSR1")
    );
    assert_eq!(
        status(&mut rt, &id).await.stop_signal,
        Signal::Sigusr1 as i32
    );
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: GRACE,
    })
    .await
    .expect("StopContainer");
    let stopped = status(&mut rt, &id).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        stopped.exit_code, 7,
        "stopped by SIGUSR1, not SIGKILL: {stopped:?}"
    );

    // The real-time signals are spelled as Docker (and kill(1)) spell them.
    let mut config = container_config("rt", &["sleep", "3600"]);
    config.stop_signal = Signal::Sigrtminplus3 as i32;
    let id = create_container(&mut rt, &p.id, &p.config, config)
        .await
        .expect("create with SIGRTMIN+3");
    assert_eq!(
        inspect(&id)
            .await
            .config
            .and_then(|c| c.stop_signal)
            .as_deref(),
        Some("SIGRTMIN+3")
    );
    // No signal asked: Docker's default (the image's, else SIGTERM), reported as such.
    let id = create_container(
        &mut rt,
        &p.id,
        &p.config,
        container_config("dflt", &["true"]),
    )
    .await
    .expect("create");
    assert_eq!(
        status(&mut rt, &id).await.stop_signal,
        Signal::RuntimeDefault as i32
    );
    let unknown = ContainerConfig {
        stop_signal: 999,
        ..container_config("bad", &["true"])
    };
    let err = create_container(&mut rt, &p.id, &p.config, unknown)
        .await
        .expect_err("an unknown signal");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stop_signal"), "{err:?}");
    remove_pod(&mut rt, &p.id).await;
}

async fn wait_for_log(p: &Pod, container: &str, text: &str) {
    let path = std::path::Path::new(&p.config.log_directory).join(format!("{container}/0.log"));
    dockpod_tests::wait::wait_until(
        &format!("{text:?} in {}", path.display()),
        Duration::from_secs(60),
        || {
            let path = path.clone();
            async move {
                std::fs::read_to_string(&path)
                    .ok()
                    .filter(|log| log.contains(text))
                    .map(|_| ())
            }
        },
    )
    .await;
}

/// Image volumes (KEP-4639): from API 1.48 Docker mounts the image, or `image_sub_path` of it,
/// read-only; an older engine refuses the container, naming the field and its API version,
/// and leaves nothing behind.
#[tokio::test]
async fn image_volumes_mount_read_only_or_are_refused_by_name() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "imgvol").await;
    let image = image_id(&docker().await, TOOL_IMAGE).await;
    let pause = image_id(&docker().await, dockpod_tests::docker::PAUSE_IMAGE).await;
    let image_mount = |path: &str, image: &str, sub_path: &str| Mount {
        container_path: path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    };
    let mut config = container_config("app", &["sleep", "3600"]);
    config.mounts = vec![
        image_mount("/whole", &image, ""),
        image_mount("/etc-only", &pause, "etc"),
    ];
    let api = api_version().await;
    if !api.image_mounts() {
        let err = create_container(&mut rt, &p.id, &p.config, config)
            .await
            .expect_err("image volumes on an engine without image mounts");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("image volumes") && err.message().contains(&api.to_string()),
            "{err:?}"
        );
        let listed = container_ids(rt.clone(), ContainerFilter::default()).await;
        assert!(
            listed.is_empty(),
            "a refused create leaves nothing: {listed:?}"
        );
        remove_pod(&mut rt, &p.id).await;
        return;
    }
    let id = run_container(&mut rt, &p.id, &p.config, config).await;
    let mounts = inspect(&id).await.mounts.unwrap_or_default();
    for target in ["/whole", "/etc-only"] {
        let m = mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some(target))
            .unwrap_or_else(|| panic!("no mount at {target}: {mounts:?}"));
        assert_eq!(m.typ.as_deref(), Some("image"), "{m:?}");
        assert_eq!(m.rw, Some(false), "image mounts are read-only: {m:?}");
    }
    let seen = exec(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "cat /whole/etc/passwd /etc-only/passwd | grep -c ^root:",
        ],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        "2",
        "{seen:?}"
    );
    let write = exec(&mut rt, &id, &["sh", "-c", "touch /whole/x"]).await;
    assert_ne!(write.exit_code, 0, "an image volume is read-only");
    // A sub path the image does not have fails the container, never mounts something else.
    let mut missing = container_config("missing", &["sleep", "3600"]);
    missing.mounts = vec![image_mount("/nope", &image, "no/such/dir")];
    let failed = match create_container(&mut rt, &p.id, &p.config, missing).await {
        Err(_) => true,
        Ok(id) => rt
            .start_container(StartContainerRequest { container_id: id })
            .await
            .is_err(),
    };
    assert!(failed, "a missing image_sub_path must fail the container");
    // Docker mounts an image once per container: two volumes of one image (sub paths of it,
    // say) are refused by name rather than failing inside Docker.
    let mut twice = container_config("twice", &["sleep", "3600"]);
    twice.mounts = vec![
        image_mount("/a", &image, "etc"),
        image_mount("/b", &image, "bin"),
    ];
    let err = create_container(&mut rt, &p.id, &p.config, twice)
        .await
        .expect_err("one image mounted twice");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("twice"), "{err:?}");
    remove_pod(&mut rt, &p.id).await;
}

/// `image_sub_path` without an image, and environment values Docker cannot carry, are
/// refused by name.
#[tokio::test]
async fn malformed_new_fields_are_refused_by_name() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "badnew").await;
    let mut config = container_config("app", &["true"]);
    config.mounts = vec![Mount {
        container_path: "/x".into(),
        host_path: "/tmp".into(),
        image_sub_path: "etc".into(),
        ..Default::default()
    }];
    let err = create_container(&mut rt, &p.id, &p.config, config)
        .await
        .expect_err("image_sub_path without an image");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("image_sub_path"), "{err:?}");

    let mut config = container_config("env", &["true"]);
    config.envs = vec![KeyValue {
        key: "RAW".into(),
        value: vec![0xff, 0xfe],
    }];
    let err = create_container(&mut rt, &p.id, &p.config, config)
        .await
        .expect_err("a non-UTF-8 environment value");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("RAW"), "{err:?}");
    let listed = container_ids(rt.clone(), ContainerFilter::default()).await;
    assert!(
        listed.is_empty(),
        "refused creates leave nothing: {listed:?}"
    );
    remove_pod(&mut rt, &p.id).await;
}

/// CDI devices go to Docker as a device request of driver `cdi` where the daemon has CDI on;
/// elsewhere the container is refused, naming the devices, never run without them.
#[tokio::test]
async fn cdi_devices_reach_a_cdi_daemon_or_are_refused() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "cdi").await;
    let info = docker().await.info().await.expect("docker info");
    let cdi_on = info.cdi_spec_dirs.as_ref().is_some_and(|d| !d.is_empty());
    let vendor = format!("dockpod.test/{}", dockpod_tests::unique("dev"));
    let device = format!("{vendor}=one");
    // A CDI spec of the test's own: one device that sets an environment variable.
    let spec_dir = info
        .cdi_spec_dirs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .next();
    let _spec = spec_dir.filter(|_| cdi_on).map(|dir| {
        let kind = vendor.clone();
        SpecFile::write(
            std::path::Path::new(&dir),
            &serde_json::json!({
                "cdiVersion": "0.5.0",
                "kind": kind,
                "devices": [{"name": "one", "containerEdits": {"env": ["DOCKPOD_CDI=one"]}}],
            }),
        )
    });
    // CDI edits the container's OCI spec, which an exec does not share: the container's own
    // process reports what it got.
    let mut config = container_config(
        "app",
        &["sh", "-c", "echo cdi=$DOCKPOD_CDI; exec sleep 3600"],
    );
    config.cdi_devices = vec![CdiDevice {
        name: device.clone(),
    }];
    if !cdi_on {
        let err = create_container(&mut rt, &p.id, &p.config, config)
            .await
            .expect_err("CDI devices without CDI");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("CDI_devices") && err.message().contains(&device),
            "{err:?}"
        );
        remove_pod(&mut rt, &p.id).await;
        return;
    }
    let id = run_container(&mut rt, &p.id, &p.config, config).await;
    let requests = inspect(&id)
        .await
        .host_config
        .and_then(|h| h.device_requests)
        .unwrap_or_default();
    assert!(
        requests.iter().any(|r| r.driver.as_deref() == Some("cdi")
            && r.device_ids.as_deref() == Some(std::slice::from_ref(&device))),
        "{requests:?}"
    );
    wait_for_log(&p, "app", "cdi=one").await;
    remove_pod(&mut rt, &p.id).await;
}

/// A file the test writes and removes however it ends.
struct SpecFile(std::path::PathBuf);

impl SpecFile {
    fn write(dir: &std::path::Path, spec: &serde_json::Value) -> SpecFile {
        std::fs::create_dir_all(dir).expect("CDI spec dir");
        let path = dir.join(format!("{}.json", dockpod_tests::unique("dockpod-cdi")));
        std::fs::write(&path, spec.to_string()).expect("write CDI spec");
        SpecFile(path)
    }
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// UpdatePodSandboxResources (every in-place pod resize since 1.33) is accepted, recorded in
/// the pod's record, and applied to the sandbox container; an unknown pod is NotFound.
#[tokio::test]
async fn pod_resources_are_recorded_and_applied_to_the_sandbox() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "resize").await;
    let resources = LinuxContainerResources {
        cpu_shares: 256,
        memory_limit_in_bytes: 96 << 20,
        ..Default::default()
    };
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: p.id.clone(),
        overhead: Some(LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        resources: Some(resources),
    })
    .await
    .expect("UpdatePodSandboxResources");
    let host = inspect(&p.id).await.host_config.expect("host config");
    assert_eq!(host.cpu_shares, Some(256));
    assert_eq!(host.memory, Some(96 << 20));
    let records = std::fs::read_dir(front.root_dir().join("pods"))
        .expect("pods dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| dockpod_proto::state_journal::read(&e.path()).ok().flatten())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find(|r| r["sandbox_id"] == p.id.as_str())
        .expect("the pod's record");
    assert_eq!(
        records["sandbox_resources"]["resources"]["memory_limit_in_bytes"],
        96 << 20
    );
    assert_eq!(records["sandbox_resources"]["overhead"]["cpu_shares"], 2);
    let err = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0".repeat(64),
            ..Default::default()
        })
        .await
        .expect_err("an unknown pod");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    remove_pod(&mut rt, &p.id).await;
}

/// The streaming lists answer what the unary lists answer.
#[tokio::test]
async fn streaming_lists_answer_as_the_unary_lists() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "streams").await;
    let mut ours = Vec::new();
    for name in ["a", "b"] {
        ours.push(
            run_container(
                &mut rt,
                &p.id,
                &p.config,
                container_config(name, &["sleep", "3600"]),
            )
            .await,
        );
    }
    let pods: BTreeSet<String> = collect(
        rt.stream_pod_sandboxes(StreamPodSandboxesRequest::default())
            .await,
    )
    .await
    .into_iter()
    .flat_map(|r| r.pod_sandboxes)
    .map(|p| p.id)
    .collect();
    let unary: BTreeSet<String> = pod_ids(rt.clone(), PodSandboxFilter::default())
        .await
        .into_iter()
        .collect();
    assert_eq!(pods, unary);
    assert!(pods.contains(&p.id));
    let containers: BTreeSet<String> = collect(
        rt.stream_containers(StreamContainersRequest::default())
            .await,
    )
    .await
    .into_iter()
    .flat_map(|r| r.containers)
    .map(|c| c.id)
    .collect();
    let unary: BTreeSet<String> = container_ids(rt.clone(), ContainerFilter::default())
        .await
        .into_iter()
        .collect();
    assert_eq!(containers, unary);
    assert_eq!(containers, ours.iter().cloned().collect());
    let stats: BTreeSet<String> = collect(
        rt.stream_container_stats(StreamContainerStatsRequest::default())
            .await,
    )
    .await
    .into_iter()
    .flat_map(|r| r.container_stats)
    .filter_map(|s| s.attributes.map(|a| a.id))
    .collect();
    assert_eq!(stats, containers);
    let pod_stats: Vec<String> = collect(
        rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest::default())
            .await,
    )
    .await
    .into_iter()
    .flat_map(|r| r.pod_sandbox_stats)
    .filter_map(|s| s.attributes.map(|a| a.id))
    .collect();
    assert_eq!(pod_stats, vec![p.id.clone()]);
    let metrics: Vec<String> = collect(
        rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest::default())
            .await,
    )
    .await
    .into_iter()
    .flat_map(|r| r.pod_sandbox_metrics)
    .map(|m| m.pod_sandbox_id)
    .collect();
    assert_eq!(metrics, vec![p.id.clone()]);
    let mut images = front.images();
    let streamed: BTreeSet<String> =
        collect(images.stream_images(StreamImagesRequest::default()).await)
            .await
            .into_iter()
            .flat_map(|r| r.images)
            .map(|i| i.id)
            .collect();
    let unary: BTreeSet<String> = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(streamed, unary);
    remove_pod(&mut rt, &p.id).await;
}

async fn collect<T>(answer: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Vec<T> {
    answer
        .expect("a streaming list")
        .into_inner()
        .map(|chunk| chunk.expect("a chunk"))
        .collect()
        .await
}

/// One identifier of an image everywhere: PullImage's answer, ImageStatus, ListImages,
/// ContainerStatus (`image_ref`, `image_id` and the spec's `image_ref`) and ListContainers.
#[tokio::test]
async fn one_image_identifier_across_every_call() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let mut images = front.images();
    let id = image_id(&docker().await, TOOL_IMAGE).await;
    let spec = ImageSpec {
        image: TOOL_IMAGE.into(),
        ..Default::default()
    };
    let found = images
        .image_status(ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("present");
    assert_eq!(found.id, id);
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(listed.iter().any(|i| i.id == id));
    let p = pod(&mut rt, "imageref").await;
    let container = run_container(
        &mut rt,
        &p.id,
        &p.config,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let s = status(&mut rt, &container).await;
    assert_eq!(s.image_ref, id);
    assert_eq!(s.image_id, id);
    assert_eq!(
        s.image.as_ref().map(|i| i.image_ref.as_str()),
        Some(id.as_str())
    );
    assert_eq!(s.image.as_ref().map(|i| i.image.as_str()), Some(TOOL_IMAGE));
    let items = rt
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let item = items.iter().find(|c| c.id == container).expect("listed");
    assert_eq!(item.image_ref, id);
    assert_eq!(
        item.image.as_ref().map(|i| i.image_ref.as_str()),
        Some(id.as_str())
    );
    remove_pod(&mut rt, &p.id).await;
}

/// Pressure stall information in the stats where the kernel gives it (cgroup v2 with PSI);
/// absent, not zero, on cgroup v1.
#[tokio::test]
async fn stats_carry_pressure_only_on_cgroup_v2() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "psi").await;
    let id = run_container(
        &mut rt,
        &p.id,
        &p.config,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let v2_with_psi = dockpod_tests::cgroup_v2_with_psi();
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu = stats.cpu.expect("cpu");
    let memory = stats.memory.expect("memory");
    assert!(cpu.usage_core_nano_seconds.is_some());
    assert_eq!(cpu.psi.is_some(), v2_with_psi, "{cpu:?}");
    assert_eq!(memory.psi.is_some(), v2_with_psi, "{memory:?}");
    assert_eq!(stats.io.is_some(), v2_with_psi, "{:?}", stats.io);
    if let Some(psi) = cpu.psi {
        assert!(psi.some.is_some(), "{psi:?}");
    }
    if v2_with_psi {
        // The figures are the kernel's: the memory pressure's total (µs in the file, ns in
        // the CRI) lies between a reading just before the call and one just after.
        let pid = docker()
            .await
            .inspect_container(&id, None)
            .await
            .expect("inspect")
            .state
            .and_then(|s| s.pid)
            .expect("running");
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let dir = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("the unified hierarchy");
        let file = format!("/sys/fs/cgroup{dir}/memory.pressure");
        let total = || {
            let text = std::fs::read_to_string(&file).expect("memory.pressure");
            let some = text.lines().find(|l| l.starts_with("some ")).expect("some");
            some.split_whitespace()
                .find_map(|f| f.strip_prefix("total="))
                .and_then(|t| t.parse::<u64>().ok())
                .expect("total")
        };
        let before = total();
        let reported = rt
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .and_then(|s| s.memory)
            .and_then(|m| m.psi)
            .and_then(|p| p.some)
            .expect("memory PSI");
        let after = total();
        assert!(
            before * 1000 <= reported.total && reported.total <= after * 1000,
            "{before} µs <= {} ns <= {after} µs",
            reported.total
        );
        assert!((0.0..=100.0).contains(&reported.avg10), "{reported:?}");
    }
    remove_pod(&mut rt, &p.id).await;
}

/// Status says what the new features are: no user namespaces with the host's network, and
/// the CRI release the bindings come from in the verbose info.
#[tokio::test]
async fn status_reports_the_cri_release_and_no_userns_host_network() {
    let front = Front::start(&[]).await;
    let status = front
        .runtime()
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert_eq!(
        status.features.map(|f| f.user_namespaces_host_network),
        Some(false)
    );
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("JSON");
    assert_eq!(info["criAPIVersion"], dockpod_proto::cri::API_VERSION);
    let err = front
        .runtime()
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .expect_err("no checkpoints on Docker");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("Checkpoint"), "{err:?}");
}

/// An image pulled from two registries is one image: both pulls answer its ID, and ImageStatus
/// by either name gives the same ID.
#[tokio::test]
async fn an_image_from_two_registries_has_one_identifier() {
    use dockpod_tests::docker::{derive_image, push, remove_everywhere, ImageRefs};
    use dockpod_tests::registry::Registry;
    let front = Front::start(&[]).await;
    let (first, second) = (Registry::start(), Registry::start());
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let name = dockpod_tests::unique("tworeg");
    let one = format!("{}/dockpod-test/{name}:1", first.host());
    let two = format!("{}/dockpod-test/{name}:1", second.host());
    let id = derive_image(
        &docker,
        &mut refs,
        TOOL_IMAGE,
        &one,
        &format!("LABEL dockpod.test={name}"),
    )
    .await;
    let (repo, tag) = two.rsplit_once(':').expect("tag");
    dockpod_tests::docker::tag(&docker, &id, repo, tag).await;
    refs.track(&two);
    push(&docker, &one, None).await;
    push(&docker, &two, None).await;
    remove_everywhere(&docker, &id).await;
    let mut images = front.images();
    for name in [&one, &two] {
        let pulled = images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull {name}: {e:?}"))
            .into_inner()
            .image_ref;
        assert_eq!(pulled, id, "{name}");
    }
    for name in [&one, &two] {
        let status = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("present");
        assert_eq!(status.id, id, "{name}");
        assert!(
            status.repo_tags.contains(&one) && status.repo_tags.contains(&two),
            "{status:?}"
        );
    }
    remove_everywhere(&docker, &id).await;
}

/// The sandbox image is pulled when the node lacks it (the kubelet never pulls it), and the
/// pod runs.
#[tokio::test]
async fn a_missing_sandbox_image_is_pulled() {
    use dockpod_tests::docker::{derive_image, push, remove_everywhere, ImageRefs, PAUSE_IMAGE};
    use dockpod_tests::registry::Registry;
    let registry = Registry::start();
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let name = dockpod_tests::unique("pause");
    let image = format!("{}/dockpod-test/{name}:1", registry.host());
    let id = derive_image(
        &docker,
        &mut refs,
        PAUSE_IMAGE,
        &image,
        &format!("LABEL dockpod.test={name}"),
    )
    .await;
    push(&docker, &image, None).await;
    remove_everywhere(&docker, &id).await;
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "the node must lack it"
    );
    let front = Front::start(&["--pod-infra-container-image", &image]).await;
    let mut rt = front.runtime();
    let p = pod(&mut rt, "pulledpause").await;
    let sandbox = inspect(&p.id).await;
    assert_eq!(sandbox.image.as_deref(), Some(id.as_str()));
    assert!(
        front.log().contains("pulled the missing sandbox image"),
        "{}",
        front.log()
    );
    let listed = front
        .images()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("present");
    assert!(listed.pinned, "the sandbox image is pinned: {listed:?}");
    remove_pod(&mut rt, &p.id).await;
    remove_everywhere(&docker, &id).await;
}

/// Whether the engine's crun starts a container here, asked of Docker itself; why not, if it
/// does not (crun refuses a cgroup v1 hybrid whose unified hierarchy holds controllers, as
/// these machines' supervisor keeps hugetlb there; Debian 12's crun does not know the OCI
/// version Docker 28 writes).
async fn crun_here() -> Result<(), String> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
    let docker = docker().await;
    let name = dockpod_tests::unique("crun-probe");
    let body = ContainerCreateBody {
        image: Some(TOOL_IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        labels: Some([("dockpod-test".to_string(), "crun-probe".to_string())].into()),
        host_config: Some(HostConfig {
            runtime: Some("crun".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| e.to_string())?;
    let started = docker
        .start_container(&name, None)
        .await
        .map_err(|e| e.to_string());
    let force = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(&name, Some(force)).await;
    started
}

/// RuntimeClass on Docker: the engine's runtimes are the handlers (crun beside runc, as
/// contrib/setup.sh registers it); a pod of handler `crun` has its sandbox and containers run
/// by crun; an unknown handler is refused with the list of known ones.
#[tokio::test]
async fn runtime_handlers_are_the_engines_runtimes() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let status = rt
        .status(StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert!(
        names.contains(&"") && names.contains(&"runc") && names.contains(&"crun"),
        "{names:?}: contrib/setup.sh registers crun with dockerd"
    );
    assert!(!names.iter().any(|n| n.contains('.')), "{names:?}");

    let logs = tempfile::tempdir().expect("log dir");
    let config = pod_config("nosuch", logs.path());
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "nosuch".into(),
        })
        .await
        .expect_err("an unknown handler");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("nosuch")
            && err.message().contains("crun")
            && err.message().contains("runc"),
        "{err:?}"
    );

    let config = pod_config("crun", logs.path());
    let ran = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "crun".into(),
        })
        .await;
    if let Err(why) = crun_here().await {
        // crun's own refusal, the one Docker gives for a container of its own, proves the
        // sandbox went to crun; nothing is left behind.
        let err = ran.expect_err("crun does not run containers here");
        let reason = why
            .rsplit("OCI runtime create failed:")
            .next()
            .unwrap_or(&why);
        assert!(
            err.message().contains(reason.trim()),
            "{err:?} against Docker's own {why:?}"
        );
        assert!(pod_ids(rt.clone(), PodSandboxFilter::default())
            .await
            .is_empty());
        return;
    }
    let id = ran
        .expect("RunPodSandbox with crun")
        .into_inner()
        .pod_sandbox_id;
    let listed = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert_eq!(
        listed
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.runtime_handler.as_str()),
        Some("crun")
    );
    let container = run_container(
        &mut rt,
        &id,
        &config,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    for docker_id in [&id, &container] {
        let host = inspect(docker_id).await.host_config.expect("host config");
        assert_eq!(host.runtime.as_deref(), Some("crun"), "{docker_id}");
        let runtime = runtime_of(docker_id);
        assert!(
            runtime
                .as_ref()
                .is_some_and(|(binary, state)| binary.ends_with("crun") && *state),
            "{docker_id} was not run by crun: {runtime:?}"
        );
    }
    let echoed = exec(&mut rt, &container, &["echo", "under-crun"]).await;
    assert_eq!(String::from_utf8_lossy(&echoed.stdout).trim(), "under-crun");
    remove_pod(&mut rt, &id).await;
}

/// The OCI runtime that created container `id`, as containerd's runc shim was told to run
/// it (`options.json` of the task's bundle, `binary_name`), and whether that runtime keeps
/// the container's state (`<root>/<namespace>/<id>`, `root` from the same file). Bundles are
/// under /run for every engine here (containerd's default state directory, and
/// /run/dockpod-engines/<engine>/containerd-state). None for a container run without options
/// (the engine's default runtime, runc).
fn runtime_of(id: &str) -> Option<(String, bool)> {
    let options = walkdir::WalkDir::new("/run")
        .max_depth(7)
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name() == "options.json"
                && e.path()
                    .parent()
                    .is_some_and(|p| p.file_name().is_some_and(|n| n == id))
        })?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(options.path()).ok()?).ok()?;
    let binary = json["binary_name"].as_str().unwrap_or_default().to_string();
    let root = std::path::Path::new(json["root"].as_str().unwrap_or_default());
    // The shim runs the runtime with `--root <root>/<namespace>`: the bundle's namespace.
    let namespace = options.path().parent()?.parent()?.file_name()?;
    let state = root.join(namespace).join(id).exists() || root.join(id).exists();
    Some((binary, state))
}
