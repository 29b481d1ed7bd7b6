# knetsim in a container:
#   docker build -t knetsim .
#   docker run -it --privileged --rm knetsim        # a shell with the default lab up
#
# --privileged is needed: the lab creates network namespaces, veths, bridges and nftables
# rules inside the container. Nothing is added to the host's own network namespace.
#
# Besides knetsim (its command and node programs) and the Debian packages it uses, the image
# carries the real programs a learner may swap in for knetsim's own: kubectl, flanneld, and
# skupper-router's skrouterd (built from source; skip that stage's cost with
# --build-arg SKROUTERD=no).

ARG DEBIAN=bookworm

# ---- knetsim -----------------------------------------------------------------------------
FROM rust:1-${DEBIAN} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# knetsim and its node programs, which it finds next to itself (the kubelet built apart, see
# scripts/build.sh).
RUN bash scripts/build.sh --locked \
 && mkdir /out \
 && cd target/release \
 && cp knetsim knetsim-kubelet knetsim-pause knetsim-shim knetsim-agnhost knetsim-flannel-cni /out/

# ---- skupper-router (skrouterd), with Qpid Proton linked statically ----------------------
FROM debian:${DEBIAN} AS skrouterd
ARG SKROUTERD=yes
ARG PROTON_VERSION=0.39.0
ARG SKUPPER_ROUTER_VERSION=3.3.0
RUN mkdir -p /opt/skupper-router/sbin \
 && if [ "$SKROUTERD" = yes ]; then \
      apt-get update \
   && apt-get install -y --no-install-recommends ca-certificates curl cmake make gcc g++ \
        pkg-config python3 libssl-dev libsasl2-dev libwebsockets-dev libnghttp2-dev libunwind-dev \
   && curl -fsSL "https://archive.apache.org/dist/qpid/proton/${PROTON_VERSION}/qpid-proton-${PROTON_VERSION}.tar.gz" | tar xz -C /tmp \
   && cmake -S /tmp/qpid-proton-${PROTON_VERSION} -B /tmp/proton-build \
        -DCMAKE_INSTALL_PREFIX=/opt/proton -DBUILD_BINDINGS= -DBUILD_TLS=ON -DSSL_IMPL=openssl \
        -DBUILD_STATIC_LIBS=ON -DBUILD_EXAMPLES=OFF -DBUILD_TESTING=OFF \
   && cmake --build /tmp/proton-build -j"$(nproc)" && cmake --install /tmp/proton-build \
   && curl -fsSL "https://github.com/skupper-project/skupper-router/archive/refs/tags/${SKUPPER_ROUTER_VERSION}.tar.gz" | tar xz -C /tmp \
   && cmake -S /tmp/skupper-router-${SKUPPER_ROUTER_VERSION} -B /tmp/router-build \
        -DCMAKE_PREFIX_PATH=/opt/proton -DProton_USE_STATIC_LIBS=ON -DUSE_LIBWEBSOCKETS=ON \
        -DUSE_LIBNGHTTP2=ON -DBUILD_TESTING=OFF -DVERSION=${SKUPPER_ROUTER_VERSION} \
        -DCMAKE_INSTALL_PREFIX=/opt/skupper-router \
   && cmake --build /tmp/router-build -j"$(nproc)" && cmake --install /tmp/router-build ; \
    fi

# ---- the image ---------------------------------------------------------------------------
FROM debian:${DEBIAN}
ARG TARGETARCH=amd64
ARG KUBECTL_VERSION=v1.32.3
ARG FLANNEL_VERSION=v0.26.7
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      etcd-server etcd-client iproute2 iputils-ping util-linux nftables \
      containernetworking-plugins nginx curl tcpdump ca-certificates procps less python3 iptables \
      bind9-dnsutils libmimalloc2.0 \
      libwebsockets17 libnghttp2-14 libunwind8 libsasl2-2 \
 && curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && curl -fsSLo /usr/local/bin/flanneld "https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}/flanneld-${TARGETARCH}" \
 && chmod +x /usr/local/bin/kubectl /usr/local/bin/flanneld \
 && rm -rf /var/lib/apt/lists/*
COPY --from=skrouterd /opt/skupper-router /opt/skupper-router
RUN if [ -x /opt/skupper-router/sbin/skrouterd ]; then ln -s /opt/skupper-router/sbin/skrouterd /usr/local/bin/skrouterd; fi
COPY --from=build /out/ /usr/local/bin/
COPY conf /opt/knetsim/conf
WORKDIR /opt/knetsim
CMD ["bash", "-c", "knetsim up && exec bash"]
