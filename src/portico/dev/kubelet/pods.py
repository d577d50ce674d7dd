"""One pod's life on a lab node: network, service-account token, containers, probes, status, teardown."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.core_v1 import Container
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, PodStatus, ServiceAccountToken
from lightkube.types import PatchType

from portico.dev import addressing as a
from portico.dev.kubelet.images import container_argv
from portico.dev.kubelet.oci import ContainerConfigError, Mount, runtime_spec
from portico.dev.kubelet.podips import PodAddresses
from portico.dev.kubelet.podnet import create_pod_network, delete_pod_network
from portico.dev.kubelet.probes import run_hook, run_probe
from portico.dev.kubelet.runtime import Image, ImageStore, PullError, Runc, unmount_under
from portico.dev.kubelet.status import ContainerRuntimeState, Termination, pod_status, readiness_gates
from portico.dev.kubelet.volumes import PodVolumes, VolumeError
from portico.kube.events import record_event

log = logging.getLogger(__name__)

SA_MOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_SECONDS = 48 * 3600
BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER = 1.0, 30.0, 60.0
MIN_GRACE_AFTER_HOOKS = 2.0  # the kubelet's minimumGracePeriodInSeconds
COMPONENT = "kubelet"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class NodeContext:
    """What a pod worker needs to know about the node it runs on and the cluster."""
    node: a.NodeAddressing
    addresses: PodAddresses
    client: AsyncClient
    pods_dir: Path
    ca_file: Path
    api_host: str
    api_port: int
    images: ImageStore
    runtime: Runc
    alive: Callable[[], bool] = lambda: True  # the cluster hears from the node (its LAN link is up)


def _field_value(pod: Pod, path: str, pod_ips: list[str], host_ips: list[str]) -> str | None:
    meta, spec = pod.metadata, pod.spec
    assert meta is not None and spec is not None
    simple = {
        "metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
        "spec.nodeName": spec.nodeName, "spec.serviceAccountName": spec.serviceAccountName,
        "status.podIP": pod_ips[0] if pod_ips else "", "status.podIPs": ",".join(pod_ips),
        "status.hostIP": host_ips[0], "status.hostIPs": ",".join(host_ips),
    }
    if path in simple:
        return simple[path] or ""
    for prefix, mapping in (("metadata.labels", meta.labels), ("metadata.annotations", meta.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((mapping or {}).get(path[len(prefix) + 2:-2], ""))
    return None


def _conditions(pod: Pod) -> list[dict[str, Any]]:
    return [c.to_dict() for c in (pod.status.conditions or [])] if pod.status is not None else []


def _ready(pod: Pod) -> str | None:
    return next((c.get("status") for c in _conditions(pod) if c.get("type") == "Ready"), None)


def _ready_in(status: dict[str, Any]) -> str | None:
    return next((c.get("status") for c in status.get("conditions", []) if c.get("type") == "Ready"), None)


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Pod) -> None:
        self.ctx = ctx
        self.pod = pod
        assert pod.metadata is not None and pod.spec is not None
        self.uid: str = pod.metadata.uid or ""
        self.name, self.namespace = pod.metadata.name or "", pod.metadata.namespace or "default"
        self.host_network = bool(pod.spec.hostNetwork)
        self.dir = ctx.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.containers = [ContainerRuntimeState(name=c.name, image=c.image or "") for c in pod.spec.containers]
        self.pod_ips: list[str] = []
        self.host_ips = [str(ctx.node.lan_v4), str(ctx.node.lan_v6)]
        self.start_time = dt.datetime.now(dt.UTC)
        self._transitions: dict[str, dt.datetime] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._last_status: dict[str, Any] | None = None
        self._sa_dir: Path | None = None  # lab built-ins' token
        self._images: dict[str, Image] = {}  # containers run from an image, by name
        self._volumes: PodVolumes | None = None
        self._renewals: asyncio.Task[None] | None = None
        self._terminating = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # -- public: driven by the kubelet's pod informer ------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")
        self.task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pod %s/%s failed in the lab kubelet", self.namespace, self.name, exc_info=task.exception())

    def update(self, pod: Pod) -> None:
        before, self.pod = self._gates(), pod
        if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
            self._terminating.set()
        if self._last_status is not None and _ready(pod) != _ready_in(self._last_status):
            self._last_status = None  # someone else (the node lifecycle controller) changed it: post ours again
            self._status_dirty.set()
        elif self._gates() != before:
            self._status_dirty.set()  # a readiness gate's condition changed: Ready may follow

    def _gate_kinds(self) -> list[str]:
        assert self.pod.spec is not None
        return [gate.conditionType for gate in self.pod.spec.readinessGates or []]

    def _gates(self) -> dict[str, str | None]:
        return readiness_gates(self._gate_kinds(), _conditions(self.pod))

    async def stop(self) -> None:
        """The pod is gone from the API: stop everything now and clean up."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def netns(self) -> str:
        return a.host_netns(self.ctx.node.name) if self.host_network else a.pod_netns(self.uid)

    async def _run(self) -> None:
        status_writer = asyncio.create_task(self._write_status_loop())
        try:
            await self._run_pod()
        finally:
            await self._kill_all(grace=0.0)
            if self._renewals is not None:
                self._renewals.cancel()
            for name in self._images:
                await self.ctx.runtime.delete(self._container_id(name))
            await asyncio.to_thread(self._remove_containers)
            if not self.host_network:
                await asyncio.to_thread(delete_pod_network, self.uid, self.ctx.node)
            self.ctx.addresses.release(self.uid)
            status_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_writer

    async def _run_pod(self) -> None:
        spec = self.pod.spec
        assert spec is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.host_network:
            self.pod_ips = list(self.host_ips)
        else:
            v4, v6 = self.ctx.addresses.allocate(self.uid)
            self.pod_ips = [str(v4), str(v6)]
            await asyncio.to_thread(create_pod_network, self.uid, self.ctx.node, v4, v6)
        builtin = {c.name: container_argv(c, pod=self.name, node=self.ctx.node.name) for c in spec.containers}
        if any(argv is not None for argv in builtin.values()):
            self._sa_dir = await self._write_service_account()
        runners = [asyncio.create_task(self._run_containers(builtin))]
        terminating = asyncio.create_task(self._terminating.wait())
        await asyncio.wait([*runners, terminating], return_when=asyncio.FIRST_COMPLETED)
        if self._terminating.is_set():
            grace = spec.terminationGracePeriodSeconds
            grace = 30 if grace is None else grace
            if self.pod.metadata and self.pod.metadata.deletionGracePeriodSeconds is not None:
                grace = self.pod.metadata.deletionGracePeriodSeconds
            await self._event("Normal", "Killing", "Stopping container(s)")
            await self._stop_containers(float(grace))
            for r in runners:
                r.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
            await self._finish_deletion()
        else:
            await asyncio.gather(*runners)  # restartPolicy ended them; the pod stays until deleted
            await self._terminating.wait()
            await self._finish_deletion()
        terminating.cancel()

    async def _run_containers(self, builtin: dict[str, list[str] | None]) -> None:
        spec = self.pod.spec
        assert spec is not None
        if any(argv is None for argv in builtin.values()):  # an image container: the pod's volumes first
            self._volumes = PodVolumes(self.pod, self.ctx.client, self.dir,
                                       lambda path: _field_value(self.pod, path, self.pod_ips, self.host_ips))
            await self._mount_volumes(self._volumes)
            self._renewals = asyncio.create_task(self._volumes.renew_tokens())
        await asyncio.gather(*(self._run_container(c, builtin[c.name], state)
                               for c, state in zip(spec.containers, self.containers, strict=True)))

    async def _mount_volumes(self, volumes: PodVolumes) -> None:
        """Until every volume is set up (a ConfigMap or Secret may be created later): FailedMount meanwhile."""
        backoff = BACKOFF_INITIAL
        while True:
            try:
                await volumes.set_up()
                return
            except VolumeError as e:
                await self._event("Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _remove_containers(self) -> None:
        """Overlays and volumes unmounted, writable layers removed; the logs stay (`portico dev logs pod/...`)."""
        unmount_under(self.dir)
        shutil.rmtree(self.dir / "containers", ignore_errors=True)

    async def _finish_deletion(self) -> None:
        self._status_dirty.set()
        await self._flush_status()
        with contextlib.suppress(ApiError):
            await self.ctx.client.delete(Pod, self.name, namespace=self.namespace, grace_period=0)

    async def _write_service_account(self) -> Path | None:
        spec = self.pod.spec
        assert spec is not None
        if spec.automountServiceAccountToken is False:
            return None
        sa = spec.serviceAccountName or "default"
        # Bound to the pod, as a kubelet's projected token is: the API server then names the pod's node in the
        # token (authentication.kubernetes.io/node-name), which admission policies may check.
        meta = self.pod.metadata
        assert meta is not None
        bound = BoundObjectReference(apiVersion="v1", kind="Pod", name=self.name, uid=meta.uid)
        request = ServiceAccountToken(metadata=ObjectMeta(name=sa), spec=TokenRequestSpec(
            audiences=[], expirationSeconds=TOKEN_SECONDS, boundObjectRef=bound))
        try:
            token = await self.ctx.client.create(request, sa, namespace=self.namespace)
        except ApiError as e:
            await self._event("Warning", "FailedMount", f"service account token for {sa!r}: {e.status.message}")
            return None
        sa_dir = self.dir / "serviceaccount"
        sa_dir.mkdir(exist_ok=True)
        assert token.status is not None and token.status.token
        (sa_dir / "token").write_text(token.status.token)
        (sa_dir / "ca.crt").write_bytes(self.ctx.ca_file.read_bytes())
        (sa_dir / "namespace").write_text(self.namespace)
        return sa_dir

    def _env(self, container: Container) -> dict[str, str]:
        env = dict(HOSTNAME=self.name, KUBERNETES_SERVICE_HOST=self.ctx.api_host,
                   KUBERNETES_SERVICE_PORT=str(self.ctx.api_port), KUBERNETES_SERVICE_PORT_HTTPS=str(self.ctx.api_port))
        for var in container.env or []:
            if var.valueFrom is not None and var.valueFrom.fieldRef is not None:
                value = _field_value(self.pod, var.valueFrom.fieldRef.fieldPath, self.pod_ips, self.host_ips)
                if value is None:
                    log.warning("%s/%s: unsupported fieldRef %s", self.namespace, self.name,
                                var.valueFrom.fieldRef.fieldPath)
                env[var.name] = value or ""
            elif var.valueFrom is None:
                env[var.name] = var.value or ""
        return env

    def _host_prefix(self) -> list[str]:
        """A lab built-in runs on this machine in the pod's network namespace."""
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}", "--"]
        if self._sa_dir is None:
            return prefix
        # A private mount namespace shows this pod's token at the standard path, as in a real pod.
        return [*prefix, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'mount --bind "$0" {SA_MOUNT} && exec "$@"', str(self._sa_dir)]

    def _exec_prefix(self, container: Container) -> list[str]:
        """What runs a command inside the container (exec probes, hooks)."""
        if container.name in self._images:
            return self.ctx.runtime.exec_argv(self._container_id(container.name))
        return self._host_prefix()

    def _container_id(self, name: str) -> str:
        return f"{self.uid}-{name}"

    async def _pull(self, container: Container, state: ContainerRuntimeState) -> Image:
        """The container's image, retried with back-off as a kubelet does: ErrImagePull, then ImagePullBackOff."""
        reference = container.image or ""
        policy = container.imagePullPolicy or ("Always" if reference.endswith(":latest") or ":" not in
                                               reference.rsplit("/", 1)[-1] else "IfNotPresent")
        backoff = BACKOFF_INITIAL
        while True:
            await self._event("Normal", "Pulling", f'Pulling image "{reference}"')
            began = asyncio.get_running_loop().time()
            try:
                image = await self.ctx.images.pull(reference, policy)
            except PullError as e:
                state.waiting_reason, state.waiting_message = "ErrImagePull", str(e)
                self._status_dirty.set()
                await self._event("Warning", "Failed", f'Failed to pull image "{reference}": {e}')
                await self._event("Warning", "Failed", "Error: ErrImagePull")
                await asyncio.sleep(backoff)
                state.waiting_reason = "ImagePullBackOff"
                state.waiting_message = f'Back-off pulling image "{reference}"'
                self._status_dirty.set()
                await self._event("Normal", "BackOff", f'Back-off pulling image "{reference}"')
                await self._event("Warning", "Failed", "Error: ImagePullBackOff")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            took = asyncio.get_running_loop().time() - began
            await self._event("Normal", "Pulled", f'Successfully pulled image "{reference}" in {took:.3f}s')
            state.image_id = image.image_id
            return image

    def _bundle(self, container: Container, image: Image) -> Path:
        """The container's bundle, with the kubelet's files (/etc/hosts, hostname, resolv.conf) and volumes."""
        spec = self.pod.spec
        assert spec is not None and self._volumes is not None
        etc = self.dir / "etc"
        etc.mkdir(exist_ok=True)
        hostname = self.ctx.node.name if self.host_network else self.name
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
                                   "".join(f"{ip}\t{hostname}\n" for ip in self.pod_ips))
        (etc / "hostname").write_text(hostname + "\n")
        (etc / "resolv.conf").write_text("# the Portico lab has no cluster DNS: names do not leave the lab\n")
        mounts = [Mount(str(etc / name), f"/etc/{name}") for name in ("hosts", "hostname", "resolv.conf")]
        mounts += self._volumes.mounts(list(container.volumeMounts or []))
        bundle = self.dir / "containers" / container.name
        oci = runtime_spec(container=container, pod_security=spec.securityContext, image_config=image.config,
                           rootfs=str(bundle / "rootfs"), hostname=hostname, netns_path=f"/run/netns/{self.netns}",
                           env=self._env(container), mounts=mounts, passwd=image.read("/etc/passwd"),
                           group=image.read("/etc/group"))
        self.ctx.runtime.prepare(bundle, image, oci)
        return bundle

    async def _start(self, container: Container, argv: list[str] | None, image: Image | None,
                     out: int) -> asyncio.subprocess.Process:
        if image is None:
            assert argv is not None
            return await asyncio.create_subprocess_exec(
                *self._host_prefix(), *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, env={**BASE_ENV, **self._env(container)}, start_new_session=True)
        bundle = await asyncio.to_thread(self._bundle, container, image)
        return await self.ctx.runtime.start(self._container_id(container.name), bundle, out)

    async def _run_container(self, container: Container, argv: list[str] | None,
                             state: ContainerRuntimeState) -> None:
        spec = self.pod.spec
        assert spec is not None
        policy = spec.restartPolicy or "Always"
        backoff = BACKOFF_INITIAL
        log_path = self.dir / f"{container.name}.log"
        image = None
        if argv is None:
            image = self._images[container.name] = await self._pull(container, state)
        while True:
            started = dt.datetime.now(dt.UTC)
            try:
                with log_path.open("ab") as out:
                    proc = await self._start(container, argv, image, out.fileno())
            except (ContainerConfigError, VolumeError) as e:
                state.waiting_reason, state.waiting_message = "CreateContainerConfigError", str(e)
                self._status_dirty.set()
                await self._event("Warning", "Failed", f"Error: {e}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._procs[container.name] = proc
            state.running_since, state.started_ever, state.waiting_reason = started, True, None
            state.ready = container.readinessProbe is None
            self._status_dirty.set()
            await self._event("Normal", "Started", f"Started container {container.name}")
            prober = asyncio.create_task(self._probe_loop(container, state))
            code = await proc.wait()
            prober.cancel()
            if image is not None:
                await self.ctx.runtime.delete(self._container_id(container.name))
            finished = dt.datetime.now(dt.UTC)
            term = Termination(exit_code=code if code >= 0 else 128 - code,
                               reason="Completed" if code == 0 else "Error", started_at=started, finished_at=finished)
            state.running_since, state.ready = None, False
            if self._terminating.is_set() or policy == "Never" or (policy == "OnFailure" and code == 0):
                state.terminated = term
                self._status_dirty.set()
                return
            state.last_termination = term
            state.restart_count += 1
            if (finished - started).total_seconds() > BACKOFF_RESET_AFTER:
                backoff = BACKOFF_INITIAL
            state.waiting_reason = "CrashLoopBackOff"
            state.waiting_message = f"back-off {backoff:.0f}s restarting failed container {container.name}"
            self._status_dirty.set()
            await self._event("Warning", "BackOff", f"Back-off restarting failed container {container.name} "
                              f"(exit code {term.exit_code})")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _probe_loop(self, container: Container, state: ContainerRuntimeState) -> None:
        probe = container.readinessProbe
        if probe is None:
            return
        await asyncio.sleep(probe.initialDelaySeconds or 0)
        successes = failures = 0
        while True:
            ok = await run_probe(probe, container, self.pod_ips[0], self._exec_prefix(container))
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if ok and not state.ready and successes >= (probe.successThreshold or 1):
                state.ready = True
                self._status_dirty.set()
            elif not ok and failures >= (probe.failureThreshold or 3) and state.ready:
                await self._event("Warning", "Unhealthy", f"Readiness probe failed for {container.name}")
                state.ready = False
                self._status_dirty.set()
            await asyncio.sleep(probe.periodSeconds or 10)

    async def _stop_containers(self, grace: float) -> None:
        """The termination contract: each running container's preStop hook, then SIGTERM, then SIGKILL, all
        within the grace period (a hook that uses it all leaves the containers 2 s, as the kubelet does)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        spec = self.pod.spec
        assert spec is not None
        hooks = [self._pre_stop(c) for c in spec.containers
                 if c.lifecycle is not None and c.lifecycle.preStop is not None
                 and (proc := self._procs.get(c.name)) is not None and proc.returncode is None]
        if hooks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*hooks), grace)
        await self._kill_all(grace=max(deadline - loop.time(), MIN_GRACE_AFTER_HOOKS if hooks else 0.0))

    async def _pre_stop(self, container: Container) -> None:
        assert container.lifecycle is not None and container.lifecycle.preStop is not None
        ok = await run_hook(container.lifecycle.preStop, container, self.pod_ips[0] if self.pod_ips else "",
                            self._exec_prefix(container))
        if not ok:
            await self._event("Warning", "FailedPreStopHook", f"PreStopHook failed for container {container.name}")

    async def _signal(self, name: str, proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        if name in self._images:  # runc passes SIGTERM on, but SIGKILL would end runc and not the container
            await self.ctx.runtime.kill(self._container_id(name), sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    async def _kill_all(self, grace: float) -> None:
        procs = {name: p for name, p in self._procs.items() if p.returncode is None}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            await asyncio.gather(*(self._signal(name, p, sig) for name, p in procs.items()))
            if sig == signal.SIGTERM and grace > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), grace)
            procs = {name: p for name, p in procs.items() if p.returncode is None}
            if not procs:
                break
        await asyncio.gather(*(p.wait() for p in self._procs.values()))

    # -- status and events -----------------------------------------------------------------------
    async def _write_status_loop(self) -> None:
        while True:
            await self._status_dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts (start + probe) into one write
            if not self.ctx.alive():  # a dead node's kubelet cannot reach the API server: later
                await asyncio.sleep(1.0)
                continue
            await self._flush_status()

    async def _flush_status(self) -> None:
        self._status_dirty.clear()
        status = pod_status(self.containers, pod_ips=self.pod_ips, host_ips=self.host_ips,
                            start_time=self.start_time, transition_times=self._transitions,
                            gates=self._gate_kinds(), foreign=_conditions(self.pod))
        if status == self._last_status:
            return
        try:
            await self.ctx.client.patch(PodStatus, self.name, {"status": status}, namespace=self.namespace,
                                        patch_type=PatchType.MERGE)
            self._last_status = status
        except ApiError as e:
            if e.status.code != 404:
                log.warning("status of %s/%s: %s", self.namespace, self.name, e.status.message)
                self._status_dirty.set()

    async def _event(self, type_: str, reason: str, message: str) -> None:
        await record_event(self.ctx.client, self.pod, type=type_,  # type: ignore[arg-type]
                           reason=reason, message=message, component=COMPONENT, host=self.ctx.node.name)
