//! The test's own Docker connection, and guards for what tests create in Docker.

use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;

/// Tool image built by `contrib/setup.sh` (busybox with every applet).
pub const TOOL_IMAGE: &str = "localhost/dockpod/busybox:1";
/// Sandbox image built by `contrib/setup.sh`.
pub const PAUSE_IMAGE: &str = "localhost/dockpod/pause:1";

/// A client for the local dockerd, version-negotiated. No dockerd is a failure that says how
/// to get one, never a skipped test.
pub async fn docker() -> Docker {
    let endpoint = endpoint();
    let docker = Docker::connect_with_unix(&endpoint, 120, bollard::API_DEFAULT_VERSION)
        .expect("docker client");
    negotiated(docker, &endpoint).await
}

/// `docker` speaking the version dockerd at `endpoint` negotiates.
async fn negotiated(docker: Docker, endpoint: &str) -> Docker {
    docker.negotiate_version().await.unwrap_or_else(|e| {
        panic!("no dockerd answers on {endpoint} ({e}); run `bash contrib/setup.sh` as root")
    })
}

/// A client for the local dockerd over connections kept between requests, as dockpod's front
/// and shims make them (`dockpod_proto::docker_socket`), version-negotiated: a floor that
/// pays for Docker's work and not for a connection per request.
pub async fn docker_kept() -> Docker {
    let endpoint = endpoint();
    let docker =
        dockpod_proto::docker_socket::connect(&endpoint, 120, bollard::API_DEFAULT_VERSION)
            .expect("docker client");
    negotiated(docker, &endpoint).await
}

/// The engine the tests run against: `DOCKPOD_TEST_DOCKER_ENDPOINT` (a `unix://` address, as
/// `contrib/engines.sh env` prints for a newer engine), or the default dockerd's socket. The
/// fronts the tests start are pointed at the same engine.
pub fn endpoint() -> String {
    std::env::var("DOCKPOD_TEST_DOCKER_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// The socket path of `endpoint()`.
pub fn socket_path() -> std::path::PathBuf {
    let endpoint = endpoint();
    std::path::PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(&endpoint))
}

/// The Engine API version the test's dockerd speaks (negotiated as dockpod negotiates it).
pub async fn api_version() -> dockpod_proto::engine_api::ApiVersion {
    let v = docker().await.client_version();
    dockpod_proto::engine_api::ApiVersion::new(v.major_version, v.minor_version)
}

/// The ID of a local image, panicking with a pointer to setup when it is missing.
pub async fn image_id(docker: &Docker, image: &str) -> String {
    docker
        .inspect_image(image)
        .await
        .unwrap_or_else(|e| panic!("image {image} is missing ({e}); run `bash contrib/setup.sh`"))
        .id
        .expect("image has an ID")
}

/// Tags the local image `source` (a reference or an ID) as `repo:tag`.
pub async fn tag(docker: &Docker, source: &str, repo: &str, tag: &str) {
    let options = bollard::query_parameters::TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    docker
        .tag_image(source, Some(options))
        .await
        .unwrap_or_else(|e| panic!("tag {source} as {repo}:{tag}: {e}"));
}

/// Image references a test created; each is removed (not forced) when the guard drops.
#[derive(Default)]
pub struct ImageRefs(Vec<String>);

impl ImageRefs {
    pub fn track(&mut self, reference: impl Into<String>) {
        self.0.push(reference.into());
    }
}

impl Drop for ImageRefs {
    fn drop(&mut self) {
        let refs = std::mem::take(&mut self.0);
        crate::block_on_side(async move {
            let docker = docker().await;
            for r in refs.iter().rev() {
                let _ = docker
                    .remove_image(r, None::<RemoveImageOptions>, None)
                    .await;
            }
        });
    }
}

/// Builds image `tag` from `base` with Dockerfile-style `changes` (e.g. `USER 1234`), by
/// committing a never-started container. The tag is tracked for removal.
pub async fn derive_image(
    docker: &Docker,
    refs: &mut ImageRefs,
    base: &str,
    tag: &str,
    changes: &str,
) -> String {
    derive_image_with(docker, refs, base, tag, Some(changes), Default::default()).await
}

/// Like [`derive_image`], with image configuration that `changes` cannot express (Docker's
/// commit takes no STOPSIGNAL change, say) merged in from `config`.
pub async fn derive_image_with(
    docker: &Docker,
    refs: &mut ImageRefs,
    base: &str,
    tag: &str,
    changes: Option<&str>,
    config: bollard::models::ContainerConfig,
) -> String {
    let name = crate::unique("dp-commit");
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(base.to_string()),
                ..Default::default()
            },
        )
        .await
        .expect("create container to commit");
    let (repo, tag_part) = tag.rsplit_once(':').expect("tag has a :tag part");
    let committed = docker
        .commit_container(
            CommitContainerOptions {
                container: Some(created.id.clone()),
                repo: Some(repo.to_string()),
                tag: Some(tag_part.to_string()),
                changes: changes.map(str::to_string),
                ..Default::default()
            },
            config,
        )
        .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    let committed = committed.expect("commit image");
    refs.track(tag);
    committed.id
}

/// Pushes local image `reference` (`host/repo:tag`) to its registry and returns the pushed
/// repository digest (`host/repo@sha256:...`).
pub async fn push(
    docker: &Docker,
    reference: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> String {
    use futures_util::StreamExt;
    let (repo, tag) = reference.rsplit_once(':').expect("reference has a tag");
    let mut progress = docker.push_image(
        repo,
        Some(bollard::query_parameters::PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        }),
        credentials,
    );
    while let Some(step) = progress.next().await {
        step.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
    }
    let image = docker.inspect_image(reference).await.expect("pushed image");
    image
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.starts_with(&format!("{repo}@")))
        .unwrap_or_else(|| panic!("no repository digest for {repo} after pushing"))
}

/// Removes every reference to image `id` (tags and digests), then the image, so a following
/// pull must fetch it from the registry. Fails the test if the image stays.
pub async fn remove_everywhere(docker: &Docker, id: &str) {
    let image = docker.inspect_image(id).await.expect("image to remove");
    let refs = image
        .repo_tags
        .unwrap_or_default()
        .into_iter()
        .chain(image.repo_digests.unwrap_or_default());
    for r in refs {
        let _ = docker
            .remove_image(&r, None::<RemoveImageOptions>, None)
            .await;
    }
    let _ = docker
        .remove_image(id, None::<RemoveImageOptions>, None)
        .await;
    assert!(
        docker.inspect_image(id).await.is_err(),
        "image {id} is still present"
    );
}

/// Force-removes every container labelled with dockpod instance `instance`.
pub async fn remove_instance_containers(instance: String) {
    for id in instance_containers(&instance).await {
        let _ = docker()
            .await
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

/// IDs of all containers (running or not) of dockpod instance `instance`.
pub async fn instance_containers(instance: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={instance}", dockpod_proto::labels::INSTANCE)],
    )]);
    docker()
        .await
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("listing containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}
