#!/usr/bin/env bash
# Newer Docker engines beside the default dockerd, for proving dockpod on them, as root:
#   contrib/engines.sh up [NAME...]     bring up each engine (all by default); idempotent
#   contrib/engines.sh down [NAME...]   stop each engine (its files stay for the next `up`)
#   contrib/engines.sh endpoint NAME    print the engine's Docker endpoint (unix://...)
#   contrib/engines.sh list             print the engines' names
# Engines: trixie (Debian 13's docker.io, 26.x, API 1.45) and sid (Debian unstable's, 28.x,
# API 1.51). Each comes from a debootstrapped root under $ENGINES_DIR and runs on this host,
# not in a chroot (dockpod reads host paths: DockerRootDir, layer directories,
# /proc/<pid>/ns/net), with a socket, data root, exec root, containerd (own root, state and
# socket) and bridge of its own, sharing nothing with the default dockerd:
#  - dockerd, containerd and the runc shim run as they are (they need glibc <= 2.34);
#  - runc needs the root's newer glibc: a copy of it is patched (patchelf) to load through
#    the root's own loader and libraries, and found first on the engine's PATH;
#  - each engine's bridge is made here and named on dockerd's command line; it is never
#    given another one (a dockerd restarted with a different --bridge deletes the bridge
#    it thinks it owns, and docker0 vanished that way once);
#  - no iptables (--iptables=false): two dockerds would contend for the same DOCKER chains,
#    and the tests' traffic stays on loopback and the engines' own bridges.
# Environment: ENGINES_DIR (default /var/lib/dockpod-engines), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), ENGINE_TIMEOUT (seconds, 120).
set -euo pipefail

ENGINES_DIR="${ENGINES_DIR:-/var/lib/dockpod-engines}"
RUN_BASE=/run/dockpod-engines
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ENGINE_TIMEOUT="${ENGINE_TIMEOUT:-120}"
ENGINES=(trixie sid)

say() { printf 'engines: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"

# The bridge of each engine, with its gateway address (subnets the tests use nowhere else).
bridge_of() {
	case "$1" in
	trixie) echo "dpk-trixie 172.30.1.1/24" ;;
	sid) echo "dpk-sid 172.30.2.1/24" ;;
	*) die "unknown engine $1 (known: ${ENGINES[*]})" ;;
	esac
}

endpoint_of() { echo "unix://$RUN_BASE/$1/docker.sock"; }

answers() {
	timeout 10 docker --host "$(endpoint_of "$1")" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

ensure_tools() {
	local missing=()
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v patchelf >/dev/null || missing+=(patchelf)
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
	fi
}

# The engine's root: Debian's docker.io of that suite, with what it depends on.
make_root() {
	local name=$1 root="$ENGINES_DIR/$1/root"
	if [ -x "$root/usr/sbin/dockerd" ] && [ -x "$root/usr/sbin/runc" ]; then return; fi
	say "$name: debootstrapping Debian $name with docker.io into $root"
	rm -rf "$root"
	mkdir -p "$root"
	# The machine's clock may be past the suite's Valid-Until; the packages are still
	# verified against the archive's keys.
	debootstrap --variant=minbase --include=docker.io --components=main \
		"$name" "$root" "$DEBIAN_MIRROR" >"$ENGINES_DIR/$name/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$ENGINES_DIR/$name/debootstrap.log" >&2; die "$name: debootstrap failed"; }
}

# runc, loading through the root's own loader and libraries.
patch_runc() {
	local name=$1 root="$ENGINES_DIR/$1/root" bin="$ENGINES_DIR/$1/bin"
	mkdir -p "$bin"
	if [ -x "$bin/runc" ] && [ "$bin/runc" -nt "$root/usr/sbin/runc" ]; then return; fi
	local loader
	loader="$(find "$root/usr/lib/x86_64-linux-gnu" "$root/lib/x86_64-linux-gnu" -maxdepth 1 -name 'ld-linux-x86-64.so.2' 2>/dev/null | head -n 1)"
	[ -n "$loader" ] || die "$name: no loader in $root"
	cp "$root/usr/sbin/runc" "$bin/runc.new"
	patchelf --set-interpreter "$loader" \
		--set-rpath "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" "$bin/runc.new"
	mv "$bin/runc.new" "$bin/runc"
	"$bin/runc" --version >/dev/null || die "$name: the patched runc does not run"
}

make_bridge() {
	local name address
	read -r name address < <(bridge_of "$1")
	if ! ip link show "$name" >/dev/null 2>&1; then
		ip link add "$name" type bridge
	fi
	# `replace` is idempotent; a `show | grep -q` test is not under pipefail (grep leaving
	# early makes `ip` die of SIGPIPE, and the address was then added twice).
	ip addr replace "$address" dev "$name"
	ip link set "$name" up
}

# Starts `$@` detached with the engine's PATH, logging to $log, and waits for `check`.
launch() {
	local name=$1 log=$2 check=$3
	shift 3
	local root="$ENGINES_DIR/$name/root"
	PATH="$ENGINES_DIR/$name/bin:$root/usr/sbin:$root/usr/bin:$root/sbin:$root/bin:$PATH" \
		setsid "$@" >>"$log" 2>&1 </dev/null &
	local pid=$! deadline=$((SECONDS + ENGINE_TIMEOUT))
	until $check; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$log" >&2 || true
			die "$name: $(basename "$1") exited during start-up; see $log"
		fi
		[ $SECONDS -lt $deadline ] || die "$name: $(basename "$1") not up within ${ENGINE_TIMEOUT}s; see $log"
		sleep 0.2
	done
}

up_one() {
	local name=$1
	bridge_of "$name" >/dev/null
	if answers "$name"; then say "$name: answers on $(endpoint_of "$name")"; return; fi
	local dir="$ENGINES_DIR/$name" run="$RUN_BASE/$name"
	mkdir -p "$dir" "$run"
	make_root "$name"
	patch_runc "$name"
	make_bridge "$name"
	local root="$dir/root" bridge
	bridge="$(bridge_of "$name" | cut -d' ' -f1)"
	cat >"$dir/containerd.toml" <<-EOF
		version = 2
		root = "$dir/containerd"
		state = "$run/containerd-state"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$run/containerd.sock"
		[ttrpc]
		  address = "$run/containerd.sock.ttrpc"
		[debug]
		  address = "$run/containerd-debug.sock"
	EOF
	# The host's crun as a second runtime, as the default dockerd has it (RuntimeClass).
	echo '{"runtimes": {"crun": {"path": "/usr/bin/crun"}}}' >"$dir/daemon.json"
	if ! [ -S "$run/containerd.sock" ] || ! pgrep -f -- "--config $dir/containerd.toml" >/dev/null; then
		say "$name: starting containerd"
		rm -f "$run/containerd.sock"
		containerd_up() { [ -S "$run/containerd.sock" ]; }
		launch "$name" "$dir/containerd.log" containerd_up \
			"$root/usr/bin/containerd" --config "$dir/containerd.toml"
	fi
	say "$name: starting dockerd"
	dockerd_up() { answers "$name"; }
	launch "$name" "$dir/dockerd.log" dockerd_up \
		"$root/usr/sbin/dockerd" \
		--config-file "$dir/daemon.json" \
		--host "$(endpoint_of "$name")" \
		--data-root "$dir/data" \
		--exec-root "$run/exec" \
		--pidfile "$run/docker.pid" \
		--containerd "$run/containerd.sock" \
		--bridge "$bridge" \
		--iptables=false --ip6tables=false \
		--live-restore
	say "$name: Docker $(docker --host "$(endpoint_of "$name")" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') on $(endpoint_of "$name")"
}

# Stops the process whose PID file is $1 (or that matches $2), waiting up to ENGINE_TIMEOUT.
stop_process() {
	local pid_file=$1 pattern=$2 pid=""
	[ -s "$pid_file" ] && pid="$(cat "$pid_file")"
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || pid="$(pgrep -f -- "$pattern" | head -n 1 || true)"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	local deadline=$((SECONDS + ENGINE_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		[ $SECONDS -lt $deadline ] || { kill -KILL "$pid" 2>/dev/null || true; break; }
		sleep 0.2
	done
}

down_one() {
	local name=$1 dir="$ENGINES_DIR/$1" run="$RUN_BASE/$1"
	bridge_of "$name" >/dev/null
	say "$name: stopping"
	# dockerd runs with --live-restore: its containers would outlive it, so they go first.
	if answers "$name"; then
		docker --host "$(endpoint_of "$name")" ps -q |
			xargs -r docker --host "$(endpoint_of "$name")" rm -f >/dev/null || true
	fi
	stop_process "$run/docker.pid" "--data-root $dir/data"
	stop_process /dev/null "--config $dir/containerd.toml"
	# What the daemons leave mounted (dockerd's network namespace file), deepest first.
	local m
	for m in $(awk -v run="$run/" -v data="$dir/" 'index($2, run) == 1 || index($2, data) == 1 {print $2}' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

cmd="${1:-}"
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ENGINES[@]}")
case "$cmd" in
up)
	ensure_tools
	for n in "${names[@]}"; do up_one "$n"; done
	;;
down) for n in "${names[@]}"; do down_one "$n"; done ;;
endpoint)
	[ ${#names[@]} -eq 1 ] || die "usage: $0 endpoint NAME"
	bridge_of "${names[0]}" >/dev/null
	endpoint_of "${names[0]}"
	;;
list) printf '%s\n' "${ENGINES[@]}" ;;
*) die "usage: $0 up|down [NAME...] | endpoint NAME | list" ;;
esac
