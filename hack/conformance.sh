#!/usr/bin/env bash
# `make conformance`: a lab of its own, the upstream Gateway API conformance suite against it (portico dev
# conformance), its ConformanceReport into docs/conformance/, the lab taken down whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
export PORTICO_DEV_DIR=${PORTICO_DEV_DIR:-$(mktemp -d /tmp/portico-conformance.XXXXXX)}
trap '.venv/bin/portico dev down >/dev/null || true' EXIT
.venv/bin/portico dev up --nodes 2 >/dev/null
.venv/bin/portico dev conformance "$@"
