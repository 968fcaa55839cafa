//! Every retry succeeds and every answer tells the truth: a call whose first answer was lost
//! (a front or shim killed between Docker and the answer, a caller that gave up) is answered
//! as if the first had been; removals of what is gone succeed, across restarts; concurrent
//! removals of one image all succeed; a passed deadline is DEADLINE_EXCEEDED; the CRI log file
//! is there once StartContainer answers.

use std::time::Duration;

use dockpod_proto::cri::image_service_client::ImageServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{derive_image, docker, instance_containers, ImageRefs, TOOL_IMAGE};
use dockpod_tests::docker_proxy::{DockerProxy, Fault, Gate};
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use tonic::Code;

/// Bound on waits for what the front does by itself (a shim's exit, a restart's settling);
/// generous for a loaded 2-core machine.
const SECS: Duration = Duration::from_secs(60);

async fn try_run_pod(
    rt: &mut dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    config: &PodSandboxConfig,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// Docker holds exactly `expected` (in any order) of the front's instance.
async fn assert_docker_holds(front: &Front, mut expected: Vec<String>) {
    let mut held = instance_containers(&front.instance_id()).await;
    held.sort();
    expected.sort();
    assert_eq!(held, expected, "the instance's containers in Docker");
}

/// A RunPodSandbox sent again (its first answer lost) gets the pod its first run made, from
/// the same front and from one restarted since; a request for the same name with another
/// configuration, or for a pod since stopped, replaces the pod that holds the name.
#[tokio::test]
async fn a_run_pod_sandbox_sent_again_gets_the_pod_its_first_run_made() {
    let mut front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("again", logs.path());
    let first = run_pod(&mut rt, &pod).await;

    let again = try_run_pod(&mut rt, &pod).await.expect("the same request");
    assert_eq!(again, first);
    front.kill().await;
    front.restart().await;
    let mut rt = front.runtime();
    let after_restart = try_run_pod(&mut rt, &pod)
        .await
        .expect("the same request, to the next front");
    assert_eq!(after_restart, first);
    assert_eq!(
        pod_ids(rt.clone(), Default::default()).await,
        vec![first.clone()]
    );
    // The shims the retries started for nothing are gone.
    wait_until("one shim", SECS, || async {
        (front.shim_pids().len() == 1).then_some(())
    })
    .await;

    // Another configuration under the same name: the old pod makes way.
    let mut other = pod.clone();
    other.labels.insert("changed".into(), "yes".into());
    let replaced = try_run_pod(&mut rt, &other)
        .await
        .expect("another configuration");
    assert_ne!(replaced, first);
    assert_eq!(
        pod_ids(rt.clone(), Default::default()).await,
        vec![replaced.clone()]
    );
    assert_docker_holds(&front, vec![replaced.clone()]).await;

    // A stopped pod is not running what the request asks for either.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: replaced.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let fresh = try_run_pod(&mut rt, &other).await.expect("after a stop");
    assert_ne!(fresh, replaced);
    assert_docker_holds(&front, vec![fresh.clone()]).await;
    remove_pod(&mut rt, &fresh).await;
    assert_docker_holds(&front, vec![]).await;
}

/// A CreateContainer sent again gets the container its first run made while that is what it
/// asks for and has not exited; otherwise that container makes way for a new one.
#[tokio::test]
async fn a_create_container_sent_again_gets_the_container_its_first_run_made() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let pod = pod(&mut rt, "create-again").await;
    let config = container_config("app", &["sleep", "3600"]);
    let first = create_container(&mut rt, &pod.id, &pod.config, config.clone())
        .await
        .expect("CreateContainer");
    let again = create_container(&mut rt, &pod.id, &pod.config, config.clone())
        .await
        .expect("the same request");
    assert_eq!(again, first);
    start(&mut rt, &first).await;
    let running = create_container(&mut rt, &pod.id, &pod.config, config.clone())
        .await
        .expect("the same request, the container running");
    assert_eq!(running, first);

    // Exited: a container to make anew.
    rt.stop_container(StopContainerRequest {
        container_id: first.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    let second = create_container(&mut rt, &pod.id, &pod.config, config.clone())
        .await
        .expect("after the exit");
    assert_ne!(second, first);
    // Another configuration under the same name and attempt.
    let third = create_container(
        &mut rt,
        &pod.id,
        &pod.config,
        container_config("app", &["sleep", "7200"]),
    )
    .await
    .expect("another configuration");
    assert_ne!(third, second);
    let listed = container_ids(
        rt.clone(),
        ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed, vec![third.clone()]);
    assert_docker_holds(&front, vec![pod.id.clone(), third]).await;
    remove_pod(&mut rt, &pod.id).await;
}

/// Removals and stops of what is gone succeed, from the front that removed it and from the
/// next one.
#[tokio::test]
async fn removals_and_stops_of_what_is_gone_succeed_across_restarts() {
    let mut front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let pod = pod(&mut rt, "gone").await;
    let container = run_container(
        &mut rt,
        &pod.id,
        &pod.config,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    remove_pod(&mut rt, &pod.id).await;
    for round in ["the same front", "the next front"] {
        let stop = rt
            .stop_container(StopContainerRequest {
                container_id: container.clone(),
                timeout: 0,
            })
            .await;
        assert!(stop.is_ok(), "StopContainer, {round}: {stop:?}");
        let remove = rt
            .remove_container(RemoveContainerRequest {
                container_id: container.clone(),
            })
            .await;
        assert!(remove.is_ok(), "RemoveContainer, {round}: {remove:?}");
        let stop = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await;
        assert!(stop.is_ok(), "StopPodSandbox, {round}: {stop:?}");
        let remove = rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await;
        assert!(remove.is_ok(), "RemovePodSandbox, {round}: {remove:?}");
        front.kill().await;
        front.restart().await;
        rt = front.runtime();
    }
}

/// The CRI log file is at its path once StartContainer has answered, before the container
/// wrote anything, its directory made if the caller made none.
#[tokio::test]
async fn the_log_file_is_there_once_start_container_answers() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let pod = pod(&mut rt, "log-file").await;
    let mut config = container_config("quiet", &["sleep", "3600"]);
    config.log_path = "not-made-yet/quiet/0.log".into();
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    let path = std::path::Path::new(&pod.config.log_directory).join("not-made-yet/quiet/0.log");
    assert!(!path.exists(), "no log file before the start");
    start(&mut rt, &id).await;
    let meta = std::fs::metadata(&path).expect("the log file once StartContainer answered");
    assert!(meta.is_file());
    remove_pod(&mut rt, &pod.id).await;
}

/// Simultaneous RemoveImage calls for one image all succeed (critest v1.36).
#[tokio::test]
async fn simultaneous_removals_of_one_image_all_succeed() {
    let front = Front::start(&[]).await;
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let tag = format!(
        "localhost/dockpod-test/{}:1",
        dockpod_tests::unique("rm-race")
    );
    let id = derive_image(&docker, &mut refs, TOOL_IMAGE, &tag, "LABEL race=1").await;
    let removals = (0..6).map(|i| {
        let mut images: ImageServiceClient<_> = front.images();
        let image = if i % 2 == 0 { id.clone() } else { tag.clone() };
        async move {
            images
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image,
                        ..Default::default()
                    }),
                })
                .await
        }
    });
    for (i, answer) in futures_util::future::join_all(removals)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(answer.is_ok(), "removal {i}: {answer:?}");
    }
    assert!(
        docker.inspect_image(&id).await.is_err(),
        "the image is gone"
    );
}

/// A call still running when its client's deadline passes is answered DEADLINE_EXCEEDED, as
/// gRPC says, not CANCELLED. The request is sent over plain HTTP/2, so the client sets no
/// timer of its own and what is read is the server's answer.
#[tokio::test]
async fn a_passed_deadline_is_answered_deadline_exceeded() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let held = Gate::new();
    proxy.once("POST", "/images/create", Fault::Hold(held.clone()));
    let request = PullImageRequest {
        image: Some(ImageSpec {
            image: "127.0.0.1:1/dockpod-test/held:1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (status, message) = raw_call(
        &front.socket(),
        "/runtime.v1.ImageService/PullImage",
        &prost::Message::encode_to_vec(&request),
        "200m",
    )
    .await;
    held.open();
    assert_eq!(status, Code::DeadlineExceeded as i32, "{message}");
}

/// One unary gRPC call over HTTP/2 with the `grpc-timeout` header `timeout`: the answer's
/// grpc-status and grpc-message.
async fn raw_call(
    socket: &std::path::Path,
    path: &str,
    message: &[u8],
    timeout: &str,
) -> (i32, String) {
    let io = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let (answer, mut body) = client.send_request(request, false).expect("send");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("length").to_be_bytes());
    framed.extend_from_slice(message);
    body.send_data(framed.into(), true)
        .expect("send the message");
    let answer = tokio::time::timeout(SECS, answer)
        .await
        .expect("an answer within the bound")
        .expect("answer");
    let header = |headers: &http::HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (head, mut rest) = answer.into_parts();
    if let Some(status) = header(&head.headers, "grpc-status") {
        let message = header(&head.headers, "grpc-message").unwrap_or_default();
        return (status.parse().expect("grpc-status"), message);
    }
    while rest.data().await.is_some() {}
    let trailers = rest.trailers().await.expect("trailers").unwrap_or_default();
    let status = header(&trailers, "grpc-status").expect("grpc-status");
    let message = header(&trailers, "grpc-message").unwrap_or_default();
    (status.parse().expect("grpc-status"), message)
}
