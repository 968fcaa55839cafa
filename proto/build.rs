//! Generates dockpod's own protocols (`proto/`) and the CRI bindings from upstream's
//! `api.proto` (kubernetes/cri-api), which `contrib/cri-api.sh` brings from Debian's
//! golang-k8s-cri-api-dev package into the build's own folder (`target/cri-api`, or
//! `DOCKPOD_CRI_API_DIR`) when it is not there yet. A definition older than the version pinned
//! in `cri-api.version` fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    const PROTOS: [&str; 2] = [
        "proto/dockpod/shim/v1/shim.proto",
        "proto/dockpod/manager/v1/manager.proto",
    ];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_protos(&PROTOS, &["proto"])?;
    cri()
}

/// `(major, minor, patch)` of a version such as `0.36.4`.
fn parse_version(text: &str) -> Result<(u32, u32, u32), BoxError> {
    let mut parts = text.trim().split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok((a, b, c)),
        _ => Err(format!("{text:?} is not a version of the form 0.36.4").into()),
    }
}

fn cri() -> Result<(), BoxError> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest.parent().ok_or("proto/ has no parent folder")?;
    println!("cargo:rerun-if-changed=cri-api.version");
    println!("cargo:rerun-if-env-changed=DOCKPOD_CRI_API_DIR");
    let dir = match std::env::var_os("DOCKPOD_CRI_API_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace.join("target/cri-api"),
    };
    let (proto, version_file) = (dir.join("api.proto"), dir.join("VERSION"));
    if !proto.exists() || !version_file.exists() {
        fetch(workspace, &dir)?;
    }
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed={}", version_file.display());

    let pinned = std::fs::read_to_string(manifest.join("cri-api.version"))?;
    let version = std::fs::read_to_string(&version_file)?;
    let version = version.trim();
    if parse_version(version)? < parse_version(&pinned)? {
        return Err(format!(
            "the CRI definition in {} is cri-api {version}, older than the pinned {} \
             (proto/cri-api.version): remove the folder and build again to fetch it anew",
            dir.display(),
            pinned.trim()
        )
        .into());
    }
    println!("cargo:rustc-env=DOCKPOD_CRI_API_VERSION={version}");
    println!("cargo:rustc-env=DOCKPOD_CRI_API_PROTO={}", proto.display());

    // protoc 3.21 (Debian 12 to unstable) does not know the `debug_redact` field option
    // (protobuf 22) that marks AuthConfig's secrets, and prost would not honour it: the
    // option goes, and AuthConfig's Debug is written by hand to redact the same fields.
    let text = std::fs::read_to_string(&proto)?.replace(" [debug_redact = true]", "");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("cri");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("api.proto"), text)?;

    tonic_prost_build::configure()
        .type_attribute(
            ".runtime.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        // A record written before a field existed still reads: the field takes its default.
        .message_attribute(".runtime.v1", "#[serde(default)]")
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::cri::text_bytes\")]",
        )
        .skip_debug([".runtime.v1.AuthConfig"])
        .file_descriptor_set_path(out.join("descriptor.bin"))
        .compile_protos(&[out.join("api.proto")], &[out])?;
    Ok(())
}

fn fetch(workspace: &Path, dir: &Path) -> Result<(), BoxError> {
    let script = workspace.join("contrib/cri-api.sh");
    let status = Command::new("bash").arg(&script).arg(dir).status()?;
    if !status.success() {
        return Err(format!(
            "{} {} failed ({status}): the CRI definition comes from Debian's \
             golang-k8s-cri-api-dev package",
            script.display(),
            dir.display()
        )
        .into());
    }
    Ok(())
}
