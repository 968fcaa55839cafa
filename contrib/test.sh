#!/usr/bin/env bash
# The whole test suite, as CI runs it, as root on a machine contrib/setup.sh has set up:
#   1. every test of the workspace on the default dockerd (Debian 12's docker.io, 20.10,
#      API 1.41);
#   2. the Debian package, built and installed into a fresh Debian 12 root, checked, removed
#      and purged (contrib/package-test.sh);
#   3. for each newer engine of contrib/engines.sh (Debian 13's docker.io 26.x, API 1.45;
#      unstable's 28.x, API 1.51): brings it up, builds the test images on it, runs the
#      integration tests (tests/it) against it through DOCKPOD_TEST_DOCKER_ENDPOINT, and
#      stops it again.
# Environment: ENGINES (default "trixie sid"; empty for the default dockerd only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
ENGINES="${ENGINES-trixie sid}"

say() { printf 'test: %s\n' "$*" >&2; }

cd "$repo"
say "the whole suite on the default dockerd"
cargo test --release --workspace

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
