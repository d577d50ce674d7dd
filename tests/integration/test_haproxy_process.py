"""HAProxy as the agent runs it (portico.agent.haproxy), in a network namespace of its own: started from a rendered
configuration, reloaded seamlessly (master-worker, listeners passed on) while wrk opens a connection per request and
another wrk keeps its connections alive — not one request refused or failed across the reloads — a configuration
HAProxy refuses leaves the running one serving, and endpoint changes are made through the runtime API, without a
reload — reaching the worker that serves new connections, not an old one that still accepts."""

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
from dataclasses import replace
from pathlib import Path

import pytest

from portico.agent.haproxy import HAProxy, InvalidConfiguration
from portico.api.gateway import HTTPPathMatch, HTTPRouteMatch
from portico.dataplane.haproxy import render, runtime_changes
from portico.dataplane.l7model import Endpoint, L7Config, L7Listener, Pool, RouteEntry, WeightedPool

VIP = ipaddress.ip_address("198.19.252.20")
LOOP = ipaddress.ip_address("127.0.0.1")


def config(path: str, ports: tuple[int, ...] = (9003,)) -> L7Config:
    entry = RouteEntry(("",), HTTPRouteMatch(path=HTTPPathMatch(type="PathPrefix", value=path)),
                       (WeightedPool("p", 1),))
    return L7Config((L7Listener(VIP, 80, "HTTP", (entry,)),), (Pool("p", tuple(Endpoint(LOOP, p) for p in ports)),))


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    ns = f"pt-hap-{os.getpid()}"
    d = tmp_path_factory.mktemp("haproxy-process")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    run = ["ip", "netns", "exec", ns]
    echoes = []
    try:
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "ip", "route", "add", "local", f"{VIP}/32", "dev", "lo", "table", "local"], check=True)
        for pod, port in (("p", 9003), ("q", 9004)):
            echoes.append(subprocess.Popen([*run, sys.executable, "-m", "portico.dev.echo", "--pod", pod, "--node",
                                            "n", f"--listen={port}/TCP"]))
        wrapper = d / "haproxy"  # the agent's HAProxy, in this namespace
        wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {ns} haproxy \"$@\"\n")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        yield ns, d
    finally:
        for echo in echoes:
            echo.terminate()
            echo.wait(5)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def wrk(ns: str, seconds: int, *headers: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, "wrk", "-t1", "-c4", f"-d{seconds}s", *headers,
                             f"http://{VIP}/x"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_reloads_under_load_fail_no_request_and_a_refused_config_keeps_serving(netns: tuple[str, Path]) -> None:
    ns, d = netns
    haproxy = HAProxy(str(d / "run"), binary=str(d / "haproxy"))

    async def scenario() -> list[str]:
        try:
            await haproxy.apply(render(config("/"), runtime_socket=str(haproxy.runtime_socket)))
            assert oct(os.stat(haproxy.directory).st_mode & 0o777) == "0o700"
            loads = [wrk(ns, 6, "-H", "Connection: close"), wrk(ns, 6)]  # a connection per request; keep-alive
            await asyncio.sleep(1)
            for i in range(10):
                await haproxy.apply(render(config(f"/{'x' if i % 2 else ''}"),
                                           runtime_socket=str(haproxy.runtime_socket)))
                await asyncio.sleep(0.3)
            outs = [(await asyncio.to_thread(load.communicate))[0] for load in loads]
            with pytest.raises(InvalidConfiguration, match="unknown keyword"):
                await haproxy.apply("global\n  no-such-keyword\n")
            curl = await asyncio.create_subprocess_exec("ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3",
                                                        f"http://{VIP}/x", stdout=asyncio.subprocess.PIPE)
            body, _ = await curl.communicate()
            assert curl.returncode == 0 and json.loads(body)["pod"] == "p", body
            return outs
        finally:
            await haproxy.stop()

    started = time.monotonic()
    outs = asyncio.run(scenario())
    assert haproxy.reloads == 10
    for out in outs:  # keep-alive connections survive reloads too (the configuration's `idle-close-on-response`)
        print(out)
        found = re.search(r"(\d+) requests in", out)
        assert found is not None, out
        assert int(found.group(1)) > 100, out
        assert "Socket errors" not in out and "Non-2xx" not in out, out
    assert time.monotonic() - started < 30
    assert not haproxy.running


def pods_answering(ns: str, n: int = 40) -> set[str]:
    out = set()
    for _ in range(n):
        r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3", f"http://{VIP}/"],
                           capture_output=True, text=True, timeout=10, check=True)
        assert r.stdout.startswith("{"), (r.stdout, r.stderr)
        out.add(json.loads(r.stdout)["pod"])
    return out


async def current_worker_serves(haproxy: HAProxy, pool: str) -> set[int]:
    """The ports of the pool's servers in service on the worker `show proc` calls current, asked by its pid."""
    show_proc = await haproxy.master("show proc")
    pid = re.search(r"^(\d+)\s+worker", show_proc.split("# workers")[1], re.MULTILINE)
    assert pid is not None, show_proc
    state = await haproxy.master(f"@!{pid.group(1)} show servers state {pool}")
    rows = [line.split() for line in state.splitlines()[2:] if line.strip()]
    return {int(r[18]) for r in rows if not int(r[6]) & 1}  # srv_admin_state without forced maintenance


def test_endpoint_changes_are_runtime_api_updates_not_reloads(netns: tuple[str, Path]) -> None:
    ns, d = netns
    haproxy = HAProxy(str(d / "run-updates"), binary=str(d / "haproxy"))

    def text(c: L7Config) -> str:
        return render(c, runtime_socket=str(haproxy.runtime_socket))

    async def scenario() -> list[set[str]]:
        seen = []
        try:
            one, both, other = config("/"), config("/", (9003, 9004)), config("/", (9004,))
            await haproxy.apply(text(one))
            seen.append(await asyncio.to_thread(pods_answering, ns))
            for before, after in ((one, both), (both, other)):
                # A reload just before: its old worker may still accept for a moment, on the runtime socket too.
                await haproxy.apply(text(replace(before, listeners=config("/x").listeners)))
                await haproxy.apply(text(before))
                commands = runtime_changes(before, after)
                assert commands, (before, after)
                assert await haproxy.update(commands, text(after))
                assert await current_worker_serves(haproxy, "p") == {e.port for e in after.pools[0].endpoints}
                await asyncio.sleep(1.2)  # the old worker has stopped accepting: new connections are the current one's
                seen.append(await asyncio.to_thread(pods_answering, ns))
            assert haproxy.config.read_text() == text(other)  # the file is what runs: a later reload keeps it
            assert runtime_changes(other, config("/x", (9004,))) is None  # a route changed: only a reload does it
            return seen
        finally:
            await haproxy.stop()

    assert asyncio.run(scenario()) == [{"p"}, {"p", "q"}, {"q"}]
    assert (haproxy.reloads, haproxy.updates) == (4, 2)
