"""The least any allocator keeping Portico's protocol must write, as cheaply as Python can: bench/allocate.py's floor.

For each new LoadBalancer Service in NAMESPACE: create its IPAllocation (the duplicate-proof claim), then write
status.loadBalancer and the AddressAssigned condition -- the two writes per Service the protocol requires
(docs/ip-allocation.md). Nothing else: no caches, pools, sharing, retries or Events; JSON over aiohttp, the next
address of the range.
The finalizer is left out so the phase can be cleaned up without a controller (in Portico it rides on the
same status write, so the number of writes is the same).

    python bench/minimal_allocator.py KUBECONFIG NAMESPACE IPV4_CIDR [--workers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import ssl
from typing import Any

import aiohttp
import uvloop
import yaml

from portico.controller.services import CONDITION
from portico.ipam.blocks import allocation_name


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def connect(kubeconfig: str) -> tuple[str, ssl.SSLContext]:
    """The API server's URL and a TLS context with the client certificate (the lab's admin kubeconfig)."""
    with open(kubeconfig) as f:
        config = yaml.safe_load(f)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    return cluster["server"], context


async def serve(kubeconfig: str, namespace: str, cidr: str, workers: int) -> None:
    server, context = connect(kubeconfig)
    addresses = ipaddress.IPv4Network(cidr).hosts()
    todo: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def write(session: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any],
                    content_type: str = "application/json") -> None:
        async with session.request(method, f"{server}{path}?fieldManager=minimal-allocator", data=json.dumps(body),
                                   headers={"Content-Type": content_type}) as response:
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            name, uid = await todo.get()
            address = next(addresses)
            await write(session, "POST", "/apis/portico.io/v1alpha1/ipallocations", {
                "apiVersion": "portico.io/v1alpha1", "kind": "IPAllocation",
                "metadata": {"name": allocation_name(address)},
                "spec": {"address": str(address), "pool": "bench", "sharingKey": "",
                         "services": [{"namespace": namespace, "name": name, "uid": uid}]}})
            await write(session, "PATCH", f"/api/v1/namespaces/{namespace}/services/{name}/status",
                        {"status": {"loadBalancer": {"ingress": [{"ip": str(address), "ipMode": "VIP"}]},
                                    "conditions": [{"type": CONDITION, "status": "True", "reason": "Assigned",
                                                    "message": f"assigned {address}", "observedGeneration": 1,
                                                    "lastTransitionTime": now()}]}},
                        "application/merge-patch+json")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(workers)]
        async with session.get(f"{server}/api/v1/namespaces/{namespace}/services?watch=1",
                               timeout=aiohttp.ClientTimeout()) as stream:
            async for line in stream.content:
                event = json.loads(line)
                svc = event["object"]
                if event["type"] == "ADDED" and svc["spec"].get("type") == "LoadBalancer":
                    todo.put_nowait((svc["metadata"]["name"], svc["metadata"]["uid"]))
        for task in tasks:
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kubeconfig")
    parser.add_argument("namespace")
    parser.add_argument("cidr")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    uvloop.run(serve(args.kubeconfig, args.namespace, args.cidr, args.workers))


if __name__ == "__main__":
    main()
