"""HAProxy as the agent runs it (portico.agent.haproxy), in a network namespace of its own: started from a rendered
configuration, reloaded seamlessly (master-worker, listeners passed on) while wrk opens a connection per request —
not one refused or failed across the reloads — and a configuration HAProxy refuses leaves the running one serving."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portico.agent.haproxy import HAProxy, InvalidConfiguration
from portico.api.gateway import HTTPPathMatch, HTTPRouteMatch
from portico.dataplane.haproxy import render
from portico.dataplane.l7model import Endpoint, L7Config, L7Listener, Pool, RouteEntry, WeightedPool

VIP = ipaddress.ip_address("198.19.252.20")
LOOP = ipaddress.ip_address("127.0.0.1")


def config(path: str) -> L7Config:
    entry = RouteEntry(("",), HTTPRouteMatch(path=HTTPPathMatch(type="PathPrefix", value=path)),
                       (WeightedPool("p_9003", 1),))
    return L7Config((L7Listener(VIP, 80, "HTTP", (entry,)),), (Pool("p_9003", (Endpoint(LOOP, 9003),)),))


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    ns = f"pt-hap-{os.getpid()}"
    d = tmp_path_factory.mktemp("haproxy-process")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    run = ["ip", "netns", "exec", ns]
    echo = None
    try:
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "ip", "route", "add", "local", f"{VIP}/32", "dev", "lo", "table", "local"], check=True)
        echo = subprocess.Popen([*run, sys.executable, "-m", "portico.dev.echo", "--pod", "p", "--node", "n",
                                 "--listen=9003/TCP"])
        wrapper = d / "haproxy"  # the agent's HAProxy, in this namespace
        wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {ns} haproxy \"$@\"\n")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        yield ns, d
    finally:
        if echo is not None:
            echo.terminate()
            echo.wait(5)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def wrk(ns: str, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, "wrk", "-t1", "-c4", f"-d{seconds}s", "-H", "Connection: close",
                             f"http://{VIP}/x"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_reloads_under_load_fail_no_request_and_a_refused_config_keeps_serving(netns: tuple[str, Path]) -> None:
    ns, d = netns
    haproxy = HAProxy(str(d / "run"), binary=str(d / "haproxy"))

    async def scenario() -> str:
        try:
            await haproxy.apply(render(config("/"), runtime_socket=str(haproxy.runtime_socket)))
            assert oct(os.stat(haproxy.directory).st_mode & 0o777) == "0o700"
            load = wrk(ns, 6)
            await asyncio.sleep(1)
            for i in range(10):
                await haproxy.apply(render(config(f"/{'x' if i % 2 else ''}"),
                                           runtime_socket=str(haproxy.runtime_socket)))
                await asyncio.sleep(0.3)
            out, _ = await asyncio.get_running_loop().run_in_executor(None, load.communicate)
            with pytest.raises(InvalidConfiguration, match="unknown keyword"):
                await haproxy.apply("global\n  no-such-keyword\n")
            curl = await asyncio.create_subprocess_exec("ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3",
                                                        f"http://{VIP}/x", stdout=asyncio.subprocess.PIPE)
            body, _ = await curl.communicate()
            assert curl.returncode == 0 and json.loads(body)["pod"] == "p", body
            return out
        finally:
            await haproxy.stop()

    started = time.monotonic()
    out = asyncio.run(scenario())
    print(out)
    assert haproxy.reloads == 10
    found = re.search(r"(\d+) requests in", out)
    assert found is not None, out
    requests = int(found.group(1))
    assert requests > 100, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    assert time.monotonic() - started < 30
    assert not haproxy.running
