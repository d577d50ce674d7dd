"""The real upstream control plane (etcd, kube-apiserver, kube-controller-manager) as local processes."""

from __future__ import annotations

import functools
import ipaddress
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from portico.dev import addressing as a
from portico.dev.daemons import Daemons
from portico.dev.pki import PKI, create_pki, write_kubeconfig
from portico.dev.shell import LabError, build_output

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "k8s" / "build.sh"

# kube-controller-manager runs only what a cluster without nodes' lifecycle needs: no node-lifecycle,
# no pod GC (the lab kubelet owns pods), no cloud service-lb (Portico is the load balancer).
CONTROLLERS = (
    "endpointslice-controller", "deployment-controller", "replicaset-controller", "daemonset-controller",
    "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "job-controller",  # the chart's pre-delete hook (portico uninstall)
    "root-ca-certificate-publisher-controller",
    # A node whose Lease stops being renewed is NotReady after its grace period, and its pods not ready: the
    # path Kubernetes takes without Portico's node liveness (the lab kubelet stops renewing for a node whose
    # link is down).
    "node-lifecycle-controller",
)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


@dataclass(frozen=True)
class ControlPlaneConfig:
    state_dir: Path
    api_address: ipaddress.IPv4Address = a.API_ADDRESS
    api_port: int = a.API_PORT
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    controller_manager_port: int = 10257

    @property
    def api_url(self) -> str:
        return f"https://{self.api_address}:{self.api_port}"

    @property
    def pki(self) -> PKI:
        return PKI(self.state_dir / "pki")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubeconfig(self, identity: str) -> Path:
        return self.admin_kubeconfig if identity == "admin" else self.state_dir / f"{identity}.kubeconfig"


@functools.cache
def build_binaries() -> Path:
    """Build (once; cached) the upstream binaries and return their directory."""
    return build_output(BUILD_SCRIPT, "the control plane")


class ControlPlane:
    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.daemons = Daemons(config.state_dir)

    def start(self, timeout: float = 90.0) -> None:
        cfg = self.config
        bin_dir = build_binaries()
        pki = cfg.pki
        if not pki.ca.exists():
            create_pki(pki.directory, (cfg.api_address, a.SERVICE_CIDR_V4[1]))
        for identity in ("admin", "controller-manager"):
            write_kubeconfig(cfg.kubeconfig(identity), server=cfg.api_url, pki=pki, identity=identity)
        deadline = time.monotonic() + timeout
        if not self.daemons.alive("etcd"):
            self.daemons.start("etcd", self._etcd_argv(bin_dir))
        self._wait(deadline, "etcd", f"https://127.0.0.1:{cfg.etcd_client_port}/health",
                   client="apiserver-etcd-client")
        if not self.daemons.alive("kube-apiserver"):
            self.daemons.start("kube-apiserver", self._apiserver_argv(bin_dir))
        self._wait(deadline, "kube-apiserver", f"{cfg.api_url}/readyz", client="admin")
        if not self.daemons.alive("kube-controller-manager"):
            self.daemons.start("kube-controller-manager", self._controller_manager_argv(bin_dir))
        # Its serving certificate is self-signed: liveness is all we check here.
        self._wait(deadline, "kube-controller-manager",
                   f"https://127.0.0.1:{cfg.controller_manager_port}/healthz", client=None)

    def stop(self) -> None:
        for name in reversed(COMPONENTS):
            self.daemons.stop(name)

    def running(self) -> dict[str, bool]:
        return {name: self.daemons.alive(name) for name in COMPONENTS}

    def _wait(self, deadline: float, component: str, url: str, *, client: str | None) -> None:
        pki = self.config.pki
        ctx: ssl.SSLContext | bool = False if client is None else pki.client_tls(client)
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.daemons.alive(component):
                raise LabError(f"{component} exited during start-up; see {self.daemons.log_path(component)}")
            try:
                resp = httpx.get(url, verify=ctx, timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as e:
                last = str(e) or type(e).__name__
            time.sleep(0.2)
        raise LabError(f"{component} not ready at {url} ({last}); see {self.daemons.log_path(component)}")

    def _etcd_argv(self, bin_dir: Path) -> list[str]:
        cfg, pki = self.config, self.config.pki
        client_url = f"https://127.0.0.1:{cfg.etcd_client_port}"
        peer_url = f"http://127.0.0.1:{cfg.etcd_peer_port}"
        return [
            str(bin_dir / "etcd"), "--name=portico-lab", f"--data-dir={cfg.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=portico-lab={peer_url}", "--listen-metrics-urls=",
            f"--cert-file={pki.cert('etcd-server')}", f"--key-file={pki.key('etcd-server')}",
            f"--trusted-ca-file={pki.ca}", "--client-cert-auth=true",
            "--quota-backend-bytes=4294967296", "--unsafe-no-fsync=true",  # a lab: speed over durability
            "--log-level=warn",
        ]

    def _apiserver_argv(self, bin_dir: Path) -> list[str]:
        cfg, pki = self.config, self.config.pki
        return [
            str(bin_dir / "kube-apiserver"),
            f"--bind-address={cfg.api_address}", f"--advertise-address={cfg.api_address}",
            f"--secure-port={cfg.api_port}",
            f"--etcd-servers=https://127.0.0.1:{cfg.etcd_client_port}", f"--etcd-cafile={pki.ca}",
            f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
            f"--tls-cert-file={pki.cert('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca}", "--authorization-mode=RBAC", "--allow-privileged=true",
            f"--service-cluster-ip-range={a.SERVICE_CIDR_V4},{a.SERVICE_CIDR_V6}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-account-max-token-expiration=48h",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass",
            "--profiling=false", "--v=1",
        ]

    def _controller_manager_argv(self, bin_dir: Path) -> list[str]:
        cfg, pki = self.config, self.config.pki
        kubeconfig = cfg.kubeconfig("controller-manager")
        return [
            str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={cfg.controller_manager_port}",
            f"--controllers={','.join(CONTROLLERS)}", "--use-service-account-credentials=true",
            f"--root-ca-file={pki.ca}", f"--service-account-private-key-file={pki.service_account_key}",
            "--leader-elect=false", "--concurrent-service-endpoint-syncs=10", "--v=1",
        ]
