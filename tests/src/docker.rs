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
    let docker = Docker::connect_with_unix_defaults().expect("docker client");
    docker.negotiate_version().await.unwrap_or_else(|e| {
        panic!(
            "no dockerd answers on /var/run/docker.sock ({e}); run `bash contrib/setup.sh` as root"
        )
    })
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
                changes: Some(changes.to_string()),
                ..Default::default()
            },
            bollard::models::ContainerConfig::default(),
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
