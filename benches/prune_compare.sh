#!/usr/bin/env bash
# walden's forget + prune beside restic's on the same data, in one run, on
# this machine: SNAPSHOTS backups of a generated tree, 5% of it changed in
# place before each one after the first; then both forget the older half
# and prune (each tool with its default thresholds). Prints wall time, peak
# memory (max RSS) and stored bytes before and after, side by side, and
# checks that both still restore the newest snapshot exactly.
#
# usage: bash benches/prune_compare.sh [SIZE_MB] [SNAPSHOTS]   (default 1024 8)
# needs: restic (apt-get install restic), python3; builds walden --release.
set -euo pipefail
size_mb="${1:-1024}"
snapshots="${2:-8}"
keep=$(( snapshots / 2 ))
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
(cd "$repo_dir" && cargo build --release --quiet)
walden="${CARGO_TARGET_DIR:-$repo_dir/target}/release/walden"

if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"
else work=$(mktemp -d /tmp/walden-prune-bench.XXXXXX); trap 'rm -rf "$work"' EXIT; fi
data="$work/data"
echo "generating ${size_mb} MiB in $data ..." >&2
python3 "$repo_dir/benches/gen_tree.py" "$data" "$size_mb"
sync

export WALDEN_PASSWORD=bench RESTIC_PASSWORD=bench
export WALDEN_REPO="$work/walden-repo" WALDEN_CACHE_DIR="$work/walden-cache"
export RESTIC_REPOSITORY="$work/restic-repo" RESTIC_CACHE_DIR="$work/restic-cache"
"$walden" init >/dev/null
restic init --repository-version 2 >/dev/null 2>&1

echo "making $snapshots snapshots in each ..." >&2
for i in $(seq 1 "$snapshots"); do
    [ "$i" -gt 1 ] && python3 "$repo_dir/benches/gen_tree.py" --mutate "$data" 0.05
    "$walden" backup "$data" >/dev/null
    restic backup --quiet "$data" >/dev/null
done
stored() { du -sb "$1" | cut -f1; }
declare -A T M B A
B[walden]=$(stored "$WALDEN_REPO"); B[restic]=$(stored "$RESTIC_REPOSITORY")

# measure TOOL CMD...: wall seconds and max RSS (KiB) of CMD.
measure() {
    local tool=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/$tool.out" 2>"$work/$tool.err" \
        || { echo "$tool failed:" >&2; cat "$work/$tool.err" >&2; exit 1; }
    local out; out=$(tail -1 "$work/time.out")
    T[$tool]=${out% *}; M[$tool]=${out#* }
}
# Packs written by the backups above are minutes old; walden's grace period
# (1h) would rightly defer only packs no index names, and there are none.
measure walden "$walden" forget --keep-last "$keep" --prune
measure restic restic forget --keep-last "$keep" --prune
A[walden]=$(stored "$WALDEN_REPO"); A[restic]=$(stored "$RESTIC_REPOSITORY")
cat "$work/walden.out" >&2

"$walden" restore latest --to "$work/walden-out" >/dev/null
restic restore latest --target "$work/restic-out" >/dev/null
for t in walden restic; do
    out="$work/$t-out"; [ "$t" = restic ] && out="$work/restic-out$data"
    cmp <(cd "$out" && find . -type f -exec md5sum {} + | sort -k2) \
        <(cd "$data" && find . -type f -exec md5sum {} + | sort -k2) >/dev/null \
        || { echo "$t: the newest snapshot no longer restores exactly" >&2; exit 1; }
done
echo "both restore the newest snapshot identical to the source" >&2

printf '\n%s MiB tree, %s snapshots, forget the %s oldest and prune, %s cores (%s)\n' \
    "$size_mb" "$snapshots" "$(( snapshots - keep ))" "$(nproc)" "$(restic version | cut -d' ' -f1-2)"
printf '%-8s | %9s %9s | %12s %12s %12s\n' tool "seconds" "peak MB" "before" "after" "freed"
for t in walden restic; do
    printf '%-8s | %9s %9d | %12d %12d %12d\n' "$t" "${T[$t]}" $(( M[$t] / 1024 )) \
        "${B[$t]}" "${A[$t]}" $(( B[$t] - A[$t] ))
done
printf 'walden/restic: time %.2f, peak memory %.2f, size after %.2f\n' \
    "$(echo "${T[walden]} / ${T[restic]}" | bc -l)" \
    "$(echo "${M[walden]} / ${M[restic]}" | bc -l)" \
    "$(echo "${A[walden]} / ${A[restic]}" | bc -l)"
