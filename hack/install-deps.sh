#!/usr/bin/env bash
# Installs what Portico's lab and tests need on a fresh Debian machine, and nothing twice:
#   Debian packages (only the missing ones), uv (pinned), the project's virtualenv (uv.lock),
#   and, built from pinned upstream Go modules and cached: the control plane (hack/k8s/build.sh), helm
#   (hack/helm/build.sh), the Gateway API conformance suite with its echo-basic image (hack/gateway-api/build.sh)
#   and Prometheus (hack/prometheus/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
# command -> Debian package
declare -A PACKAGES=(
  [ip]=iproute2 [nft]=nftables [nsenter]=util-linux [unshare]=util-linux [sysctl]=procps [curl]=curl
  [haproxy]=haproxy [wrk]=wrk  # the lab's portico.dev/static image; bench/dataplane.py (and L7, later)
  [conntrack]=conntrack  # the agent forgets UDP flows to removed endpoints
  [gobgpd]=gobgpd  # the BGP speaker the agent drives (its gRPC API: src/portico/announce/gobgpapi)
  [bird]=bird2 [birdc]=bird2  # the lab's router
  [iptables]=iptables [setpriv]=util-linux  # kube-proxy's iptables mode in the lab; tests acting as another user
  [mmdebstrap]=mmdebstrap [buildah]=buildah  # make image: the root filesystem, then the Containerfile (no daemon)
  [docker-registry]=docker-registry [skopeo]=skopeo  # the lab's registry; copying images to and from it
  [umoci]=umoci [runc]=runc  # unpacking the image and running it under a real OCI runtime (docs/image.md: not crun)
  [promtool]=prometheus  # checks the chart's alert rules (the lab's Prometheus itself is built: hack/prometheus)
  [chromium]=chromium [chromedriver]=chromium-driver  # the dashboard's tests: a real headless browser
)
missing=()
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${PACKAGES[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "installing Debian packages: $pkgs" >&2
  if [ "$(id -u)" -ne 0 ]; then echo "error: need root to install $pkgs" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
for cmd in kubectl go python3; do
  command -v "$cmd" >/dev/null || { echo "error: '$cmd' is required and is not on this machine" >&2; exit 1; }
done

uv_home=.cache/uv-$UV_VERSION
if [ ! -x "$uv_home/bin/uv" ]; then
  python3 -m venv "$uv_home"
  "$uv_home/bin/pip" install -q "uv==$UV_VERSION"
fi
"$uv_home/bin/uv" sync --frozen --quiet --python python3

hack/k8s/build.sh >/dev/null
hack/helm/build.sh >/dev/null
hack/gateway-api/build.sh >/dev/null
hack/prometheus/build.sh >/dev/null
