#!/usr/bin/env bash
# Builds dockpod's Debian package, target/debian/dockpod_<version>-1_<arch>.deb, and prints
# its path:
#   1. the release binaries (unless SKIP_BUILD=1);
#   2. the man pages and completions, from the binaries' clap definitions (dockpod-docs),
#      into target/release/dist, man pages compressed as Debian's policy wants;
#   3. the package, with cargo-deb (see [package.metadata.deb] in shim-manager/Cargo.toml);
#      `contrib/setup.sh` installs cargo-deb.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
dist="$repo/target/release/dist"

say() { printf 'package: %s\n' "$*" >&2; }

cd "$repo"
command -v cargo-deb >/dev/null || { say "error: cargo-deb is missing (bash contrib/setup.sh installs it)"; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	say "building release binaries"
	cargo build --release --locked --bins
fi
rm -rf "$dist"
cargo run --release --locked -q -p dockpod-contrib --bin dockpod-docs -- "$dist"
# -n: no name or time stamp inside, so the same pages compress to the same bytes.
gzip -9n "$dist"/man/*.1
say "building the package"
cargo deb --locked --no-build --no-strip -p shim-manager --output "$repo/target/debian/" 2>&1 | tail -n 1 >&2
ls -t "$repo"/target/debian/dockpod_*.deb | head -n 1
