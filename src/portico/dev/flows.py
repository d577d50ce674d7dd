"""The lab's new-flow meter, run inside a lab host (`portico dev exec HOST -- python -m portico.dev.flows ...`).

It opens a new flow to VIP:port every 1/rate seconds (a new TCP connection with one HTTP request, or a
datagram from a new socket) and records who answered: the pod the echo backend names (also when it answers
503, sick), or nothing (refused, reset, no reply). Tests read from it when a backend stopped taking new
flows, as a client sees it. Prints one JSON object: {"start": epoch seconds, "flows": [[t, pod|null, note]]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time


async def _tcp(vip: str, port: int, patience: float) -> tuple[str | None, str]:
    writer = None
    try:
        async with asyncio.timeout(patience):
            reader, writer = await asyncio.open_connection(vip, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: flows\r\nConnection: close\r\n\r\n")
            data = await reader.read()
    except (OSError, TimeoutError) as e:
        return None, type(e).__name__
    finally:
        if writer is not None:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "?"
    try:
        return json.loads(body)["pod"], status
    except (ValueError, KeyError):
        return None, status


async def _udp(vip: str, port: int, patience: float) -> tuple[str | None, str]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (vip, port))
            await loop.sock_sendall(sock, b"flow")
            async with asyncio.timeout(patience):
                data = await loop.sock_recv(sock, 4096)
        except (OSError, TimeoutError) as e:
            return None, type(e).__name__
    try:
        return json.loads(data)["pod"], "reply"
    except (ValueError, KeyError):
        return None, "garbled"


async def measure(vip: str, port: int, *, proto: str, rate: float, duration: float,
                  patience: float) -> dict[str, object]:
    flow = _tcp if proto == "tcp" else _udp
    start = time.time()
    flows: list[list[object]] = []

    async def one(t: float) -> None:
        pod, note = await flow(vip, port, patience)
        flows.append([round(t, 4), pod, note])
    tasks = []
    begun = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - begun) < duration:
        tasks.append(asyncio.ensure_future(one(elapsed)))
        n += 1
        await asyncio.sleep(max(0.0, n / rate - (time.monotonic() - begun)))
    await asyncio.gather(*tasks)
    flows.sort(key=lambda f: float(f[0]))  # type: ignore[arg-type]
    return {"start": start, "flows": flows}


def main() -> None:
    parser = argparse.ArgumentParser(prog="flows")
    parser.add_argument("vip")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--rate", type=float, default=100.0, help="new flows a second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.vip, args.port, proto=args.proto, rate=args.rate,
                                         duration=args.duration, patience=args.timeout))))


if __name__ == "__main__":
    main()
