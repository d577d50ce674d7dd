"""`portico dev up|down|status|exec`: the lab as a whole (control plane + network + lab kubelet)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import httpx2 as httpx

from portico.announce.bgp import RUN_DIR as BGP_RUN_DIR
from portico.dev import netns, prometheus, registry
from portico.dev.addressing import host_netns
from portico.dev.controlplane import ControlPlane, build_binaries
from portico.dev.daemons import Daemons
from portico.dev.helm import NAMESPACE as PORTICO_NAMESPACE
from portico.dev.install import install_portico
from portico.dev.kube_proxy import daemon_name, kube_proxy_argv
from portico.dev.kubelet import runtime
from portico.dev.kubelet.pods import SA_MOUNT
from portico.dev.pki import write_kubeconfig
from portico.dev.router import BIRD_CONFIG, bird_argv, bird_config
from portico.dev.shell import LabError, require_commands
from portico.dev.state import MACHINE_MARKER, LabState

KUBELET = "kubelet"
ROUTER = "router"  # BIRD, the lab's BGP router
RUNC_ROOT = "runc"  # the lab kubelet's runc state, in the state directory


def running_lab_dir() -> Path | None:
    """The state directory of the lab running on this machine, if any."""
    if not netns.lab_is_wired():
        return None
    try:
        return Path(MACHINE_MARKER.read_text().strip())
    except OSError:
        return Path("<unknown: /run/portico-lab is missing>")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veths): run it as root")


def up(state_dir: Path, nodes: int, timeout: float = 120.0, kube_proxy: str | None = None) -> LabState:
    require_commands()
    _require_root()
    running = running_lab_dir()
    if running is not None and running != state_dir:
        raise LabError(f"another Portico lab is running on this machine (state dir {running}); "
                       f"stop it first: PORTICO_DEV_DIR={running} portico dev down")
    if running is not None:
        state = LabState.load(state_dir)
        if (nodes, kube_proxy) != (state.node_count, state.kube_proxy):
            print(f"lab already running with {state.node_count} nodes, kube-proxy {state.kube_proxy or 'none'} "
                  "(ignoring the options given)", file=sys.stderr)
    else:
        state = LabState(state_dir, nodes, kube_proxy)
    try:
        _start(state, timeout)
    except BaseException:
        if running is None and not os.environ.get("PORTICO_DEV_KEEP_FAILED"):
            down(state_dir)  # leave nothing half-made behind
        raise
    return state


def _start(state: LabState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state.save()
    if not netns.lab_is_wired():
        MACHINE_MARKER.write_text(f"{state.directory}\n")
        netns.build_network(state.topology)
    daemons = Daemons(state.directory)
    if not daemons.alive(ROUTER):
        (state.directory / BIRD_CONFIG).write_text(bird_config(state.topology))
        daemons.start(ROUTER, bird_argv(host_netns(ROUTER), state.directory))
    image = _start_registry(state.directory, daemons, deadline)
    cp = ControlPlane(state.controlplane)
    cp.start()
    write_kubeconfig(state.kubelet_kubeconfig, server=state.controlplane.api_url, pki=state.controlplane.pki,
                     identity="kubelet")
    if not daemons.alive(KUBELET):
        daemons.start(KUBELET, [sys.executable, "-m", "portico.dev.kubelet", "--state-dir", str(state.directory)])
    _wait_for_nodes(state, daemons, deadline)
    if state.kube_proxy is not None:
        write_kubeconfig(state.kube_proxy_kubeconfig, server=state.controlplane.api_url,
                         pki=state.controlplane.pki, identity="kube-proxy")
        bin_dir = build_binaries()
        for node in state.topology.nodes:
            if not daemons.alive(daemon_name(node.name)):
                daemons.start(daemon_name(node.name), kube_proxy_argv(bin_dir, node.name, state.kube_proxy,
                                                                      state.kube_proxy_kubeconfig))
    install_portico(state.kubeconfig, image, deadline)
    prometheus.start(state.directory, daemons, kubeconfig=state.kubeconfig, api_url=state.controlplane.api_url,
                     ca=state.controlplane.pki.ca, namespace=PORTICO_NAMESPACE, deadline=deadline)


def _start_registry(state_dir: Path, daemons: Daemons, deadline: float) -> str:
    """The lab's registry, with the image `make image` built pushed to it (and the upstream images it mirrors);
    returns the image's reference there, which the lab's nodes pull."""
    if not daemons.alive(registry.REGISTRY):
        (state_dir / registry.CONFIG).write_text(registry.config(state_dir / "registry"))
        daemons.start(registry.REGISTRY, registry.registry_argv(state_dir / registry.CONFIG))
    registry.wait_ready(deadline, daemons.log_path(registry.REGISTRY))
    tag = registry.built_tag()
    if tag is None:
        raise LabError(f"no Portico image in {registry.IMAGE_LAYOUT}: the lab runs the image users deploy; "
                       "`make image` builds it")
    registry.mirror_gateway_api()
    return registry.push(tag)


def _wait_for_nodes(state: LabState, daemons: Daemons, deadline: float) -> None:
    pki = state.controlplane.pki
    url = f"{state.controlplane.api_url}/api/v1/nodes"
    wanted = {n.name for n in state.topology.nodes}
    with httpx.Client(verify=pki.client_tls("admin")) as http:
        while time.monotonic() < deadline:
            if not daemons.alive(KUBELET):
                raise LabError(f"the lab kubelet exited; see {daemons.log_path(KUBELET)}")
            names = {item["metadata"]["name"] for item in http.get(url).json().get("items", [])}
            if wanted <= names:
                return
            time.sleep(0.2)
    raise LabError(f"nodes {sorted(wanted)} did not register in time; see {daemons.log_path(KUBELET)}")


def down(state_dir: Path) -> None:
    """Stop everything the lab started and remove everything it created. Safe to repeat."""
    _require_root()
    running = running_lab_dir()
    if running is not None and running != state_dir and running.exists():
        raise LabError(f"the running lab belongs to {running}, not {state_dir}: "
                       f"PORTICO_DEV_DIR={running} portico dev down")
    daemons = Daemons(state_dir)
    daemons.stop(KUBELET)
    netns.teardown_network()  # kills every process left in lab namespaces (pods, agents)
    runtime.delete_all(state_dir / RUNC_ROOT)  # their runc state and cgroups
    runtime.unmount_under(state_dir)  # containers' overlays, memory volumes
    ControlPlane(LabState(state_dir, 1).controlplane).stop()
    for name in daemons.names():
        daemons.stop(name)
    MACHINE_MARKER.unlink(missing_ok=True)
    _remove_empty_dirs(SA_MOUNT, stop_at=Path("/run"))
    for socket in Path(BGP_RUN_DIR).glob("gobgp-*.sock"):  # left by agents killed with -9
        socket.unlink(missing_ok=True)
    _remove_empty_dirs(Path(BGP_RUN_DIR), stop_at=Path("/run"))
    if state_dir.exists():
        shutil.rmtree(state_dir)


def _remove_empty_dirs(path: Path, stop_at: Path) -> None:
    path = path.resolve()
    while path != stop_at and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


def status(state_dir: Path) -> dict[str, object]:
    running = running_lab_dir()
    if running is None or not (state_dir / "lab.json").exists():
        return {"running": False, "state_dir": str(state_dir)}
    state = LabState.load(state_dir)
    daemons = Daemons(state_dir)
    return {
        "running": running == state_dir,
        "state_dir": str(state_dir),
        "kubeconfig": str(state.kubeconfig),
        "api": state.controlplane.api_url,
        "components": {**ControlPlane(state.controlplane).running(), KUBELET: daemons.alive(KUBELET),
                       ROUTER: daemons.alive(ROUTER), registry.REGISTRY: daemons.alive(registry.REGISTRY)},
        "hosts": list(state.topology.exec_hosts),
    }


def read_log(state_dir: Path, component: str) -> str:
    """A daemon's log, or a pod's (`pod/NAMESPACE/NAME`: all its containers, newest pod first)."""
    if component.startswith("pod/"):
        _, namespace, name = [*component.split("/"), "", ""][:3]
        logs = sorted((state_dir / "pods").glob(f"{namespace}_{name}_*/*.log"),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        if not logs:
            raise LabError(f"no log for pod {namespace}/{name} in {state_dir / 'pods'}")
        return "".join(p.read_text(errors="replace") for p in logs)
    daemons = Daemons(state_dir)
    path = daemons.log_path(component)
    if not path.exists():
        known = sorted(p.stem for p in daemons.log_dir.glob("*.log")) if daemons.log_dir.is_dir() else []
        raise LabError(f"no log for {component!r}; components: {', '.join(known) or 'none'}, or pod/NS/NAME")
    return path.read_text(errors="replace")


def exec_in_host(state_dir: Path, host: str, argv: list[str]) -> int:
    state = LabState.load(state_dir)
    valid = state.topology.exec_hosts
    if host not in valid:
        raise LabError(f"unknown lab host {host!r}; valid hosts: {', '.join(valid)}")
    if not argv:
        raise LabError("nothing to run: portico dev exec HOST -- CMD...")
    namespace = state.topology.host(host).netns
    cmd = netns.exec_argv(namespace, argv)
    os.execvp(cmd[0], cmd)
