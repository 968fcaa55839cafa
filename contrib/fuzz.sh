#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser that reads bytes a client, a
# CNI plugin or Docker sends: the crate in fuzz/, one target per parser.
#   bash contrib/fuzz.sh [SECONDS] [TARGET...]
# Runs each target (default: every one) for SECONDS (default 30) on the committed seeds
# (fuzz/seeds/<target>, real traffic and every input that once crashed) and the corpus earlier
# runs grew (target/fuzz/corpus/<target>). Fails at the first crash, timeout or memory blow-up,
# whose input is left in target/fuzz/artifacts/<target>/; that input then belongs in the seeds
# as regression-<what> with a unit test beside the parser. Prints the executions per target.
#
# Built on the stable toolchain without a sanitizer (-s none): the parsers are safe Rust, so
# what is hunted is panics (debug assertions and overflow checks on), hangs and memory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
seconds="${1:-30}"
shift || true
say() { printf 'fuzz: %s\n' "$*" >&2; }

cd "$repo/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
	say "installing cargo-fuzz"
	cargo install cargo-fuzz --locked --version 0.13.2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
build=(-s none --debug-assertions --target-dir "$repo/target/fuzz")
say "building ${#targets[@]} targets"
cargo fuzz build "${build[@]}"

summary=()
for target in "${targets[@]}"; do
	corpus="$repo/target/fuzz/corpus/$target"
	artifacts="$repo/target/fuzz/artifacts/$target/"
	mkdir -p "$corpus" "$artifacts"
	log="$repo/target/fuzz/$target.log"
	say "$target for ${seconds}s"
	# -timeout: one input that runs 30 s is a hang (the session target's own deadline is
	# 20 s); -rss_limit_mb: a parser that lets input size its memory shows as a blow-up.
	if ! cargo fuzz run "${build[@]}" "$target" "$corpus" "seeds/$target" -- \
		-max_total_time="$seconds" -timeout=30 -rss_limit_mb=1024 \
		-artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
		tail -n 40 "$log" >&2
		say "error: $target failed; its input is in $artifacts"
		exit 1
	fi
	runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
	summary+=("$target: ${runs:-?} executions in ${seconds}s, no crash")
done
printf 'fuzz: %s\n' "${summary[@]}" >&2
