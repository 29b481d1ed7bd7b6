#!/usr/bin/env bash
# Every check CI runs: formatting, lints, and all tests (unit and end-to-end; the end-to-end
# tests build real namespaces, so run this as root).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
# The kubelet the lab installs (static, `kubelet` profile) builds and starts.
bash scripts/build.sh --kubelet-only --locked
