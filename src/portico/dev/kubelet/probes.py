"""Readiness probes (HTTP GET, TCP socket, exec) and lifecycle hooks (also sleep), run against the pod's IP
as a kubelet does."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from lightkube.models.core_v1 import Container, LifecycleHandler, Probe


def resolve_port(port: int | str, container: Container) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    return next((p.containerPort for p in container.ports or [] if p.name == port), None)


async def _http_get(host: str, port: int, path: str, headers: list[Any], limit: float | None) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    try:
        host_header = f"[{host}]" if ":" in host else host
        lines = [f"GET {path or '/'} HTTP/1.1", f"Host: {host_header}:{port}", "User-Agent: kube-probe/portico-lab",
                 "Connection: close", *(f"{h.name}: {h.value}" for h in headers), "", ""]
        writer.write("\r\n".join(lines).encode())
        status_line = await asyncio.wait_for(reader.readline(), limit)
        parts = status_line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _tcp(host: str, port: int, limit: float) -> bool:
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _exec(argv: list[str], limit: float | None) -> bool:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(proc.wait(), limit) == 0
    except TimeoutError:
        return False
    finally:  # timed out, or the hook's time (the grace period) ran out
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_probe(probe: Probe, container: Container, pod_ip: str, exec_prefix: list[str]) -> bool:
    """One probe attempt. `exec_prefix` enters the pod's namespaces for exec probes."""
    timeout = float(probe.timeoutSeconds or 1)
    try:
        if probe.httpGet is not None:
            port = resolve_port(probe.httpGet.port, container)
            host = probe.httpGet.host or pod_ip
            return port is not None and await _http_get(host, port, probe.httpGet.path or "/",
                                                        probe.httpGet.httpHeaders or [], timeout)
        if probe.tcpSocket is not None:
            port = resolve_port(probe.tcpSocket.port, container)
            return port is not None and await _tcp(probe.tcpSocket.host or pod_ip, port, timeout)
        if probe.exec is not None and probe.exec.command:
            return await _exec([*exec_prefix, *probe.exec.command], timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    return False  # grpc probes are not supported in the lab


async def run_hook(hook: LifecycleHandler, container: Container, pod_ip: str, exec_prefix: list[str]) -> bool:
    """A lifecycle hook (preStop): run to its end, however long (the caller bounds it by the grace period)."""
    try:
        if hook.sleep is not None:
            await asyncio.sleep(hook.sleep.seconds)
            return True
        if hook.httpGet is not None:
            port = resolve_port(hook.httpGet.port, container)
            return port is not None and await _http_get(hook.httpGet.host or pod_ip, port, hook.httpGet.path or "/",
                                                        hook.httpGet.httpHeaders or [], None)
        if hook.exec is not None and hook.exec.command:
            return await _exec([*exec_prefix, *hook.exec.command], None)
    except (OSError, asyncio.IncompleteReadError):
        return False
    return False  # tcpSocket hooks are deprecated and never ran anything
