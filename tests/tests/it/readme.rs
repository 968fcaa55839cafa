//! Every command in README.md's shell blocks is run, so the README cannot go stale: the ones an
//! operator runs against a node are run here, as written, against a front started by the
//! README's own `serve` line (its flags given as the `DOCKPOD_*` variables the service's
//! defaults file sets); the ones that install or test the machine are run by CI's scripts,
//! and this test checks that the script still runs them. A command the README gains without
//! a line here fails the test, and so does a line here the README lost.

use std::process::Command;

use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::*;
use dockpod_tests::front::Front;

/// How a README command is run.
enum Runner {
    /// By this test, against its front; the command must succeed.
    Here,
    /// By this test; it prints every check, and fails exactly when a check does.
    Doctor,
    /// Starts the front the others run against.
    Serve,
    /// By a CI script, which must contain the second string.
    Script(&'static str, &'static str),
}

/// Every command of the README's `sh` blocks (split at `&&`), and who runs it.
const COMMANDS: &[(&str, Runner)] = &[
    (
        "bash contrib/setup.sh",
        Runner::Script(".ci/run", "bash contrib/setup.sh"),
    ),
    (
        "bash contrib/package.sh",
        Runner::Script("contrib/package-test.sh", "bash \"$here/package.sh\""),
    ),
    (
        "dpkg -i target/debian/dockpod_*.deb",
        Runner::Script("contrib/package-test.sh", "dpkg -i /tmp/dockpod.deb"),
    ),
    (
        "systemctl enable --now dockpod.socket dockpod.service",
        Runner::Script(
            "contrib/package-test.sh",
            "enable dockpod.socket dockpod.service",
        ),
    ),
    ("target/release/shim-manager serve", Runner::Serve),
    (
        "shim-manager doctor --kubelet-config contrib/kubelet-config.yaml",
        Runner::Doctor,
    ),
    ("shim-manager demo", Runner::Here),
    ("shim-manager ps", Runner::Here),
    ("shim-manager ps -o wide --sort rss", Runner::Here),
    ("shim-manager top <pod>", Runner::Here),
    ("shim-manager inspect <pod>", Runner::Here),
    ("shim-manager check <pod>", Runner::Here),
    ("shim-manager upgrade-shims", Runner::Here),
    (
        "bash contrib/test.sh",
        Runner::Script(".ci/run", "bash contrib/test.sh"),
    ),
];

/// The commands of the README's `sh` blocks, each `&&` chain split, comments left out.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(dockpod_tests::workspace().join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            code if in_block => {
                let code = code.split(" #").next().unwrap_or_default().trim();
                if code.is_empty() || code.starts_with('#') {
                    continue;
                }
                commands.extend(code.split(" && ").map(|c| c.trim().to_string()));
            }
            _ => {}
        }
    }
    commands
}

/// `command` run by `sh` from the workspace with `env`, `<pod>` standing for `pod`.
fn run(command: &str, env: &[(String, String)], pod: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command.replace("<pod>", pod))
        .current_dir(dockpod_tests::workspace())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_readme_command_has_a_runner() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 5,
        "too few commands read from README.md: {commands:?}"
    );
    for command in &commands {
        assert!(
            COMMANDS.iter().any(|(c, _)| c == command),
            "README.md runs `{command}`, which no test runs: add it to readme.rs"
        );
    }
    for (command, runner) in COMMANDS {
        assert!(
            commands.iter().any(|c| c == command),
            "readme.rs runs `{command}`, which README.md no longer shows"
        );
        if let Runner::Script(script, line) = runner {
            let text = std::fs::read_to_string(dockpod_tests::workspace().join(script))
                .unwrap_or_else(|e| panic!("{script}: {e}"));
            assert!(
                text.contains(line),
                "README.md's `{command}` is to be run by {script}, which no longer has `{line}`"
            );
        }
    }
}

#[tokio::test]
async fn the_readme_commands_work_as_written() {
    let net = CniNet::new();
    let args = net.front_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = COMMANDS
        .iter()
        .find(|(_, r)| matches!(r, Runner::Serve))
        .map(|(c, _)| *c)
        .expect("a serve command");
    let front = Front::start_from_shell(serve, &args).await;
    let env = front.client_env();
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let config = pod_config("readme", logs.path());
    let sandbox = run_pod(&mut rt, &config).await;
    run_container(
        &mut rt,
        &sandbox,
        &config,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let meta = config.metadata.clone().expect("metadata");
    let pod = format!("{}/{}", meta.namespace, meta.name);
    let shim_before = shim_pid(&mut rt, &sandbox).await;

    for (command, runner) in COMMANDS {
        match runner {
            Runner::Here => {
                let (ok, out) = run(command, &env, &pod);
                eprintln!("$ {command}\n{out}");
                assert!(ok, "`{command}` failed:\n{out}");
                if command.contains(" ps") || command.contains(" inspect ") {
                    assert!(
                        out.contains(&meta.name),
                        "`{command}` does not show the pod:\n{out}"
                    );
                }
            }
            Runner::Doctor => {
                // The host decides what passes (cgroup v1 here, v2 in the VM; Docker's
                // driver): the command must run every check, and fail exactly when one does.
                // The kubelet configuration is the shipped one, so the runtime it names is
                // the default endpoint, not this test's.
                let doctor_env: Vec<(String, String)> = env
                    .iter()
                    .filter(|(k, _)| k != "DOCKPOD_CONTAINER_RUNTIME_ENDPOINT")
                    .cloned()
                    .collect();
                let (ok, out) = run(command, &doctor_env, &pod);
                for check in ["docker", "cgroup driver", "kubelet endpoint", "cgroups"] {
                    assert!(
                        out.lines()
                            .any(|l| l.get(5..).is_some_and(|r| r.starts_with(check))),
                        "`{command}` printed no {check:?} check:\n{out}"
                    );
                }
                assert!(
                    out.lines().any(|l| l.starts_with("OK   kubelet endpoint")),
                    "the shipped kubelet configuration does not point at dockpod:\n{out}"
                );
                let failed = out.lines().any(|l| l.starts_with("FAIL"));
                assert_eq!(
                    ok, !failed,
                    "`{command}` exit status against its checks:\n{out}"
                );
            }
            Runner::Serve | Runner::Script(..) => {}
        }
    }
    // `upgrade-shims` replaced the pod's shim, and the pod goes on.
    let shim_after = shim_pid(&mut rt, &sandbox).await;
    assert_ne!(shim_before, shim_after, "upgrade-shims left the old shim");
    remove_pod(&mut rt, &sandbox).await;
}
