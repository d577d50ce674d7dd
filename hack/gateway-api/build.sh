#!/usr/bin/env bash
# Builds the upstream Gateway API pieces the lab uses, from the modules pinned in go.mod:
#   conformance.test  the conformance suite (sigs.k8s.io/gateway-api/conformance, `go test -c`)
#   echo-basic        the backend its manifests run, and oci/ the same as an image (OCI layout, tag echo-basic):
#                     the lab's registry serves it as registry.k8s.io/gateway-api/echo-basic (src/portico/dev/mirror.py)
#   echo-basic-tags   the tags of echo-basic the suite's manifests name (the lab's registry serves the image under each)
#   crds/             config/crd/standard of sigs.k8s.io/gateway-api (the chart vendors these: `portico gen crds`)
#
# Output goes to a cache directory keyed by the hash of this module's inputs, so a second run (or a fresh
# clone on the same machine) reuses it instead of rebuilding. Prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

GATEWAY_API_VERSION=v1.6.3   # keep in step with go.mod
cache_root=${PORTICO_GATEWAY_API_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/gateway-api}
key=$(cat go.mod go.sum build.sh | sha256sum | cut -c1-16)
out="$cache_root/$GATEWAY_API_VERSION-$key"
if [ -x "$out/conformance.test" ] && [ -x "$out/echo-basic" ] && [ -d "$out/crds" ] && [ -d "$out/oci" ] \
  && [ -s "$out/echo-basic-tags" ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "error: 'go' (>= 1.26) is needed to build the Gateway API suite" >&2; exit 1; }
mkdir -p "$out.tmp/crds"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
echo "building Gateway API $GATEWAY_API_VERSION conformance suite into $out (first time only)" >&2
go test -c -trimpath -ldflags "-s -w" -o "$out.tmp/conformance.test" sigs.k8s.io/gateway-api/conformance >&2
go build -trimpath -ldflags "-s -w" -o "$out.tmp/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic >&2
api_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)
# The standard channel's CRDs; not its ValidatingAdmissionPolicy (vap_safeupgrades), which is no CRD.
cp "$api_dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$out.tmp/crds/"
rm -f "$out.tmp/crds/"*vap_*
chmod 644 "$out.tmp/crds/"*
# The image: the static binary alone, as upstream's (FROM scratch-like), entrypoint /echo-basic.
umoci init --layout "$out.tmp/oci"
umoci new --image "$out.tmp/oci:echo-basic"
umoci unpack --image "$out.tmp/oci:echo-basic" "$out.tmp/bundle" >&2
install -m 755 "$out.tmp/echo-basic" "$out.tmp/bundle/rootfs/echo-basic"
umoci repack --image "$out.tmp/oci:echo-basic" "$out.tmp/bundle" >&2
umoci config --image "$out.tmp/oci:echo-basic" --config.entrypoint /echo-basic --config.exposedports 3000/tcp >&2
umoci gc --layout "$out.tmp/oci"
rm -rf "$out.tmp/bundle"
conformance_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)
grep -rhoE 'registry\.k8s\.io/gateway-api/echo-basic:[A-Za-z0-9._-]+' "$conformance_dir"/base "$conformance_dir"/tests \
  | sed 's/.*://' | sort -u > "$out.tmp/echo-basic-tags"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
