#!/usr/bin/env bash
# Builds Helm (helm.sh/helm/v4, pinned in go.mod) for the lab and the chart's tests.
#
# Output goes to a cache directory keyed by the hash of this module's inputs, so a second run (or a fresh
# clone on the same machine) reuses it instead of rebuilding. Prints the path of the helm binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

HELM_VERSION=v4.3.2   # keep in step with go.mod
cache_root=${PORTICO_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/helm}
key=$(cat go.mod go.sum build.sh | sha256sum | cut -c1-16)
out="$cache_root/$HELM_VERSION-$key"
if [ -x "$out/helm" ]; then echo "$out/helm"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' (>= 1.26) is needed to build helm" >&2; exit 1; }
mkdir -p "$out.tmp"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
echo "building helm $HELM_VERSION into $out (first time only)" >&2
go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
  -o "$out.tmp/helm" helm.sh/helm/v4/cmd/helm >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/helm"
