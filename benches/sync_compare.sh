#!/usr/bin/env bash
# walden sync beside `cp -r` (the physical floor for a local copy) and
# `restic copy`, in one run, on this machine: the first copy of a repository
# holding one backup of a generated tree, then the copy after a second
# backup with 5% of the tree changed in place. Prints wall time and peak
# memory (max RSS) side by side, the ratios the offsite-copy targets name,
# and checks that the copy restores the tree exactly from itself alone.
#
# usage: bash benches/sync_compare.sh [SIZE_MB]      (default 1024)
#        RUNS=N (default 3): the first copy is timed N times, walden and cp
#        in turn, each into a fresh destination; the medians are shown.
# needs: restic (apt-get install restic), python3; builds walden --release.
set -euo pipefail
size_mb="${1:-1024}"
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
(cd "$repo_dir" && cargo build --release --quiet)
walden="$repo_dir/target/release/walden"

if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"
else work=$(mktemp -d /tmp/walden-sync-bench.XXXXXX); trap 'rm -rf "$work"' EXIT; fi
data="$work/data"
echo "generating ${size_mb} MiB in $data ..." >&2
python3 "$repo_dir/benches/gen_tree.py" "$data" "$size_mb"
sync

export WALDEN_PASSWORD=bench WALDEN_TO_PASSWORD=bench-offsite RESTIC_PASSWORD=bench
export WALDEN_REPO="$work/walden-repo" WALDEN_CACHE_DIR="$work/walden-cache"
export RESTIC_REPOSITORY="$work/restic-repo" RESTIC_CACHE_DIR="$work/restic-cache"
export RESTIC_FROM_PASSWORD=bench
"$walden" init >/dev/null
restic init --repository-version 2 >/dev/null 2>&1
# The destination shares the chunker, as walden's does, so restic can
# deduplicate there without re-chunking (it still re-encrypts).
restic -r "$work/restic-copy" init --from-repo "$RESTIC_REPOSITORY" --copy-chunker-params \
    --repository-version 2 >/dev/null 2>&1
# walden's destination is made ahead too, as the README's offsite recipe
# does. That opens the source once, so the timed runs find its key in
# walden's key cache, as every scheduled run after the first does (the
# first run ever derives it: about 0.2 s of Argon2id, not a copy cost).
fresh_copy() {
    rm -rf "$work/walden-copy"
    WALDEN_PASSWORD=bench-offsite WALDEN_COPY_OF_PASSWORD=bench "$walden" --repo "$work/walden-copy" \
        init --copy-of "$WALDEN_REPO" --kdf-memory-mib 8 --kdf-iterations 1 >/dev/null
}
runs="${RUNS:-3}"
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

declare -A T M
# measure NAME CMD...: wall seconds and max RSS (KiB) of CMD.
measure() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/$name.out" 2>"$work/$name.err" \
        || { echo "$name failed:" >&2; cat "$work/$name.err" >&2; exit 1; }
    local out; out=$(tail -1 "$work/time.out")
    T[$name]=${out% *}; M[$name]=${out#* }
}

for step in first changed; do
    [ "$step" = changed ] && python3 "$repo_dir/benches/gen_tree.py" --mutate "$data" 0.05
    "$walden" backup "$data" >/dev/null
    restic backup --quiet "$data" >/dev/null
    # walden stores every object durably (fsync); cp and restic leave the
    # data in the page cache, so theirs are timed with a sync after them.
    n=1; [ "$step" = first ] && n=$runs
    ws=(); cs=()
    for ((r = 1; r <= n; r++)); do
        [ "$step" = first ] && fresh_copy
        rm -rf "$work/cp-copy"
        measure "cp,$step" sh -c 'cp -r "$1" "$2" && sync' sh "$WALDEN_REPO" "$work/cp-copy"
        cs+=("${T[cp,$step]}")
        measure "walden,$step" "$walden" sync --to "$work/walden-copy"
        ws+=("${T[walden,$step]}")
    done
    T[cp,$step]=$(median "${cs[@]}"); T[walden,$step]=$(median "${ws[@]}")
    [ "$n" -gt 1 ] && echo "$step: walden ${ws[*]} s; cp -r ${cs[*]} s" >&2
    measure "restic,$step" sh -c 'restic -r "$1" copy --from-repo "$2" --quiet && sync' sh \
        "$work/restic-copy" "$RESTIC_REPOSITORY"
done
measure "walden,nothing new" "$walden" sync --to "$work/walden-copy"

mv "$WALDEN_REPO" "$work/source-away"
WALDEN_PASSWORD=bench-offsite "$walden" --repo "$work/walden-copy" restore latest --to "$work/out" >/dev/null
cmp <(cd "$work/out" && find . -type f -exec md5sum {} + | sort -k2) \
    <(cd "$data" && find . -type f -exec md5sum {} + | sort -k2) >/dev/null \
    && echo "the copy alone restores the tree identically" >&2

printf '\n%s MiB tree, repository %s bytes, on %s cores (%s)\n' "$size_mb" \
    "$(du -sb "$work/source-away" | cut -f1)" "$(nproc)" "$(restic version | cut -d' ' -f1-2)"
printf '%-8s | %9s %9s %9s | %12s %12s | %9s %9s\n' step "walden s" "cp -r s" "restic s" "walden/cp" "walden/restic" "walden MB" "restic MB"
for step in first changed; do
    printf '%-8s | %9s %9s %9s | %12.2f %12.2f | %9d %9d\n' "$step" \
        "${T[walden,$step]}" "${T[cp,$step]}" "${T[restic,$step]}" \
        "$(echo "${T[walden,$step]} / ${T[cp,$step]}" | bc -l)" \
        "$(echo "${T[walden,$step]} / ${T[restic,$step]}" | bc -l)" \
        $(( M[walden,$step] / 1024 )) $(( M[restic,$step] / 1024 ))
done
# What each walden run copied ("… packs (N MiB) …"): the incremental's
# time is bounded below by the share of new bytes it must copy.
mib() { sed -n 's/.*packs (\([0-9.]*\) MiB).*/\1/p' "$work/walden,$1.out"; }
printf 'walden changed/first: time %.3f, bytes %.3f (%s MiB then %s MiB of packs); a sync with nothing new: %s s\n' \
    "$(echo "${T[walden,changed]} / ${T[walden,first]}" | bc -l)" \
    "$(echo "$(mib changed) / $(mib first)" | bc -l)" "$(mib first)" "$(mib changed)" \
    "${T[walden,nothing new]}"
