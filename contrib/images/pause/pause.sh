#!/bin/sh
# dockpod's sandbox process. As PID 1 of the pod it holds the pod's namespaces open, reaps
# the zombies re-parented to it (ash's `wait` collects every exited child), and exits at once
# on SIGTERM or SIGINT.
child=
trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM INT
while :; do
	sleep 2147483647 &
	child=$!
	wait "$child"
done
