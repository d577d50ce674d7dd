"""IPAllocation objects <-> the allocator's plain Allocation values."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from portico.ipam.allocator import Allocation, ServiceKey

log = logging.getLogger(__name__)


def allocation_from_object(obj: Any) -> Allocation | None:
    """None for an object we cannot read (logged; it still blocks its name, so nothing is handed out twice)."""
    try:
        spec = obj.spec
        owners = frozenset(ServiceKey(s["namespace"], s["name"], s["uid"]) for s in spec["services"])
        return Allocation(ipaddress.ip_address(spec["address"]), spec["pool"], owners, spec.get("sharingKey", ""))
    except (KeyError, TypeError, ValueError) as e:
        log.warning("unreadable IPAllocation %s: %s", getattr(obj.metadata, "name", "?"), e)
        return None
