"""The lab kubelet process: registers the lab's nodes, schedules pending pods, runs bound ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import platform
from pathlib import Path
from typing import cast

import msgspec
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import NodeSpec, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Binding, Node, NodeStatus, Pod
from lightkube.types import PatchType

from portico.dev import addressing as a
from portico.dev.kubelet.heartbeat import NodeHeartbeats
from portico.dev.kubelet.podips import PodAddresses
from portico.dev.kubelet.pods import SA_MOUNT, NodeContext, PodWorker
from portico.dev.kubelet.runtime import ImageStore, Runc
from portico.dev.kubelet.scheduling import NodeInfo, choose_node
from portico.dev.kubelet.status import timestamp
from portico.kube.events import record_event
from portico.kube.informer import Informer, object_key

log = logging.getLogger(__name__)
FIELD_MANAGER = "portico-lab-kubelet"
SCHEDULER = "default-scheduler"


def node_labels(node: a.NodeAddressing) -> dict[str, str]:
    return {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "portico-lab"}


class LabKubelet:
    def __init__(self, client: AsyncClient, nodes: tuple[a.NodeAddressing, ...], pods_dir: Path,
                 ca_file: Path) -> None:
        self.client = client
        self.nodes = {n.name: n for n in nodes}
        self.addresses = {n.name: PodAddresses(n) for n in nodes}
        self.pods_dir = pods_dir
        self.ca_file = ca_file
        self.images = ImageStore(pods_dir.parent / "images")
        self.runtime = Runc(pods_dir.parent / "runc")  # lab.RUNC_ROOT
        self.workers: dict[str, PodWorker] = {}
        self.pods = Informer(client, Pod, self._on_pod)
        self._to_schedule: asyncio.Queue[str] = asyncio.Queue()
        self._stopping: set[asyncio.Task[None]] = set()  # workers being torn down
        self._assumed: dict[str, Pod] = {}  # uid -> pod as bound, until the informer sees it
        self.heartbeats = NodeHeartbeats(client, list(self.nodes))

    async def run(self) -> None:
        SA_MOUNT.mkdir(parents=True, exist_ok=True)  # mount point for per-pod token bind mounts
        await self.register_nodes()
        tasks = [asyncio.create_task(self.pods.run()), asyncio.create_task(self._schedule_loop()),
                 asyncio.create_task(self.heartbeats.run())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*(w.stop() for w in list(self.workers.values())), return_exceptions=True)

    async def register_nodes(self) -> None:
        now = timestamp(dt.datetime.now(dt.UTC))
        for node in self.nodes.values():
            obj = Node(metadata=ObjectMeta(name=node.name, labels=node_labels(node)),
                       spec=NodeSpec(podCIDR=str(node.pod_cidr_v4), podCIDRs=[str(c) for c in node.pod_cidrs]))
            await self.client.apply(obj, field_manager=FIELD_MANAGER, force=True)
            # Merge patch: server-side apply cannot express two InternalIP addresses (keyed by type).
            status = {
                "status": {
                    "addresses": [{"type": "InternalIP", "address": str(node.lan_v4)},
                                  {"type": "InternalIP", "address": str(node.lan_v6)},
                                  {"type": "Hostname", "address": node.name}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "lab kubelet is posting ready status",
                                    "lastHeartbeatTime": now, "lastTransitionTime": now}],
                    "capacity": {"cpu": "2", "memory": "8Gi", "pods": "250"},
                    "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "250"},
                    "nodeInfo": {"kubeletVersion": "portico-lab", "kubeProxyVersion": "", "machineID": "",
                                 "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                                 "osImage": "Portico lab", "containerRuntimeVersion": "portico-lab://1",
                                 "operatingSystem": "linux", "architecture": "amd64"},
                },
            }
            await self.client.patch(NodeStatus, node.name, status, patch_type=PatchType.MERGE)
            # The API server taints new Nodes not-ready; the node lifecycle controller lifts the taint once it
            # has seen the node Ready, which a fresh lab need not wait for.
            await self.client.patch(Node, node.name, {"spec": {"taints": None}}, patch_type=PatchType.MERGE)

    # -- informer callback: cheap, never blocks --------------------------------------------------
    def _on_pod(self, old: Pod | None, new: Pod | None) -> None:
        pod = new or old
        assert pod is not None and pod.metadata is not None and pod.spec is not None
        key = object_key(pod)
        worker = self.workers.get(key)
        if worker is not None and (new is None or new.metadata is None or new.metadata.uid != worker.uid):
            # Deleted (or replaced by a new pod of the same name): stop the old one.
            self.workers.pop(key)
            stopping = asyncio.create_task(worker.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            worker = None
        if new is None:
            return
        assert new.spec is not None and new.metadata is not None
        if not new.spec.nodeName:
            if (new.spec.schedulerName or SCHEDULER) == SCHEDULER and new.metadata.deletionTimestamp is None:
                self._to_schedule.put_nowait(key)
            return
        if new.spec.nodeName not in self.nodes or (new.status and new.status.phase in ("Succeeded", "Failed")
                                                   and worker is None):
            return
        if worker is None:
            worker = self._start_worker(new)
        worker.update(new)

    def _start_worker(self, pod: Pod) -> PodWorker:
        assert pod.spec is not None and pod.metadata is not None and pod.spec.nodeName is not None
        node = self.nodes[pod.spec.nodeName]
        if pod.status and pod.status.podIP and not pod.spec.hostNetwork:
            self.addresses[node.name].restore(pod.metadata.uid or "", ipaddress.ip_address(pod.status.podIP))
        ctx = NodeContext(node=node, addresses=self.addresses[node.name], client=self.client,
                          pods_dir=self.pods_dir, ca_file=self.ca_file, api_host=str(a.API_ADDRESS),
                          api_port=a.API_PORT, images=self.images, runtime=self.runtime,
                          alive=lambda: self.heartbeats.alive[node.name])
        worker = PodWorker(ctx, pod)
        self.workers[object_key(pod)] = worker
        worker.start()
        return worker

    # -- scheduling --------------------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        await self.pods.synced.wait()
        while True:
            key = await self._to_schedule.get()
            pod = self.pods.cache.get(key)
            if pod is None or pod.spec is None or pod.spec.nodeName or pod.metadata is None:
                continue
            if pod.metadata.uid in self._assumed:
                continue  # bound; the informer has not seen it yet
            try:
                await self._schedule(pod)
            except Exception:
                log.exception("scheduling %s failed; it stays pending until its next update", key)

    async def _schedule(self, pod: Pod) -> None:
        assert pod.metadata is not None and pod.metadata.name is not None
        nodes = [NodeInfo(n.name, node_labels(n)) for n in self.nodes.values()]
        bound = [p for p in self.pods.cache.values() if p.spec is not None and p.spec.nodeName]
        bound_uids = {p.metadata.uid for p in bound if p.metadata is not None}
        pending_uids = {p.metadata.uid for p in self.pods.cache.values()
                        if p.metadata is not None and p.spec is not None and not p.spec.nodeName}
        self._assumed = {uid: p for uid, p in self._assumed.items()
                         if uid not in bound_uids and uid in pending_uids}
        bound += self._assumed.values()
        target = choose_node(pod, nodes, bound)
        if target is None:
            await record_event(self.client, pod, type="Warning", reason="FailedScheduling",
                               message=f"0/{len(nodes)} nodes are available: none matches the pod's node "
                                       "selector/affinity", component=SCHEDULER)
            return
        binding = Binding(metadata=ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
                          target=ObjectReference(apiVersion="v1", kind="Node", name=target))
        try:
            await self.client.create(binding)
        except msgspec.ValidationError:
            pass  # bound: the API server answers with a Status, which lightkube cannot decode as Binding
        except ApiError as e:
            log.warning("binding %s to %s: %s", object_key(pod), target, e.status.message)
            return
        # Assume it on its node at once (as kube-scheduler does), so a burst of pods spreads.
        self._assumed[pod.metadata.uid or ""] = _with_node(pod, target)
        await record_event(self.client, pod, type="Normal", reason="Scheduled",
                           message=f"Successfully assigned {object_key(pod)} to {target}", component=SCHEDULER)


def _with_node(pod: Pod, node: str) -> Pod:
    data = pod.to_dict()
    data["spec"]["nodeName"] = node
    return cast(Pod, Pod.from_dict(data))
