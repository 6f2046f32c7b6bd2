#!/usr/bin/env bash
# walden beside pgBackRest on the same throwaway PostgreSQL 15 cluster, in one
# run, on this machine: full backup, incremental after a light workload
# (pgbench -t 1000), incremental after pgbench -T SECONDS; and the latency of
# archiving each 16 MiB WAL segment, both tools being called from one
# archive_command. Prints wall time, peak memory (max RSS) and stored bytes
# side by side with walden/pgBackRest ratios.
#
# usage: bash benches/pg_compare.sh [SIZE_MB] [SECONDS]   (defaults 1024, 60)
#   SIZE_MB  data to load: ~70% pgbench tables, ~30% random (incompressible) rows
#   SECONDS  duration of the second workload (pgbench -T)
# needs: PostgreSQL 15 in /usr/lib/postgresql/15/bin (with contrib: pgcrypto),
#        pgbackrest (apt-get install pgbackrest), python3; builds walden --release.
# Run it as root (the server and both tools then run as `postgres`, and page
# caches are dropped before each measured step) or as an ordinary user.
# BENCH_DIR=/some/dir keeps the cluster's data, both repositories and logs
# (its parent must be traversable by postgres). The setup is shared with
# pg_restore_compare.sh: benches/pg_common.sh.
set -euo pipefail
size_mb="${1:-1024}"
dur="${2:-60}"
source "$(dirname "${BASH_SOURCE[0]}")/pg_common.sh"
pg_setup walden-pgbench
pg_load "$size_mb"

declare -A S D
for step in full incr-light incr-T$dur; do
    case $step in
        incr-light) echo light > "$work/phase"; "$PGBIN/pgbench" -t 1000 -c 1 2>/dev/null | grep -E '^tps' >&2 ;;
        incr-T*) echo T$dur > "$work/phase"; touch "$work/async-on"
                 "$PGBIN/pgbench" -T "$dur" -c 1 2>/dev/null | grep -E '^tps' >&2 ;;
    esac
    wait_archived; rm -f "$work/async-on"; wait_async_drained; psql_ -c CHECKPOINT
    echo "$step ..." >&2
    echo "$step" > "$work/phase"
    type=incremental; [ "$step" = full ] && type=full
    wb=$(dub "$wrepo")
    measure walden "$step" "$W" --config "$wconf" --json backup --pgdata "$data" --type $type --pg-host "$sock" --pg-port "$port" --pg-user postgres
    D[walden,$step]=$(( $(dub "$wrepo") - wb ))
    S[walden,$step]=$(json 'j["summary"]["new_stored_bytes"]' < "$work/walden-$step.out")
    pb=$(dub "$work/pgbr-repo/backup")
    measure pgbackrest "$step" pgbackrest --config="$pconf" --stanza=bench --type=${type/incremental/incr} backup
    D[pgbackrest,$step]=$(( $(dub "$work/pgbr-repo/backup") - pb ))
    S[pgbackrest,$step]=$(as_pg pgbackrest --config="$pconf" --stanza=bench --output=json info | json 'j[0]["backup"][-1]["info"]["repository"]["delta"]')
done
# The snapshot list must agree with the backup's own summary.
as_pg "$W" --config "$wconf" --json snapshots > "$work/walden-snapshots.json"
[ "$(json '[s["new_stored_bytes"] for s in j]' < "$work/walden-snapshots.json")" = "[${S[walden,full]}, ${S[walden,incr-light]}, ${S[walden,incr-T$dur]}]" ] \
    || echo "note: walden snapshots --json new_stored_bytes differ from the backups' summaries" >&2
echo done > "$work/phase"

printf '\n%s MiB data directory (pgbench -s %s: %s MiB, random rows: %s MiB; without pg_wal) on %s cores, %s, %s\n' \
    "$data_mib" "$scale" "$pgb_mib" "$rnd_mib" "$(nproc)" "$("$PGBIN/postgres" --version | cut -d' ' -f3)" "$(pgbackrest version)"
printf '%-10s | %8s %12s %6s | %10s %14s %6s | %12s %16s %6s\n' step "walden s" "pgbackrest s" ratio \
    "walden MiB" "pgbackrest MiB" ratio "walden bytes" "pgbackrest bytes" ratio
for step in full incr-light incr-T$dur; do
    printf '%-10s | %8s %12s %6s | %10d %14d %6s | %12d %16d %6s\n' "$step" \
        "${T[walden,$step]}" "${T[pgbackrest,$step]}" "$(ratio "${T[walden,$step]}" "${T[pgbackrest,$step]}")" \
        $(( M[walden,$step] / 1024 )) $(( M[pgbackrest,$step] / 1024 )) "$(ratio "${M[walden,$step]}" "${M[pgbackrest,$step]}")" \
        "${S[walden,$step]}" "${S[pgbackrest,$step]}" "$(ratio "${S[walden,$step]}" "${S[pgbackrest,$step]}")"
done
python3 - "$work/archive.log" "$work/walpush.ratio" <<'EOF'
import sys, collections
rows = [l.split() for l in open(sys.argv[1])]
# phase name w_ns w_rc w_kib b_ns b_rc b_kib order a_ns a_rc; 16 MiB segments only (24 hex digits), all pushes succeeded
segs = [r for r in rows if len(r[1]) == 24 and r[3] == '0' and r[6] == '0' and r[10] == '0']
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]
def line(label, rs):
    w = [int(r[2]) / 1e9 for r in rs]; b = [int(r[5]) / 1e9 for r in rs]
    print(f"{label:<22} n={len(rs):<4} walden median {pct(w, 50):.3f} s p90 {pct(w, 90):.3f} s | "
          f"pgbackrest median {pct(b, 50):.3f} s p90 {pct(b, 90):.3f} s | ratio median {pct(w, 50) / pct(b, 50):.2f} p90 {pct(w, 90) / pct(b, 90):.2f}")
line("wal-push per segment", segs)
w50 = pct([int(r[2]) for r in segs], 50); b50 = pct([int(r[5]) for r in segs], 50)
# --async ran during the pgbench -T phase only: compared with both tools' pushes of the same segments
asy = [r for r in segs if r[9] != '-']
a = [int(r[9]) / 1e9 for r in asy]; b = [int(r[5]) / 1e9 for r in asy]; w = [int(r[2]) / 1e9 for r in asy]
print(f"{'wal-push --async':<22} n={len(asy):<4} walden median {pct(a, 50):.3f} s p90 {pct(a, 90):.3f} s | "
      f"same segments: walden sync median {pct(w, 50):.3f} s, pgbackrest median {pct(b, 50):.3f} s | "
      f"ratio to pgbackrest median {pct(a, 50) / pct(b, 50):.2f} p90 {pct(a, 90) / pct(b, 90):.2f}")
open(sys.argv[2], "w").write(f"{w50 / b50:.2f} {pct(a, 50) / pct(b, 50):.2f}\n")
by = collections.OrderedDict()
for r in segs: by.setdefault(r[0], []).append(r)
for ph, rs in by.items(): line(f"  during {ph}", rs)
mw = max(int(r[4]) for r in segs); mb = max(int(r[7]) for r in segs)
print(f"wal-push max RSS: walden {mw // 1024} MiB, pgbackrest archive-push {mb // 1024} MiB; "
      f"{len(rows) - len(segs)} other rows (history/backup files, or a failed push: see archive.err)")
EOF
# The async queue drains in the background; once it has, its repository
# holds every WAL segment the synchronous one does.
segs_of() { as_pg "$W" --config "$1" --json info | python3 -c '
import json,sys; print(sum(t["segments"] for c in json.load(sys.stdin)["clusters"] for t in c["timelines"]))'; }
want=$(python3 -c 'import sys; print(sum(1 for l in open(sys.argv[1]) if l.split()[9] != "-" and l.split()[10] == "0"))' "$work/archive.log")
got=$(segs_of "$waconf")
echo "wal-push --async: its repository holds $got WAL files once the queue drained, of $want queued $(ok "$want" "$got")"
echo "walden archive key: Argon2id ${kdf_mib} MiB, ${kdf_iter} iteration(s) (key add --kdf-memory-mib $kdf_mib --kdf-iterations $kdf_iter), key ${key_pos} in name order; the other key has the default 64 MiB, 3 iterations"
echo "pgbackrest: zst, process-max=2, aes-256-cbc, bundle+block (beta in $(pgbackrest version | cut -d' ' -f2)), archive-push synchronous"
for step in full incr-light incr-T$dur; do
    printf 'repository growth during %-10s (du -sb): walden repo %d B (includes WAL pushed meanwhile), pgbackrest backup/ %d B (includes manifests)\n' \
        "$step" "${D[walden,$step]}" "${D[pgbackrest,$step]}"
done
printf 'total stored: walden %d B; pgbackrest backup/ %d B + archive/ %d B\n' "$(dub "$wrepo")" \
    "$(dub "$work/pgbr-repo/backup")" "$(dub "$work/pgbr-repo/archive")"
echo "peak memory is /usr/bin/time's max RSS: for pgbackrest (process-max=2 forks local workers) that is the largest single process, not their sum"
echo "bytes: each backup's own report (walden: summary.new_stored_bytes, as in walden snapshots --json; pgbackrest: info backup[].info.repository.delta, block maps included, manifests not); WAL archive growth is in neither"
echo "wall time of each backup includes waiting for its stop segment to be archived, i.e. for the shared archive_command (both pushes)"
r_full=$(ratio "${T[walden,full]}" "${T[pgbackrest,full]}")
r_light=$(ratio "${S[walden,incr-light]}" "${S[pgbackrest,incr-light]}")
r_heavy=$(ratio "${S[walden,incr-T$dur]}" "${S[pgbackrest,incr-T$dur]}")
read -r r_wal r_wal_async < "$work/walpush.ratio"
peak=0; for step in full incr-light incr-T$dur; do [ "${M[walden,$step]}" -gt "$peak" ] && peak=${M[walden,$step]}; done
echo "targets: full backup time <= 0.5x: $r_full $(ok "$r_full" 0.5); incr-light bytes <= 0.5x: $r_light $(ok "$r_light" 0.5);" \
     "incr-T$dur bytes <= 0.8x: $r_heavy $(ok "$r_heavy" 0.8); wal-push median <= 0.5x: $r_wal $(ok "$r_wal" 0.5), with --async $r_wal_async $(ok "$r_wal_async" 0.5);" \
     "walden peak memory < 300 MiB: $(( peak / 1024 )) MiB $(ok "$(( peak / 1024 ))" 299)"
