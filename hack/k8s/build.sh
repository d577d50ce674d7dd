#!/usr/bin/env bash
# Builds the upstream control plane for the Portico lab from the Go modules pinned in go.mod:
# kube-apiserver, kube-controller-manager, kube-proxy (k8s.io/kubernetes) and etcd (go.etcd.io/etcd/server/v3).
#
# Output goes to a cache directory keyed by the hash of this module's inputs, so a second run
# (or a fresh clone on the same machine) reuses it instead of rebuilding. Prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

KUBE_VERSION=v1.36.3   # keep in step with go.mod
cache_root=${PORTICO_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/k8s}
key=$(cat go.mod go.sum build.sh cmd/etcd/main.go | sha256sum | cut -c1-16)
out="$cache_root/$KUBE_VERSION-$key"
binaries=(kube-apiserver kube-controller-manager kube-proxy etcd)

have_all() { for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' (>= 1.26) is needed to build the lab control plane" >&2; exit 1; }
mkdir -p "$out.tmp"
major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
echo "building $KUBE_VERSION control plane into $out (first time only; takes several minutes)" >&2
go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-proxy >&2
go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" ./cmd/etcd >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
