"""The cluster's heartbeat keys, from the Secret the controller creates at install, handed to the mesh.

Re-read every few seconds rather than watched (the agent may read single Secrets, not list them). A
rotation adds the new key, waits for every agent to have read it, then removes the old one: every key
held signs each beat, so agents that read the Secret at different moments always share a key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Secret

from portico.announce.heartbeat import HEARTBEAT_KEY_SECRET, usable_keys
from portico.kube.client import error_text

log = logging.getLogger(__name__)

READ_SECONDS = 5.0  # how often the Secret is re-read once keys are held
RETRY_SECONDS = 1.0  # while there are none


async def read_heartbeat_keys(client: AsyncClient, namespace: str) -> tuple[tuple[bytes, ...], str | None]:
    """(keys, problem): the Secret's values in key-name order; raises when the API cannot be reached."""
    try:
        secret = await client.get(Secret, HEARTBEAT_KEY_SECRET, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return (), (f"Secret {namespace}/{HEARTBEAT_KEY_SECRET} not found (the controller creates it when it "
                        "starts): no layer-2 announcements from this node until it exists")
        raise
    try:
        values = [base64.b64decode(v, validate=True) for _, v in sorted((secret.data or {}).items())]
    except binascii.Error:
        return (), f"Secret {namespace}/{HEARTBEAT_KEY_SECRET} holds a value that is not base64"
    keys, problem = usable_keys(values)
    if not keys:
        problem = f"Secret {namespace}/{HEARTBEAT_KEY_SECRET} holds no usable key ({problem or 'it is empty'})"
    return keys, problem


class HeartbeatKeys:
    """Reads the keys and hands them on (`use(keys)`: the layer-2 announcer's mesh)."""

    def __init__(self, client: AsyncClient, namespace: str, use: Callable[[tuple[bytes, ...]], None]) -> None:
        self.client, self.namespace, self.use = client, namespace, use
        self.keys: tuple[bytes, ...] = ()
        self.problem: str | None = None

    async def run(self) -> None:
        while True:
            try:
                keys, problem = await read_heartbeat_keys(self.client, self.namespace)
            except Exception as e:  # the API unreachable: keep the keys held
                log.warning("heartbeat keys not re-read: %s", error_text(e))
            else:
                if problem != self.problem and problem is not None:
                    log.error("%s", problem)
                self.problem = problem
                if keys != self.keys:
                    self.keys = keys
                    self.use(keys)
            await asyncio.sleep(READ_SECONDS if self.keys else RETRY_SECONDS)
