#!/usr/bin/env bash
# Builds knetsim and its node programs into target/release/ (or $CARGO_TARGET_DIR/release/),
# where `knetsim` finds them next to itself. Other arguments go to cargo (`--locked`).
#   scripts/build.sh [--kubelet-only] [cargo options]
#
# The kubelet runs on every node and about all of its code is resident in each, so the one
# installed is built apart: with the `kubelet` profile (no unwinding) and linked statically
# (no shared C library mapped beside it: a static executable holds only the libc code it
# uses). The static link needs an explicit `--target`, so that its flags do not reach build
# scripts and proc macros; the kubelet's dependencies are then built a second time, in
# target/<host>/kubelet/ (a few minutes the first time). `cargo build --release` alone gives a
# working kubelet too, just a larger one. `--kubelet-only` builds and checks only that kubelet
# (CI), without installing it.
set -euo pipefail
cd "$(dirname "$0")/.."

kubelet_only=no
if [ "${1:-}" = --kubelet-only ]; then
  kubelet_only=yes
  shift
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
host="$(rustc -vV | sed -n 's/^host: //p')"
lean_kubelet="$target_dir/$host/kubelet/knetsim-kubelet"

if [ "$kubelet_only" = no ]; then
  cargo build --release --bins "$@"
fi
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --profile kubelet --target "$host" --bin knetsim-kubelet "$@"
# It must start (a static executable with the wrong relocation model crashes at once).
"$lean_kubelet" --version >/dev/null
if [ "$kubelet_only" = no ]; then
  install -m 0755 "$lean_kubelet" "$target_dir/release/knetsim-kubelet"
  echo "build: knetsim and its programs are in $target_dir/release/"
fi
