"""Network namespaces of the lab: build, enter, list and tear down (I/O at the edge)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from portico.dev import addressing as a
from portico.dev.shell import run
from portico.dev.topology import LabTopology, setup_commands

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run_in_netns(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a loop of its own inside network namespace `name`: a thread of its own enters it
    (setns applies to the calling thread), so sockets it opens live there. Blocks until it is done."""
    result: list[T] = []
    error: list[BaseException] = []

    def thread() -> None:
        fd = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {name}")
            result.append(asyncio.run(main()))
        except BaseException as e:  # handed to the caller
            error.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


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
