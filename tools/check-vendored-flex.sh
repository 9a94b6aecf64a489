#!/usr/bin/env bash
# The vendored Flex against its crates.io release: tools/check-vendored.sh for burn-flex (kept
# under this name for the docs and scripts that call it).
exec "$(dirname "$0")/check-vendored.sh" --crate burn-flex "$@"
