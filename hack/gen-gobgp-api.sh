#!/usr/bin/env bash
# Regenerates src/portico/announce/gobgpapi/ (committed) from the GoBGP protos Debian ships with the gobgpd we
# run (golang-github-osrg-gobgp-dev 3.10): the Python messages and gRPC stubs the agent's BGP driver uses.
set -euo pipefail
cd "$(dirname "$0")/.."
protos=/usr/share/gocode/src/github.com/osrg/gobgp/api
out=src/portico/announce/gobgpapi
[ -d "$protos" ] || { echo "error: $protos missing: apt-get install golang-github-osrg-gobgp-dev" >&2; exit 1; }
rm -f "$out"/*_pb2*.py*
.venv/bin/python -m grpc_tools.protoc -I "$protos" --python_out="$out" --grpc_python_out="$out" \
  "$protos"/gobgp.proto "$protos"/attribute.proto "$protos"/capability.proto
# protoc writes top-level imports ("import gobgp_pb2"); make them package-relative.
sed -i -E 's/^import (gobgp|attribute|capability)_pb2/from . import \1_pb2/' "$out"/*.py
rm -f "$out"/attribute_pb2_grpc.py "$out"/capability_pb2_grpc.py  # those protos define no services
