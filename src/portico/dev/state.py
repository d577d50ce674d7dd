"""The lab's state directory ($PORTICO_DEV_DIR, default .portico/dev) and its record, lab.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from portico.dev.controlplane import ControlPlaneConfig
from portico.dev.shell import LabError
from portico.dev.topology import LabTopology, plan_lab

# Which state directory owns the running lab; one lab per machine (namespaces are global).
MACHINE_MARKER = Path("/run/portico-lab")


def default_state_dir() -> Path:
    return Path(os.environ.get("PORTICO_DEV_DIR", ".portico/dev")).resolve()


KUBE_PROXY_MODES = ("nftables", "iptables")


@dataclass(frozen=True)
class LabState:
    directory: Path
    node_count: int
    kube_proxy: str | None = None  # a mode of KUBE_PROXY_MODES: kube-proxy runs on every node beside the agent

    @property
    def record(self) -> Path:
        return self.directory / "lab.json"

    @property
    def topology(self) -> LabTopology:
        return plan_lab(self.node_count)

    @property
    def controlplane(self) -> ControlPlaneConfig:
        return ControlPlaneConfig(state_dir=self.directory)

    @property
    def kubeconfig(self) -> Path:
        return self.controlplane.admin_kubeconfig

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig("kubelet")

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig("kube-proxy")

    @property
    def ca_file(self) -> Path:
        return self.controlplane.pki.ca

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"nodes": self.node_count, "kubeProxy": self.kube_proxy}) + "\n")

    @classmethod
    def load(cls, directory: Path) -> LabState:
        try:
            data = json.loads((directory / "lab.json").read_text())
        except FileNotFoundError as e:
            raise LabError(f"no lab in {directory} (run `portico dev up`)") from e
        return cls(directory=directory, node_count=int(data["nodes"]), kube_proxy=data.get("kubeProxy"))
