"""Network namespaces of the lab: build, enter, list and tear down (I/O at the edge)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from portico.dev import addressing as a
from portico.dev.shell import run
from portico.dev.topology import LabTopology, setup_commands

NETNS_DIR = Path("/run/netns")


def list_lab_netns() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(a.NETNS_PREFIX))


def lab_is_wired() -> bool:
    return (NETNS_DIR / a.LAN_NETNS).exists()


def build_network(topology: LabTopology) -> None:
    for argv in setup_commands(topology):
        run(argv)


def netns_pids(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split()]


def agent_pid(host: str) -> int | None:
    """The Portico agent's process on lab host `host` (node-1, ...), if one runs: what a test kills."""
    for pid in netns_pids(a.host_netns(host)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent" in argv and any(arg.endswith(b"portico") for arg in argv):
            return pid
    return None


def kill_netns_processes(netns: str, grace: float = 2.0) -> None:
    """SIGTERM every process in the namespace, then SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        pids = netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and netns_pids(netns):
            time.sleep(0.05)


def delete_netns(netns: str) -> None:
    kill_netns_processes(netns)
    # Removing the namespace deletes the veths in it; nft tables inside it go with it.
    run(["ip", "netns", "del", netns], check=False)


def teardown_network() -> None:
    """Remove every namespace and interface the lab made (pods first, the LAN last)."""
    namespaces = list_lab_netns()
    for netns in sorted(namespaces, key=lambda n: n == a.LAN_NETNS):
        delete_netns(netns)
    run(["ip", "link", "del", a.API_HOST_IFACE], check=False)


def exec_argv(netns: str | None, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside lab namespace `netns` (None: the host namespace)."""
    return argv if netns is None else ["ip", "netns", "exec", netns, *argv]
