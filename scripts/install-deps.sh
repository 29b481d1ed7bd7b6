#!/usr/bin/env bash
# Installs what knetsim needs from Debian's packages (idempotent; skips apt when all are there).
# The Rust toolchain is expected on the machine (rustup); everything else comes from here.
set -euo pipefail

packages=(
  etcd-server etcd-client          # one etcd per cluster, and etcdctl
  iproute2 iputils-ping util-linux # ip, ping, nsenter/setpriv
  nftables iptables                # kube-proxy's rules; iptables(-nft) for CNI portmap
  libmimalloc2.0                   # the allocator kubeproxy-lite runs with (lab/src/plan.rs)
  containernetworking-plugins      # CNI: bridge, host-local, loopback, portmap
  nginx                            # ingress, and the nginx image
  curl tcpdump procps              # what learners use inside the lab (and the tests: pgrep)
  bind9-dnsutils                   # dig, to ask the cluster DNS
  python3 python3-venv             # the python image, a test server, the Python client's venv
  openssl                          # the tests' HTTPS probe target makes its certificate
  protobuf-compiler libprotobuf-dev # the etcd-client crate's build: protoc, and the
                                   # well-known types (descriptor.proto) etcd's protos import
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: installing ${missing[*]} needs root: run it as root (e.g. with sudo)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged etcd and nginx services; knetsim runs its own, per lab.
  for svc in etcd nginx; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi
# The official Kubernetes Python client, which the e2e tests drive (tests/python/), in a
# virtualenv of its own: Debian's Python refuses system-wide pip installs.
python_client=/opt/knetsim-python
if ! "$python_client/bin/python3" -c 'import kubernetes' 2>/dev/null; then
  echo "install-deps: installing the kubernetes Python client (32.x) in $python_client"
  python3 -m venv "$python_client"
  "$python_client/bin/pip" install -q 'kubernetes==32.*'
fi
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
