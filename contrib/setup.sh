#!/usr/bin/env bash
# Sets up a Debian 12 machine for dockpod, idempotently, as root:
#   1. installs what is missing of Debian's docker.io, crun (a second OCI runtime, for
#      RuntimeClass), protobuf-compiler, busybox-static, containernetworking-plugins and
#      docker-registry, and of debootstrap and systemd's tools
#      (the package test installs into a debootstrapped root and checks the units offline);
#   2. starts dockerd (with --live-restore, and crun beside runc) when none answers on its
#      socket, through contrib/dockerd.sh (log: /var/log/dockpod-dockerd.log);
#   3. builds the local images from busybox-static, with no registry: the sandbox image
#      localhost/dockpod/pause:1 and the tool image localhost/dockpod/busybox:1;
#   4. builds the release binaries (target/release/shim-manager, target/release/pod-shim) and
#      installs cargo-deb (pinned), which `contrib/package.sh` builds the Debian package with;
#   5. installs the real third-party clients the tests drive (Python grpcio and grpcio-tools,
#      and websocket-client, from PyPI, pinned) into a virtual environment, target/test-python;
#   6. raises fs.inotify.max_user_instances to INOTIFY_INSTANCES (8192) where it is lower: a
#      pod shim follows each container's json-file log with an inotify instance of its own,
#      and Debian's 128 run out past about 125 containers (a shim then polls the file).
# Environment: DOCKER_SOCK (default /var/run/docker.sock), DOCKERD_TIMEOUT (seconds, 60),
# SKIP_BUILD=1 to leave out step 4.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
DOCKER_SOCK="${DOCKER_SOCK:-/var/run/docker.sock}"
BASE_IMAGE=localhost/dockpod/busybox-base:1
PAUSE_IMAGE=localhost/dockpod/pause:1
TOOL_IMAGE=localhost/dockpod/busybox:1
INOTIFY_INSTANCES=8192
PACKAGES=(docker.io crun protobuf-compiler busybox-static containernetworking-plugins docker-registry iproute2 iptables python3 python3-venv e2fsprogs debootstrap systemd)
CARGO_DEB_VERSION=3.8.0
# The tests' Python CRI client (grpcio since 1.57 sends a unix socket's path as :authority),
# and a real WebSocket client for the streaming tests that send what the project's own
# framing never would.
PYTHON_CLIENTS=(grpcio==1.85.1 grpcio-tools==1.85.1 websocket-client==1.9.2)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && { say "packages present"; return; }
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Debian's package scripts try to start the services; without an init system that fails
	# harmlessly, and dockerd is started below in any case.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_cli() { docker --host "unix://$DOCKER_SOCK" "$@"; }

image_present() { docker_cli image inspect "$1" >/dev/null 2>&1; }

# A content hash of an image's build inputs, kept in a label so a changed input rebuilds it.
inputs_hash() { cat "$@" | sha256sum | cut -c1-16; }

build_images() {
	local busybox=/bin/busybox
	[ -x "$busybox" ] || die "$busybox is missing (package busybox-static)"
	local base_hash
	base_hash="$(inputs_hash "$busybox")"
	if [ "$(docker_cli image inspect -f '{{index .Config.Labels "io.dockpod.inputs"}}' "$BASE_IMAGE" 2>/dev/null)" != "$base_hash" ]; then
		say "importing $BASE_IMAGE from $busybox"
		local rootfs
		rootfs="$(mktemp -d)"
		trap 'rm -rf "$rootfs"' RETURN
		mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var/www}
		chmod 1777 "$rootfs/tmp"
		cp "$busybox" "$rootfs/bin/busybox"
		# Every applet as a link, so sh, httpd, nc, sleep, ... exist by name.
		"$busybox" --list-full | while read -r applet; do
			[ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
		done
		printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
		printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
		tar -C "$rootfs" -c . | docker_cli import \
			--change "LABEL io.dockpod.inputs=$base_hash" \
			--change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
			- "$BASE_IMAGE" >/dev/null
	fi
	build_from_base pause "$PAUSE_IMAGE"
	build_from_base busybox "$TOOL_IMAGE"
}

build_from_base() {
	local dir="$here/images/$1" tag="$2" hash
	hash="$(inputs_hash "$dir"/* <(docker_cli image inspect -f '{{.Id}}' "$BASE_IMAGE"))"
	if [ "$(docker_cli image inspect -f '{{index .Config.Labels "io.dockpod.inputs"}}' "$tag" 2>/dev/null)" = "$hash" ]; then
		return
	fi
	say "building $tag"
	# The classic builder: Debian's docker.io ships no buildx, and the build needs nothing it adds.
	DOCKER_BUILDKIT=0 docker_cli build -q --build-arg "BASE=$BASE_IMAGE" \
		--label "io.dockpod.inputs=$hash" -t "$tag" "$dir" >/dev/null
}

build_binaries() {
	if [ "${SKIP_BUILD:-0}" = 1 ]; then return; fi
	command -v cargo >/dev/null || die "cargo is not on PATH"
	say "building release binaries"
	(cd "$repo" && cargo build --release --locked --bins)
	if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
		say "installing cargo-deb $CARGO_DEB_VERSION"
		cargo install -q --locked cargo-deb --version "$CARGO_DEB_VERSION"
	fi
}

install_test_clients() {
	local venv="$repo/target/test-python"
	if [ "$(cat "$venv/.installed" 2>/dev/null)" = "${PYTHON_CLIENTS[*]}" ]; then
		return
	fi
	say "installing ${PYTHON_CLIENTS[*]} into $venv"
	rm -rf "$venv"
	/usr/bin/python3 -m venv "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check "${PYTHON_CLIENTS[@]}"
	printf '%s' "${PYTHON_CLIENTS[*]}" >"$venv/.installed"
}

# What Kubernetes nodes are commonly given; a host that refuses (a read-only /proc/sys in a
# container) keeps working, with shims polling the files they get no instance for.
raise_inotify_instances() {
	local file=/proc/sys/fs/inotify/max_user_instances now
	now="$(cat "$file" 2>/dev/null || echo 0)"
	if [ "$now" -ge "$INOTIFY_INSTANCES" ]; then
		return
	fi
	if (echo "$INOTIFY_INSTANCES" >"$file") 2>/dev/null; then
		say "fs.inotify.max_user_instances raised from $now to $INOTIFY_INSTANCES"
	else
		say "warning: fs.inotify.max_user_instances stays $now (cannot set it here)"
	fi
}

install_packages
raise_inotify_instances
"$here/dockerd.sh" start
build_images
build_binaries
install_test_clients
say "ready: $PAUSE_IMAGE and $TOOL_IMAGE built; binaries in $repo/target/release"
