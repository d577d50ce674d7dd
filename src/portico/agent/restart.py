"""Why the agent is stopping. Only one reason is a restart: its DaemonSet replacing this pod with a newer
template (an upgrade, `kubectl rollout restart`). Then the last heartbeat asks peers to hold this node's VIPs and
view for its next incarnation, the kernel forwarding meanwhile, as BGP graceful restart holds routes: an upgrade
moves no VIP, so no established connection is cut. Any other stop (the node shutting down, the DaemonSet or
Portico being removed, a stop we cannot explain) hands the VIPs over at once."""

from __future__ import annotations

import asyncio
import logging

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet

log = logging.getLogger(__name__)

DAEMONSET = "portico-agent"
RESTART_HOLD = 30.0  # seconds: the next incarnation's pull, start and first sync fit in it
ASK_TIMEOUT = 1.0  # of the agent's termination grace period


def replaced(daemonset_generation: int | None, daemonset_deleting: bool, pod_generation: str | None) -> bool:
    """Whether the DaemonSet (as read now) has moved past the template generation this pod was made from
    (its `pod-template-generation` label)."""
    if daemonset_generation is None or daemonset_deleting or not (pod_generation or "").isdigit():
        return False
    return daemonset_generation > int(pod_generation or 0)


async def restart_hold(client: AsyncClient, namespace: str, pod_generation: str | None) -> float:
    """How long peers should hold this node's VIPs after it stops: RESTART_HOLD if this stop is a restart, else 0."""
    try:
        daemonset = await asyncio.wait_for(client.get(DaemonSet, DAEMONSET, namespace=namespace), ASK_TIMEOUT)
    except Exception as e:  # gone (uninstalled), unreadable, or no answer in time: hand over
        log.info("stopping for good (the DaemonSet could not be read: %s): peers take over at once", e)
        return 0.0
    meta = daemonset.metadata
    assert meta is not None
    if replaced(meta.generation, meta.deletionTimestamp is not None, pod_generation):
        log.info("restarting into DaemonSet generation %s: peers hold this node's VIPs for up to %.0f s",
                 meta.generation, RESTART_HOLD)
        return RESTART_HOLD
    log.info("stopping for good: peers take over at once")
    return 0.0
