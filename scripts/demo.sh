#!/usr/bin/env bash
# The main job: install, build, bring up the default lab and show that it works.
# The lab stays up for you to explore; `knetsim down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh --locked
# `knetsim` on PATH for the commands below and for you.
ln -sf "$PWD/target/release/knetsim" /usr/local/bin/knetsim

if [ -e /tmp/knetsim/knetsim/lab.json ]; then
  echo "The default lab is already up; showing it (knetsim down removes it)."
else
  knetsim up
fi
show() { echo; echo "\$ $*"; "$@"; }
show knetsim status
show knetsim exec c0/w1 -- ping -c1 -W2 172.20.0.12
show knetsim exec c0/w1 -- ping -c1 -W2 172.20.1.11
show knetsim exec c0/w1 -- ip route
show knetsim etcdctl c0 -- endpoint health
show knetsim etcdctl c0 -- get --prefix --keys-only /coreos.com/network/subnets
show kubectl --kubeconfig /tmp/knetsim/knetsim/kubeconfig --context c0 get nodes -o wide
show kubectl --kubeconfig /tmp/knetsim/knetsim/kubeconfig --context c0 get namespaces
show kubectl --kubeconfig /tmp/knetsim/knetsim/kubeconfig --context c1 get services -A

# A Deployment behind a Service, reached by name: scheduler, kubelets, CNI, EndpointSlices,
# kube-proxy's nftables rules and the cluster DNS, all at work.
k() { kubectl --kubeconfig /tmp/knetsim/knetsim/kubeconfig --context c0 "$@"; }
show k apply -f conf/demo/web.yaml
show k rollout status deployment/web --timeout=120s
show k wait --for=condition=Ready pod/client --timeout=60s
# `up` returns once every node process is ready, as `kubeadm init` does; the DNS add-on's
# pods may still be starting, so wait for them before asking for a name.
show k -n kube-system rollout status deployment/coredns --timeout=120s
show k get pods -o wide
show k get endpointslices
show k exec client -- getent hosts web
for _ in 1 2 3; do show k exec client -- curl -s http://web/hostname; echo; done
show knetsim exec c0/w1 -- nft list map ip kube-proxy service-ips
echo
echo "The lab is up. Explore it with the commands above; remove it with: knetsim down"
