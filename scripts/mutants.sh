#!/usr/bin/env bash
# Mutation testing of the pure core with cargo-mutants. NOT part of CI: run it
# by hand after changing these files or their tests, and commit the updated
# docs/mutants.md.
#
#   cargo install cargo-mutants --locked     # once; a dev tool, not a dependency
#   scripts/mutants.sh                       # every file below, one at a time
#   scripts/mutants.sh crates/scheduler/src/place.rs   # just one (or a few)
#
# Each file is mutated on its own (`--file`), and each mutant is tested with
# its own crate's tests only (`--package`; cargo-mutants then runs `cargo test
# --package CRATE`), one job at a time (`-j 1`) at the lowest priority, with a
# per-mutant test timeout: that is what makes a run finish on a 2-core machine
# shared with others (minutes for the controllers, tens of minutes for
# place.rs and for each berth-types file). Each crate's tests run in about a
# second, so the 30 s default timeout only ends mutants that loop forever
# (place.rs has several), and each of them costs those 30 s. cargo-mutants
# works on a copy of the tree in a temporary directory, never on the checkout
# itself.
#
# Prints caught / missed / timed out / unviable per file, and writes them as a
# row of the table in docs/mutants.md (the rows of the files not run this
# time are kept). Mutants that are known to be equivalent are listed, with
# their reason, under the table of that file by hand.
#
# Environment:
#   MUTANTS_TIMEOUT     per-mutant test timeout in seconds (default 30)
#   MUTANTS_JOBS        cargo-mutants jobs (default 1)
#   MUTANTS_TARGET_DIR  cargo target dir for the mutant builds, kept between
#                       runs so only the workspace crates rebuild (default
#                       target/mutants-build)
#   MUTANTS_OUT         where each file's mutants.out goes (default
#                       target/mutants-out/<file path with - for />)
#   MUTANTS_ARGS        extra cargo-mutants arguments (e.g. "-F is_complete")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

FILES=(
    crates/types/src/state/tasks.rs
    crates/types/src/state/services.rs
    crates/types/src/service.rs
    crates/scheduler/src/place.rs
    crates/controllers/src/services.rs
    crates/controllers/src/liveness.rs
    crates/controllers/src/scheduling.rs
)
if [ $# -gt 0 ]; then
    FILES=("$@")
fi

TIMEOUT=${MUTANTS_TIMEOUT:-30}
JOBS=${MUTANTS_JOBS:-1}
OUT=${MUTANTS_OUT:-$ROOT/target/mutants-out}
DOC=$ROOT/docs/mutants.md
# Builds of the copies share one target dir: registry crates build once.
export CARGO_TARGET_DIR=${MUTANTS_TARGET_DIR:-$ROOT/target/mutants-build}
# Line tables only cost link time here; nothing is debugged.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants.sh: cargo-mutants is missing: cargo install cargo-mutants --locked" >&2
    exit 1
fi

commit=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- crates; then
    commit="$commit+dirty"
fi
today=$(date -u +%Y-%m-%d)

count() { # lines in a mutants.out list, 0 when absent
    if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi
}

# The package of a file: the name in the Cargo.toml of its crates/X.
package_of() {
    local crate_dir
    crate_dir=$(echo "$1" | cut -d/ -f1-2)
    sed -n 's/^name *= *"\(.*\)"/\1/p' "$crate_dir/Cargo.toml" | head -n 1
}

# Replaces (or adds) the table row of a file in docs/mutants.md.
write_row() {
    local file=$1 row=$2
    if [ ! -f "$DOC" ] || ! grep -q '^<!-- mutants-table:end -->' "$DOC"; then
        echo "mutants.sh: $DOC has no table markers; row not written:" >&2
        echo "$row" >&2
        return
    fi
    local tmp
    tmp=$(mktemp)
    awk -v file="\`$file\`" -v row="$row" '
        /^<!-- mutants-table:start -->/ { inside = 1; print; next }
        /^<!-- mutants-table:end -->/ {
            if (!done) print row
            inside = 0; print; next
        }
        inside && index($0, "| " file " |") == 1 {
            if (!done) print row
            done = 1; next
        }
        { print }
    ' "$DOC" >"$tmp"
    mv "$tmp" "$DOC"
}

status=0
summary=()
for file in "${FILES[@]}"; do
    if [ ! -f "$file" ]; then
        echo "mutants.sh: no such file: $file" >&2
        exit 2
    fi
    pkg=$(package_of "$file")
    dir=$OUT/$(echo "$file" | tr / -)
    mkdir -p "$dir"
    echo "== $file ($pkg): timeout ${TIMEOUT}s, $JOBS job(s), output $dir"
    # Exit codes: 0 all caught, 2 missed, 3 timeouts; anything else is a
    # failure of the run itself (a failing baseline, say).
    rc=0
    # shellcheck disable=SC2086
    nice -n 19 cargo mutants \
        --package "$pkg" \
        --file "$file" \
        --test-workspace=false \
        --jobs "$JOBS" \
        --timeout "$TIMEOUT" \
        --output "$dir" \
        --no-shuffle \
        ${MUTANTS_ARGS:-} || rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 2 ] && [ "$rc" != 3 ]; then
        echo "mutants.sh: cargo mutants failed on $file (exit $rc)" >&2
        status=1
        continue
    fi
    res=$dir/mutants.out
    caught=$(count "$res/caught.txt")
    missed=$(count "$res/missed.txt")
    timeout=$(count "$res/timeout.txt")
    unviable=$(count "$res/unviable.txt")
    total=$((caught + missed + timeout + unviable))
    if [ $((caught + missed)) -gt 0 ]; then
        score=$(awk -v c="$caught" -v m="$missed" 'BEGIN { printf "%.1f%%", 100 * c / (c + m) }')
    else
        score="n/a"
    fi
    line="$file: $total mutants, $caught caught, $missed missed, $timeout timed out, $unviable unviable, score $score"
    echo "$line"
    if [ "$missed" -gt 0 ]; then
        sed 's/^/    missed: /' "$res/missed.txt"
    fi
    summary+=("$line")
    if [ -z "${MUTANTS_ARGS:-}" ]; then
        write_row "$file" "| \`$file\` | $total | $caught | $missed | $timeout | $unviable | $score | $today | $commit |"
    else
        echo "(MUTANTS_ARGS set: a partial run, docs/mutants.md left as it is)"
    fi
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
