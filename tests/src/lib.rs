//! Harness for dockpod's integration tests: the real `shim-manager` binary on a temporary
//! socket and state directory (`Front`), a real Docker Engine (`docker()`), a real registry on
//! loopback (`Registry`), unique names, and waits with deadlines. Everything a test creates is
//! removed by a guard's `Drop`, also when the test fails.

pub mod binaries;
pub mod cni;
pub mod cri;
pub mod crilog;
pub mod disk;
pub mod docker;
pub mod docker_proxy;
pub mod dockerd;
pub mod front;
pub mod h2raw;
pub mod iptables;
pub mod metrics;
pub mod procs;
pub mod reaper;
pub mod registry;
pub mod streaming;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

/// Names in `dir` (none when it does not exist).
pub fn list_dir(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The Python of the virtual environment `contrib/setup.sh` installs the tests' real clients
/// into (grpcio, websocket-client).
pub fn python() -> std::path::PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run contrib/setup.sh, which installs the tests' Python clients",
        python.display()
    );
    python
}

/// The workspace's root: where README.md, contrib/ and each crate's sources are.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// One of the tests' Python scripts (`tests/python/<name>`).
pub fn python_script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// A name no other test (in this or a concurrent test process) uses: lowercase, so it is also
/// a valid image repository component.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Runs `fut` to completion on a runtime of its own on another thread: for cleanup from `Drop`,
/// which cannot await and may run inside a test's runtime.
pub fn block_on_side<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(fut)
    })
    .join()
    .expect("cleanup thread panicked")
}

/// Whether this host runs cgroup v2 alone (a unified hierarchy at /sys/fs/cgroup), as the
/// cgroup v2 VM does and these machines' v1 hybrids do not.
pub fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether the kernel reports pressure stall information on a cgroup v2 host, which the
/// stats then carry.
pub fn cgroup_v2_with_psi() -> bool {
    cgroup_v2() && std::path::Path::new("/proc/pressure/cpu").exists()
}
