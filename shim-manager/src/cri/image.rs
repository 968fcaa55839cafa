//! CRI `ImageService`: images are node-wide, so every call goes straight to dockerd. A list is
//! one Docker call: the one thing it lacks (an image's USER) is inspected once per image ID,
//! since an image never changes.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::auth::DockerCredentials;
use bollard::models::{ImageInspect, ImageSummary};
use dockpod_proto::cri::image_service_server::ImageService;
use dockpod_proto::cri::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest,
    ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, StreamImagesRequest, StreamImagesResponse, UInt64Value,
};
use futures_util::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::image_ref::ImageName;
use crate::imagefs::UsageCache;

/// Images inspected at once when a list meets images it has not seen (one inspect each, for
/// the USER of every image).
const LIST_CONCURRENCY: usize = 8;

pub struct ImageApi {
    engine: Engine,
    /// The sandbox image, which is reported as pinned: how Docker lists its reference, or
    /// its ID when it is configured by ID.
    sandbox_listed_as: Option<String>,
    sandbox_id: Option<String>,
    usage: UsageCache,
    /// Each image's USER by image ID. Bounded by the node's images: a full list keeps only
    /// the images it found.
    users: Mutex<HashMap<String, String>>,
}

impl ImageApi {
    pub fn new(engine: Engine, sandbox_image: String) -> Self {
        let parsed = ImageName::parse(&sandbox_image).ok();
        let sandbox_listed_as = parsed.as_ref().and_then(ImageName::listed_as);
        let sandbox_id = match parsed {
            Some(ImageName::Id(id)) => Some(id),
            _ => None,
        };
        ImageApi {
            engine,
            sandbox_listed_as,
            sandbox_id,
            usage: UsageCache::default(),
            users: Mutex::default(),
        }
    }

    /// Inspects `name`; `None` when Docker has no such image.
    async fn inspect(&self, name: &str) -> Result<Option<ImageInspect>> {
        self.engine.inspect_image(name).await
    }

    /// Whether the image with this ID and these references is the sandbox image.
    fn pinned<'a>(&self, id: &str, mut references: impl Iterator<Item = &'a String>) -> bool {
        self.sandbox_id.as_deref() == Some(id)
            || self
                .sandbox_listed_as
                .as_ref()
                .is_some_and(|sandbox| references.any(|r| r == sandbox))
    }

    async fn list(&self, filter_name: Option<&str>) -> Result<Vec<Image>> {
        let filter = filter_name.map(ImageName::parse).transpose()?;
        if let Some(ImageName::Id(id)) = &filter {
            let Some(image) = self.inspect(id).await? else {
                return Ok(Vec::new());
            };
            let pinned = self.pinned(
                image.id.as_deref().unwrap_or_default(),
                image_references(&image),
            );
            return Ok(vec![to_cri_image(image, pinned)]);
        }
        let summaries = self.engine.list_images(filter_name).await?;
        let users = self.users_of(&summaries, filter.is_none()).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                // An image removed between the list and its inspect is simply gone.
                let user = users.get(&summary.id)?.clone();
                let references = summary.repo_tags.iter().chain(&summary.repo_digests);
                let pinned = self.pinned(&summary.id, references);
                Some(summary_to_cri_image(summary, &user, pinned))
            })
            .collect())
    }

    /// The USER of each listed image: known ones from the cache, the others inspected (and
    /// kept). A `complete` list (no filter) also forgets the images it no longer holds.
    async fn users_of(
        &self,
        summaries: &[ImageSummary],
        complete: bool,
    ) -> Result<HashMap<String, String>> {
        let known: HashMap<String, String> = match self.users.lock() {
            Ok(users) => summaries
                .iter()
                .filter_map(|s| users.get(&s.id).map(|u| (s.id.clone(), u.clone())))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let unknown: Vec<String> = summaries
            .iter()
            .filter(|s| !known.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect();
        let inspected: Vec<Option<ImageInspect>> = futures_util::stream::iter(unknown)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut all = known;
        for image in inspected.into_iter().flatten() {
            let Some(id) = image.id.clone() else {
                continue;
            };
            all.insert(id, image_user(&image));
        }
        if let Ok(mut users) = self.users.lock() {
            if complete {
                users.retain(|id, _| all.contains_key(id));
            }
            users.extend(all.iter().map(|(id, user)| (id.clone(), user.clone())));
        }
        Ok(all)
    }

    async fn status(&self, spec: &ImageSpec, verbose: bool) -> Result<ImageStatusResponse> {
        ImageName::parse(&spec.image)?;
        let Some(inspect) = self.inspect(&spec.image).await? else {
            return Ok(ImageStatusResponse::default());
        };
        let info = if verbose {
            let json = serde_json::to_string(&inspect).unwrap_or_default();
            HashMap::from([("info".to_string(), json)])
        } else {
            HashMap::new()
        };
        let pinned = self.pinned(
            inspect.id.as_deref().unwrap_or_default(),
            image_references(&inspect),
        );
        Ok(ImageStatusResponse {
            image: Some(to_cri_image(inspect, pinned)),
            info,
        })
    }

    async fn pull(&self, spec: &ImageSpec, auth: Option<&AuthConfig>) -> Result<String> {
        let name = ImageName::parse(&spec.image)?;
        let Some((from_image, tag)) = name.pull_parameters() else {
            return Err(Error::InvalidArgument(format!(
                "cannot pull {:?}: an image ID names no registry; pull by tag or digest",
                spec.image
            )));
        };
        let credentials = auth.map(|a| credentials(a, &from_image)).transpose()?;
        self.engine.pull(&from_image, &tag, credentials).await?;
        let pulled = if tag.contains(':') {
            format!("{from_image}@{tag}")
        } else {
            format!("{from_image}:{tag}")
        };
        match self.inspect(&pulled).await? {
            Some(ImageInspect { id: Some(id), .. }) => Ok(id),
            _ => Err(Error::NotFound(format!(
                "image {:?} is not present after pulling it",
                spec.image
            ))),
        }
    }

    /// The sandbox image, pulled when Docker does not have it, as cri-dockerd and containerd
    /// do (the kubelet never pulls it): with the node's own credentials for its registry, if
    /// Docker's client configuration holds any. Whether it was pulled now.
    pub async fn ensure_sandbox_image(&self, image: &str) -> Result<bool> {
        if self.inspect(image).await?.is_some() {
            return Ok(false);
        }
        let from_image = ImageName::parse(image)?
            .pull_parameters()
            .map(|(repository, _)| repository)
            .unwrap_or_default();
        let auth = node_auth(&docker_config(), registry_of(&from_image));
        let spec = ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        self.pull(&spec, auth.as_ref()).await.map_err(|e| {
            Error::NotFound(format!(
                "sandbox image {image} is not present and pulling it failed: {e}"
            ))
        })?;
        Ok(true)
    }

    async fn remove(&self, spec: &ImageSpec) -> Result<()> {
        let name = &spec.image;
        let parsed = ImageName::parse(name)?;
        let Some(image) = self.inspect(name).await? else {
            return Ok(());
        };
        let id = image.id.clone().unwrap_or_default();
        let by_id = matches!(parsed, ImageName::Id(_)) || ImageName::names_id(name, &id);
        if !by_id {
            // A tag or digest names one reference: remove just it. Docker deletes the image
            // with its last reference.
            return self.remove_reference(name).await;
        }
        // By ID the image goes entirely: every tag and digest reference, then the image.
        let references = image
            .repo_tags
            .into_iter()
            .flatten()
            .chain(image.repo_digests.into_iter().flatten());
        for reference in references {
            self.remove_reference(&reference).await?;
        }
        self.remove_reference(&id).await
    }

    async fn remove_reference(&self, reference: &str) -> Result<()> {
        match self.engine.remove_image(reference).await {
            Ok(()) => Ok(()),
            // Removals of one image at once: Docker answers the ones that lose the race with
            // a 500 ("unrecognized image ID") or a 409. What they asked for holds if the
            // reference is gone now.
            Err(e) => match self.inspect(reference).await {
                Ok(None) => Ok(()),
                _ => Err(e),
            },
        }
    }

    async fn fs_info(&self) -> Result<ImageFsInfoResponse> {
        let info = self.engine.info().await?;
        let root = info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into());
        let usage = self.usage.usage(std::path::Path::new(&root)).await?;
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: usage.timestamp_ns,
                fs_id: Some(FilesystemIdentifier { mountpoint: root }),
                used_bytes: Some(UInt64Value {
                    value: usage.used_bytes,
                }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        })
    }
}

/// Docker credentials from the kubelet's AuthConfig. `auth` is base64 `user:password`, used
/// when the username and password are not given separately.
fn credentials(auth: &AuthConfig, repository: &str) -> Result<DockerCredentials> {
    use base64::Engine as _;
    let (mut username, mut password) = (auth.username.clone(), auth.password.clone());
    if username.is_empty() && !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "auth for {repository:?} is not base64 of user:password"
                ))
            })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("auth for {repository:?} has no ':' separator"))
        })?;
        (username, password) = (u.to_string(), p.to_string());
    }
    let registry = repository.split('/').next().unwrap_or_default();
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(DockerCredentials {
        username: some(&username),
        password: some(&password),
        serveraddress: some(&auth.server_address).or_else(|| some(registry)),
        identitytoken: some(&auth.identity_token),
        registrytoken: some(&auth.registry_token),
        ..Default::default()
    })
}

/// The registry part of a repository as Docker names it (`127.0.0.1:5000/pause` →
/// `127.0.0.1:5000`); Docker Hub's repositories are `docker.io/...`.
fn registry_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or_default()
}

/// Docker's client configuration, where a node's registry credentials live (`docker login`):
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. Null when there is none.
fn docker_config() -> serde_json::Value {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".docker/config.json"),
            None => return serde_json::Value::Null,
        },
    };
    std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The credentials `config` holds for `registry` (its `auths`, keyed by the registry with or
/// without a scheme and path; Docker Hub as `https://index.docker.io/v1/`).
fn node_auth(config: &serde_json::Value, registry: &str) -> Option<AuthConfig> {
    let auths = config.get("auths")?.as_object()?;
    let host = |key: &str| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        key.split('/').next().unwrap_or_default().to_string()
    };
    let wanted = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let (key, entry) = auths.iter().find(|(key, _)| host(key) == wanted)?;
    let text = |field: &str| {
        entry
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(AuthConfig {
        username: text("username"),
        password: text("password"),
        auth: text("auth"),
        server_address: key.clone(),
        identity_token: text("identitytoken"),
        registry_token: text("registrytoken"),
    })
}

/// The image's USER as the kubelet wants it: a numeric uid, or else a user name.
fn user_of(user: &str) -> (Option<Int64Value>, String) {
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

fn image_references(image: &ImageInspect) -> impl Iterator<Item = &String> {
    image
        .repo_tags
        .iter()
        .flatten()
        .chain(image.repo_digests.iter().flatten())
}

fn image_user(image: &ImageInspect) -> String {
    image
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default()
}

/// Docker's `<none>:<none>` and `<none>@<none>` stand for no reference at all.
fn real_references(references: Vec<String>) -> Vec<String> {
    references
        .into_iter()
        .filter(|r| !r.starts_with("<none>"))
        .collect()
}

fn cri_image(
    id: String,
    tags: Vec<String>,
    digests: Vec<String>,
    size: i64,
    user: &str,
    pinned: bool,
) -> Image {
    let (uid, username) = user_of(user);
    Image {
        pinned,
        spec: Some(ImageSpec {
            image: id.clone(),
            ..Default::default()
        }),
        repo_tags: real_references(tags),
        repo_digests: real_references(digests),
        size: size.max(0) as u64,
        uid,
        username,
        id,
    }
}

fn to_cri_image(image: ImageInspect, pinned: bool) -> Image {
    let user = image_user(&image);
    cri_image(
        image.id.unwrap_or_default(),
        image.repo_tags.unwrap_or_default(),
        image.repo_digests.unwrap_or_default(),
        image.size.unwrap_or(0),
        &user,
        pinned,
    )
}

fn summary_to_cri_image(summary: ImageSummary, user: &str, pinned: bool) -> Image {
    cri_image(
        summary.id,
        summary.repo_tags,
        summary.repo_digests,
        summary.size,
        user,
        pinned,
    )
}

fn image_field(spec: &Option<ImageSpec>) -> &str {
    spec.as_ref().map(|s| s.image.as_str()).unwrap_or_default()
}

fn required_spec<'a>(spec: &'a Option<ImageSpec>, call: &str) -> Result<&'a ImageSpec> {
    spec.as_ref()
        .ok_or_else(|| Error::InvalidArgument(format!("{call}: image spec is missing")))
}

impl ImageApi {
    /// The image spec of a call, its runtime handler one of the engine's: all of Docker's
    /// runtimes share one image store, so any known handler is the same store.
    async fn checked_spec<'a>(
        &self,
        spec: &'a Option<ImageSpec>,
        call: &str,
    ) -> Result<&'a ImageSpec> {
        let spec = required_spec(spec, call)?;
        if !spec.runtime_handler.is_empty() {
            self.engine
                .facts()
                .await?
                .check_handler(&spec.runtime_handler)?;
        }
        Ok(spec)
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let req = request.into_inner();
        let filter = req
            .filter
            .as_ref()
            .map(|f| image_field(&f.image))
            .filter(|s| !s.is_empty());
        let span = tracing::info_span!("ListImages", filter = filter.unwrap_or_default());
        let images = self.list(filter).instrument(span).await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream = dockpod_proto::cri_stream::Chunks<StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let filter = request.into_inner().filter;
        let images = self
            .list_images(Request::new(ListImagesRequest { filter }))
            .await?
            .into_inner()
            .images;
        Ok(Response::new(dockpod_proto::cri_stream::stream(
            images,
            |images| StreamImagesResponse { images },
        )))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("ImageStatus", image = image_field(&req.image));
        async {
            let spec = self.checked_spec(&req.image, "ImageStatus").await?;
            self.status(spec, req.verbose).await
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("PullImage", image = image_field(&req.image));
        async {
            let spec = self.checked_spec(&req.image, "PullImage").await?;
            let image_ref = self.pull(spec, req.auth.as_ref()).await?;
            tracing::info!(%image_ref, "pulled");
            Ok::<_, Error>(PullImageResponse { image_ref })
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("RemoveImage", image = image_field(&req.image));
        async {
            let spec = self.checked_spec(&req.image, "RemoveImage").await?;
            self.remove(spec).await
        }
        .instrument(span)
        .await
        .map(|()| Response::new(RemoveImageResponse {}))
        .map_err(Status::from)
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        self.fs_info()
            .instrument(tracing::info_span!("ImageFsInfo"))
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_credentials_come_from_dockers_client_configuration() {
        let config = serde_json::json!({"auths": {
            "https://127.0.0.1:5000/v2/": {"auth": "dXNlcjpwYXNz"},
            "https://index.docker.io/v1/": {"username": "hub", "password": "secret"},
        }});
        let local = node_auth(&config, "127.0.0.1:5000").expect("local registry");
        assert_eq!(local.auth, "dXNlcjpwYXNz");
        assert_eq!(local.server_address, "https://127.0.0.1:5000/v2/");
        let hub = node_auth(&config, registry_of("docker.io/library/pause")).expect("hub");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        assert!(node_auth(&config, "127.0.0.1:5001").is_none());
        assert!(node_auth(&serde_json::Value::Null, "127.0.0.1:5000").is_none());
    }

    #[test]
    fn user_forms() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(
            user_of("1234"),
            (Some(Int64Value { value: 1234 }), String::new())
        );
        assert_eq!(
            user_of("1234:5678"),
            (Some(Int64Value { value: 1234 }), String::new())
        );
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of("www:www"), (None, "www".to_string()));
    }

    #[test]
    fn credentials_from_auth_field() {
        let auth = AuthConfig {
            auth: "YWxpY2U6czNjcjN0".into(), // alice:s3cr3t
            ..Default::default()
        };
        let c = credentials(&auth, "127.0.0.1:5000/app").expect("decodes");
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cr3t"));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let bad = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(credentials(&bad, "r/app").is_err());
    }

    #[test]
    fn hides_none_references() {
        let image = ImageInspect {
            id: Some("sha256:abc".into()),
            repo_tags: Some(vec!["<none>:<none>".into(), "a:1".into()]),
            repo_digests: Some(vec!["<none>@<none>".into()]),
            size: Some(10),
            ..Default::default()
        };
        let cri = to_cri_image(image, true);
        assert_eq!(cri.repo_tags, vec!["a:1"]);
        assert!(cri.repo_digests.is_empty());
        assert!(cri.pinned);
        assert_eq!(cri.size, 10);
    }
}
