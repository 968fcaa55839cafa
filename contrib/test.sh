#!/usr/bin/env bash
# The whole test suite, as CI runs it, as root on a machine contrib/setup.sh has set up:
#   1. every test of the workspace on the default dockerd (Debian 12's docker.io, 20.10,
#      API 1.41);
#   2. every fuzz target of fuzz/ (contrib/fuzz.sh) for FUZZ_SECONDS each on the committed
#      seeds: a crash, hang or memory blow-up fails the run;
#   3. the Debian package, built and installed into a fresh Debian 12 root, checked, removed
#      and purged (contrib/package-test.sh);
#   4. for each newer engine of contrib/engines.sh (Debian 13's docker.io 26.x, API 1.45;
#      unstable's 28.x, API 1.51): brings it up, builds the test images on it, runs the
#      integration tests (tests/it) against it through DOCKPOD_TEST_DOCKER_ENDPOINT, and
#      stops it again;
#   5. the integration tests that cgroups touch on a cgroup v2 node with the systemd driver,
#      the node today's kubelets demand: a Debian 12 VM (contrib/cgroup2-vm.sh), one test at a
#      time (QEMU's TCG is slow here).
# Environment: ENGINES (default "trixie sid"; empty for the default dockerd only);
# FUZZ_SECONDS (default 30; 0 leaves step 2 out);
# CGROUP2_TESTS: the tests of step 5 (default: those cgroups touch; "all" for the whole
# integration suite, about 30 minutes here; empty to leave the step out).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
ENGINES="${ENGINES-trixie sid}"
FUZZ_SECONDS="${FUZZ_SECONDS-30}"
# Stats, resources, OOM kills, top, doctor, the kubelet's cgroup parents, PSI, RuntimeClass
# (crun runs on v2), the systemd unit's restart, and a whole pod with CNI.
CGROUP2_DEFAULT="cgroups:: stats::container_stats_follow_what_the_container_does
containers::oom_killed_container_reports_oomkilled_137
containers::a_memory_limit_alone_means_no_swap_at_create_and_at_update
containers::container_config_reaches_docker_and_status_reports_it
cli::top_lists_each_containers_processes_below_the_shim
doctor::every_check_passes_on_a_host_set_up_by_contrib_setup
network::cni_pods_get_distinct_ips_reach_each_other_and_get_their_dns
todays_cri::stats_carry_pressure_only_on_cgroup_v2
todays_cri::runtime_handlers_are_the_engines_runtimes
todays_cri::pod_resources_are_recorded_and_applied_to_the_sandbox
systemd::"
CGROUP2_TESTS="${CGROUP2_TESTS-$CGROUP2_DEFAULT}"

say() { printf 'test: %s\n' "$*" >&2; }
# The disk is shared with other work on these machines, and a full one shows as a linker killed
# by SIGBUS or a write failing with ENOSPC deep inside a step: each failure says what was left.
free_gib() { df --output=avail -BG "$repo" | tail -n 1 | tr -dc 0-9; }
trap 'say "failed with $(free_gib) GiB free on the disk of $repo"' ERR

cd "$repo"
say "$(free_gib) GiB free on the disk of $repo (a run takes about 6)"
say "the whole suite on the default dockerd"
cargo test --release --workspace

if [ "$FUZZ_SECONDS" != 0 ]; then
	say "every fuzz target for ${FUZZ_SECONDS}s"
	bash "$here/fuzz.sh" "$FUZZ_SECONDS"
	# The instrumented build (2 GiB) serves no later step; the grown corpus is kept.
	rm -rf "$repo/target/fuzz/x86_64-unknown-linux-gnu"
fi

say "the Debian package in a fresh Debian 12 root"
bash "$here/package-test.sh"

for engine in $ENGINES; do
	bash "$here/engines.sh" up "$engine"
	# Stopped however the run ends, so no engine outlives the suite.
	trap 'bash "$here/engines.sh" down "$engine"' EXIT
	endpoint="$(bash "$here/engines.sh" endpoint "$engine")"
	DOCKER_SOCK="${endpoint#unix://}" SKIP_BUILD=1 bash "$here/setup.sh"
	say "the integration tests on $engine ($endpoint)"
	DOCKPOD_TEST_DOCKER_ENDPOINT="$endpoint" cargo test --release -p dockpod-tests --test it
	bash "$here/engines.sh" down "$engine"
	trap - EXIT
done

if [ -n "$CGROUP2_TESTS" ]; then
	say "integration tests on a cgroup v2 node (systemd driver), in a VM"
	# The `it` test executable among the artifacts (the binaries it runs are built too).
	exe="$(cargo test --release -p dockpod-tests --test it --no-run --message-format=json |
		grep '"kind":\["test"\]' | grep '"name":"it"' |
		sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
	[ -x "$exe" ] || { say "error: no integration test executable"; exit 1; }
	filters=()
	[ "$CGROUP2_TESTS" = all ] || read -r -d '' -a filters <<<"$CGROUP2_TESTS" || true
	# The tests that need systemd as PID 1 are ignored elsewhere and run here.
	bash "$here/cgroup2-vm.sh" run "$exe" --test-threads=1 --include-ignored "${filters[@]}"
fi
