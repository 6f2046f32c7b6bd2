#!/usr/bin/env bash
# walden beside pgBackRest on the same throwaway PostgreSQL 15 cluster, in one
# run, on this machine: full backup, incremental after a light workload
# (pgbench -t 2000), incremental after pgbench -T SECONDS; and the latency of
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
# (its parent must be traversable by postgres).
set -euo pipefail
size_mb="${1:-1024}"
dur="${2:-60}"
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 is not installed in $PGBIN" >&2; exit 2; }
command -v pgbackrest >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest; }
(cd "$repo_dir" && cargo build --release --quiet)

if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi

# BENCH_DIR keeps everything for a look afterwards; the cluster is stopped either way.
if [ -n "${BENCH_DIR:-}" ]; then work=$BENCH_DIR; rm -rf "$work"; mkdir -p "$work"; keep=1
else work=$(mktemp -d /tmp/walden-pgbench.XXXXXX); keep=0; fi
data="$work/data"
cleanup() {
    [ -f "$data/postmaster.pid" ] && (cd / && as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1) || true
    [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
chmod a+rx "$work"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
cd /    # postgres cannot enter root's home

# Everything the server's archive_command touches must be postgres's.
as_pg mkdir -p "$work/sock" "$work/pgbr-repo" "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbr-spool" "$work/walden-cache"
W="$work/walden"
cp "$repo_dir/target/release/walden" "$W"; chmod a+rx "$W"
wrepo="$work/walden-repo"; wconf="$work/walden.toml"; pconf="$work/pgbackrest.conf"; sock="$work/sock"

port=55432
while ! python3 -c 'import socket,sys;s=socket.socket();s.bind(("127.0.0.1",int(sys.argv[1])))' "$port" 2>/dev/null \
      || [ -e "/var/run/postgresql/.s.PGSQL.$port" ]; do port=$((port + 1)); done

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
# walden tries the key files in name order, paying one Argon2id derivation per
# key it tries; record where the archive key landed.
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
b() { /usr/bin/time -f %M -o "$work/arch-b.rss" pgbackrest --config="$pconf" --stanza=bench archive-push "\$p"; }
run() { local t0 t1 rc; t0=\$(date +%s%N); "\$1" >>"$work/archive.err" 2>&1; rc=\$?; t1=\$(date +%s%N); echo "\$((t1 - t0)) \$rc"; }
case \${f:23:1} in [02468ACE]) rw=\$(run w); rb=\$(run b); o=wb ;; *) rb=\$(run b); rw=\$(run w); o=bw ;; esac
echo "\$(cat "$work/phase" 2>/dev/null) \$f \$rw \$(tail -1 "$work/arch-w.rss") \$rb \$(tail -1 "$work/arch-b.rss") \$o" >> "$work/archive.log"
[ "\${rw#* }" = 0 ] && [ "\${rb#* }" = 0 ]
EOF
chmod a+rx "$arch"
echo setup > "$work/phase"; chmod a+r "$work/phase"

echo "initdb and load ${size_mb} MiB (port $port, dir $work) ..." >&2
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
psql_() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
as_pg pgbackrest --config="$pconf" --stanza=bench stanza-create >/dev/null
as_pg pgbackrest --config="$pconf" --stanza=bench check >/dev/null     # archives through $arch

# Waits until every finished segment has been archived by both tools.
wait_archived() {
    local n=0
    while compgen -G "$data/pg_wal/archive_status/*.ready" >/dev/null; do
        sleep 1; n=$((n + 1))
        [ $n -lt 1800 ] || { echo "archiving does not keep up; see $work/archive.err" >&2; tail "$work/archive.err" >&2; exit 1; }
    done
}

echo load > "$work/phase"
scale=$(( size_mb * 70 / 100 * 10 / 155 )); [ "$scale" -ge 1 ] || scale=1     # ~15.5 MiB per scale unit
rand_rows=$(( size_mb * 30 / 100 * 128 ))                                        # 8 KiB per row
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

declare -A T M S D
# measure TOOL STEP CMD...: wall seconds and max RSS (KiB) of CMD, run as postgres.
measure() {
    local tool=$1 step=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local out
    as_pg /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/$tool-$step.out" 2>"$work/$tool-$step.err" \
        || { echo "$tool $step failed (exit $?):" >&2; cat "$work/$tool-$step.err" >&2; exit 1; }
    out=$(tail -1 "$work/time.out")
    T[$tool,$step]=${out% *}; M[$tool,$step]=${out#* }
}
dub() { du -sb "$1" | cut -f1; }
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

for step in full incr-light incr-T$dur; do
    case $step in
        incr-light) echo light > "$work/phase"; "$PGBIN/pgbench" -t 2000 -c 1 2>/dev/null | grep -E '^tps' >&2 ;;
        incr-T*) echo T$dur > "$work/phase"; "$PGBIN/pgbench" -T "$dur" -c 1 2>/dev/null | grep -E '^tps' >&2 ;;
    esac
    wait_archived; psql_ -c CHECKPOINT
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

ratio() { if [ "$2" != 0 ]; then printf '%.2f' "$(echo "$1 / $2" | bc -l)"; else echo -; fi; }
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
# phase name w_ns w_rc w_kib b_ns b_rc b_kib order; 16 MiB segments only (24 hex digits), both pushes succeeded
segs = [r for r in rows if len(r[1]) == 24 and r[3] == '0' and r[6] == '0']
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]
def line(label, rs):
    w = [int(r[2]) / 1e9 for r in rs]; b = [int(r[5]) / 1e9 for r in rs]
    print(f"{label:<22} n={len(rs):<4} walden median {pct(w, 50):.3f} s p90 {pct(w, 90):.3f} s | "
          f"pgbackrest median {pct(b, 50):.3f} s p90 {pct(b, 90):.3f} s | ratio median {pct(w, 50) / pct(b, 50):.2f} p90 {pct(w, 90) / pct(b, 90):.2f}")
line("wal-push per segment", segs)
w50 = pct([int(r[2]) for r in segs], 50); b50 = pct([int(r[5]) for r in segs], 50)
open(sys.argv[2], "w").write(f"{w50 / b50:.2f}\n")
by = collections.OrderedDict()
for r in segs: by.setdefault(r[0], []).append(r)
for ph, rs in by.items(): line(f"  during {ph}", rs)
mw = max(int(r[4]) for r in segs); mb = max(int(r[7]) for r in segs)
print(f"wal-push max RSS: walden {mw // 1024} MiB, pgbackrest archive-push {mb // 1024} MiB; "
      f"{len(rows) - len(segs)} other rows (history/backup files, or a failed push: see archive.err)")
EOF
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
ok() { if [ "$(echo "$1 <= $2" | bc -l)" = 1 ]; then echo met; else echo "NOT met"; fi; }
r_full=$(ratio "${T[walden,full]}" "${T[pgbackrest,full]}")
r_light=$(ratio "${S[walden,incr-light]}" "${S[pgbackrest,incr-light]}")
r_heavy=$(ratio "${S[walden,incr-T$dur]}" "${S[pgbackrest,incr-T$dur]}")
r_wal=$(cat "$work/walpush.ratio")
echo "targets: full backup time <= 0.5x: $r_full $(ok "$r_full" 0.5); incr-light bytes <= 0.5x: $r_light $(ok "$r_light" 0.5);" \
     "incr-T$dur bytes <= 1.0x: $r_heavy $(ok "$r_heavy" 1.0); wal-push median <= 0.5x: $r_wal $(ok "$r_wal" 0.5)"
