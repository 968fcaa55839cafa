#!/usr/bin/env bash
# Starts or restarts the Docker daemon dockpod runs on, as root:
#   contrib/dockerd.sh start     start dockerd when none answers on its socket (idempotent)
#   contrib/dockerd.sh restart   stop the running dockerd and start it again with the same
#                                command line (the fault tests use it)
# dockerd runs with --live-restore, so that restarting it (an upgrade, a crash) leaves the
# containers running; dockpod's shims reconnect and carry on. It has Debian's crun as a second
# OCI runtime beside runc (--add-runtime), for RuntimeClass: a dockerd found running without
# it is restarted with it.
# Environment: DOCKER_SOCK (default /var/run/docker.sock), DOCKERD_TIMEOUT (seconds, 60).
# Log: /var/log/dockpod-dockerd.log.
set -euo pipefail

DOCKER_SOCK="${DOCKER_SOCK:-/var/run/docker.sock}"
DOCKERD_TIMEOUT="${DOCKERD_TIMEOUT:-60}"
DOCKERD_LOG=/var/log/dockpod-dockerd.log
DOCKERD_PIDFILE=/var/run/docker.pid

say() { printf 'dockerd: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"

docker_answers() {
	timeout 10 docker --host "unix://$DOCKER_SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Runs dockerd with the given arguments, detached, and waits until it answers.
launch() {
	say "starting dockerd (log: $DOCKERD_LOG)"
	# setsid: dockerd must outlive this script and the shell that ran it.
	setsid "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
	local pid=$! deadline=$((SECONDS + DOCKERD_TIMEOUT))
	until docker_answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$DOCKERD_LOG" >&2 || true
			die "dockerd exited during start-up; see $DOCKERD_LOG"
		fi
		[ $SECONDS -lt $deadline ] || die "dockerd did not answer on $DOCKER_SOCK within ${DOCKERD_TIMEOUT}s; see $DOCKERD_LOG"
		sleep 0.2
	done
	say "dockerd is up"
}

CRUN=/usr/bin/crun

has_crun() {
	timeout 10 docker --host "unix://$DOCKER_SOCK" info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"crun"'
}

start() {
	if docker_answers; then
		if has_crun || ! [ -s "$DOCKERD_PIDFILE" ]; then
			say "dockerd answers on $DOCKER_SOCK"
			return
		fi
		say "dockerd answers without the crun runtime; restarting it with crun"
		stop
	fi
	[ -x "$CRUN" ] || die "$CRUN is missing (package crun)"
	launch dockerd --host "unix://$DOCKER_SOCK" --live-restore --add-runtime "crun=$CRUN"
}

# Stops the running dockerd (its containers live on: --live-restore); its command line, NUL
# separated, in the array `argv`.
stop() {
	[ -s "$DOCKERD_PIDFILE" ] || die "no $DOCKERD_PIDFILE: dockerd is not running"
	local pid
	pid="$(cat "$DOCKERD_PIDFILE")"
	# The caller's `argv` (bash's dynamic scope).
	mapfile -d '' -t argv <"/proc/$pid/cmdline" || die "dockerd ($pid) is gone"
	[ ${#argv[@]} -gt 0 ] || die "cannot read the command line of dockerd ($pid)"
	say "stopping dockerd ($pid)"
	kill -TERM "$pid"
	# dockerd removes its pid file as the last step of its shutdown (its parent may not reap
	# it, so the process itself can linger as a zombie).
	local deadline=$((SECONDS + DOCKERD_TIMEOUT))
	while [ -e "$DOCKERD_PIDFILE" ]; do
		[ $SECONDS -lt $deadline ] || die "dockerd ($pid) did not stop within ${DOCKERD_TIMEOUT}s"
		sleep 0.1
	done
}

restart() {
	local -a argv
	stop
	launch "${argv[@]}"
}

case "${1:-}" in
start) start ;;
restart) restart ;;
*) die "usage: $0 start|restart" ;;
esac
