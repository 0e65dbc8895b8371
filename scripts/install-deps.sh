#!/usr/bin/env bash
# Install the Debian packages the tests, the lab and the benchmarks need.
# Idempotent and quick when everything is present (no apt-get update then).
set -euo pipefail

PACKAGES=(
  # build: the static shim, kube-apiserver (Go) and libcni/CRI clients
  gcc musl-tools golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev
  golang-github-appc-cni-dev
  # the API tier
  etcd-server openssl
  # kernel tier: User-Mode Linux with VRF, iproute2, netfilter, FRR
  user-mode-linux busybox-static flex bison bc iproute2 nftables iptables iputils-ping frr frr-pythontools
  # CNI clients: reference plugins and containerd's CRI
  containernetworking-plugins containerd runc
  # alert rules: promtool (check and unit-test kubernetes/monitoring/)
  prometheus
  # images: buildah (chroot isolation, no daemon) and mmdebstrap for the local base
  buildah mmdebstrap
  # misc
  jq procps psmisc kmod curl libc6-dev xz-utils
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these services on install; the project runs its own instances (of
# prometheus, only promtool).
for svc in frr containerd etcd prometheus; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done
echo "install-deps: ok"
