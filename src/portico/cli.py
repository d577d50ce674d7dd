"""The `portico` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any

from portico.dev.shell import LabError
from portico.ports import HEARTBEAT_PORT, METRICS_PORT


def _dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="the local lab: a real control plane and network namespaces")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start the lab (builds what is missing) and leave it running")
    up.add_argument("--nodes", type=int, default=2, help="number of lab nodes (default 2)")
    up.add_argument("--kube-proxy", choices=["nftables", "iptables"], default=None,
                    help="also run the real kube-proxy in this mode on every node (ClusterIPs; coexistence)")
    dev_sub.add_parser("down", help="stop the lab and remove everything it created")
    dev_sub.add_parser("status", help="what is running")
    dev_sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    logs = dev_sub.add_parser("logs", help="print a component's log (etcd, kube-apiserver, kubelet, ...) "
                                           "or a pod's: pod/NAMESPACE/NAME")
    logs.add_argument("component")
    dev_sub.add_parser("whoami", help="inside a lab pod: show the identity its service-account token gives")
    conf = dev_sub.add_parser("conformance", help="run the upstream Gateway API conformance suite against the lab")
    conf.add_argument("--report", type=Path, help="where to write its ConformanceReport "
                                                  "(default docs/conformance/VERSION-portico-VERSION-report.yaml)")
    conf.add_argument("--run-test", help="only this test (its ShortName), for debugging")
    ex = dev_sub.add_parser("exec", help="run a command inside a lab host: portico dev exec HOST -- CMD...")
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER)


def _controller_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = sub.add_parser("controller", help="run the controller: addresses for Services of type LoadBalancer")
    ctl.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config, else in-cluster")
    ctl.add_argument("--default-class", action="store_true",
                     help="also own LoadBalancer Services that set no spec.loadBalancerClass")
    ctl.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                     help="run without the Lease (only one replica may run then)")
    ctl.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "portico-system"),
                     help="namespace of the leader-election Lease and the agents' heartbeat key Secret "
                          "(default $POD_NAMESPACE or portico-system)")
    ctl.add_argument("--workers", type=int, default=8, help="concurrent reconciles (default 8)")
    ctl.add_argument("--probe-address", default=":9472",
                     help="where to serve /healthz, /readyz and /metrics, HOST:PORT (default :9472; '' for nowhere)")
    ctl.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _run_controller(args: argparse.Namespace) -> int:
    import logging

    import uvloop

    from portico.controller.manager import run_controller
    from portico.kube.client import async_client

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    client = async_client(args.kubeconfig, field_manager="portico-controller")
    host, _, port = args.probe_address.rpartition(":")
    probe = (host.strip("[]") or "0.0.0.0", int(port)) if args.probe_address else None
    uvloop.run(_until_terminated(run_controller(client, default_class=args.default_class,
                                                leader_elect=args.leader_elect, namespace=args.namespace,
                                                workers=args.workers, probe_address=probe)))
    return 0


def _agent_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the node agent: forwarding from Service addresses to pods (nftables)")
    agent.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config, else in-cluster")
    agent.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                       help="this node's name (default $NODE_NAME, set from spec.nodeName in the DaemonSet)")
    agent.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "portico-system"),
                       help="where the heartbeat key Secret is (default $POD_NAMESPACE or portico-system)")
    agent.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                       help=f"port of /metrics, /healthz and /readyz on $NODE_IP, the node's address, else on "
                            f"loopback (default {METRICS_PORT})")
    agent.add_argument("--metrics-address", help="where to serve them instead, HOST:PORT ('' for nowhere)")
    agent.add_argument("--heartbeat-port", type=int, default=HEARTBEAT_PORT,
                       help=f"UDP port of the agents' heartbeats, on the node's InternalIP (default {HEARTBEAT_PORT})")
    agent.add_argument("--node-liveness", choices=["on", "off"], default=os.environ.get("PORTICO_NODE_LIVENESS", "on"),
                       help="take a node's endpoints out of rotation the moment its heartbeats stop (default "
                            "$PORTICO_NODE_LIVENESS or on; off: only when Kubernetes marks them not ready)")
    agent.add_argument("--http-access-log", choices=["on", "off"],
                       default=os.environ.get("PORTICO_HTTP_ACCESS_LOG", "on"),
                       help="a line per HTTP request served by a Gateway or Ingress, on stdout (default "
                            "$PORTICO_HTTP_ACCESS_LOG or on)")
    agent.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _run_agent(args: argparse.Namespace) -> int:
    import logging

    import uvloop

    from portico.agent.agent import Agent
    from portico.kube.client import async_client

    if not args.node_name:
        print("portico agent: error: no node name (--node-name or $NODE_NAME)", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    client = async_client(args.kubeconfig, field_manager="portico-agent")
    agent = Agent(client, args.node_name, namespace=args.namespace, heartbeat_port=args.heartbeat_port,
                  node_liveness=args.node_liveness == "on", http_access_log=args.http_access_log == "on")
    node_ip = os.environ.get("NODE_IP")  # status.hostIP, from the DaemonSet
    if args.metrics_address is None:
        args.metrics_address = f"{_host(node_ip) if node_ip else '127.0.0.1'}:{args.metrics_port}"
    if args.metrics_address:
        host, _, port = args.metrics_address.rpartition(":")
        agent.serve(host.strip("[]"), int(port))
    generation = os.environ.get("POD_TEMPLATE_GENERATION")  # the DaemonSet's pod-template-generation label
    uvloop.run(_until_terminated(agent.run(), before=lambda: agent.prepare_stop(generation)))
    return 0


async def _until_terminated(work: Coroutine[Any, Any, None],
                            before: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run `work`; SIGTERM (after `before`, if given) cancels it, so its `finally` blocks run (the agent's last
    heartbeat, the controller giving its lease up)."""
    import asyncio
    import contextlib
    import signal

    task = asyncio.ensure_future(work)

    async def stop() -> None:
        if before is not None:
            await before()
        task.cancel()

    stopping: list[asyncio.Task[None]] = []  # held: a task nobody references may be collected before it runs
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: stopping.append(asyncio.ensure_future(stop())))
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _uninstall_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    un = sub.add_parser("uninstall", help="undo what Portico did to the cluster (the chart's pre-delete hook runs it)")
    un.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config, else in-cluster")
    un.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "portico-system"),
                    help="Portico's namespace (default $POD_NAMESPACE or portico-system)")
    un.add_argument("--patience", type=float, default=60.0,
                    help="seconds to wait for every node's agent to confirm it removed its rules (default 60)")


def _run_uninstall(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from portico.kube.client import async_client
    from portico.uninstall import uninstall

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    left = asyncio.run(uninstall(async_client(args.kubeconfig, field_manager="portico-uninstall"), args.namespace,
                                 args.patience))
    return 1 if left else 0


def _status_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="every VIP (or node, or pool) Portico serves, in one table")
    st.add_argument("what", nargs="?", choices=["vips", "nodes", "pools"], default="vips")
    st.add_argument("-n", "--namespace", help="only VIPs of this namespace")
    st.add_argument("--pool", help="only VIPs from this IPPool")
    st.add_argument("-o", "--output", choices=["wide", "json", "yaml"], default="")
    st.add_argument("--prometheus", default=os.environ.get("PORTICO_PROMETHEUS_URL"),
                    help="Prometheus's URL, for each VIP's packets/s (default $PORTICO_PROMETHEUS_URL)")
    st.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config")
    ex = sub.add_parser("explain", help="walk a Service's or Gateway's path to its first broken step")
    ex.add_argument("target", help="service/NAME or gateway/NAME (svc/, gw/ too)")
    ex.add_argument("-n", "--namespace", default="default")
    ex.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config")


def _dashboard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser("dashboard", help="a live, read-only web page of every VIP, pool and node, served from "
                                            "this machine with your kubeconfig")
    dash.add_argument("--address", default="127.0.0.1", help="where to listen (default 127.0.0.1: only you)")
    dash.add_argument("--port", type=int, default=9480)
    dash.add_argument("--prometheus", default=os.environ.get("PORTICO_PROMETHEUS_URL"),
                      help="Prometheus's URL, for traffic, health and alerts (default $PORTICO_PROMETHEUS_URL)")
    dash.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG, ~/.kube/config")


def _run_dashboard(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from portico.kube.client import async_client
    from portico.ops.dashboard.server import serve

    client = async_client(args.kubeconfig, field_manager="portico-dashboard")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(client, args.prometheus, args.address, args.port))
    return 0


def _snapshot(args: argparse.Namespace, events_in: str | None = None) -> Any:
    import asyncio

    from lightkube.core.exceptions import ApiError, ConfigError

    from portico.kube.client import async_client, error_text
    from portico.ops.snapshot import read

    async def once() -> Any:
        client = async_client(args.kubeconfig, field_manager="portico-cli")
        try:
            return await read(client, events_in=events_in)
        finally:
            await client.close()

    try:
        return asyncio.run(once())
    except (ConfigError, ApiError, OSError) as e:
        print(f"portico: error: cannot read the cluster: {error_text(e)}", file=sys.stderr)
        sys.exit(2)


def _run_status(args: argparse.Namespace) -> int:
    from portico.ops import render, status

    snap = _snapshot(args)
    rows: Any
    kind: type[Any]
    match args.what:
        case "nodes":
            rows, kind = status.nodes(snap), status.NodeRow
        case "pools":
            rows, kind = status.pools(snap), status.PoolRow
        case _:
            rows = status.vips(snap, namespace=args.namespace, pool=args.pool,
                               packets_per_second=_packet_rates(args.prometheus) if args.prometheus else None)
            kind = status.VipRow
    print(render.output(rows, kind, args.output))
    return 0


def _packet_rates(url: str) -> dict[str, float]:
    import asyncio

    from portico.ops.prometheus import Prometheus

    async def ask() -> dict[str, float]:
        prometheus = Prometheus(url)
        try:
            samples = await prometheus.query("sum by (service) (rate(portico_frontend_packets_total[1m]))")
        finally:
            await prometheus.close()
        return {s.labels.get("service", ""): s.value for s in samples}
    try:
        return asyncio.run(ask())
    except Exception as e:
        print(f"portico: error: cannot ask Prometheus at {url}: {e}", file=sys.stderr)
        sys.exit(2)


KINDS = {"service": "service", "services": "service", "svc": "service", "gateway": "gateway", "gateways": "gateway",
         "gw": "gateway"}


def _run_explain(args: argparse.Namespace) -> int:
    from portico.ops.explain import explain, render

    kind, _, name = args.target.partition("/")
    if kind.lower() not in KINDS or not name:
        print(f"portico: error: {args.target!r}: expected service/NAME or gateway/NAME", file=sys.stderr)
        return 2
    explanation = explain(_snapshot(args, events_in=args.namespace), KINDS[kind.lower()], args.namespace, name)
    print(render(explanation))
    return 1 if explanation.broken else 0


def _gen_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("gen", help="regenerate files derived from the code")
    gen_sub = gen.add_subparsers(dest="gen_command", required=True)
    gen_sub.add_parser("crds", help="charts/portico/crds: from portico.api.v1alpha1, and Gateway API's vendored")
    gen_sub.add_parser("manifests", help="deploy/portico.yaml from the chart (helm template, default values)")


def _run_gen(args: argparse.Namespace) -> int:
    if args.gen_command == "manifests":
        from portico.dev.helm import MANIFESTS, render_manifests

        MANIFESTS.write_text(render_manifests())
        print(MANIFESTS)
        return 0
    from portico.api.crds import write_crds
    from portico.dev.gateway_api import vendor_crds

    for path in [*write_crds(), *vendor_crds()]:
        print(path)
    return 0


def _run_dev(args: argparse.Namespace) -> int:
    if args.dev_command == "whoami":  # inside a pod, from the image: none of the lab's own dependencies there
        from portico.dev.whoami import whoami

        print(json.dumps(whoami(), indent=2))
        return 0
    from portico.dev import lab, prometheus
    from portico.dev.state import LabState, default_state_dir

    state_dir = default_state_dir()
    match args.dev_command:
        case "up":
            state = lab.up(state_dir, args.nodes, kube_proxy=args.kube_proxy)
            print(f"lab is up: {state.node_count} nodes, API {state.controlplane.api_url}", file=sys.stderr)
            print(f"  export KUBECONFIG={state.kubeconfig}", file=sys.stderr)
            print(f"  Prometheus: {prometheus.url()}   (portico dashboard --prometheus {prometheus.url()})",
                  file=sys.stderr)
            print(state.kubeconfig)
        case "down":
            lab.down(state_dir)
            print("lab is down", file=sys.stderr)
        case "status":
            info = lab.status(state_dir)
            print(json.dumps(info, indent=2))
            return 0 if info["running"] else 1
        case "kubeconfig":
            print(LabState.load(state_dir).kubeconfig)
        case "logs":
            sys.stdout.write(lab.read_log(state_dir, args.component))
        case "conformance":
            from portico.dev.conformance import DOCS, report_name, run_suite

            return run_suite(state_dir, args.report or DOCS / report_name(), run_test=args.run_test)
        case "exec":
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return lab.exec_in_host(state_dir, args.host, argv)
    return 0


def kubectl_plugin() -> None:
    """`kubectl portico status|explain …` (kubectl runs `kubectl-portico` from the PATH, by its plugin convention)."""
    argv = sys.argv[1:]
    if not argv or argv[0] not in ("status", "explain"):
        print("usage: kubectl portico status [vips|nodes|pools] … | kubectl portico explain service/NAME …",
              file=sys.stderr)
        sys.exit(2)
    main(argv, prog="kubectl portico")


def main(argv: list[str] | None = None, prog: str = "portico") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--version", action="version", version=f"portico {metadata.version('portico')}")
    sub = parser.add_subparsers(dest="command", required=True)
    _dev_parser(sub)
    _gen_parser(sub)
    _controller_parser(sub)
    _agent_parser(sub)
    _uninstall_parser(sub)
    _status_parser(sub)
    _dashboard_parser(sub)
    args = parser.parse_args(argv)
    commands = {"dev": _run_dev, "gen": _run_gen, "controller": _run_controller, "agent": _run_agent,
                "uninstall": _run_uninstall, "status": _run_status, "explain": _run_explain,
                "dashboard": _run_dashboard}
    try:
        code = commands[args.command](args)
    except LabError as e:
        print(f"portico: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
