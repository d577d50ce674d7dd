"""gobgpd's API is the agent's alone, and a hung gobgpd cannot hold the agent up (real gobgpd, loopback only)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from portico.announce import bgp
from portico.announce.bgp import GoBgp, Session, api_socket

# A peer on loopback that nobody answers: gobgpd only tries to connect, and nothing leaves the machine.
SESSION = Session(peer="nobody-home", address=ipaddress.ip_address("127.0.0.2"), peer_asn=64512, my_asn=64512,
                  port=17900)

UNIX_SOCKETS = Path("/proc/net/unix")
CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(type(e).__name__)
else:
    print("connected")
"""


@pytest.fixture
async def speaker(tmp_path: Path) -> AsyncIterator[GoBgp]:
    run_dir = tmp_path / "run"
    speaker = GoBgp(api_socket("node-x", str(run_dir)), router_id="198.18.0.99")
    await speaker.apply({SESSION.peer: SESSION}, {})
    try:
        yield speaker
    finally:
        if speaker._process is not None and speaker._process.returncode is None:
            os.kill(speaker._process.pid, signal.SIGCONT)
        await speaker.stop()


def _connect_as_nobody(path: str) -> str:
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                           "-c", CONNECT, path], capture_output=True, text=True, check=True, timeout=30)
    return proc.stdout.strip()


async def test_only_the_agents_user_reaches_the_api(speaker: GoBgp) -> None:
    path = Path(speaker.socket_path)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Not an abstract socket (those have no permissions: anything in the network namespace could connect).
    assert "@portico-gobgp" not in UNIX_SOCKETS.read_text()
    assert _connect_as_nobody(str(path)) == "PermissionError"
    assert [s.peer for s in await speaker.states()] == [SESSION.peer]  # the agent itself still gets in


async def test_a_hung_gobgpd_fails_calls_at_their_deadline(speaker: GoBgp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bgp, "RPC_TIMEOUT_SECONDS", 0.5)
    assert speaker._process is not None
    os.kill(speaker._process.pid, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(speaker.states(), 10)  # without a deadline this would wait forever
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 3


async def test_stop_removes_the_socket(speaker: GoBgp) -> None:
    path = Path(speaker.socket_path)
    await speaker.stop()
    assert not path.exists()


def test_long_node_names_fit_a_socket_path() -> None:
    path = api_socket("n" * 253)
    assert len(path.encode()) <= 107 and path.startswith(bgp.RUN_DIR)
