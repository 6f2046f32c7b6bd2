#!/usr/bin/env bash
# Replay over walden's and pgBackRest's restored directories, with the same
# WAL from one local directory (restore_command = cp), to see whether the
# restored directory itself changes PostgreSQL's replay speed. One cluster,
# one full backup by each tool, pgbench -T SECONDS, a target time; then each
# tool restores to the target (not started), and five servers replay to it
# in turn, each from cold caches:
#   A   walden's restore            B   pgBackRest's restore
#   A2  a `cp -a` copy of A         B2  a `cp -a` copy of B
#   A3  A with recovery_target_timeline = 'current' instead of 'latest'
# Prints the recovery settings, the file lists' difference, pg_wal, both
# backup labels and the extents of one large relation file, then for each
# server the time to promoted and PostgreSQL's own "redo done … elapsed".
#
# usage: bash benches/pg_replay_probe.sh [SIZE_MB] [SECONDS]   (defaults 512, 120)
#        ORDER="B A B2 A2 A3" replays in another order (default "A B A2 A3 B2").
# needs what pg_restore_compare.sh needs; run as root.
set -euo pipefail
size_mb="${1:-512}"; dur="${2:-120}"
source "$(dirname "${BASH_SOURCE[0]}")/pg_common.sh"
pg_setup walden-replay-probe
pg_load "$size_mb"
rport=$(free_port $((port + 1)))
psql_ -c CHECKPOINT
echo full > "$work/phase"
measure walden backup "$W" --config "$wconf" --json backup --pgdata "$data" --type full --pg-host "$sock" --pg-port "$port" --pg-user postgres
measure pgbackrest backup pgbackrest --config="$pconf" --stanza=bench --type=full backup
wid=$(json 'j["id"]' < "$work/walden-backup.out")
plabel=$(as_pg pgbackrest --config="$pconf" --stanza=bench --output=json info | json 'j[0]["backup"][-1]["label"]')
wal_start=$(json 'j["postgres"]["start_lsn"]' < "$work/walden-backup.out")
first_seg=$(psql_ -c "SELECT pg_walfile_name('$wal_start')")
echo "T$dur" > "$work/phase"
"$PGBIN/pgbench" -T "$dur" -c 1 2>/dev/null | grep -E '^tps' >&2
expected=$(psql_ -c "SELECT sum(abalance) FROM pgbench_accounts")
target_time=$(psql_ -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
psql_ -c "SELECT pg_sleep(0.2)" >/dev/null
psql_ -c "UPDATE pgbench_accounts SET abalance = abalance + 1000000 WHERE aid = 1"
last_seg=$(psql_ -c "SELECT pg_walfile_name(pg_switch_wal())")
sysid=$(psql_ -c "SELECT system_identifier FROM pg_control_system()")
wait_archived
echo done > "$work/phase"
as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
n_segs=$(python3 -c "import sys; a,b=sys.argv[1:]; print(int(b[8:16],16)*256+int(b[16:],16)-(int(a[8:16],16)*256+int(a[16:],16))+1)" "$first_seg" "$last_seg")
as_pg mkdir -p "$work/walcopy"
for seg in $(python3 -c "
import sys; a,n=sys.argv[1],int(sys.argv[2]); t=a[:8]; s=int(a[8:16],16)*256+int(a[16:],16)
print(' '.join(f'{t}{(s+i)>>8:08X}{(s+i)&255:08X}' for i in range(n)))" "$first_seg" "$n_segs"); do
    as_pg env WALDEN_CLUSTER="$sysid" "$W" --config "$wconf" wal-fetch --prefetch 0 "$seg" "$work/walcopy/$seg"
done
newdir() { rm -rf "$1"; as_pg mkdir -m 700 "$1"; }
newdir "$work/A"; as_pg "$W" --config "$wconf" restore "$wid" --to "$work/A" --target-time "$target_time" --target-action promote >/dev/null
newdir "$work/B"; as_pg pgbackrest --config="$pconf" --stanza=bench --set="$plabel" --pg1-path="$work/B" --type=time --target="$target_time" --target-action=promote restore
as_pg cp -a "$work/A" "$work/A2"
as_pg cp -a "$work/A" "$work/A3"
sed -i "s/recovery_target_timeline = 'latest'/recovery_target_timeline = 'current'/" "$work/A3/postgresql.auto.conf"
as_pg cp -a "$work/B" "$work/B2"
echo "== auto.conf A"; grep -v "^#" "$work/A/postgresql.auto.conf"; echo "== auto.conf B"; grep -v "^#" "$work/B/postgresql.auto.conf"
echo "== diff of file lists"; diff <(cd "$work/A" && find . | sort) <(cd "$work/B" && find . | sort) | head -30 || true
echo "== pg_wal"; ls -la "$work/A/pg_wal" "$work/B/pg_wal"
echo "== backup_label"; cat "$work/A/backup_label"; cat "$work/B/backup_label"
big=$(cd "$work/B" && find base -type f -size +100M | head -1); echo "== filefrag $big"; filefrag "$work/A/$big" "$work/B/$big" "$work/A2/$big"
replay() {
    local label=$1 d=$2
    { echo "port = $rport"; echo "archive_mode = off"; echo "restore_command = 'cp $work/walcopy/%f %p'"; } >> "$d/postgresql.auto.conf"
    drop_caches
    local t0; t0=$(date +%s.%N)
    as_pg "$PGBIN/pg_ctl" -D "$d" -l "$work/server-$label.log" start >/dev/null
    while :; do
        s=$(PGPORT=$rport "$PGBIN/psql" -X -At -c "SELECT pg_is_in_recovery()" 2>/dev/null) || s=""
        [ "$s" = f ] && break; sleep 0.1
    done
    local t2; t2=$(date +%s.%N)
    got=$(PGPORT=$rport psql_ -c "SELECT sum(abalance) FROM pgbench_accounts")
    as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
    echo "$label: $(echo "$t2 - $t0" | bc) s to promoted, sum $got (expected $expected); $(grep -c 'restored log file' "$work/server-$label.log") segments"
    grep -E "redo starts|redo done|recovery stopping|ready to accept|interrupted|starting point" "$work/server-$label.log" | cut -c1-140
}
for label in ${ORDER:-A B A2 A3 B2}; do replay "$label" "$work/$label"; done
