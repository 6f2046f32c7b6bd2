#!/usr/bin/env bash
# walden beside pgBackRest restoring the same throwaway PostgreSQL 15 cluster,
# in one run, on this machine:
#   restore   the full backup into an empty directory, stopping at consistency
#             (walden restore ID --to DIR --target immediate; pgbackrest
#             --set=LABEL --pg1-path=DIR --type=immediate restore);
#   promoted  from starting the restore to a server on the restored directory
#             that accepts connections and is out of recovery, at a target
#             time recorded after pgbench -T SECONDS (--target-time /
#             --type=time --target, both --target-action promote); the restored
#             cluster's sum(abalance) must equal the value recorded at the
#             target, or the run fails.
# Both tools' WAL comes from one archive_command that pushes every segment to
# both repositories (as in pg_compare.sh). Also measured, to see where the
# time goes: the same promotion with walden's wal-fetch --prefetch 0, with
# pgBackRest's archive-get in async mode (its prefetching queue), and with
# restore_command = cp from a local directory (the replay floor); and the
# latency of single fetches.
#
# usage: bash benches/pg_restore_compare.sh [SIZE_MB] [SECONDS]   (defaults 1024, 300)
#   SIZE_MB  data to load: ~70% pgbench tables, ~30% random (incompressible) rows
#   SECONDS  duration of the workload whose WAL is replayed (pgbench -T, one client)
#   RUNS=N   runs of each main measurement, in ABBA order; the table shows the
#            fastest, all are printed (default 2)
#   EXTRAS=0 skips the three extra promotions
# needs: PostgreSQL 15 in /usr/lib/postgresql/15/bin (with contrib: pgcrypto),
#        pgbackrest, python3, bc; builds walden --release. Run it as root (the
#        servers and both tools run as `postgres`; page caches are dropped
#        before every measurement). BENCH_DIR=/some/dir keeps everything.
#        The setup is benches/pg_common.sh, shared with pg_compare.sh.
set -euo pipefail
size_mb="${1:-1024}"
dur="${2:-300}"
runs="${RUNS:-2}"
extras="${EXTRAS:-1}"
source "$(dirname "${BASH_SOURCE[0]}")/pg_common.sh"
[ "$(id -u)" = 0 ] || { echo "run as root: page caches are dropped and the servers run as postgres" >&2; exit 2; }
pg_setup walden-pgrestore
pg_load "$size_mb"
rport=$(free_port $((port + 1)))     # the restored servers'

# The full backup both restores start from (timed for the record only).
psql_ -c CHECKPOINT
echo full > "$work/phase"
echo "full backups ..." >&2
measure walden backup "$W" --config "$wconf" --json backup --pgdata "$data" --type full --pg-host "$sock" --pg-port "$port" --pg-user postgres
measure pgbackrest backup pgbackrest --config="$pconf" --stanza=bench --type=full backup
wid=$(json 'j["id"]' < "$work/walden-backup.out")
plabel=$(as_pg pgbackrest --config="$pconf" --stanza=bench --output=json info | json 'j[0]["backup"][-1]["label"]')
wal_start=$(json 'j["postgres"]["start_lsn"]' < "$work/walden-backup.out")

newdir() { rm -rf "$1"; as_pg mkdir -m 700 "$1"; }
spool_clear() { rm -rf "$work"/walden-cache/*/wal-spool "$work/pgbr-spool/archive"; }
declare -A R      # R[tool,step] = all runs' seconds, for the record
best() {          # best TOOL STEP SECONDS KIB: keeps the fastest run's figures in T and M
    R[$1,$2]="${R[$1,$2]:-}${R[$1,$2]:+ }$3"
    if [ -z "${T[$1,$2]:-}" ] || [ "$(echo "$3 < ${T[$1,$2]}" | bc -l)" = 1 ]; then T[$1,$2]=$3; M[$1,$2]=$4; fi
}
order() { if [ $(($1 % 2)) = 1 ]; then echo "walden pgbackrest"; else echo "pgbackrest walden"; fi; }

# 1. Restore into an empty directory.
declare -A RB RF L      # L: 1-minute load average before each restore
echo restore > "$work/phase"
for i in $(seq 1 "$runs"); do
    for tool in $(order "$i"); do
        d="$work/r-$tool"; newdir "$d"; spool_clear
        echo "restore: $tool (run $i) ..." >&2
        L[$tool]="${L[$tool]:-}${L[$tool]:+ }$(cut -d' ' -f1 /proc/loadavg)"
        case $tool in
            walden) measure walden "restore$i" "$W" --config "$wconf" --json restore "$wid" --to "$d" --target immediate ;;
            pgbackrest) measure pgbackrest "restore$i" pgbackrest --config="$pconf" --stanza=bench --set="$plabel" \
                            --pg1-path="$d" --type=immediate restore ;;
        esac
        best "$tool" restore "${T[$tool,restore$i]}" "${M[$tool,restore$i]}"
        RB[$tool]=$(dub "$d"); RF[$tool]=$(find "$d" -type f | wc -l)
        grep -h -E "^(restore_command|recovery_target)" "$d/postgresql.auto.conf" > "$work/$tool-recovery.conf" || true
        rm -rf "$d"
    done
done

# 2. The workload, the target, and WAL after the target.
echo "T$dur" > "$work/phase"
echo "pgbench -T $dur ..." >&2
"$PGBIN/pgbench" -T "$dur" -c 1 2>/dev/null | grep -E '^tps' >&2
expected=$(psql_ -c "SELECT sum(abalance) FROM pgbench_accounts")
sysid=$(psql_ -c "SELECT system_identifier FROM pg_control_system()")
target_time=$(psql_ -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
target_lsn=$(psql_ -c "SELECT pg_current_wal_lsn()")
psql_ -c "SELECT pg_sleep(0.2)" >/dev/null
# A commit after the target: replay must stop before it.
psql_ -c "UPDATE pgbench_accounts SET abalance = abalance + 1000000 WHERE aid = 1"
last_seg=$(psql_ -c "SELECT pg_walfile_name(pg_switch_wal())")
wait_archived
echo done > "$work/phase"
first_seg=$(psql_ -c "SELECT pg_walfile_name('$wal_start')")
as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null     # no longer needed; quiet machine
n_segs=$(python3 -c "import sys; a,b=sys.argv[1:]; print(int(b[8:16],16)*256+int(b[16:],16)-(int(a[8:16],16)*256+int(a[16:],16))+1)" "$first_seg" "$last_seg")

# promote TOOL LABEL [restore_command]: restore at the target, start the
# server on a free port with archive_mode=off (and the given restore_command,
# overriding the tool's; @DIR@ in it stands for the restored directory), wait until it is out of recovery, check the sum.
# Sets P[LABEL,*] and, for the main labels, T/M via best.
declare -A P
promote() {
    local tool=$1 label=$2 rc=${3:-} d="$work/p-$2" t0 t1 t2 tc="" out s
    rc=${rc//@DIR@/$d}
    newdir "$d"; spool_clear; clusters+=("$d")
    drop_caches
    P[$label,load]=$(cut -d' ' -f1 /proc/loadavg)
    echo "promoted: $label ..." >&2
    t0=$(date +%s.%N)
    case $tool in
        walden) as_pg /usr/bin/time -f '%e %M' -o "$work/time.out" "$W" --config "$wconf" --json restore "$wid" --to "$d" \
                    --target-time "$target_time" --target-action promote >"$work/$label-promote.out" 2>"$work/$label-promote.err" ;;
        pgbackrest) as_pg /usr/bin/time -f '%e %M' -o "$work/time.out" pgbackrest --config="$pconf" --stanza=bench --set="$plabel" \
                    --pg1-path="$d" --type=time --target="$target_time" --target-action=promote restore \
                    >"$work/$label-promote.out" 2>"$work/$label-promote.err" ;;
    esac || { echo "$label restore failed:" >&2; cat "$work/$label-promote.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    out=$(tail -1 "$work/time.out")
    {
        echo "# appended by pg_restore_compare.sh"
        echo "port = $rport"
        echo "archive_mode = off"
        [ -z "$rc" ] || echo "restore_command = '${rc//\'/\'\'}'"
    } >> "$d/postgresql.auto.conf"
    as_pg "$PGBIN/pg_ctl" -D "$d" -l "$work/server-$label.log" start >/dev/null
    while :; do
        s=$(PGPORT=$rport "$PGBIN/psql" -X -At -c "SELECT pg_is_in_recovery()" 2>/dev/null) || s=""
        [ -n "$s" ] && [ -z "$tc" ] && tc=$(date +%s.%N)
        [ "$s" = f ] && break
        [ -f "$d/postmaster.pid" ] || { echo "$label: the restored server stopped:" >&2; tail -20 "$work/server-$label.log" >&2; exit 1; }
        sleep 0.1
    done
    t2=$(date +%s.%N)
    local got; got=$(PGPORT=$rport psql_ -c "SELECT sum(abalance) FROM pgbench_accounts")
    as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
    P[$label,restore]=$(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)")
    P[$label,conn]=$(printf '%.2f' "$(echo "$tc - $t0" | bc -l)")
    P[$label,total]=$(printf '%.2f' "$(echo "$t2 - $t0" | bc -l)")
    P[$label,kib]=${out#* }
    P[$label,sum]=$got
    P[$label,log]=$(python3 - "$work/server-$label.log" <<'EOF'
import sys, re, datetime
def ts(l): return datetime.datetime.strptime(l[:23], "%Y-%m-%d %H:%M:%S.%f")
boot = start = stop = done = None; n = 0; first = last = None
for l in open(sys.argv[1], errors="replace"):
    if "database system was interrupted" in l: boot = boot or ts(l)
    if "starting point-in-time recovery" in l or "starting archive recovery" in l: start = start or ts(l)
    if 'restored log file "' in l and re.search(r'"[0-9A-F]{24}"', l):
        n += 1; first = first or ts(l); last = ts(l)
    if "recovery stopping" in l: stop = ts(l)
    if "database system is ready to accept connections" in l: done = ts(l)
f = lambda a, b: f"{(b - a).total_seconds():.2f}" if a and b else "?"
print(f"startup fsync+probe {f(boot, start)} s; {n} segments restored by restore_command; start of recovery to 'recovery stopping' {f(start, stop)} s "
      f"({(stop - start).total_seconds() / max(n, 1):.3f} s per segment); 'recovery stopping' to ready {f(stop, done)} s"
      if start and stop else f"{n} segments; log not understood")
EOF
)
    rm -rf "$d"; unset 'clusters[-1]'
    if [ "$got" != "$expected" ]; then
        echo "$label: restored sum(abalance) $got, expected $expected at $target_time: FAILED" >&2; exit 1
    fi
}

for i in $(seq 1 "$runs"); do
    for tool in $(order "$i"); do
        promote "$tool" "$tool-$i"
        best "$tool" promoted "${P[$tool-$i,total]}" "${P[$tool-$i,kib]}"
    done
done
if [ "$extras" = 1 ]; then
    promote walden walden-prefetch0 "$W --config $wconf wal-fetch --prefetch 0 %f %p"
    promote pgbackrest pgbackrest-async "pgbackrest --config=$pconf --pg1-path=@DIR@ --stanza=bench --archive-async=y archive-get %f \"%p\""
    # The floor: the segments already plain in a local directory.
    as_pg mkdir -p "$work/walcopy"
    for seg in $(python3 -c "
import sys; a,n=sys.argv[1],int(sys.argv[2]); t=a[:8]; s=int(a[8:16],16)*256+int(a[16:],16)
print(' '.join(f'{t}{(s+i)>>8:08X}{(s+i)&255:08X}' for i in range(n)))" "$first_seg" "$n_segs"); do
        as_pg env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch --prefetch 0 "$seg" "$work/walcopy/$seg"
    done
    promote walden floor-cp "cp $work/walcopy/%f %p"
    # The same floor over pgBackRest's restored directory: whether the
    # directory or the fetch makes the replay slower.
    promote pgbackrest floor-cp-pgbackrest "cp $work/walcopy/%f %p"
    rm -rf "$work/walcopy"
fi

# Single fetches, as postgres, from cold caches: walden wal-fetch without
# prefetch (a miss), walden from its spool (a hit: the segment before was
# fetched with the default prefetch, then 3 s of waiting), a name that is not
# archived (the fixed cost of one call), pgbackrest archive-get.
spool_clear; drop_caches
as_pg mkdir -p "$work/fetch"
: > "$work/fetch.log"
fetch1() {  # fetch1 KIND CMD...: appends "KIND seconds KiB exit"
    local kind=$1; shift; local t0 t1 rc=0
    t0=$(date +%s%N)
    as_pg /usr/bin/time -f %M -o "$work/fetch.rss" "$@" >/dev/null 2>>"$work/fetch.err" || rc=$?
    t1=$(date +%s%N)
    echo "$kind $(( (t1 - t0) / 1000 )) $(tail -1 "$work/fetch.rss") $rc" >> "$work/fetch.log"
}
k=$(( n_segs / 8 > 1 ? n_segs / 8 : 1 ))
for i in $(seq 1 "$k" $((n_segs - 2))); do
    seg=$(python3 -c "
import sys; a,i=sys.argv[1],int(sys.argv[2]); t=a[:8]; s=int(a[8:16],16)*256+int(a[16:],16)+i
print(f'{t}{s>>8:08X}{s&255:08X}')" "$first_seg" "$i")
    nxt=$(python3 -c "
import sys; a=sys.argv[1]; s=int(a[8:16],16)*256+int(a[16:],16)+1
print(f'{a[:8]}{s>>8:08X}{s&255:08X}')" "$seg")
    rm -f "$work/fetch/"*
    fetch1 pgbackrest pgbackrest --config="$pconf" --stanza=bench archive-get "$seg" "$work/fetch/b-$seg"
    fetch1 walden-miss env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch --prefetch 0 "$seg" "$work/fetch/$seg"
    fetch1 walden-notfound env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch --prefetch 0 000000090000000900000009 "$work/fetch/none"
    spool_clear
    fetch1 walden-prefetching env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch "$seg" "$work/fetch/p-$seg"
    sleep 3
    fetch1 walden-hit env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch --prefetch 0 "$nxt" "$work/fetch/h-$nxt"
    cmp -s "$work/fetch/$seg" "$work/fetch/b-$seg" || { echo "fetched $seg differs between the tools" >&2; exit 1; }
done

# A restore drill of walden's backup (restore, start, replay to the end of
# the archive, promote, query every database), timed beside pgBackRest's
# restore and start above; then `verify --wal` over the whole archive, for
# its throughput end to end (fetch, decrypt, CRC of every record).
if [ "$extras" = 1 ]; then
    echo "drill ..." >&2
    spool_clear; drop_caches
    t0=$(date +%s.%N)
    as_pg "$W" --config "$wconf" --json drill latest --pg-bin "$PGBIN" > "$work/drill.json" 2> "$work/drill.err" \
        || { echo "drill failed:" >&2; cat "$work/drill.err" >&2; exit 1; }
    drill_wall=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc -l)")
    echo "verify --wal ..." >&2
    drop_caches
    as_pg "$W" --config "$wconf" --json verify --wal > "$work/verify-wal.json" 2> "$work/verify-wal.err" \
        || { echo "verify --wal failed:" >&2; cat "$work/verify-wal.err" >&2; exit 1; }
fi

# 3. The table.
printf '\n%s MiB data directory (pgbench -s %s: %s MiB, random rows: %s MiB; without pg_wal) on %s cores, %s, %s, walden %s\n' \
    "$data_mib" "$scale" "$pgb_mib" "$rnd_mib" "$(nproc)" "$("$PGBIN/postgres" --version | cut -d' ' -f3)" "$(pgbackrest version)" \
    "$(cd "$repo_dir" && git rev-parse --short HEAD)"
printf '%-9s | %8s %12s %6s | %10s %14s %6s\n' step "walden s" "pgbackrest s" ratio "walden MiB" "pgbackrest MiB" ratio
for step in restore promoted; do
    printf '%-9s | %8s %12s %6s | %10d %14d %6s\n' "$step" \
        "${T[walden,$step]}" "${T[pgbackrest,$step]}" "$(ratio "${T[walden,$step]}" "${T[pgbackrest,$step]}")" \
        $(( M[walden,$step] / 1024 )) $(( M[pgbackrest,$step] / 1024 )) "$(ratio "${M[walden,$step]}" "${M[pgbackrest,$step]}")"
done
echo "fastest of $runs run(s) each, in ABBA order; all runs (s): restore walden ${R[walden,restore]}, pgbackrest ${R[pgbackrest,restore]};" \
     "promoted walden ${R[walden,promoted]}, pgbackrest ${R[pgbackrest,promoted]}"
echo "1-minute load average before each restore run: walden ${L[walden]}, pgbackrest ${L[pgbackrest]} (2 cores)"
echo "MiB: max RSS of the restore command (for pgbackrest, process-max=2: its largest single process); promoted's wal-fetch/archive-get RSS is below"
echo "restored: walden $(( RB[walden] / 1048576 )) MiB in ${RF[walden]} files, pgbackrest $(( RB[pgbackrest] / 1048576 )) MiB in ${RF[pgbackrest]} files"
echo "full backup (for the record): walden ${T[walden,backup]} s, pgbackrest ${T[pgbackrest,backup]} s"
echo "target: $target_time (LSN $target_lsn) after pgbench -T $dur; sum(abalance) $expected; replay from $first_seg to $last_seg ($n_segs segments)"
labels="$(for i in $(seq 1 "$runs"); do echo "walden-$i pgbackrest-$i"; done)"
[ "$extras" = 1 ] && labels="$labels walden-prefetch0 pgbackrest-async floor-cp floor-cp-pgbackrest"
for l in $labels; do
    printf '  %-17s load %5s | restore %6s s, accepting connections %7s s, promoted %7s s, sum ok | %s\n' \
        "$l" "${P[$l,load]}" "${P[$l,restore]}" "${P[$l,conn]}" "${P[$l,total]}" "${P[$l,log]}"
done
python3 - "$work/fetch.log" <<'EOF'
import sys, collections
by = collections.OrderedDict()
for l in open(sys.argv[1]):
    k, us, kib, rc = l.split(); by.setdefault(k, []).append((int(us) / 1e6, int(kib), int(rc)))
def med(v): v = sorted(v); return v[len(v) // 2]
print("single fetches of a 16 MiB segment as postgres (cold caches at the start), median [min-max], max RSS:")
for k, rs in by.items():
    t = [r[0] for r in rs]
    print(f"  {k:<19} n={len(rs):<3} {med(t):.3f} s [{min(t):.3f}-{max(t):.3f}]  {max(r[1] for r in rs) // 1024} MiB  exits {sorted(set(r[2] for r in rs))}")
EOF
if [ "$extras" = 1 ]; then
    jfile() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
    echo "walden drill latest: $drill_wall s wall; restore $(jfile "$work/drill.json" "round(j['restore_seconds'],2)") s, consistent $(jfile "$work/drill.json" "round(j['consistent_seconds'],2)") s, promoted $(jfile "$work/drill.json" "round(j['promoted_seconds'],2)") s, $(jfile "$work/drill.json" "j['databases']") databases answer" \
         "| pgbackrest restore + start + promote (fastest run above): ${T[pgbackrest,promoted]} s | ratio $(ratio "$drill_wall" "${T[pgbackrest,promoted]}")"
    echo "verify --wal: $(jfile "$work/verify-wal.json" "j['segments']") segments, $(jfile "$work/verify-wal.json" "j['records']") records, $(jfile "$work/verify-wal.json" "round(j['bytes']/2**20)") MiB in $(jfile "$work/verify-wal.json" "round(j['seconds'],2)") s ($(jfile "$work/verify-wal.json" "round(j['bytes']/2**30/max(j['seconds'],1e-9),2)") GiB/s, cold caches, fetch and decryption included)"
fi
echo "restore_command and target as each tool wrote them:"
sed 's/^/  walden:     /' "$work/walden-recovery.conf"; sed 's/^/  pgbackrest: /' "$work/pgbackrest-recovery.conf"
echo "noisy machine: 2 cores shared; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
r1=$(ratio "${T[walden,restore]}" "${T[pgbackrest,restore]}")
r2=$(ratio "${T[walden,promoted]}" "${T[pgbackrest,promoted]}")
echo "targets: restore time <= 0.7x: $r1 $(ok "$r1" 0.7); time to promoted server <= 0.7x: $r2 $(ok "$r2" 0.7)"
