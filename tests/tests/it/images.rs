//! The CRI ImageService against the real dockerd and a real registry on loopback.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use dockpod_proto::cri::image_service_client::ImageServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::docker::{
    derive_image, docker, image_id, push, remove_everywhere, tag, ImageRefs, PAUSE_IMAGE,
    TOOL_IMAGE,
};
use dockpod_tests::front::Front;
use dockpod_tests::registry::{Login, Registry};
use dockpod_tests::unique;
use tonic::transport::Channel;
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn status(images: &mut ImageServiceClient<Channel>, image: &str) -> Option<Image> {
    images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e:?}"))
        .into_inner()
        .image
}

async fn pull(
    images: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn remove(images: &mut ImageServiceClient<Channel>, image: &str) {
    images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e:?}"));
}

#[tokio::test]
async fn a_sandbox_image_given_by_id_is_the_one_pinned() {
    let docker = docker().await;
    let pause_id = image_id(&docker, PAUSE_IMAGE).await;
    let front = Front::start(&["--pod-infra-container-image", &pause_id]).await;
    let mut images = front.images();
    let all = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    let pinned: Vec<&str> = all
        .iter()
        .filter(|i| i.pinned)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(pinned, vec![pause_id.as_str()]);
    let by_tag = status(&mut images, PAUSE_IMAGE)
        .await
        .expect("the sandbox image");
    assert!(by_tag.pinned, "{by_tag:?}");
}

#[tokio::test]
async fn list_images_shows_local_images_and_filters_by_reference_and_id() {
    let front = Front::start(&[]).await;
    let docker = docker().await;
    let tool_id = image_id(&docker, TOOL_IMAGE).await;
    let pause_id = image_id(&docker, PAUSE_IMAGE).await;
    let mut images = front.images();

    let all = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    let tool = all
        .iter()
        .find(|i| i.id == tool_id)
        .expect("tool image listed");
    assert!(tool.repo_tags.contains(&TOOL_IMAGE.to_string()), "{tool:?}");
    assert!(tool.size > 0);
    assert!(!tool.pinned);
    let pause = all
        .iter()
        .find(|i| i.id == pause_id)
        .expect("pause image listed");
    assert!(pause.pinned, "sandbox image must be pinned: {pause:?}");
    assert!(all
        .iter()
        .all(|i| !i.repo_tags.iter().any(|t| t.starts_with("<none>"))));

    let filter = |image: &str| ListImagesRequest {
        filter: Some(ImageFilter { image: spec(image) }),
    };
    let by_ref = images
        .list_images(filter(TOOL_IMAGE))
        .await
        .expect("ListImages by reference")
        .into_inner()
        .images;
    assert_eq!(
        by_ref.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![tool_id.as_str()]
    );
    let by_id = images
        .list_images(filter(&tool_id))
        .await
        .expect("ListImages by ID")
        .into_inner()
        .images;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, tool_id);
    let none = images
        .list_images(filter(&format!("localhost/{}:1", unique("absent"))))
        .await
        .expect("ListImages of an absent reference")
        .into_inner()
        .images;
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn image_status_reports_present_absent_and_bad_names() {
    let front = Front::start(&[]).await;
    let docker = docker().await;
    let tool_id = image_id(&docker, TOOL_IMAGE).await;
    let mut images = front.images();

    let tool = status(&mut images, TOOL_IMAGE).await.expect("tool image");
    assert_eq!(tool.id, tool_id);
    assert!(tool.repo_tags.contains(&TOOL_IMAGE.to_string()));
    assert!(tool.size > 0);
    assert_eq!(tool.uid, None);
    assert_eq!(tool.username, "");
    assert_eq!(
        status(&mut images, &tool_id).await.map(|i| i.id),
        Some(tool_id.clone()),
        "by full ID"
    );
    assert_eq!(
        status(&mut images, &tool_id["sha256:".len()..]["".len()..][..12])
            .await
            .map(|i| i.id),
        Some(tool_id.clone()),
        "by short ID"
    );
    assert!(
        status(&mut images, PAUSE_IMAGE)
            .await
            .expect("pause")
            .pinned
    );

    let absent = format!("localhost/dockpod/{}:1", unique("absent"));
    assert_eq!(status(&mut images, &absent).await, None);
    let absent_id = format!("sha256:{}", "0".repeat(64));
    assert_eq!(status(&mut images, &absent_id).await, None);

    let verbose = images
        .image_status(ImageStatusRequest {
            image: spec(TOOL_IMAGE),
            verbose: true,
        })
        .await
        .expect("verbose ImageStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(verbose.info.get("info").expect("info")).expect("JSON");
    assert_eq!(info["Id"], tool_id.as_str());

    for bad in [
        "Not A Reference!",
        "UPPER/case:1",
        "sha256:1234",
        "a@sha256:zz",
    ] {
        let err = images
            .image_status(ImageStatusRequest {
                image: spec(bad),
                verbose: false,
            })
            .await
            .expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains(bad), "{bad}: {err:?}");
    }
    let err = images
        .image_status(ImageStatusRequest {
            image: spec(""),
            verbose: false,
        })
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = images
        .image_status(ImageStatusRequest::default())
        .await
        .expect_err("no spec");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image spec"), "{err:?}");
}

#[tokio::test]
async fn image_status_reports_the_images_user() {
    let front = Front::start(&[]).await;
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let numeric = format!("localhost/dockpod-test/{}:1", unique("uid"));
    let named = format!("localhost/dockpod-test/{}:1", unique("user"));
    derive_image(&docker, &mut refs, TOOL_IMAGE, &numeric, "USER 1234:5678").await;
    derive_image(&docker, &mut refs, TOOL_IMAGE, &named, "USER nobody").await;
    let mut images = front.images();

    let by_uid = status(&mut images, &numeric).await.expect("uid image");
    assert_eq!(by_uid.uid, Some(Int64Value { value: 1234 }));
    assert_eq!(by_uid.username, "");
    let by_name = status(&mut images, &named).await.expect("named image");
    assert_eq!(by_name.uid, None);
    assert_eq!(by_name.username, "nobody");
}

#[tokio::test]
async fn pulls_by_tag_by_digest_and_with_no_tag() {
    let front = Front::start(&[]).await;
    let registry = Registry::start();
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let repo = format!("{}/dockpod-test/{}", registry.host(), unique("pull"));
    let tagged = format!("{repo}:v1");
    let latest = format!("{repo}:latest");
    // A unique image, so the pull has to fetch what only the registry has.
    let id = derive_image(
        &docker,
        &mut refs,
        TOOL_IMAGE,
        &tagged,
        &format!("LABEL dockpod.test={repo}"),
    )
    .await;
    tag(&docker, &id, &repo, "latest").await;
    refs.track(&latest);
    let digest = push(&docker, &tagged, None).await;
    push(&docker, &latest, None).await;
    refs.track(&digest);
    remove_everywhere(&docker, &id).await;
    let mut images = front.images();
    assert_eq!(status(&mut images, &tagged).await, None);

    assert_eq!(
        pull(&mut images, &tagged, None).await.expect("pull by tag"),
        id
    );
    let pulled = status(&mut images, &tagged).await.expect("pulled image");
    assert_eq!(pulled.id, id);
    assert!(pulled.repo_digests.contains(&digest), "{pulled:?}");

    remove_everywhere(&docker, &id).await;
    assert_eq!(
        pull(&mut images, &repo, None)
            .await
            .expect("pull with no tag"),
        id
    );
    let pulled = status(&mut images, &latest)
        .await
        .expect(":latest was pulled");
    assert!(pulled.repo_tags.contains(&latest), "{pulled:?}");
    assert!(
        !pulled.repo_tags.contains(&tagged),
        "pulling no tag pulled every tag: {pulled:?}"
    );

    remove_everywhere(&docker, &id).await;
    assert_eq!(
        pull(&mut images, &digest, None)
            .await
            .expect("pull by digest"),
        id
    );
    let pulled = status(&mut images, &digest)
        .await
        .expect("pulled by digest");
    assert!(pulled.repo_digests.contains(&digest), "{pulled:?}");
}

#[tokio::test]
async fn pulling_a_missing_image_is_not_found_with_the_registrys_message() {
    let front = Front::start(&[]).await;
    let registry = Registry::start();
    let missing = format!("{}/dockpod-test/{}:1", registry.host(), unique("missing"));
    let err = pull(&mut front.images(), &missing, None)
        .await
        .expect_err("no such image");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{err:?}");
    assert!(
        err.message().contains("manifest unknown") || err.message().contains("not found"),
        "registry's words missing: {err:?}"
    );

    for bad in ["", "Bad Ref", &format!("sha256:{}", "a".repeat(64))] {
        let err = pull(&mut front.images(), bad, None).await.expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn pulls_with_credentials_from_the_request() {
    use base64::Engine as _;
    let front = Front::start(&[]).await;
    let login = Login {
        username: "dockpod".into(),
        password: unique("pw"),
    };
    let registry = Registry::start_with(Some(&login));
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let image = format!("{}/dockpod-test/{}:1", registry.host(), unique("auth"));
    let id = derive_image(
        &docker,
        &mut refs,
        TOOL_IMAGE,
        &image,
        &format!("LABEL dockpod.test={image}"),
    )
    .await;
    let credentials = DockerCredentials {
        username: Some(login.username.clone()),
        password: Some(login.password.clone()),
        serveraddress: Some(registry.host()),
        ..Default::default()
    };
    let digest = push(&docker, &image, Some(credentials)).await;
    refs.track(&digest);
    remove_everywhere(&docker, &id).await;
    let mut images = front.images();

    let err = pull(&mut images, &image, None)
        .await
        .expect_err("no credentials");
    assert!(
        matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{err:?}"
    );
    assert!(err.message().contains(&image), "{err:?}");

    let wrong = AuthConfig {
        username: login.username.clone(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull(&mut images, &image, Some(wrong))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{err:?}"
    );

    let plain = AuthConfig {
        username: login.username.clone(),
        password: login.password.clone(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut images, &image, Some(plain))
            .await
            .expect("user+password"),
        id
    );

    remove_everywhere(&docker, &id).await;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", login.username, login.password));
    let auth = AuthConfig {
        auth: encoded,
        server_address: registry.host(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut images, &image, Some(auth))
            .await
            .expect("auth field"),
        id
    );
}

#[tokio::test]
async fn remove_image_by_tag_id_and_digest_and_absent() {
    let front = Front::start(&[]).await;
    let registry = Registry::start();
    let docker = docker().await;
    let mut refs = ImageRefs::default();
    let repo = format!("{}/dockpod-test/{}", registry.host(), unique("rm"));
    let (a, b) = (format!("{repo}:a"), format!("{repo}:b"));
    let id = derive_image(
        &docker,
        &mut refs,
        TOOL_IMAGE,
        &a,
        &format!("LABEL dockpod.test={repo}"),
    )
    .await;
    tag(&docker, &id, &repo, "b").await;
    refs.track(&b);
    let mut images = front.images();

    // By tag: only that tag goes.
    remove(&mut images, &a).await;
    assert_eq!(status(&mut images, &a).await, None);
    let still = status(&mut images, &b)
        .await
        .expect("image kept by its other tag");
    assert_eq!(still.repo_tags, vec![b.clone()]);

    // By digest: only the digest reference goes.
    let digest = push(&docker, &b, None).await;
    refs.track(&digest);
    remove(&mut images, &digest).await;
    let still = status(&mut images, &b)
        .await
        .expect("image kept by its tag");
    assert!(!still.repo_digests.contains(&digest), "{still:?}");

    // By ID: the image and all its references go.
    tag(&docker, &id, &repo, "a").await;
    remove(&mut images, &id).await;
    assert_eq!(status(&mut images, &id).await, None);
    assert_eq!(status(&mut images, &b).await, None);
    assert!(
        docker.inspect_image(&id).await.is_err(),
        "image still in Docker"
    );

    // Absent: success, by name and by ID.
    remove(&mut images, &a).await;
    remove(&mut images, &id).await;

    let err = images
        .remove_image(RemoveImageRequest {
            image: spec("Not A Reference!"),
        })
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn image_fs_info_measures_dockers_data_root() {
    let front = Front::start(&[]).await;
    let root = docker()
        .await
        .info()
        .await
        .expect("docker info")
        .docker_root_dir
        .expect("data root");
    let fs = front
        .images()
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let usage = fs.image_filesystems.first().expect("one image filesystem");
    assert_eq!(
        usage.fs_id.as_ref().map(|f| f.mountpoint.as_str()),
        Some(root.as_str())
    );
    assert!(usage.used_bytes.as_ref().map(|u| u.value).unwrap_or(0) > 0);
    assert!(usage.inodes_used.as_ref().map(|u| u.value).unwrap_or(0) > 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let age = Duration::from_nanos((now - usage.timestamp).max(0) as u64);
    assert!(
        usage.timestamp > 0 && age < Duration::from_secs(300),
        "{usage:?}"
    );
}

/// A registry on loopback that accepts connections and never answers: a pull from it hangs
/// until the listener goes (it is dropped at the end of the test).
struct StalledRegistry {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StalledRegistry {
    async fn start() -> StalledRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = connections.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(conn);
            }
        });
        StalledRegistry {
            port,
            connections,
            task,
        }
    }
}

impl Drop for StalledRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_stalled_pull_delays_no_other_image_or_pod_call() {
    let front = Front::start(&[]).await;
    let stalled = StalledRegistry::start().await;
    let image = format!(
        "127.0.0.1:{}/dockpod-test/{}:1",
        stalled.port,
        unique("stalled")
    );
    let pulling = {
        let mut images = front.images();
        let image = image.clone();
        tokio::spawn(async move { pull(&mut images, &image, None).await })
    };
    dockpod_tests::wait::wait_until(
        "Docker to reach the stalled registry",
        Duration::from_secs(60),
        || {
            let n = stalled
                .connections
                .load(std::sync::atomic::Ordering::SeqCst);
            async move { (n > 0).then_some(()) }
        },
    )
    .await;

    // Each must answer while the pull still hangs: the order is the property. The bound only
    // tells a wait for the pull apart from a slow machine.
    const ANSWERED: Duration = Duration::from_secs(30);
    let mut images = front.images();
    let listed = tokio::time::timeout(ANSWERED, images.list_images(ListImagesRequest::default()))
        .await
        .expect("ListImages beside a stalled pull")
        .expect("ListImages");
    assert!(!listed.into_inner().images.is_empty());
    let present = tokio::time::timeout(ANSWERED, status(&mut images, TOOL_IMAGE))
        .await
        .expect("ImageStatus beside a stalled pull");
    assert!(present.is_some());
    let mut rt = front.runtime();
    let logs = tempfile::tempdir().expect("logs");
    let config = dockpod_tests::cri::pod_config("beside-a-pull", logs.path());
    let pod = tokio::time::timeout(ANSWERED, dockpod_tests::cri::run_pod(&mut rt, &config))
        .await
        .expect("RunPodSandbox beside a stalled pull");
    assert!(
        !pulling.is_finished(),
        "the pull ended: the test proved nothing"
    );
    dockpod_tests::cri::remove_pod(&mut rt, &pod).await;
    pulling.abort();
    drop(stalled);
}
