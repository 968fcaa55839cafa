//! `shim-manager doctor` on this host: each check's OK path with the flags of a working setup
//! (the engine under test, the images `contrib/setup.sh` built, a CNI network of Debian's
//! plugins), and its FAIL (or WARN) path made by pointing it at something broken. What the host
//! itself decides (live-restore, CAP_SYS_RESOURCE, the engine's API and the kernel) is read here at run time and compared.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use dockpod_tests::binaries::binary;
use dockpod_tests::cni::CniNet;
use dockpod_tests::front::Front;

/// The output of `doctor` with `args`: whether it exited 0, and its lines by check name.
struct Report {
    passed: bool,
    out: String,
}

impl Report {
    /// The line of check `name`: its verdict and detail.
    fn line(&self, name: &str) -> (&str, &str) {
        self.out
            .lines()
            .find_map(|l| {
                let (verdict, rest) = l.split_once(' ')?;
                let detail = rest.trim_start().strip_prefix(name)?.strip_prefix(": ")?;
                Some((verdict, detail))
            })
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", self.out))
    }

    fn verdict(&self, name: &str) -> &str {
        self.line(name).0
    }
}

fn doctor(args: &[String]) -> Report {
    let out = Command::new(binary("shim-manager"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("run shim-manager doctor");
    Report {
        passed: out.status.success(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The flags of a working setup with its directories under `dir`, then `extra` (later flags
/// win).
fn flags(dir: &Path, net: &CniNet, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--docker-endpoint".to_string(),
        dockpod_tests::docker::endpoint(),
        "--root-directory".into(),
        dir.join("root").display().to_string(),
        "--run-directory".into(),
        dir.join("run").display().to_string(),
    ];
    flags.extend(net.front_args());
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

#[tokio::test]
async fn every_check_passes_on_a_host_set_up_by_contrib_setup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let report = doctor(&flags(dir.path(), &net, &[]));
    assert!(report.passed, "{}", report.out);
    for name in [
        "docker",
        "cgroup driver",
        "sandbox image",
        "runtimes",
        "cdi",
        "pod network",
        "root directory",
        "run directory",
        "other front",
    ] {
        assert_eq!(report.verdict(name), "OK", "{name}:\n{}", report.out);
    }
    let info = dockpod_tests::docker::docker()
        .await
        .info()
        .await
        .expect("docker info");
    // Today's kubelets refuse cgroup v1 (KEP-5573): a v1 host is warned of.
    let v2 = dockpod_tests::cgroup_v2();
    let cgroups = if v2 { "OK" } else { "WARN" };
    assert_eq!(report.verdict("cgroups"), cgroups, "{}", report.out);
    let (_, runtimes) = report.line("runtimes");
    assert!(
        runtimes.contains("runc") && runtimes.contains("crun"),
        "{runtimes}: contrib/setup.sh registers crun"
    );
    let cdi_on = info.cdi_spec_dirs.as_ref().is_some_and(|d| !d.is_empty());
    let (_, cdi) = report.line("cdi");
    assert_eq!(cdi.starts_with("on"), cdi_on, "{cdi}");
    let live_restore = if info.live_restore_enabled == Some(true) {
        "OK"
    } else {
        "WARN"
    };
    assert_eq!(
        report.verdict("live-restore"),
        live_restore,
        "{}",
        report.out
    );
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("CapEff");
    let sys_resource = if cap_eff & (1 << 24) != 0 {
        "OK"
    } else {
        "WARN"
    };
    assert_eq!(
        report.verdict("capabilities"),
        sys_resource,
        "{}",
        report.out
    );
    // Every kernel CI runs on has pidfds (5.3); recursive read-only mounts need the engine
    // (API 1.44) as well as the kernel (5.12): Docker 20.10 makes this a WARN.
    assert_eq!(report.verdict("pidfd"), "OK", "{}", report.out);
    let release = dockpod_proto::engine_api::kernel_release();
    let rro = dockpod_tests::docker::api_version()
        .await
        .recursive_read_only_binds()
        && dockpod_proto::engine_api::kernel_has_mount_setattr(&release);
    let rro = if rro { "OK" } else { "WARN" };
    assert_eq!(report.verdict("mount_setattr"), rro, "{}", report.out);
}

#[tokio::test]
async fn a_missing_docker_socket_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let missing = format!("unix://{}", dir.path().join("docker.sock").display());
    let report = doctor(&flags(dir.path(), &net, &["--docker-endpoint", &missing]));
    assert!(!report.passed, "{}", report.out);
    let (verdict, detail) = report.line("docker");
    assert_eq!(verdict, "FAIL");
    assert!(detail.contains("cannot reach Docker"), "{detail}");
    assert_eq!(report.verdict("sandbox image"), "FAIL");
    assert_eq!(report.verdict("pod network"), "OK", "{}", report.out);
}

#[tokio::test]
async fn an_empty_cni_directory_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let empty = dir.path().join("net.d");
    std::fs::create_dir(&empty).expect("mkdir");
    let empty = empty.display().to_string();
    let report = doctor(&flags(dir.path(), &net, &["--cni-conf-dir", &empty]));
    assert!(!report.passed, "{}", report.out);
    assert_eq!(report.verdict("pod network"), "FAIL", "{}", report.out);
    // Without a CNI plugin there is nothing to find.
    let bridge = doctor(&[
        "--docker-endpoint".to_string(),
        dockpod_tests::docker::endpoint(),
        "--root-directory".into(),
        dir.path().join("root").display().to_string(),
    ]);
    assert_eq!(bridge.verdict("pod network"), "OK", "{}", bridge.out);
}

#[tokio::test]
async fn a_missing_sandbox_image_warns_that_the_first_pod_pulls_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let report = doctor(&flags(
        dir.path(),
        &net,
        &["--pod-infra-container-image", "localhost/dockpod/absent:0"],
    ));
    let (verdict, detail) = report.line("sandbox image");
    assert_eq!(verdict, "WARN");
    assert!(
        detail.contains("localhost/dockpod/absent:0") && detail.contains("pulls it"),
        "{detail}"
    );
}

#[tokio::test]
async fn directories_open_to_others_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    for (name, sub, mode) in [
        ("root directory", "root", 0o755),
        ("run directory", "run", 0o777),
    ] {
        let path = dir.path().join(sub);
        std::fs::create_dir_all(&path).expect("mkdir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let report = doctor(&flags(dir.path(), &net, &[]));
        assert!(!report.passed, "{}", report.out);
        let (verdict, detail) = report.line(name);
        assert_eq!(verdict, "FAIL", "{}", report.out);
        assert!(detail.contains("chmod"), "{detail}");
        let fixed = if sub == "root" { 0o700 } else { 0o755 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(fixed)).expect("chmod");
        assert_eq!(doctor(&flags(dir.path(), &net, &[])).verdict(name), "OK");
    }
}

#[tokio::test]
async fn the_kubelets_cgroup_driver_is_compared_with_dockers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let info = dockpod_tests::docker::docker()
        .await
        .info()
        .await
        .expect("docker info");
    let docker_driver = info
        .cgroup_driver
        .map(|d| d.to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "cgroupfs".into());
    let other = if docker_driver == "systemd" {
        "cgroupfs"
    } else {
        "systemd"
    };
    let config = dir.path().join("kubelet.yaml");
    for (driver, verdict) in [(docker_driver.as_str(), "OK"), (other, "FAIL")] {
        std::fs::write(
            &config,
            // As a kubelet of today must be told to run on these cgroup v1 hosts at all.
            format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/dockpod/cri.sock\ncgroupDriver: {driver}\nfailCgroupV1: false\n"),
        )
        .expect("write");
        let path = config.display().to_string();
        let report = doctor(&flags(dir.path(), &net, &["--kubelet-config", &path]));
        assert_eq!(report.verdict("cgroup driver"), verdict, "{}", report.out);
        assert_eq!(report.verdict("kubelet endpoint"), "OK", "{}", report.out);
        assert_eq!(report.passed, verdict == "OK", "{}", report.out);
    }
    // Without it, a kubelet of 1.35 or later would not start on cgroup v1.
    std::fs::write(
        &config,
        format!("kind: KubeletConfiguration\ncgroupDriver: {docker_driver}\n"),
    )
    .expect("write");
    let path = config.display().to_string();
    let report = doctor(&flags(dir.path(), &net, &["--kubelet-config", &path]));
    let v2 = dockpod_tests::cgroup_v2();
    let expected = if v2 { "OK" } else { "FAIL" };
    assert_eq!(report.verdict("cgroups"), expected, "{}", report.out);
    // Nor would it talk to dockpod: its runtime by default is containerd's.
    assert_eq!(report.verdict("kubelet endpoint"), "FAIL", "{}", report.out);
    assert!(!report.passed, "{}", report.out);
}

#[tokio::test]
async fn a_front_already_serving_the_root_is_named() {
    let front = Front::start(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = CniNet::new();
    let root = front.root_dir().display().to_string();
    let run = front.run_dir().display().to_string();
    let report = doctor(&flags(
        dir.path(),
        &net,
        &["--root-directory", &root, "--run-directory", &run],
    ));
    let (verdict, detail) = report.line("other front");
    assert_eq!(verdict, "WARN", "{}", report.out);
    let pid = front.pid().expect("front pid").to_string();
    assert!(detail.contains(&pid), "{detail}");
}
