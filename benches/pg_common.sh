# Shared setup of the walden-beside-pgBackRest benchmarks (pg_compare.sh,
# pg_restore_compare.sh); sourced, not run. Call pg_setup, then pg_load
# SIZE_MB. pg_setup makes a throwaway PostgreSQL 15 cluster (initdb
# --data-checksums) whose one archive_command pushes every WAL file to both
# a walden repository and a pgBackRest stanza, timing each push; pg_load fills
# it with pgbench tables and random, poorly compressible rows.
#
# Defines, among others: work (the scratch directory; BENCH_DIR keeps it),
# data, sock, port, W (the walden binary), wrepo, wconf, pconf, PGBIN, as_pg,
# psql_, wait_archived, measure, free_port, dub, json, ratio, ok; and, after
# pg_load: scale, pgb_mib, rnd_mib, data_mib. `clusters` lists the data
# directories whose servers are stopped on exit (add restored ones to it).

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin

if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
psql_() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# Bytes under a directory. A push running meanwhile may remove a temporary
# file under du's feet (du still prints the total, but fails): temporary
# files are not stored bytes, and a vanished one is no error here.
dub() { { du -sb --exclude=.tmp "$1" 2>/dev/null || true; } | cut -f1; }
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
ratio() { if [ "$2" != 0 ]; then printf '%.2f' "$(echo "$1 / $2" | bc -l)"; else echo -; fi; }
ok() { if [ "$(echo "$1 <= $2" | bc -l)" = 1 ]; then echo met; else echo "NOT met"; fi; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# The first TCP port from $1 on that is free and has no socket file.
free_port() {
    local p=$1
    while ! python3 -c 'import socket,sys;s=socket.socket();s.bind(("127.0.0.1",int(sys.argv[1])))' "$p" 2>/dev/null \
          || [ -e "/var/run/postgresql/.s.PGSQL.$p" ] || [ -e "${sock:-/nonexistent}/.s.PGSQL.$p" ]; do p=$((p + 1)); done
    echo "$p"
}

clusters=()
pg_cleanup() {
    local d
    for d in "${clusters[@]}"; do
        [ -f "$d/postmaster.pid" ] && (cd / && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1) || true
    done
    [ "${keep:-0}" = 1 ] || rm -rf "$work"
}

# pg_setup PREFIX: checks, builds walden, makes both repositories, their
# configurations and the shared archive_command, then initdb and starts the
# server with archiving on, and creates the pgBackRest stanza.
pg_setup() {
    [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 is not installed in $PGBIN" >&2; exit 2; }
    command -v pgbackrest >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest; }
    (cd "$repo_dir" && cargo build --release --quiet)

    # BENCH_DIR keeps everything for a look afterwards; the servers are stopped either way.
    if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"; keep=1
    else work=$(mktemp -d "/tmp/$1.XXXXXX"); keep=0; fi
    data="$work/data"
    clusters=("$data")
    trap pg_cleanup EXIT
    chmod a+rx "$work"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
    cd /    # postgres cannot enter root's home

    # Everything the server's archive_command touches must be postgres's.
    as_pg mkdir -p "$work/sock" "$work/pgbr-repo" "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbr-spool" "$work/walden-cache"
    W="$work/walden"
    cp "$repo_dir/target/release/walden" "$W"; chmod a+rx "$W"
    wrepo="$work/walden-repo"; wconf="$work/walden.toml"; pconf="$work/pgbackrest.conf"; sock="$work/sock"
    port=$(free_port 55432)

    # Passwords: the DBA's own for walden (default Argon2id cost), and, as
    # spec/cli.md recommends for archive_command, a long random one on a second
    # key with a cheap cost. pgBackRest's repository cipher pass is random too.
    rnd() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    as_pg sh -c "umask 077; echo 'correct horse battery staple' > '$work/admin.pass'; echo $(rnd) > '$work/archive.pass'"
    kdf_mib=8; kdf_iter=1
    as_pg env WALDEN_PASSWORD_FILE="$work/admin.pass" "$W" --repo "$wrepo" --cache-dir "$work/walden-cache" init >/dev/null
    as_pg env WALDEN_PASSWORD_FILE="$work/admin.pass" WALDEN_NEW_PASSWORD_FILE="$work/archive.pass" \
        "$W" --repo "$wrepo" --cache-dir "$work/walden-cache" key add --kdf-memory-mib $kdf_mib --kdf-iterations $kdf_iter >/dev/null
    as_pg sh -c "umask 077; cat > '$wconf'" <<EOF
repo = "$wrepo"
password_file = "$work/archive.pass"
cache_dir = "$work/walden-cache"
EOF
    # A second walden repository, archived with wal-push --async, the mode
    # the README suggests for a busy server: its archive_command returns
    # once the segment is durable in the local queue. It runs only while
    # $work/async-on exists (a pgbench phase), so its background pusher does
    # not share the machine with a measured backup.
    warepo="$work/walden-async-repo"; waconf="$work/walden-async.toml"
    as_pg mkdir -p "$work/walden-async-cache"
    as_pg env WALDEN_PASSWORD_FILE="$work/archive.pass" "$W" --repo "$warepo" --cache-dir "$work/walden-async-cache" \
        init --kdf-memory-mib $kdf_mib --kdf-iterations $kdf_iter >/dev/null
    as_pg sh -c "umask 077; cat > '$waconf'" <<EOF
repo = "$warepo"
password_file = "$work/archive.pass"
cache_dir = "$work/walden-async-cache"
EOF
    # Where the archive key lands in name order (walden once tried the key
    # files in that order, paying one Argon2id derivation per key tried).
    key_pos=$(as_pg "$W" --config "$wconf" --json key list | python3 -c '
import json,sys; ks=json.load(sys.stdin); print([k.get("current") for k in ks].index(True) + 1, "of", len(ks))')

    as_pg sh -c "umask 077; cat > '$pconf'" <<EOF
[global]
repo1-path=$work/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(rnd)
repo1-bundle=y
repo1-block=y
beta=y
compress-type=zst
process-max=2
start-fast=y
log-path=$work/pgbr-log
lock-path=$work/pgbr-lock
spool-path=$work/pgbr-spool
log-level-console=warn
log-level-file=info

[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$sock
EOF

    # One archive_command for both tools, timing each (wall from date +%s%N;
    # max RSS from /usr/bin/time). The order alternates with the segment number
    # so neither tool always reads the segment first. (pgBackRest refuses an
    # archive_command that does not contain "pgbackrest", hence the script's name.)
    arch="$work/archive-walden-pgbackrest.sh"
    cat > "$arch" <<EOF
#!/bin/bash
p=\$1; f=\${p##*/}
w() { /usr/bin/time -f %M -o "$work/arch-w.rss" "$W" --config "$wconf" wal-push "\$p"; }
a() { "$W" --config "$waconf" wal-push --async "\$p"; }
b() { /usr/bin/time -f %M -o "$work/arch-b.rss" pgbackrest --config="$pconf" --stanza=bench archive-push "\$p"; }
run() { local t0 t1 rc; t0=\$(date +%s%N); "\$1" >>"$work/archive.err" 2>&1; rc=\$?; t1=\$(date +%s%N); echo "\$((t1 - t0)) \$rc"; }
case \${f:23:1} in [02468ACE]) rw=\$(run w); rb=\$(run b); o=wb ;; *) rb=\$(run b); rw=\$(run w); o=bw ;; esac
if [ -e "$work/async-on" ]; then ra=\$(run a); else ra="- 0"; fi
echo "\$(cat "$work/phase" 2>/dev/null) \$f \$rw \$(tail -1 "$work/arch-w.rss") \$rb \$(tail -1 "$work/arch-b.rss") \$o \$ra" >> "$work/archive.log"
[ "\${rw#* }" = 0 ] && [ "\${rb#* }" = 0 ] && [ "\${ra#* }" = 0 ]
EOF
    chmod a+rx "$arch"
    echo setup > "$work/phase"; chmod a+r "$work/phase"

    echo "initdb (port $port, dir $work) ..." >&2
    as_pg "$PGBIN/initdb" -D "$data" -U postgres -A trust --data-checksums --no-sync --no-instructions -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$sock'
wal_level = replica
archive_mode = on
archive_command = '$arch %p'
EOF
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$work/server.log" -w -t 60 start >/dev/null
    export PGHOST="$sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
    as_pg pgbackrest --config="$pconf" --stanza=bench stanza-create >/dev/null
    as_pg pgbackrest --config="$pconf" --stanza=bench check >/dev/null     # archives through $arch
}

# Waits until every finished segment has been archived by both tools.
wait_archived() {
    local n=0
    while compgen -G "$data/pg_wal/archive_status/*.ready" >/dev/null; do
        sleep 1; n=$((n + 1))
        [ $n -lt 1800 ] || { echo "archiving does not keep up; see $work/archive.err" >&2; tail "$work/archive.err" >&2; exit 1; }
    done
}

# Waits until the asynchronous queue has drained into its repository.
wait_async_drained() {
    local n=0
    while [ -n "$(find "$work/walden-async-cache" -path '*wal-queue*' -type f -name '0*' 2>/dev/null | head -1)" ]; do
        sleep 1; n=$((n + 1))
        [ $n -lt 600 ] || { echo "the wal-push --async queue does not drain" >&2; exit 1; }
    done
}

# pg_load SIZE_MB: ~70% pgbench tables (pgbench -i), ~30% random bytea rows
# stored uncompressed; then VACUUM ANALYZE, CHECKPOINT, and waits for the
# archive.
pg_load() {
    local size_mb=$1
    echo "load ${size_mb} MiB ..." >&2
    echo load > "$work/phase"
    scale=$(( size_mb * 70 / 100 * 10 / 155 )); [ "$scale" -ge 1 ] || scale=1     # ~15.5 MiB per scale unit
    local rand_rows=$(( size_mb * 30 / 100 * 128 ))                                  # 8 KiB per row
    "$PGBIN/pgbench" -i -q -s "$scale" >/dev/null 2>&1
    psql_ <<EOF
CREATE EXTENSION pgcrypto;
CREATE TABLE bench_random (id int PRIMARY KEY, payload bytea);
ALTER TABLE bench_random ALTER COLUMN payload SET STORAGE EXTERNAL;  -- no TOAST compression
INSERT INTO bench_random SELECT g,
    gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024) ||
    gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024)
  FROM generate_series(1, $rand_rows) g;
VACUUM ANALYZE;
CHECKPOINT;
EOF
    wait_archived
    pgb_mib=$(psql_ -c "SELECT (sum(pg_total_relation_size(c.oid)) / 1048576)::int FROM pg_class c WHERE relname LIKE 'pgbench_%' AND relkind = 'r'")
    rnd_mib=$(psql_ -c "SELECT pg_total_relation_size('bench_random') / 1048576")
    data_mib=$(( $(du -sb --exclude=pg_wal "$data" | cut -f1) / 1048576 ))
}

declare -A T M
# measure TOOL STEP CMD...: wall seconds and max RSS (KiB) of CMD, run as
# postgres after dropping the page caches, into T[TOOL,STEP] and M[TOOL,STEP].
# Its stdout and stderr go to $work/TOOL-STEP.out and .err.
measure() {
    local tool=$1 step=$2; shift 2
    drop_caches
    local out
    as_pg /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/$tool-$step.out" 2>"$work/$tool-$step.err" \
        || { echo "$tool $step failed (exit $?):" >&2; cat "$work/$tool-$step.err" >&2; exit 1; }
    out=$(tail -1 "$work/time.out")
    T[$tool,$step]=${out% *}; M[$tool,$step]=${out#* }
}
