#!/usr/bin/env bash
# Builds Prometheus (github.com/prometheus/prometheus, pinned in go.mod) for the lab. Not Debian's package:
# Debian builds it without Kubernetes service discovery (its binary has no discovery/kubernetes), and the lab's
# Prometheus finds the agents and the controller through the API server, as one in a cluster does.
#
# Output goes to a cache directory keyed by the hash of this module's inputs, so a second run (or a fresh
# clone on the same machine) reuses it instead of rebuilding. Prints the path of the prometheus binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

PROMETHEUS_VERSION=v0.316.0   # Prometheus 3.16.0; keep in step with go.mod
cache_root=${PORTICO_PROMETHEUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/prometheus}
key=$(cat go.mod go.sum build.sh | sha256sum | cut -c1-16)
out="$cache_root/$PROMETHEUS_VERSION-$key"
if [ -x "$out/prometheus" ]; then echo "$out/prometheus"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' (>= 1.26) is needed to build prometheus" >&2; exit 1; }
mkdir -p "$out.tmp"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
echo "building prometheus $PROMETHEUS_VERSION into $out (first time only)" >&2
go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.16.0" \
  -o "$out.tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/prometheus"
