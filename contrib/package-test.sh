#!/usr/bin/env bash
# Installs dockpod's Debian package into a fresh Debian 12 root, as root, and checks it the way
# an operator meets it; exits non-zero at the first check that fails:
#   1. `dpkg -i`: every file where it belongs and owned by the package, the defaults file a
#      conffile, the man pages and the bash, zsh and fish completions readable, the units
#      valid (systemd-analyze verify) and enabled nowhere (the host's systemctl reads the
#      root offline), `shim-manager --version` naming this tree's commit and its cri-api,
#      `doctor --help`;
#   2. a reinstall over it (the upgrade path): a changed /etc/default/dockpod is kept;
#   3. `dpkg -r`: the package's files gone but the conffile, the front said stopped;
#   4. `dpkg -P`: nothing of the package left, and what state stays behind said.
# The pristine root is debootstrapped once into $ENGINES_DIR/bookworm (Debian 12 minbase with
# systemd) and
# copied for every run, so each run installs into a root nothing was installed into before.
# Environment: ENGINES_DIR (default /var/lib/dockpod-engines), DEBIAN_MIRROR (default
# http://deb.debian.org/debian), SKIP_BUILD (default 1: the binaries are built; 0 builds them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
ENGINES_DIR="${ENGINES_DIR:-/var/lib/dockpod-engines}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
pristine="$ENGINES_DIR/bookworm"

say() { printf 'package-test: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it debootstraps and chroots)"
command -v debootstrap >/dev/null || fail "debootstrap is missing (bash contrib/setup.sh installs it)"

deb="$(SKIP_BUILD="${SKIP_BUILD:-1}" bash "$here/package.sh")"
say "package: $deb"

if [ ! -f "$pristine/debootstrapped" ]; then
	say "debootstrapping Debian 12 (bookworm, minbase) into $pristine/root"
	rm -rf "$pristine"
	mkdir -p "$pristine"
	# The machine's clock may be past the suite's Valid-Until; the packages are still
	# verified against the archive's keys.
	# With systemd, as on a node: its units are what dockpod's are verified against.
	debootstrap --variant=minbase --include=systemd --components=main bookworm "$pristine/root" "$DEBIAN_MIRROR" \
		>"$pristine/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$pristine/debootstrap.log" >&2; fail "debootstrap failed"; }
	touch "$pristine/debootstrapped"
fi

root="$(mktemp -d /var/tmp/dockpod-package.XXXXXX)"
trap 'rm -rf "$root"' EXIT
cp -a "$pristine/root/." "$root/"
cp "$deb" "$root/tmp/dockpod.deb"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

say "dpkg -i"
out="$(in_root dpkg -i /tmp/dockpod.deb 2>&1)" || { printf '%s\n' "$out" >&2; fail "dpkg -i failed"; }
printf '%s\n' "$out" >&2
grep -q "installed and not enabled" <<<"$out" || fail "the first install does not say it enabled nothing"

pages=(shim-manager pod-shim)
for sub in serve doctor ps top inspect check demo upgrade-shims; do pages+=("shim-manager-$sub"); done
files=(/usr/bin/shim-manager /usr/bin/pod-shim /lib/systemd/system/dockpod.service
	/lib/systemd/system/dockpod.socket /etc/default/dockpod /usr/share/doc/dockpod/README.md
	/usr/share/doc/dockpod/copyright /usr/share/bash-completion/completions/shim-manager
	/usr/share/zsh/vendor-completions/_shim-manager
	/usr/share/fish/vendor_completions.d/shim-manager.fish)
for page in "${pages[@]}"; do files+=("/usr/share/man/man1/$page.1.gz"); done
for f in "${files[@]}"; do
	[ -f "$root$f" ] || fail "$f is not installed"
	in_root dpkg -S "$f" >/dev/null 2>&1 || fail "$f is not the package's"
done
for page in "${pages[@]}"; do
	zcat "$root/usr/share/man/man1/$page.1.gz" | grep -q "^\.TH $page 1" || fail "$page(1) is not a man page"
done
[ -x "$root/usr/bin/shim-manager" ] && [ -x "$root/usr/bin/pod-shim" ] || fail "the binaries are not executable"
in_root dpkg-query -W -f='${Conffiles}\n' dockpod | grep -q '^ /etc/default/dockpod ' ||
	fail "/etc/default/dockpod is not a conffile"
in_root bash -c 'source /usr/share/bash-completion/completions/shim-manager && complete -p shim-manager' \
	>/dev/null || fail "the bash completion does not complete shim-manager"
head -n 1 "$root/usr/share/zsh/vendor-completions/_shim-manager" | grep -q '^#compdef shim-manager' ||
	fail "the zsh completion does not declare shim-manager"
grep -q '^complete -c shim-manager' "$root/usr/share/fish/vendor_completions.d/shim-manager.fish" ||
	fail "the fish completion does not complete shim-manager"

unit="$root/lib/systemd/system/dockpod.service"
grep -qx 'ExecStart=/usr/bin/shim-manager serve $DOCKPOD_OPTS' "$unit" || fail "dockpod.service does not start /usr/bin/shim-manager"
grep -qx 'EnvironmentFile=-/etc/default/dockpod' "$unit" || fail "dockpod.service does not read /etc/default/dockpod"
grep -qx 'KillMode=process' "$unit" || fail "stopping dockpod.service would stop the pods"
# Offline, against the root's files: the units must parse and their binaries exist there.
if ! verified="$(systemd-analyze verify --root="$root" dockpod.service dockpod.socket 2>&1)" ||
	[ -n "$verified" ]; then
	printf '%s\n' "$verified" >&2
	fail "systemd-analyze verify found fault with the units"
fi
for u in dockpod.service dockpod.socket; do
	state="$(systemctl --root="$root" is-enabled "$u" 2>/dev/null || true)"
	[ "$state" = disabled ] || fail "$u is $state after install, not disabled"
done
if compgen -G "$root/etc/systemd/system/*/dockpod.*" >/dev/null; then fail "the install enabled a unit"; fi
# The README's `systemctl enable --now dockpod.socket dockpod.service`, offline: both units
# enable (their [Install] sections are sound), and disable again for the steps below.
systemctl --root="$root" enable dockpod.socket dockpod.service >/dev/null 2>&1 ||
	fail "systemctl enable dockpod.socket dockpod.service failed"
for u in dockpod.service dockpod.socket; do
	state="$(systemctl --root="$root" is-enabled "$u" 2>/dev/null || true)"
	[ "$state" = enabled ] || fail "$u is $state after systemctl enable"
done
systemctl --root="$root" disable dockpod.socket dockpod.service >/dev/null 2>&1 ||
	fail "systemctl disable dockpod.socket dockpod.service failed"

commit="$(git -C "$repo" rev-parse --short=12 HEAD)"
cri="$(cat "$repo/target/cri-api/VERSION")"
version="$(in_root shim-manager --version)"
[ "$version" = "shim-manager 0.1.0 (commit $commit, cri-api $cri)" ] ||
	fail "--version says '$version', not commit $commit and cri-api $cri"
in_root shim-manager doctor --help | grep -q -- '--kubelet-config' || fail "doctor --help lacks --kubelet-config"
in_root pod-shim --version >/dev/null || fail "pod-shim does not run"
say "installed: $version"

say "reinstall (the upgrade path) keeps a changed defaults file"
echo 'DOCKPOD_LOG_LEVEL=debug' >>"$root/etc/default/dockpod"
out="$(in_root dpkg -i /tmp/dockpod.deb 2>&1)" || { printf '%s\n' "$out" >&2; fail "the reinstall failed"; }
grep -qx 'DOCKPOD_LOG_LEVEL=debug' "$root/etc/default/dockpod" || fail "the reinstall lost /etc/default/dockpod's change"
grep -q "installed and not enabled" <<<"$out" && fail "an upgrade repeats the first-install note"

mapfile -t owned < <(in_root dpkg -L dockpod)
say "dpkg -r"
out="$(in_root dpkg -r dockpod 2>&1)" || { printf '%s\n' "$out" >&2; fail "dpkg -r failed"; }
printf '%s\n' "$out" >&2
grep -q "the front is stopped" <<<"$out" || fail "removal does not say the front stopped"
[ -e "$root/usr/bin/shim-manager" ] && fail "removal left /usr/bin/shim-manager"
[ -f "$root/etc/default/dockpod" ] || fail "removal (not purge) took the conffile"

say "dpkg -P"
out="$(in_root dpkg -P dockpod 2>&1)" || { printf '%s\n' "$out" >&2; fail "dpkg -P failed"; }
printf '%s\n' "$out" >&2
grep -q "Left in place" <<<"$out" || fail "purge does not say what state it leaves"
grep -q "io.dockpod.instance" <<<"$out" || fail "purge does not say how to find the pods' containers"
if in_root dpkg-query -W -f='${db:Status-Status}' dockpod 2>/dev/null | grep -qv '^not-installed$'; then
	fail "dockpod is still known to dpkg after purge"
fi
for f in "${owned[@]}"; do
	[ -d "$root$f" ] && continue
	[ -e "$root$f" ] && fail "purge left $f"
done
say "ok: installed, checked, reinstalled, removed and purged cleanly"
