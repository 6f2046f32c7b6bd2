#!/usr/bin/env bash
# walden beside restic on the same generated tree, in one run, on this
# machine: first backup, backup after changing 5% in place, unchanged backup,
# restore. Prints wall time, peak memory (max RSS) and stored bytes side by
# side with walden/restic ratios.
#
# usage: bash benches/compare.sh [SIZE_MB]      (default 1024)
# needs: restic (apt-get install restic), python3; builds walden --release.
set -euo pipefail
size_mb="${1:-1024}"
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; }
(cd "$repo_dir" && cargo build --release --quiet)
walden="$repo_dir/target/release/walden"

# BENCH_DIR keeps the data and repositories for a look afterwards.
if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"
else work=$(mktemp -d /tmp/walden-bench.XXXXXX); trap 'rm -rf "$work"' EXIT; fi
data="$work/data"
echo "generating ${size_mb} MiB in $data ..." >&2
python3 "$repo_dir/benches/gen_tree.py" "$data" "$size_mb"
sync

export WALDEN_PASSWORD=bench RESTIC_PASSWORD=bench
export WALDEN_REPO="$work/walden-repo" WALDEN_CACHE_DIR="$work/walden-cache"
export RESTIC_REPOSITORY="$work/restic-repo" RESTIC_CACHE_DIR="$work/restic-cache"
"$walden" init >/dev/null
restic init --repository-version 2 >/dev/null 2>&1

declare -A T M S
# measure TOOL STEP CMD...: wall seconds and max RSS (KiB) of CMD.
measure() {
    local tool=$1 step=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local out
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>"$work/$tool-$step.err" \
        || { echo "$tool $step failed:" >&2; cat "$work/$tool-$step.err" >&2; exit 1; }
    out=$(tail -1 "$work/time.out")
    T[$tool,$step]=${out% *}; M[$tool,$step]=${out#* }
}
stored() { du -sb "$1" | cut -f1; }

for step in first changed unchanged; do
    case $step in
        changed) python3 "$repo_dir/benches/gen_tree.py" --mutate "$data" 0.05 ;;
    esac
    wb=$(stored "$WALDEN_REPO"); rb=$(stored "$RESTIC_REPOSITORY")
    measure walden $step "$walden" backup "$data"
    measure restic $step restic backup --quiet "$data"
    S[walden,$step]=$(( $(stored "$WALDEN_REPO") - wb )); S[restic,$step]=$(( $(stored "$RESTIC_REPOSITORY") - rb ))
done
measure walden restore "$walden" restore latest --to "$work/walden-out"
measure restic restore restic restore latest --target "$work/restic-out"
# walden's restore returns only once the data is on disk (syncfs); restic's
# returns with it still in the page cache. The same restic restore followed by
# sync compares the two at equal durability.
rm -rf "$work/restic-out"
measure restic restore+sync sh -c 'restic restore latest --target "$1" && sync' sh "$work/restic-out"
T[walden,restore+sync]=${T[walden,restore]}; M[walden,restore+sync]=${M[walden,restore]}
cmp <(cd "$work/walden-out" && find . -type f -exec md5sum {} + | sort -k2) \
    <(cd "$data" && find . -type f -exec md5sum {} + | sort -k2) >/dev/null \
    && echo "walden restore verified identical to the source" >&2

printf '\n%s MiB tree on %s cores (%s)\n' "$size_mb" "$(nproc)" "$(restic version | cut -d' ' -f1-2)"
printf '%-12s | %9s %9s %6s | %9s %9s %6s | %10s %10s %6s\n' step "walden s" "restic s" ratio "walden MB" "restic MB" ratio "w stored" "r stored" ratio
for step in first changed unchanged restore restore+sync; do
    ws=${S[walden,$step]:-0}; rs=${S[restic,$step]:-0}
    printf '%-12s | %9s %9s %6.2f | %9d %9d %6.2f | %10d %10d %6s\n' "$step" \
        "${T[walden,$step]}" "${T[restic,$step]}" "$(echo "${T[walden,$step]} / ${T[restic,$step]}" | bc -l)" \
        $(( M[walden,$step] / 1024 )) $(( M[restic,$step] / 1024 )) "$(echo "${M[walden,$step]} / ${M[restic,$step]}" | bc -l)" \
        "$ws" "$rs" "$( [ "$rs" -gt 0 ] && echo "scale=2; $ws / $rs" | bc -l || echo -)"
done
printf 'walden unchanged/first wall time: %.3f\n' "$(echo "${T[walden,unchanged]} / ${T[walden,first]}" | bc -l)"
printf 'total stored: walden %d, restic %d bytes\n' "$(stored "$WALDEN_REPO")" "$(stored "$RESTIC_REPOSITORY")"
