"""The real HAProxy serving a rendered L7 configuration in a network namespace of its own, with backends started
beside it and the VIP reached with the address on no interface (a local route stands in for the agent's mark)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from portico.dataplane.haproxy import render
from portico.dataplane.l7model import L7Config

VIP = ipaddress.ip_address("198.19.252.10")
LOOP = ipaddress.ip_address("127.0.0.1")


@contextlib.contextmanager
def serving(config: L7Config, directory: Path, backends: Sequence[tuple[list[str], dict[str, str]]],
            name: str, *, access_log: bool = False) -> Iterator[str]:
    """Yields the namespace. `backends`: each a command and the environment it adds. HAProxy's stdout (its access
    log) goes to `directory`/stdout."""
    ns = f"pt-{name}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "ip", "route", "add", "local", f"{VIP}/32", "dev", "lo", "table", "local"], check=True)
        for command, env in backends:
            procs.append(subprocess.Popen([*run, *command], env={**os.environ, **env}))
        cfg = directory / "haproxy.cfg"
        cfg.write_text(render(config, runtime_socket=str(directory / "runtime.sock"), access_log=access_log))
        check = subprocess.run([*run, "haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with (directory / "stdout").open("wb") as stdout:
            procs.append(subprocess.Popen([*run, "haproxy", "-W", "-db", "-f", str(cfg)], stdout=stdout))
        deadline = time.monotonic() + 10
        while not (directory / "runtime.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield ns
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
