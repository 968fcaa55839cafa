#!/usr/bin/env bash
# Brings the upstream CRI definition (kubernetes/cri-api's pkg/apis/runtime/v1/api.proto)
# from Debian's package golang-k8s-cri-api-dev into a folder of the build's own, where
# proto/build.rs generates dockpod's CRI bindings from it:
#   contrib/cri-api.sh DIR    leaves DIR/api.proto and DIR/VERSION (the package's upstream
#                             version, e.g. 0.36.4)
# The package comes from Debian unstable (the suite that carries the CRI of today's kubelets),
# fetched with apt-get into DIR's own apt state: nothing of the machine's apt configuration
# or package database is read or changed, and nothing is installed. A package older than the
# version pinned in proto/cri-api.version is refused. DIR is replaced as a whole, so a build
# never sees half of it.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), CRI_API_SUITE (unstable).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CRI_API_SUITE="${CRI_API_SUITE:-unstable}"
PACKAGE=golang-k8s-cri-api-dev
PROTO_IN_PACKAGE=usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto

say() { printf 'cri-api: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DIR"
dir="$(realpath -m "$1")"
pinned="$(tr -d '[:space:]' <"$repo/proto/cri-api.version")"
[ -n "$pinned" ] || die "proto/cri-api.version is empty"
for tool in apt-get dpkg-deb dpkg; do
	command -v "$tool" >/dev/null || die "$tool is missing (a Debian machine has it)"
done

work="$(mktemp -d "$(dirname "$dir")/.cri-api.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/out"
printf 'deb %s %s main\n' "$DEBIAN_MIRROR" "$CRI_API_SUITE" >"$work/apt/sources.list"
apt_options=(
	-o "Dir::Etc::SourceList=$work/apt/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=$work/apt/lists"
	-o "Dir::State::Status=/dev/null"
	-o "Dir::Cache=$work/apt/cache"
	-o "Debug::NoLocking=true"
	# Root's downloads would otherwise run as _apt, which cannot write a private folder.
	-o "APT::Sandbox::User=$(id -un)"
)
say "fetching $PACKAGE from Debian $CRI_API_SUITE"
apt-get "${apt_options[@]}" -qq update >"$work/apt.log" 2>&1 ||
	{ cat "$work/apt.log" >&2; die "apt-get update of $CRI_API_SUITE failed"; }
(cd "$work" && apt-get "${apt_options[@]}" -qq download "$PACKAGE" >>"$work/apt.log" 2>&1) ||
	{ cat "$work/apt.log" >&2; die "apt-get download $PACKAGE failed"; }
deb="$(find "$work" -maxdepth 1 -name "${PACKAGE}_*.deb" | head -n 1)"
[ -n "$deb" ] || die "no $PACKAGE package was downloaded"

version="$(dpkg-deb -f "$deb" Version)"
# The upstream version: no epoch, no Debian revision, no repack suffix.
upstream="${version#*:}"
upstream="${upstream%-*}"
upstream="${upstream%%[+~]*}"
dpkg --compare-versions "$upstream" ge "$pinned" ||
	die "$PACKAGE $version is older than the pinned cri-api $pinned (proto/cri-api.version)"

dpkg-deb -x "$deb" "$work/root"
[ -s "$work/root/$PROTO_IN_PACKAGE" ] || die "$PACKAGE $version has no $PROTO_IN_PACKAGE"
cp "$work/root/$PROTO_IN_PACKAGE" "$work/out/api.proto"
printf '%s\n' "$upstream" >"$work/out/VERSION"
rm -rf "$dir"
mv "$work/out" "$dir"
say "cri-api $upstream ($PACKAGE $version) in $dir"
