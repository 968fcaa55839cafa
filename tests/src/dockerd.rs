//! The Docker daemon itself, for fault tests: restarting it through the project's own script.

use std::path::PathBuf;
use std::process::Command;

use bollard::Docker;

/// Stops dockerd and starts it again with the same command line (`contrib/dockerd.sh
/// restart`), returning once it answers again.
pub fn restart() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/dockerd.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("restart")
        .status()
        .expect("run contrib/dockerd.sh");
    assert!(status.success(), "{} restart failed", script.display());
}

/// Whether containers outlive a dockerd restart on this host.
pub async fn live_restore(docker: &Docker) -> bool {
    docker
        .info()
        .await
        .expect("docker info")
        .live_restore_enabled
        .unwrap_or(false)
}
