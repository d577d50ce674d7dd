#!/usr/bin/env bash
# The lab demo: bring the lab up, deploy examples/echo.yaml, and reach every pod from the client host.
set -euo pipefail
cd "$(dirname "$0")/.."
portico=.venv/bin/portico

export KUBECONFIG=$($portico dev up)
kubectl apply -f examples/echo.yaml
kubectl rollout status deployment/echo --timeout=60s
kubectl get pods -o wide
echo
for ip in $(kubectl get pods -l app=echo -o jsonpath='{.items[*].status.podIP}'); do
  printf 'client -> %-12s HTTP: ' "$ip"
  $portico dev exec client -- curl -s --max-time 2 "http://$ip:8080/"
done
echo
echo "The lab keeps running. Try: KUBECONFIG=$KUBECONFIG kubectl get endpointslices"
echo "                            .venv/bin/portico dev exec client -- curl -s http://<pod-ip>:8080/"
echo "Stop it with:               .venv/bin/portico dev down"
