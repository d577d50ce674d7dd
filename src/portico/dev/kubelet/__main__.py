"""`python -m portico.dev.kubelet --state-dir DIR`: the lab kubelet daemon started by `portico dev up`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from portico.dev.kubelet.kubelet import FIELD_MANAGER, LabKubelet
from portico.dev.state import LabState
from portico.kube.client import async_client


def main() -> None:
    parser = argparse.ArgumentParser(prog="portico-lab-kubelet")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    state = LabState.load(args.state_dir)
    client = async_client(state.kubelet_kubeconfig, field_manager=FIELD_MANAGER)
    kubelet = LabKubelet(client, state.topology.nodes, args.state_dir / "pods", state.ca_file)
    try:
        import uvloop

        uvloop.run(kubelet.run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
