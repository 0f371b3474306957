#!/usr/bin/env bash
# Debian packages the local sandbox needs (nodes, their network, the load balancer) and what the release
# builder needs beside Go (a C compiler and libseccomp's headers for runc's static build); installs only
# what is missing. The mirror is the host's own apt configuration. The releases themselves are built
# from their Go modules (sandbox/release_builder.py), not taken from Debian.
set -euo pipefail
packages=(
  systemd-container mmdebstrap iproute2 openssh-client openssh-server busybox-static haproxy curl
  gcc libc6-dev pkg-config libseccomp-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "the sandbox needs Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Daemons from these packages must not start on the host: the sandbox runs them inside its nodes.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
fi
trap '[[ $created_policy = 1 ]] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
