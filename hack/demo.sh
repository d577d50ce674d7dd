#!/usr/bin/env bash
# The lab demo: bring the lab up, deploy examples/echo.yaml, and reach every pod from the client host.
set -euo pipefail
cd "$(dirname "$0")/.."
portico=.venv/bin/portico

export KUBECONFIG=$($portico dev up)
kubectl apply -f examples/pool.yaml -f examples/echo.yaml
kubectl rollout status deployment/echo --timeout=60s
kubectl wait --for=jsonpath='{.status.loadBalancer.ingress[0].ip}' service/echo --timeout=30s >/dev/null
kubectl get pods -o wide
echo
kubectl get service echo
kubectl get ippools
echo
udp_probe='import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b"hi",(sys.argv[1],9090)); print(s.recv(4096).decode(), end="")'
for ip in $(kubectl get pods -l app=echo -o jsonpath='{.items[*].status.podIP}'); do
  printf 'client -> %-12s HTTP: ' "$ip"
  $portico dev exec client -- curl -s --max-time 2 "http://$ip:8080/"
  printf 'client -> %-12s UDP:  ' "$ip"
  $portico dev exec client -- python3 -c "$udp_probe" "$ip"
done
echo
echo "The lab keeps running. Try: KUBECONFIG=$KUBECONFIG kubectl get endpointslices"
echo "                            .venv/bin/portico dev exec client -- curl -s http://<pod-ip>:8080/"
echo "Stop it with:               .venv/bin/portico dev down"
