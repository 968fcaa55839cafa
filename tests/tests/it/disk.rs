//! A pod whose state directory sits on a disk that stalls or fills up: the shim keeps
//! answering while a save waits on the disk, and a full disk is a clear error, not a hung pod.

use std::time::{Duration, Instant};

use dockpod_tests::cri::*;
use dockpod_tests::disk::LoopFs;
use dockpod_tests::front::Front;
use k8s_cri::v1::*;

const SECS: Duration = Duration::from_secs(60);
/// Generous for a loaded machine: a shim whose one thread waits on the frozen disk does not
/// answer at all until the disk is thawed.
const ANSWER: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_stalled_disk_holds_up_no_status_call_and_a_full_one_is_a_clear_error() {
    let disk = LoopFs::new(64);
    let root = disk.path().join("root");
    let front = Front::start(&["--root-directory", &root.display().to_string()]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("slow-disk", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let stopped = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("a", &["sleep", "3600"]),
    )
    .await;
    let running = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("b", &["sleep", "3600"]),
    )
    .await;

    rt.stop_container(StopContainerRequest {
        container_id: stopped.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");

    // The disk stalls: a new container's record waits on it (the shim saves its intent to
    // create before asking Docker).
    let frozen = disk.freeze();
    let create = {
        let mut rt = rt.clone();
        let (id, pod) = (id.clone(), pod.clone());
        tokio::spawn(async move {
            create_container(&mut rt, &id, &pod, container_config("c", &["true"])).await
        })
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        for c in [&running, &stopped] {
            let asked = Instant::now();
            let answer = tokio::time::timeout(ANSWER, status(&mut rt, c)).await;
            assert!(answer.is_ok(), "ContainerStatus waited on the stalled disk");
            slowest = slowest.max(asked.elapsed());
        }
    }
    assert!(
        !create.is_finished(),
        "the create did not wait on the frozen disk: the test proves nothing"
    );
    eprintln!("slowest ContainerStatus while a save waited on the disk: {slowest:?}");
    drop(frozen);
    let created = tokio::time::timeout(SECS, create)
        .await
        .expect("the create ends once the disk is back")
        .expect("join");
    assert!(created.is_ok(), "{created:?}");
    assert_eq!(
        status(&mut rt, &stopped).await.state,
        ContainerState::ContainerExited as i32
    );

    // The disk is full: creating a container says so, and the pod goes on.
    let filler = disk.fill("filler");
    let refused = create_container(&mut rt, &id, &pod, container_config("d", &["true"])).await;
    let status_of_refusal = refused.expect_err("a container created with no room for its record");
    assert_eq!(status_of_refusal.code(), tonic::Code::ResourceExhausted);
    assert!(
        status_of_refusal
            .message()
            .contains("No space left on device"),
        "{}",
        status_of_refusal.message()
    );
    let pod_answer = tokio::time::timeout(ANSWER, pod_status(&mut rt, &id)).await;
    assert!(
        pod_answer.is_ok(),
        "the pod stopped answering on a full disk"
    );
    std::fs::remove_file(&filler).expect("free the disk");
    let created = create_container(&mut rt, &id, &pod, container_config("d", &["true"])).await;
    assert!(created.is_ok(), "{created:?}");
    remove_pod(&mut rt, &id).await;
    drop(front);
}
