"""The cluster key the agents authenticate their heartbeats with: created once, at install, by the controller.

Static manifests cannot hold a random key, so the first controller replica to start makes one (a
Secret that already exists is left as it is: rotation is the operator's, see docs/security.md). The
controller never reads it back.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from portico.announce.heartbeat import HEARTBEAT_KEY_SECRET
from portico.kube.client import error_text

log = logging.getLogger(__name__)

KEY_BYTES = 32


async def ensure_heartbeat_key(client: AsyncClient, namespace: str, retry_seconds: float = 2.0) -> None:
    secret = Secret(metadata=ObjectMeta(name=HEARTBEAT_KEY_SECRET, namespace=namespace,
                                        labels={"app.kubernetes.io/part-of": "portico"}),
                    type="Opaque", data={"key-1": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()})
    while True:
        try:
            await client.create(secret)
            log.info("created the heartbeat key Secret %s/%s", namespace, HEARTBEAT_KEY_SECRET)
            return
        except ApiError as e:
            if e.status.code == 409:  # there already
                return
            log.error("cannot create the heartbeat key Secret %s/%s: %s", namespace, HEARTBEAT_KEY_SECRET,
                      error_text(e))
        except Exception as e:
            log.warning("heartbeat key Secret not created yet: %s", error_text(e))
        await asyncio.sleep(retry_seconds)
