#!/usr/bin/env bash
# Vendors the dashboard's one JavaScript library from the npm registry, at a pinned version, checked against the
# registry's integrity hash: uPlot (a small, fast time-series chart, no dependencies). Run to change the version;
# the files are committed, so nothing is fetched when the dashboard is built or served (no CDN).
set -euo pipefail
cd "$(dirname "$0")/.."
UPLOT_VERSION=1.6.32
UPLOT_INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
out=src/portico/ops/dashboard/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/uplot.tgz" "https://registry.npmjs.org/uplot/-/uplot-$UPLOT_VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot.tgz" | base64 -w0)"
[ "$got" = "$UPLOT_INTEGRITY" ] || { echo "uplot $UPLOT_VERSION: integrity $got, expected $UPLOT_INTEGRITY" >&2; exit 1; }
tar -xzf "$tmp/uplot.tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$out/"
cp "$tmp/package/LICENSE" "$out/uPlot.LICENSE"
echo "uPlot $UPLOT_VERSION ($UPLOT_INTEGRITY)" > "$out/VERSIONS"
