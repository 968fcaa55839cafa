#!/usr/bin/env bash
# A cgroup v2 node for the tests, as today's kubelets demand (1.35+ refuse cgroup v1): a
# Debian 12 VM with systemd as PID 1, Debian's kernel, docker.io 20.10 with the systemd cgroup
# driver and crun beside runc, booted under QEMU. As root:
#   contrib/cgroup2-vm.sh image             build the VM's disk, kernel and initrd under
#                                            $VM_DIR, once (idempotent: a built image is kept)
#   contrib/cgroup2-vm.sh run EXE [ARG...]  boot a fresh copy of the image, run the test
#                                            executable EXE of this tree with ARGs inside (after
#                                            contrib/setup.sh without building), print what it
#                                            printed and exit with its status (a failed
#                                            test's kept logs are copied to the results folder,
#                                            which a failed run keeps)
# The tree is shared with the VM (9p) at the same path, so a test executable built here finds
# its binaries and sources inside as it does here; the VM writes only its results folder. The
# VM is stopped however this script ends: it never outlives a run. KVM is tried first where
# /dev/kvm exists; where the kernel has not printed its banner within KVM_PROBE seconds (a
# nested hypervisor that cannot run it, as these machines' PVM cannot), the VM is stopped and
# booted again under TCG, which takes about 20 s to boot on a quiet machine.
# Environment: VM_DIR (default /var/lib/dockpod-engines/cgroup2), DEBIAN_MIRROR
# (http://deb.debian.org/debian), VM_TIMEOUT (seconds for one run, 3600), VM_MEMORY (MiB,
# 4096), VM_ACCEL (kvm or tcg: only that one), KVM_PROBE (seconds, 20).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
VM_DIR="${VM_DIR:-/var/lib/dockpod-engines/cgroup2}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
VM_TIMEOUT="${VM_TIMEOUT:-3600}"
VM_MEMORY="${VM_MEMORY:-4096}"
KVM_PROBE="${KVM_PROBE:-20}"
DISK_SIZE=8G
# What contrib/setup.sh wants (so it installs nothing inside), the kernel and init, D-Bus (the
# systemd cgroup driver talks to systemd through it), AppArmor's parser (Debian's kernel has
# AppArmor on, and Docker loads its default profile with it), crun, and git (a test compares
# `--version` with the tree's commit).
PACKAGES=systemd,systemd-sysv,dbus,udev,kmod,apparmor,git,linux-image-amd64,docker.io,crun,protobuf-compiler,busybox-static,containernetworking-plugins,docker-registry,iproute2,iptables,python3,python3-venv,e2fsprogs,debootstrap,procps,ca-certificates
# Bumped when the image's recipe changes, so a kept image of an older recipe is built anew.
RECIPE=5

say() { printf 'cgroup2-vm: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"

# Debian 12's own qemu-system-x86 conflicts with the backports qemu-utils these machines
# have: both come from bookworm-backports.
ensure_tools() {
	command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
	command -v mkfs.ext4 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q e2fsprogs >/dev/null
	if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then return; fi
	local list=/etc/apt/sources.list.d/dockpod-bookworm-backports.list
	if ! apt-cache policy 2>/dev/null | grep -q bookworm-backports; then
		say "adding bookworm-backports to apt's sources ($list) for QEMU"
		echo "deb $DEBIAN_MIRROR bookworm-backports main" >"$list"
	fi
	apt-get update -qq
	say "installing qemu-system-x86 and qemu-utils from bookworm-backports"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
}

image_ready() { [ "$(cat "$VM_DIR/recipe" 2>/dev/null)" = "$RECIPE" ]; }

build_image() {
	image_ready && { say "image ready in $VM_DIR"; return; }
	ensure_tools
	local root="$VM_DIR/root"
	rm -rf "$VM_DIR"
	mkdir -p "$root"
	say "debootstrapping Debian 12 into $root"
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" \
		>"$VM_DIR/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$VM_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
	echo dockpod-cgroup2 >"$root/etc/hostname"
	printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
	mkdir -p "$root/etc/docker"
	cat >"$root/etc/docker/daemon.json" <<-EOF
		{
		  "exec-opts": ["native.cgroupdriver=systemd"],
		  "live-restore": true,
		  "runtimes": {"crun": {"path": "/usr/bin/crun"}}
		}
	EOF
	# udev gives every new link a persistent MAC of its own (systemd's default
	# MACAddressPolicy), racing CNI's bridge plugin, whose CHECK then finds the veth's MAC
	# changed: nodes turn it off, as here.
	mkdir -p "$root/etc/systemd/network"
	printf '[Match]\nOriginalName=*\n\n[Link]\nMACAddressPolicy=none\n' \
		>"$root/etc/systemd/network/99-default.link"
	# The run: the tree and the results folder from the host, the job the host wrote, then
	# power off whatever happened.
	cat >"$root/usr/local/sbin/dockpod-vm-job" <<-'EOF'
		#!/bin/sh
		tree="$(sed -n 's/.*dockpod.tree=\([^ ]*\).*/\1/p' /proc/cmdline)"
		mkdir -p /mnt/results "$tree"
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 results /mnt/results || exit 1
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,cache=loose tree "$tree" || exit 1
		echo started >/mnt/results/started
		sh /mnt/results/job.sh >/mnt/results/output.log 2>&1
		echo $? >/mnt/results/rc
		# The results mount writes through (no cache); the disk is thrown away after the run.
		poweroff -f
	EOF
	chmod 0755 "$root/usr/local/sbin/dockpod-vm-job"
	cat >"$root/etc/systemd/system/dockpod-vm-job.service" <<-'EOF'
		[Unit]
		Description=dockpod test job from the host
		After=docker.service
		Wants=docker.service
		[Service]
		Type=oneshot
		ExecStart=/usr/local/sbin/dockpod-vm-job
		SuccessAction=poweroff-force
		FailureAction=poweroff-force
		[Install]
		WantedBy=multi-user.target
	EOF
	chroot "$root" systemctl enable dockpod-vm-job.service >/dev/null 2>&1
	# Nothing waits for a network the VM does not have.
	chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
	cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)" "$VM_DIR/vmlinuz"
	cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)" "$VM_DIR/initrd.img"
	say "making the disk ($DISK_SIZE, ext4)"
	mkfs.ext4 -q -F -L dockpod-root -d "$root" "$VM_DIR/disk.raw" "$DISK_SIZE"
	rm -rf "$root"
	echo "$RECIPE" >"$VM_DIR/recipe"
	say "image ready in $VM_DIR"
}

qemu_pid=""
stop_vm() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill -KILL "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
}

# Boots the image with accelerator $1 (kvm or tcg) and waits for the VM to power off or for
# the time limit; the run's folder is $2.
boot() {
	local accel=$1 run=$2 cpu=()
	[ "$accel" = kvm ] && cpu=(-cpu host)
	rm -f "$run/disk.qcow2" "$run/results/started" "$run/results/rc"
	qemu-img create -q -f qcow2 -b "$VM_DIR/disk.raw" -F raw "$run/disk.qcow2"
	qemu-system-x86_64 -machine q35 -accel "$accel" "${cpu[@]}" -smp 2 -m "$VM_MEMORY" \
		-nographic -monitor none -serial "file:$run/console-$accel.log" -no-reboot \
		-kernel "$VM_DIR/vmlinuz" -initrd "$VM_DIR/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 dockpod.tree=$repo" \
		-drive "file=$run/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
		-virtfs "local,path=$repo,mount_tag=tree,security_model=none" \
		-virtfs "local,path=$run/results,mount_tag=results,security_model=none" \
		>"$run/qemu-$accel.log" 2>&1 &
	qemu_pid=$!
	local deadline=$((SECONDS + VM_TIMEOUT)) probe=$((SECONDS + KVM_PROBE))
	while kill -0 "$qemu_pid" 2>/dev/null; do
		if [ "$accel" = kvm ] && [ $SECONDS -ge $probe ] && [ $probe -gt 0 ]; then
			if ! grep -q 'Linux version' "$run/console-$accel.log" 2>/dev/null; then
				say "the kernel printed nothing within ${KVM_PROBE}s under KVM; stopping it"
				stop_vm
				return 0
			fi
			probe=0
		fi
		# The job's status is the run's end: a VM slow to power off is not waited for long.
		if [ -s "$run/results/rc" ] && [ $deadline -gt $((SECONDS + 30)) ]; then
			deadline=$((SECONDS + 30))
		fi
		if [ $SECONDS -ge $deadline ] && [ -s "$run/results/rc" ]; then
			stop_vm
			break
		fi
		if [ $SECONDS -ge $deadline ]; then
			say "the VM ($accel) did not finish within ${VM_TIMEOUT}s; stopping it"
			stop_vm
			return 1
		fi
		sleep 1
	done
	wait "$qemu_pid" || true
	qemu_pid=""
}

run_job() {
	[ $# -ge 1 ] || die "usage: $0 run EXE [ARG...]"
	local exe
	exe="$(realpath "$1")"
	shift
	case "$exe" in "$repo"/*) ;; *) die "$exe is not inside the tree $repo" ;; esac
	image_ready || build_image
	ensure_tools
	local run
	run="$(mktemp -d "${TMPDIR:-/tmp}/dockpod-cgroup2-vm.XXXXXX")"
	mkdir -p "$run/results"
	# Expanded now: `run` is this function's, gone when the trap runs at the script's end.
	trap "stop_vm; rm -f '$run/disk.qcow2'" EXIT
	{
		echo "set -e"
		echo "cd '$repo'"
		echo "echo \"cgroup: \$(stat -fc %T /sys/fs/cgroup), docker cgroup driver: \$(docker info --format '{{.CgroupDriver}}')\""
		echo "SKIP_BUILD=1 bash contrib/setup.sh"
		echo "set +e"
		printf " '%s'" "$exe" "$@"
		echo
		# A failed test keeps its front's and shims' logs in the VM's /tmp (see the tests'
		# Front): copied out with the results, which the host keeps when the job fails.
		echo "rc=\$?"
		echo "for kept in /tmp/dockpod-failed-*; do [ -d \"\$kept\" ] && cp -r \"\$kept\" /mnt/results/; done"
		echo "exit \$rc"
	} >"$run/results/job.sh"
	local accels=(tcg) accel
	if [ -n "${VM_ACCEL:-}" ]; then
		accels=("$VM_ACCEL")
	elif [ -w /dev/kvm ]; then
		accels=(kvm tcg)
	fi
	for accel in "${accels[@]}"; do
		say "booting ($accel; console: $run/console-$accel.log)"
		local started=$SECONDS
		boot "$accel" "$run" || break
		if [ -e "$run/results/started" ]; then
			say "the VM ran the job ($accel) in $((SECONDS - started))s"
			break
		fi
		say "the VM ($accel) stopped before the job began: $(tail -n 3 "$run/qemu-$accel.log" | tr '\n' ' ')"
	done
	cat "$run/results/output.log" 2>/dev/null || true
	[ -s "$run/results/rc" ] || die "the job did not finish; see $run"
	local rc
	rc="$(cat "$run/results/rc")"
	if [ "$rc" = 0 ]; then
		rm -rf "$run"
		say "job exit status 0"
	else
		say "job exit status $rc (console and results kept in $run)"
	fi
	return "$rc"
}

cmd="${1:-}"
shift || true
case "$cmd" in
image) build_image ;;
run) run_job "$@" ;;
*) die "usage: $0 image | run EXE [ARG...]" ;;
esac
