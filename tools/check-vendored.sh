#!/usr/bin/env bash
# Compares a vendored crate (vendor/burn-flex, vendor/burn-collective) with the crates.io release
# it patches and fails on any change that its FSCT.md does not account for, so that upgrading
# Burn starts from an exact list.
#
#   tools/check-vendored.sh [--crate NAME] [STOCK_DIR]
#
# NAME: the folder under vendor/ and the crate's name (default burn-flex).
# STOCK_DIR (or $FSCT_STOCK_FLEX for burn-flex): the unpacked crates.io sources. Without it the
# script takes them from cargo's registry cache, fetching them first if needed: while the
# workspace patches the crate, cargo never downloads the stock one, so a throw-away project in a
# temporary directory depends on `NAME = "=<version>"` and runs `cargo fetch` (crates.io).
#
# Rules, file by file (paths relative to the crate root):
# - every file that differs from stock (modified, new, or removed) has a row in FSCT.md's table
#   (the first `backticked` path of a row that starts with "| `"), and every row names a file
#   that differs: the list is exact both ways;
# - in a modified file, every change carries an `fsct:` marker: diff -U0 splits the file into
#   changes, each change's added lines into paragraphs (at blank lines), and each paragraph needs
#   `fsct:` in its lines or in the 3 lines above it (a removal: within 3 lines of where it was);
# - a new file names fsct in its first 5 lines (it is fsct's as a whole);
# - exempt: FSCT.md itself, cargo's unpack markers (.cargo-ok, .cargo_vcs_info.json), and
#   Cargo.lock's content (resolved output: listed, not marked).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
name=burn-flex
if [ "${1:-}" = --crate ]; then
    name=${2:?--crate needs a crate name}
    shift 2
fi
vendor=$repo/vendor/$name
[ -d "$vendor" ] || { echo "check-vendored: no folder $vendor" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$vendor/Cargo.toml" | head -n 1)

fail() {
    echo "check-vendored ($name): $*" >&2
    exit 1
}

[ -n "$version" ] || fail "no version in $vendor/Cargo.toml"

stock=${1:-}
[ -n "$stock" ] || [ "$name" != burn-flex ] || stock=${FSCT_STOCK_FLEX:-}
if [ -z "$stock" ]; then
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    find_stock() { ls -d "$cargo_home"/registry/src/*/"$name-$version" 2>/dev/null | head -n 1; }
    stock=$(find_stock || true)
    if [ -z "$stock" ]; then
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
        mkdir -p "$scratch/src"
        printf '[package]\nname = "fetch-stock"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = { version = "=%s", default-features = false }\n\n[workspace]\n' \
            "$name" "$version" >"$scratch/Cargo.toml"
        : >"$scratch/src/lib.rs"
        host=$(rustc -vV | sed -n 's/^host: //p')
        echo "check-vendored ($name): fetching stock $name $version from crates.io"
        cargo fetch --quiet --manifest-path "$scratch/Cargo.toml" --target "$host" ||
            fail "could not fetch $name $version (network to crates.io needed, or pass STOCK_DIR)"
        stock=$(find_stock || true)
        [ -n "$stock" ] || fail "cargo fetched $name $version but it is not under $cargo_home/registry/src"
    fi
fi
[ -f "$stock/Cargo.toml" ] || fail "$stock holds no crate sources"

# Relative paths of a crate's files, without build output and cargo's unpack markers.
files_of() {
    (cd "$1" && find . -path ./target -prune -o -type f -print | sed 's|^\./||' |
        grep -Ev '^(\.cargo-ok|\.cargo_vcs_info\.json)$' | LC_ALL=C sort)
}

# The files FSCT.md's table lists.
listed=$(sed -n 's/^| *`\([^`]*\)`.*/\1/p' "$vendor/FSCT.md" | LC_ALL=C sort -u)

changed=()  # "kind path", kind: modified, new, removed
while read -r kind path; do
    changed+=("$kind $path")
done < <(
    LC_ALL=C comm -23 <(files_of "$stock") <(files_of "$vendor") | sed 's/^/removed /'
    LC_ALL=C comm -13 <(files_of "$stock") <(files_of "$vendor") | sed 's/^/new /'
    LC_ALL=C comm -12 <(files_of "$stock") <(files_of "$vendor") | while read -r path; do
        cmp -s "$stock/$path" "$vendor/$path" || echo "modified $path"
    done
)

problems=0
problem() {
    echo "check-vendored ($name): $*" >&2
    problems=$((problems + 1))
}

# Every change of a modified file needs an `fsct:` marker (see the rules above).
check_markers() {
    local path=$1
    awk -v file="$path" '
        NR == FNR { text[FNR] = $0; lines = FNR; next }
        function marked(from, to,   i) {
            if (from < 1) from = 1
            for (i = from; i <= to && i <= lines; i++) if (index(text[i], "fsct:")) return 1
            return 0
        }
        function flush(   i) {
            if (first && !marked(first - 3, last)) {
                bad++
                printf "check-vendored: %s: lines %d-%d differ from stock without an `fsct:` marker (in them or the 3 lines above):\n", file, first, last > "/dev/stderr"
                for (i = first; i <= last; i++) printf "    %5d | %s\n", i, text[i] > "/dev/stderr"
            }
            first = 0
        }
        /^@@ / {
            flush(); in_hunks = 1
            split(substr($3, 2), range, ",")
            at = range[1] + 0
            count = (range[2] == "") ? 1 : range[2] + 0
            if (count == 0 && !marked(at - 2, at + 3)) {
                bad++
                printf "check-vendored: %s: lines removed after line %d without an `fsct:` marker within 3 lines\n", file, at > "/dev/stderr"
            }
            next
        }
        !in_hunks { next }
        /^\+/ {
            if (substr($0, 2) ~ /^[ \t]*$/) flush()
            else { if (!first) first = at; last = at }
            at++
            next
        }
        END { flush(); exit bad }
    ' "$vendor/$path" <(diff -U0 "$stock/$path" "$vendor/$path" || true)
}

for entry in "${changed[@]}"; do
    kind=${entry%% *}
    path=${entry#* }
    [ "$path" = FSCT.md ] && continue
    if ! grep -qxF -- "$path" <<<"$listed"; then
        problem "$path is $kind relative to stock $name $version but FSCT.md's table does not list it"
    fi
    case "$kind:$path" in
        modified:Cargo.lock) ;;
        modified:*) check_markers "$path" || problems=$((problems + $?)) ;;
        new:*) head -n 5 "$vendor/$path" | grep -q fsct || problem "$path is new but names fsct nowhere in its first 5 lines" ;;
    esac
done

while read -r path; do
    [ -n "$path" ] || continue
    printf '%s\n' "${changed[@]}" | grep -qxE -- "(modified|new|removed) $(sed 's/[.[\*^$]/\\&/g' <<<"$path")" ||
        problem "FSCT.md lists $path but it is identical to stock $name $version (or absent from both): drop the row"
done <<<"$listed"

if [ "$problems" -gt 0 ]; then
    echo "check-vendored ($name): $problems problem(s) against stock $name $version at $stock" >&2
    exit 1
fi
echo "check-vendored ($name): ok: vendor/$name differs from stock $name $version in exactly the $(grep -c . <<<"$listed") files FSCT.md lists, every change marked fsct:"
