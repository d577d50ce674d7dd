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
vip=$(kubectl get service echo -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
kubectl wait --for=condition=portico.io/Announced service/echo --timeout=30s >/dev/null
kubectl get service echo -o jsonpath='{.status.conditions[?(@.type=="portico.io/Announced")].message}{"\n"}'
echo "client -> $vip (no route: the announcing node answers ARP; its nftables sends the flow straight to a pod):"
for i in 1 2 3 4 5 6; do
  printf '  HTTP: '
  $portico dev exec client -- curl -s --max-time 2 "http://$vip/"
done
printf '  UDP:  '
$portico dev exec client -- python3 -c "$udp_probe" "$vip"
echo
echo "Every VIP as an operator sees it (portico status; 'portico explain service/echo' walks one, 'portico dashboard' shows them live):"
export PORTICO_PROMETHEUS_URL=$(.venv/bin/python -c 'from portico.dev import prometheus; print(prometheus.url())')
sleep 6  # the lab's Prometheus scrapes every 5 s: the packets above, per second
$portico status
echo
echo "The lab keeps running. Try: KUBECONFIG=$KUBECONFIG kubectl get endpointslices"
echo "                            .venv/bin/portico dev exec node-1 -- nft list table inet portico"
echo "                            PORTICO_PROMETHEUS_URL=$PORTICO_PROMETHEUS_URL .venv/bin/portico dashboard"
echo "Stop it with:               .venv/bin/portico dev down"
