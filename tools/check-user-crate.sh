#!/usr/bin/env bash
# Builds tools/user-crate, a project outside the fsct workspace that depends on fsct-backbone by
# path and runs a Conv4 forward pass on Flex, the way a library user would, twice:
#   1. as is: cargo takes stock burn-flex from crates.io (the workspace's [patch.crates-io] does not
#      reach other projects), so fsct-backbone must warn at build time (cargo warning) and at run
#      time (tracing warning on the first forward pass);
#   2. with the [patch.crates-io] line the README gives users (passed here with --config): fsct's
#      kernels, and neither warning.
# Both builds use the workspace's target directory (override: FSCT_USER_CRATE_TARGET) with the
# workspace's dev profile and a copy of its Cargo.lock (generated, ignored by git): the registry
# crates CI already built are reused, and only burn-flex (stock, then patched), burn above it,
# fsct-backbone and the user crate itself build (cargo hashes a path package relative to its
# workspace root, so the workspace's own burn-flex and fsct-backbone builds are not reused).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
crate=$repo/tools/user-crate
export CARGO_TARGET_DIR=${FSCT_USER_CRATE_TARGET:-${CARGO_TARGET_DIR:-$repo/target}}
build_warning="burn-flex is the stock crates.io release"
run_warning="fsct-backbone runs on stock burn-flex"

fail() {
    echo "check-user-crate: $*" >&2
    exit 1
}

# Builds and runs the user crate with the given cargo arguments; prints and returns its output.
build_and_run() {
    cp "$repo/Cargo.lock" "$crate/Cargo.lock"
    local out
    out=$(cd "$crate" && cargo run "$@" 2>&1) || {
        printf '%s\n' "$out" | tail -n 40 >&2
        fail "the user crate did not build or run (cargo run $*)"
    }
    printf '%s\n' "$out" | grep -Ev '^ *(Compiling|Downloaded|Downloading|Locking|Adding|Updating) ' | sed 's/^/    /' >&2
    printf '%s\n' "$out"
}

echo "check-user-crate: 1. without the patch (stock burn-flex from crates.io)" >&2
out=$(build_and_run)
grep -qF "$build_warning" <<<"$out" ||
    fail "built against stock burn-flex, but fsct-backbone's build script printed no warning ('$build_warning')"
grep -qF "$run_warning" <<<"$out" ||
    fail "ran on stock burn-flex, but fsct-backbone logged no run-time warning ('$run_warning')"

echo "check-user-crate: 2. with [patch.crates-io] burn-flex = { path = \"$repo/vendor/burn-flex\" }" >&2
out=$(build_and_run --config "patch.crates-io.burn-flex.path=\"$repo/vendor/burn-flex\"")
if grep -qF -e "$build_warning" -e "$run_warning" <<<"$out"; then
    fail "built against fsct's burn-flex, yet fsct-backbone warned about stock Flex"
fi
echo "check-user-crate: ok: stock Flex is reported at build and run time; the patch silences both"
