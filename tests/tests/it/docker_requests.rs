//! Which Docker requests dockpod makes, seen by a proxy between it and dockerd: the calls the
//! kubelet makes every second answer from dockpod's own state.

use std::collections::BTreeMap;
use std::time::Duration;

use dockpod_proto::cri::image_service_client::ImageServiceClient;
use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{derive_image, ImageRefs, PAUSE_IMAGE, TOOL_IMAGE};
use dockpod_tests::docker_proxy::{DockerProxy, Seen};
use dockpod_tests::front::Front;
use dockpod_tests::metrics;
use dockpod_tests::wait::wait_until;
use futures_util::StreamExt;

const SECS: Duration = Duration::from_secs(60);
/// Pods made at once: enough to be quick, few enough not to pile up on a 2-core machine.
const AT_ONCE: usize = 8;

/// How often each kind of request was made, IDs left out.
fn summary(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for s in seen {
        let path: Vec<&str> = s
            .path
            .split('/')
            .map(|segment| {
                if segment.len() == 64 && segment.chars().all(|c| c.is_ascii_hexdigit()) {
                    "{id}"
                } else {
                    segment
                }
            })
            .collect();
        *kinds
            .entry(format!("{} {}", s.method, path.join("/")))
            .or_default() += 1;
    }
    kinds
}

/// The front's own Docker calls, as its metrics count them.
async fn front_docker_calls(addr: &str) -> f64 {
    let body = metrics::scrape(addr).await;
    metrics::values(
        &metrics::samples(&body),
        "dockpod_docker_request_duration_seconds_count",
    )
    .iter()
    .sum()
}

/// The front's calls to shims by method, as its metrics count them, leaving out the liveness
/// probe (Info), which runs on its own clock.
async fn shim_calls(addr: &str) -> BTreeMap<String, f64> {
    let body = metrics::scrape(addr).await;
    metrics::samples(&body)
        .into_iter()
        .filter_map(|(series, value)| {
            let method = series
                .strip_prefix("dockpod_shim_requests_total{method=\"")?
                .strip_suffix("\"}")?;
            (method != "Info").then(|| (method.to_string(), value))
        })
        .collect()
}

/// Waits until no request has arrived for a second: what dockpod set going has run its course.
async fn quiet(proxy: &DockerProxy) {
    let deadline = std::time::Instant::now() + SECS;
    let mut last = (proxy.seen().len(), std::time::Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        let seen = proxy.seen();
        if seen.len() != last.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "dockpod kept asking Docker: {:?}",
                summary(&seen[last.0..])
            );
            last = (seen.len(), std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn version_status_and_runtime_config_answer_from_what_the_front_knows_of_docker() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    quiet(&proxy).await;
    let before = proxy.seen().len();
    for _ in 0..3 {
        // A fresh connection each time, as crictl and a restarted kubelet make.
        let version = front
            .runtime()
            .version(VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
        assert_eq!(version.runtime_name, "docker");
        assert!(!version.runtime_version.is_empty(), "{version:?}");
    }
    let mut rt = front.runtime();
    let config = rt
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert!(config.linux.is_some());
    let asked = proxy.seen().split_off(before);
    assert!(
        asked.is_empty(),
        "Version and RuntimeConfig asked Docker: {:?}",
        summary(&asked)
    );
    // Status confirms that dockerd answers, by a ping at most every few seconds however often
    // it is called.
    for _ in 0..10 {
        let status = rt
            .status(StatusRequest::default())
            .await
            .expect("Status")
            .into_inner();
        let conditions = status.status.expect("conditions").conditions;
        assert!(conditions.iter().all(|c| c.status), "{conditions:?}");
    }
    let asked = proxy.seen().split_off(before);
    assert!(
        asked.len() <= 1 && asked.iter().all(|s| s.path == "/_ping"),
        "ten Status calls asked Docker: {:?}",
        summary(&asked)
    );
}

#[tokio::test]
async fn a_new_pods_shim_speaks_the_api_version_the_front_negotiated_without_asking() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    // The front has asked once, for itself.
    quiet(&proxy).await;
    let before = proxy.seen().len();
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut config = pod_config(&dockpod_tests::unique("apiver"), logs.path());
    host_network(&mut config);
    let pod = run_pod(&mut rt, &config).await;
    let asked = summary(&proxy.seen()[before..]);
    let _ = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    assert!(
        asked.contains_key("POST /containers/create"),
        "the proxy saw the pod's start: {asked:?}"
    );
    assert!(
        !asked.contains_key("GET /version"),
        "the pod's shim asked Docker its version: {asked:?}"
    );
    // The front makes sure of the sandbox image, once; a new pod's shim, which has made
    // nothing yet, has nothing to reconcile with Docker's containers.
    assert_eq!(
        asked.get(&format!("GET /images/{PAUSE_IMAGE}/json")),
        Some(&1),
        "{asked:?}"
    );
    assert!(
        !asked.contains_key("GET /containers/json"),
        "a new pod's shim listed Docker's containers: {asked:?}"
    );
}

/// StopPodSandbox records the exit of a container it stopped (read before the sandbox's
/// stop: by the read Docker's `die` event sets going, or by its own should the event be
/// 250 ms late, as on a loaded machine), and does not read again a container whose exit is
/// on the disk already (the kubelet stops a pod's containers before its sandbox); both are
/// reported exited once it answers.
#[tokio::test]
async fn stop_pod_sandbox_asks_docker_nothing_of_containers_it_knows_have_exited() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut config = pod_config(&dockpod_tests::unique("stopreads"), logs.path());
    host_network(&mut config);
    let pod = run_pod(&mut rt, &config).await;
    // Ends on SIGTERM at once (a shell as PID 1 ignores it unless trapped).
    let until_term = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
    let stopped = run_container(
        &mut rt,
        &pod,
        &config,
        container_config("early", &until_term),
    )
    .await;
    let running = run_container(
        &mut rt,
        &pod,
        &config,
        container_config("late", &until_term),
    )
    .await;
    rt.stop_container(StopContainerRequest {
        container_id: stopped.clone(),
        timeout: 10,
    })
    .await
    .expect("StopContainer");
    quiet(&proxy).await;
    let before = proxy.seen().len();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let asked = proxy.seen().split_off(before);
    let sandbox_stop = format!("/containers/{pod}/stop");
    let until = asked
        .iter()
        .position(|s| s.method == "POST" && s.path == sandbox_stop)
        .unwrap_or_else(|| panic!("no stop of the sandbox: {asked:?}"));
    let reads = |id: &str| {
        let read = format!("/containers/{id}/json");
        asked[..until]
            .iter()
            .filter(|s| s.method == "GET" && s.path == read)
            .count()
    };
    assert_eq!(
        reads(&stopped),
        0,
        "StopPodSandbox read a container whose exit it had: {asked:?}"
    );
    assert!(
        reads(&running) >= 1,
        "the exit of the container StopPodSandbox stopped was not read before the sandbox's stop: {asked:?}"
    );
    for id in [&stopped, &running] {
        assert_eq!(
            status(&mut rt, id).await.state,
            ContainerState::ContainerExited as i32,
            "{id}"
        );
    }
    // Nor is the sandbox read: StopPodSandbox records its stop itself, and the read Docker's
    // `die` event for it would set going could find nothing else.
    quiet(&proxy).await;
    let sandbox_read = format!("/containers/{pod}/json");
    let asked = proxy.seen().split_off(before);
    assert!(
        !asked
            .iter()
            .any(|s| s.method == "GET" && s.path == sandbox_read),
        "the stopped sandbox was read: {asked:?}"
    );
    assert_eq!(
        pod_status(&mut rt, &pod).await.status.map(|s| s.state),
        Some(PodSandboxState::SandboxNotready as i32)
    );
    remove_pod(&mut rt, &pod).await;
}

/// The kubelet creates a container with the image's ID that PullImage or ImageStatus answered
/// (and the name its pod spec gave as `user_specified_image`): the create asks Docker for no
/// image, and the container reports that ID and the name it was asked by. An ID no image has
/// is Docker's to refuse, and the call's NotFound.
#[tokio::test]
async fn a_create_naming_its_image_by_id_asks_docker_for_no_image() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    // What ImageStatus answers as the image's ID (images::image_status_reports_present_absent_and_bad_names).
    let image_id =
        dockpod_tests::docker::image_id(&dockpod_tests::docker::docker().await, TOOL_IMAGE).await;
    let mut config = pod_config(&dockpod_tests::unique("by-id"), logs.path());
    host_network(&mut config);
    let pod = run_pod(&mut rt, &config).await;
    let by_id = |name: &str, id: &str| ContainerConfig {
        image: Some(ImageSpec {
            image: id.to_string(),
            user_specified_image: TOOL_IMAGE.to_string(),
            ..Default::default()
        }),
        ..container_config(name, &["sleep", "3600"])
    };
    quiet(&proxy).await;
    let before = proxy.seen().len();
    let id = create_container(&mut rt, &pod, &config, by_id("app", &image_id))
        .await
        .expect("CreateContainer");
    let asked = proxy.seen().split_off(before);
    assert!(
        !asked.iter().any(|s| s.path.starts_with("/images/")),
        "the create asked Docker for its image: {asked:?}"
    );
    start(&mut rt, &id).await;
    let status = status(&mut rt, &id).await;
    assert_eq!(status.image_ref, image_id);
    let image = status.image.expect("the status's image");
    assert_eq!(
        (image.image.as_str(), image.user_specified_image.as_str()),
        (image_id.as_str(), TOOL_IMAGE)
    );
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    let missing = format!("sha256:{}", "0".repeat(64));
    let refused = create_container(&mut rt, &pod, &config, by_id("nowhere", &missing))
        .await
        .expect_err("a create of an image no one has");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn a_list_of_fifty_images_is_one_docker_request() {
    let docker = dockpod_tests::docker::docker().await;
    let mut refs = ImageRefs::default();
    let repo = dockpod_tests::unique("dp-list");
    // Fifty images of their own (each with its USER, so each has an ID of its own).
    let mut made = BTreeMap::new();
    for uid in 0..50u32 {
        let tag = format!("{repo}:{uid}");
        let id = derive_image(
            &docker,
            &mut refs,
            TOOL_IMAGE,
            &tag,
            &format!("USER {}", 1000 + uid),
        )
        .await;
        made.insert(id, (tag, 1000 + i64::from(uid)));
    }
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let mut images = front.images();
    let list = |mut images: ImageServiceClient<tonic::transport::Channel>| async move {
        images
            .list_images(ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner()
            .images
    };
    // The first list inspects what it has not seen before.
    let seen_before: Vec<String> = list(images.clone())
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    quiet(&proxy).await;
    let before = proxy.seen().len();
    let listed = list(images.clone()).await;
    let asked = proxy.seen().split_off(before);
    // Tests running beside this one may make images meanwhile: those alone may be inspected.
    let lists = asked.iter().filter(|s| s.path == "/images/json").count();
    let inspected_again: Vec<&Seen> = asked
        .iter()
        .filter(|s| s.path != "/images/json")
        .filter(|s| {
            seen_before
                .iter()
                .any(|id| s.path == format!("/images/{id}/json"))
        })
        .collect();
    assert!(
        lists == 1 && inspected_again.is_empty(),
        "a list of {} images asked Docker: {:?}",
        listed.len(),
        summary(&asked)
    );
    assert!(asked.len() < 1 + made.len(), "{:?}", summary(&asked));
    // And it says what an inspect says: each image's tag and USER.
    for (id, (tag, uid)) in &made {
        let image = listed
            .iter()
            .find(|i| &i.id == id)
            .unwrap_or_else(|| panic!("{tag} ({id}) not listed"));
        assert_eq!(image.repo_tags, vec![tag.clone()]);
        assert_eq!(image.uid.as_ref().map(|u| u.value), Some(*uid), "{tag}");
        assert!(!image.pinned, "{tag}");
    }
    let pinned: Vec<&Image> = listed.iter().filter(|i| i.pinned).collect();
    assert!(
        pinned.len() == 1 && pinned[0].repo_tags.iter().any(|t| t == PAUSE_IMAGE),
        "only the sandbox image is pinned: {pinned:?}"
    );
    // An image removed is gone from the next list.
    let (gone_id, (gone_tag, _)) = made.iter().next().expect("an image");
    docker
        .remove_image(
            gone_tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .expect("remove an image");
    let listed = list(images.clone()).await;
    assert!(listed.iter().all(|i| &i.id != gone_id));
    let status = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: PAUSE_IMAGE.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(status.image.expect("the sandbox image").pinned);
}

#[tokio::test]
async fn lists_and_statuses_with_fifty_pods_ask_docker_nothing() {
    let proxy = DockerProxy::start();
    let endpoint = proxy.endpoint();
    let front = Front::start(&[
        "--docker-endpoint",
        &endpoint,
        "--metrics-bind-addr",
        "127.0.0.1:0",
    ])
    .await;
    let addr = metrics::address(&front);
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pods: Vec<String> = futures_util::stream::iter(0..50)
        .map(|i| {
            let mut rt = rt.clone();
            // A log directory per pod, as the kubelet gives each.
            let mut pod = pod_config(&format!("quiet{i}"), &logs.path().join(i.to_string()));
            // The node's network: what is counted does not depend on it, and Docker 20.10's
            // libnetwork is slow to set up and tear down 50 bridge endpoints.
            host_network(&mut pod);
            async move {
                let id = run_pod(&mut rt, &pod).await;
                run_container(
                    &mut rt,
                    &id,
                    &pod,
                    container_config("sleeper", &["sleep", "3600"]),
                )
                .await;
                id
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;

    // What the pods' start set going (Docker's events for them, the shims' refreshes after
    // each) has run its course once no request arrived for a while.
    quiet(&proxy).await;
    let before = proxy.seen().len();
    let front_before = front_docker_calls(&addr).await;
    let mut rt = front.runtime();
    for _ in 0..3 {
        let sandboxes = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        assert_eq!(sandboxes.len(), 50);
        let containers = rt
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        assert_eq!(containers.len(), 50);
        assert!(containers
            .iter()
            .all(|c| c.state == ContainerState::ContainerRunning as i32));
        for container in &containers {
            for verbose in [false, true] {
                let answer = rt
                    .container_status(ContainerStatusRequest {
                        container_id: container.id.clone(),
                        verbose,
                    })
                    .await
                    .expect("ContainerStatus")
                    .into_inner();
                let status = answer.status.expect("a status");
                assert_eq!(status.state, ContainerState::ContainerRunning as i32);
                if verbose {
                    let info: serde_json::Value =
                        serde_json::from_str(&answer.info["info"]).expect("JSON info");
                    assert!(info["pid"].as_i64().is_some_and(|pid| pid > 0), "{info}");
                    assert_eq!(info["inspect"]["Id"], container.id.as_str(), "{info}");
                }
            }
        }
        for id in &pods {
            for verbose in [false, true] {
                let status = rt
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose,
                    })
                    .await
                    .expect("PodSandboxStatus")
                    .into_inner()
                    .status
                    .expect("a status");
                assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
            }
        }
    }
    let asked: Vec<Seen> = proxy.seen().split_off(before);
    assert!(
        asked.is_empty(),
        "Docker was asked {} times while listing: {:?}",
        asked.len(),
        summary(&asked)
    );
    assert_eq!(front_docker_calls(&addr).await, front_before);

    futures_util::stream::iter(&pods)
        .for_each_concurrent(AT_ONCE, |id| {
            let mut rt = rt.clone();
            async move { remove_pod(&mut rt, id).await }
        })
        .await;
    drop(front);
    // Everything the front and shims asked went through the proxy.
    assert!(proxy
        .seen()
        .iter()
        .any(|s| s.method == "POST" && s.path == "/containers/create"));
}

/// (ID, state) of every container ListContainers lists for `filter`, sorted.
async fn listed_containers(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    filter: ContainerFilter,
) -> Vec<(String, i32)> {
    let mut listed: Vec<(String, i32)> = rt
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    listed.sort();
    listed
}

#[tokio::test]
async fn pod_and_container_lists_answer_from_the_pods_state_without_shims_or_docker() {
    let proxy = DockerProxy::start();
    let front = Front::start(&[
        "--docker-endpoint",
        &proxy.endpoint(),
        "--metrics-bind-addr",
        "127.0.0.1:0",
    ])
    .await;
    let addr = metrics::address(&front);
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let mut pods = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3 {
        let config = pod_config(&format!("listed{i}"), &logs.path().join(i.to_string()));
        let id = run_pod(&mut rt, &config).await;
        let app = run_container(
            &mut rt,
            &id,
            &config,
            container_config("app", &["sleep", "3600"]),
        )
        .await;
        expected.push((app, ContainerState::ContainerRunning as i32));
        let done = run_container(
            &mut rt,
            &id,
            &config,
            container_config("done", &["sh", "-c", "exit 3"]),
        )
        .await;
        wait_exited(&rt, &done, SECS).await;
        expected.push((done, ContainerState::ContainerExited as i32));
        pods.push((id, config));
    }
    expected.sort();

    // Stopped shims answer nothing, and Docker is watched: a list that asked either would
    // wait for a shim or show in the proxy.
    let stopped: Vec<_> = front
        .shim_pids()
        .into_iter()
        .map(dockpod_tests::procs::stop)
        .collect();
    quiet(&proxy).await;
    let before = proxy.seen().len();
    let calls_before = shim_calls(&addr).await;
    assert_eq!(
        listed_containers(&mut rt, ContainerFilter::default()).await,
        expected
    );
    let mut listed_pods: Vec<(String, i32)> = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| (p.id, p.state))
        .collect();
    listed_pods.sort();
    let mut ready: Vec<(String, i32)> = pods
        .iter()
        .map(|(id, _)| (id.clone(), PodSandboxState::SandboxReady as i32))
        .collect();
    ready.sort();
    assert_eq!(listed_pods, ready);
    let (first, first_config) = &pods[0];
    let in_first = listed_containers(
        &mut rt,
        ContainerFilter {
            pod_sandbox_id: first.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(in_first.len(), 2, "{in_first:?}");
    assert_eq!(
        summary(&proxy.seen()[before..]),
        BTreeMap::new(),
        "lists asked Docker"
    );
    assert_eq!(
        shim_calls(&addr).await,
        calls_before,
        "lists called a shim (the front's metrics)"
    );
    drop(stopped);

    // A list made after a call returned shows what the call did.
    let added = create_container(
        &mut rt,
        first,
        first_config,
        container_config("added", &["sleep", "3600"]),
    )
    .await
    .expect("CreateContainer");
    let created = |calls: &BTreeMap<String, f64>| calls.get("CreateContainer").copied();
    assert!(
        created(&shim_calls(&addr).await) > created(&calls_before),
        "the metrics count the front's calls to shims"
    );
    let only_added = ContainerFilter {
        id: added.clone(),
        ..Default::default()
    };
    assert_eq!(
        listed_containers(&mut rt, only_added.clone()).await,
        vec![(added.clone(), ContainerState::ContainerCreated as i32)]
    );
    start(&mut rt, &added).await;
    assert_eq!(
        listed_containers(&mut rt, only_added.clone()).await,
        vec![(added.clone(), ContainerState::ContainerRunning as i32)]
    );
    rt.remove_container(RemoveContainerRequest {
        container_id: added.clone(),
    })
    .await
    .expect("RemoveContainer");
    assert!(listed_containers(&mut rt, only_added).await.is_empty());
    for (id, _) in &pods {
        remove_pod(&mut rt, id).await;
    }
    assert!(rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .is_empty());
}

#[tokio::test]
async fn a_json_file_log_is_copied_from_dockers_file_without_its_logs_api() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let docker = dockpod_tests::docker::docker().await;
    let driver = docker
        .info()
        .await
        .expect("docker info")
        .logging_driver
        .unwrap_or_default();
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let config = pod_config("jsonfile", logs.path());
    let pod = run_pod(&mut rt, &config).await;
    std::fs::create_dir(logs.path().join("app")).expect("container log dir");
    let mut app = container_config("app", &["sh", "-c"]);
    app.args = vec!["for i in $(seq 1 500); do echo \"n $i\"; echo \"e $i\" >&2; done".into()];
    let id = run_container(&mut rt, &pod, &config, app).await;
    wait_exited(&rt, &id, SECS).await;
    let records = dockpod_tests::crilog::parse(&logs.path().join("app/0.log"));
    let expected =
        |prefix: &str| -> Vec<String> { (1..=500).map(|i| format!("{prefix} {i}")).collect() };
    assert_eq!(
        dockpod_tests::crilog::lines(&records, "stdout"),
        expected("n")
    );
    assert_eq!(
        dockpod_tests::crilog::lines(&records, "stderr"),
        expected("e")
    );
    let asked: Vec<String> = summary(&proxy.seen())
        .into_keys()
        .filter(|k| k.ends_with("/logs"))
        .collect();
    if driver == "json-file" {
        assert!(
            asked.is_empty(),
            "the shim read Docker's logs API: {asked:?}"
        );
    } else {
        // Only json-file's files can be read directly; any other driver goes through the API.
        assert!(!asked.is_empty(), "driver {driver}: no logs request");
    }
    remove_pod(&mut rt, &pod).await;
}

/// A shim keeps its connections to Docker while it works and lets them go once quiet: calls
/// made back to back share connections instead of each request opening one (a connect and a
/// close in the shim, an accept and a connection's goroutine in dockerd), and an idle pod
/// holds none beyond its event stream.
#[tokio::test]
async fn a_busy_shim_reuses_its_docker_connections_and_an_idle_one_keeps_none() {
    const CALLS: i64 = 10;
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    quiet(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut config = pod_config(&dockpod_tests::unique("keptconn"), logs.path());
    host_network(&mut config);
    let pod = run_pod(&mut rt, &config).await;
    let app = container_config("app", &["sleep", "3600"]);
    let container = run_container(&mut rt, &pod, &config, app).await;
    quiet(&proxy).await;
    let (requests, opened) = (proxy.seen().len(), proxy.connections_opened());
    for i in 0..CALLS {
        rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: container.clone(),
            linux: Some(LinuxContainerResources {
                cpu_shares: 256 + i,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    }
    let made = proxy.seen().len() - requests;
    let connections = proxy.connections_opened() - opened;
    assert!(
        made >= CALLS as usize,
        "{made} Docker requests for {CALLS} updates"
    );
    // One connection would do; a pause between two calls longer than the time a connection
    // is kept (a loaded machine) opens another, so only reuse itself is asserted.
    assert!(
        connections * 2 <= made,
        "{connections} connections opened for {made} Docker requests"
    );
    // Quiet, the front and the pod's shim hold their event streams and nothing else.
    wait_until("the kept connections closed", SECS, || async {
        (proxy.connections_open_besides_events() == 0).then_some(())
    })
    .await;
    remove_pod(&mut rt, &pod).await;
}
