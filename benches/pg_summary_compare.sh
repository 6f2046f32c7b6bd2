#!/usr/bin/env bash
# walden's incremental base backup on PostgreSQL 17 with WAL summaries beside
# the same incremental with them turned off (--no-wal-summaries), in one run:
# a throwaway cluster (initdb --data-checksums, summarize_wal = on) of about
# SIZE_MB (pgbench tables), whose archive_command pushes every WAL file into
# two walden repositories; a full backup into each; `pgbench -t TXNS`; then
# the incremental into the first repository reading only what the summaries
# name, and into the second reading changed files whole. Page caches are
# dropped before each backup. Prints wall time, bytes read from the data
# directory (summary.read_bytes) and bytes stored. (That such a backup
# restores exact rows is the test suite's job: tests/majors.rs.)
#
# Usage: bash benches/pg_summary_compare.sh [SIZE_MB] [TXNS]   (1024, 1000)
# As root (the server and walden run as postgres). PostgreSQL 17 comes from
# scripts/install-pg.sh; psql and pgbench are Debian's 15 client tools.
# BENCH_DIR keeps everything; the server is stopped either way.
set -euo pipefail

size_mb=${1:-1024}
txns=${2:-1000}
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG17="${WALDEN_TOOLS:-$repo_dir/.tools}/pg/17/bin"
CLIENT=/usr/lib/postgresql/15/bin

if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
ratio() { printf '%.3f' "$(echo "$1 / $2" | bc -l)"; }
ok() { if [ "$(echo "$1 <= $2" | bc -l)" = 1 ]; then echo met; else echo "NOT met"; fi; }

[ -x "$PG17/initdb" ] || bash "$repo_dir/scripts/install-pg.sh" 17
[ -x "$CLIENT/pgbench" ] || { echo "Debian's PostgreSQL 15 client tools are missing: apt-get install postgresql" >&2; exit 2; }
(cd "$repo_dir" && cargo build --release --quiet)

if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"; keep=1
else work=$(mktemp -d /tmp/walden-summaries.XXXXXX); keep=0; fi
data="$work/data"
cleanup() {
    [ -f "$data/postmaster.pid" ] && (cd / && as_pg "$PG17/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1) || true
    [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
chmod a+rx "$work"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
cd /

W="$work/walden"
cp "$repo_dir/target/release/walden" "$W"; chmod a+rx "$W"
as_pg mkdir -p "$work/sock"
as_pg sh -c "umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > '$work/pass'"
for r in on off; do
    as_pg mkdir -p "$work/cache-$r"
    as_pg sh -c "cat > '$work/$r.toml'" <<EOF
repo = "$work/repo-$r"
password_file = "$work/pass"
cache_dir = "$work/cache-$r"
EOF
    as_pg "$W" --config "$work/$r.toml" init --kdf-memory-mib 8 --kdf-iterations 1 >/dev/null
done

port=55460
while [ -e "$work/sock/.s.PGSQL.$port" ] || ! python3 -c 'import socket,sys;s=socket.socket();s.bind(("127.0.0.1",int(sys.argv[1])))' "$port" 2>/dev/null; do port=$((port + 1)); done
echo "initdb (PostgreSQL 17, port $port, dir $work) ..."
as_pg "$PG17/initdb" -D "$data" -U postgres -A trust --data-checksums --no-sync --no-instructions -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$data/postgresql.auto.conf" <<EOF
port = $port
unix_socket_directories = '$work/sock'
listen_addresses = ''
wal_level = replica
summarize_wal = on
archive_mode = on
archive_command = '$W --config $work/on.toml wal-push %p && $W --config $work/off.toml wal-push %p'
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
as_pg "$PG17/pg_ctl" -D "$data" -l "$work/server.log" -w -t 60 start >/dev/null
psql_() { "$CLIENT/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$work/sock" -p "$port" -U postgres "$@"; }

scale=$(( size_mb * 10 / 150 ))
echo "load: pgbench -i -s $scale ..."
as_pg "$CLIENT/pgbench" -q -i -s "$scale" -h "$work/sock" -p "$port" -U postgres postgres >/dev/null 2>&1
psql_ -c "vacuum (freeze, analyze)" postgres
psql_ -c checkpoint postgres
data_mib=$(( $(du -sb --exclude=pg_wal "$data" | cut -f1) / 1048576 ))

backup() { # REPO_NAME EXTRA...: one backup as postgres, its JSON in $work/last.json, wall seconds on stdout
    local r=$1; shift
    drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    as_pg "$W" --config "$work/$r.toml" --json backup --pgdata "$data" --pg-host "$work/sock" --pg-port "$port" --pg-user postgres "$@" > "$work/last.json"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
field() { python3 -c "import json; j=json.load(open('$work/last.json')); print($1)"; }

echo "full backups ..."
backup on --type full >/dev/null
backup off --type full >/dev/null
echo "pgbench -t $txns ..."
as_pg "$CLIENT/pgbench" -n -t "$txns" -c 1 -h "$work/sock" -p "$port" -U postgres postgres 2>&1 | grep -E '^tps' || true

echo "incrementals ..."
t_on=$(backup on); read_on=$(field "j['summary']['read_bytes']"); stored_on=$(field "j['summary']['new_stored_bytes']")
note_on=$(field "j['postgres']['wal_summaries']['note']"); used_on=$(field "j['postgres']['wal_summaries']['used']")
t_off=$(backup off --no-wal-summaries); read_off=$(field "j['summary']['read_bytes']"); stored_off=$(field "j['summary']['new_stored_bytes']")


echo
echo "PostgreSQL 17, ${data_mib} MiB data directory (pgbench -s $scale), incremental after pgbench -t $txns, 2 cores"
printf '%-22s | %8s | %14s | %12s\n' "incremental" "wall s" "read bytes" "stored bytes"
printf '%-22s | %8.2f | %14d | %12d\n' "WAL summaries" "$t_on" "$read_on" "$stored_on"
printf '%-22s | %8.2f | %14d | %12d\n' "--no-wal-summaries" "$t_off" "$read_off" "$stored_off"
tr=$(ratio "$t_on" "$t_off"); rr=$(ratio "$read_on" "$read_off")
echo "ratio with/without: time $tr, bytes read $rr"
echo "summaries used: $used_on ($note_on)"
echo "targets: time <= 0.25x: $tr $(ok "$tr" 0.25); bytes read <= 0.1x: $rr $(ok "$rr" 0.1)"
[ "$used_on" = True ] || { echo "the summaries were not used" >&2; exit 1; }
