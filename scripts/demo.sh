#!/usr/bin/env bash
# Point-in-time recovery, end to end, on a throwaway PostgreSQL 15 cluster and
# a throwaway local repository: WAL archived by `walden wal-push`, a base
# backup, money moving between accounts, the balances and the time recorded,
# more transfers and then an accident (every balance set to 0). walden
# restores the cluster to the recorded moment, PostgreSQL replays the WAL it
# fetches through walden and promotes, and the demo proves the balances are
# exactly the recorded ones. Exits 0 and prints "PITR demo: OK" only then.
#
# Needs Rust; installs PostgreSQL 15 with apt-get when it is missing (as
# root, or with sudo). As root, the server, archive_command and walden run as
# the `postgres` user, as they would on a real machine. Everything lives in
# one temporary directory, removed on exit unless DEMO_KEEP=1.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir"
pg_bin=/usr/lib/postgresql/15/bin
accounts=10

step() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
t0=$SECONDS

# --- PostgreSQL 15 and walden ------------------------------------------------
step "PostgreSQL 15"
if [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pgbench" ] && [ -x "$pg_bin/psql" ]; then
    "$pg_bin/postgres" --version
else
    # The same as scripts/install-test-deps.sh's first step.
    echo "missing: installing the postgresql package with apt-get"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    [ -x "$pg_bin/initdb" ] || die "apt-get installed postgresql but $pg_bin/initdb is missing (not PostgreSQL 15?)"
    "$pg_bin/postgres" --version
fi

step "build walden (cargo build --release)"
cargo build --release --quiet
t_built=$SECONDS

# As root, the server and everything it runs are the postgres user's.
if [ "$(id -u)" -eq 0 ]; then
    as_pg() { (cd / && runuser -u postgres -- "$@"); }
    give() { chown -R postgres:postgres "$@"; }
else
    as_pg() { (cd / && "$@"); }
    give() { :; }
fi

work="$(mktemp -d /tmp/walden-demo.XXXXXX)"
chmod 755 "$work"
sock="$work/sock"
source_data="$work/source"
restored_data="$work/restored"

stop_server() {
    if [ -f "$1/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
cleanup() {
    local rc=$?
    stop_server "$restored_data"
    stop_server "$source_data"
    # wal-fetch leaves a prefetch of the next segments running in the
    # background for a few moments; let it finish before removing its spool.
    for _ in $(seq 1 100); do
        pgrep -f -- "$work/bin/walden" >/dev/null || break
        sleep 0.1
    done
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "demo: kept $work (DEMO_KEEP=1)"
    else
        rm -rf "$work" || true
    fi
    exit "$rc"
}
trap cleanup EXIT

# No TCP at all: each server listens only on a socket in $sock, so a port
# number only names the socket and cannot clash with another server.
port=$((20000 + RANDOM % 20000))
port2=$((port + 1))
psql_at() { # PORT SQL...
    local p="$1"
    shift
    "$pg_bin/psql" -h "$sock" -p "$p" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 -At -c "$*"
}
sql() { psql_at "$port" "$@"; }
balances() { # PORT
    psql_at "$1" "select string_agg(id || ':' || balance, ' ' order by id) || '  (total ' || sum(balance) || ')' from accounts"
}
show_log() {
    echo "--- $1 (last lines)" >&2
    tail -n 30 "$1" >&2 || true
}

# walden as PostgreSQL runs it: this binary, copied where the server's user
# can run it, and a config file naming the repository and password file.
mkdir -p "$work/bin" "$work/walden" "$sock"
cp "$repo_dir/target/release/walden" "$work/bin/walden"
walden_bin="$work/bin/walden"
config="$work/walden/walden.toml"
head -c 32 /dev/urandom | base64 > "$work/walden/password"
chmod 600 "$work/walden/password"
cat > "$config" <<EOF
repo = "$work/walden/repo"
password_file = "$work/walden/password"
cache_dir = "$work/walden/cache"
EOF
give "$work"
walden() {
    as_pg env -u WALDEN_REPO -u WALDEN_PASSWORD -u WALDEN_PASSWORD_FILE -u WALDEN_CACHE_DIR -u WALDEN_CONFIG \
        "$walden_bin" --config "$config" "$@"
}

# --- the source cluster, archiving into walden --------------------------------
step "a PostgreSQL cluster in $work, archiving WAL with walden"
# A long random password in a file gains nothing from an expensive key
# derivation, and archive_command pays it once per WAL segment.
walden init --kdf-memory-mib 8 --kdf-iterations 1
as_pg "$pg_bin/initdb" -D "$source_data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --data-checksums --no-sync --no-instructions >"$work/initdb.log" 2>&1 \
    || { show_log "$work/initdb.log"; die "initdb failed"; }
cat >> "$source_data/postgresql.conf" <<EOF

# walden demo
port = $port
listen_addresses = ''
unix_socket_directories = '$sock'
fsync = off
wal_level = replica
archive_mode = on
archive_command = '$walden_bin --config $config wal-push %p'
EOF
as_pg "$pg_bin/pg_ctl" -D "$source_data" -l "$work/source.log" -w -t 60 start >/dev/null \
    || { show_log "$work/source.log"; die "the source server did not start"; }
echo "archive_command = '$walden_bin --config $config wal-push %p'"
sql "create table accounts(id int primary key, balance bigint not null);
     insert into accounts select g, 5000 from generate_series(1, $accounts) g"
echo "accounts: $(balances "$port")"

step "walden backup --pgdata (online base backup)"
walden backup --pgdata "$source_data" --pg-host "$sock" --pg-port "$port" --pg-user postgres

# --- a workload, a moment to come back to, then an accident -------------------
cat > "$work/transfer.sql" <<EOF
\\set a random(1, $accounts)
\\set b random(1, $accounts)
\\set amount random(1, 100)
BEGIN;
UPDATE accounts SET balance = balance - :amount WHERE id = :a;
UPDATE accounts SET balance = balance + :amount WHERE id = :b;
COMMIT;
EOF
transfers() { # N
    "$pg_bin/pgbench" -h "$sock" -p "$port" -U postgres -n -c 4 -t "$(($1 / 4))" -f "$work/transfer.sql" postgres \
        >"$work/pgbench.log" 2>&1 || { show_log "$work/pgbench.log"; die "pgbench failed"; }
    echo "$1 transfers between random accounts"
}

step "workload"
transfers 600
recorded="$(balances "$port")"
moment="$(sql "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")"
echo "recorded at $moment"
echo "  balances: $recorded"
sleep 1

step "more transfers, then the accident: UPDATE accounts SET balance = 0"
transfers 200
sql "update accounts set balance = 0"
echo "accounts: $(balances "$port")"

step "archive the last WAL (pg_switch_wal) and stop the source"
current="$(sql "select pg_walfile_name(pg_current_wal_lsn())")"
sql "select pg_switch_wal()" >/dev/null
for _ in $(seq 1 600); do
    archived="$(sql "select coalesce(last_archived_wal, '') from pg_stat_archiver")"
    [[ "$archived" < "$current" ]] || break
    sleep 0.1
done
[[ "$archived" < "$current" ]] && { show_log "$work/source.log"; die "WAL $current was not archived within 60 s"; }
echo "archived through $archived; $(sql "select failed_count from pg_stat_archiver") failed attempts"
as_pg "$pg_bin/pg_ctl" -D "$source_data" -m fast -w stop >/dev/null

step "walden info: backups, archived WAL and the restorable window"
walden info

# --- point-in-time restore ----------------------------------------------------
step "walden restore --to $restored_data --target-time '$moment' --target-action promote"
walden restore --to "$restored_data" --target-time "$moment" --target-action promote
echo "recovery settings walden wrote (postgresql.auto.conf):"
sed -n '/^# Recovery settings written by walden/,$p' "$restored_data/postgresql.auto.conf" | sed 's/^/  /'
# The restored server must not archive into the same repository.
printf 'port = %s\narchive_mode = off\n' "$port2" >> "$restored_data/postgresql.auto.conf"
give "$restored_data/postgresql.auto.conf"

step "start PostgreSQL on the restored directory: it replays WAL fetched by walden, then promotes"
as_pg "$pg_bin/pg_ctl" -D "$restored_data" -l "$work/restored.log" -w -t 120 start >/dev/null \
    || { show_log "$work/restored.log"; die "the restored server did not start"; }
promoted=no
for _ in $(seq 1 600); do
    if [ "$(psql_at "$port2" "select pg_is_in_recovery()" 2>/dev/null)" = f ]; then
        promoted=yes
        break
    fi
    sleep 0.1
done
[ "$promoted" = yes ] || { show_log "$work/restored.log"; die "the restored server was not promoted within 60 s"; }
grep -E 'recovery stopping|restored log file|selected new timeline' "$work/restored.log" | sed 's/^/  /' | tail -n 6 || true

# --- proof --------------------------------------------------------------------
step "proof: the balances after restore equal those recorded at $moment"
restored="$(balances "$port2")"
echo "  recorded: $recorded"
echo "  restored: $restored"
echo
echo "run time: $((SECONDS - t_built)) s after the build ($((SECONDS - t0)) s in all)"
if [ "$restored" = "$recorded" ]; then
    echo "PITR demo: OK"
else
    echo "PITR demo: FAILED: the restored balances differ from the recorded ones" >&2
    show_log "$work/restored.log"
    exit 1
fi
