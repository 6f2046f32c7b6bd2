#!/usr/bin/env bash
# The whole test suite: installs what the tests need (PostgreSQL, the S3
# server and GCS emulator), checks formatting and lints, then runs every test
# (unit, format vectors, CLI end-to-end, storage conformance on fs, S3, GCS).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir"
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets 2>&1
