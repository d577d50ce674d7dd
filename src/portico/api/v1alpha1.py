"""portico.io/v1alpha1 types. `portico.api.crds` turns them into the CRDs in deploy/crds/.

Validation that the API server can do is declared here (OpenAPI bounds and CEL rules), so bad
objects are refused at `kubectl apply` time with a message naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct, field

GROUP = "portico.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message, **extra}]}


_RANGE_PARTS = "self.split('-')"
ADDRESS_BLOCK_RULE = (
    f"isCIDR(self) || ({_RANGE_PARTS}.size() == 2 && isIP({_RANGE_PARTS}[0]) && isIP({_RANGE_PARTS}[1]) "
    f"&& ip({_RANGE_PARTS}[0]).family() == ip({_RANGE_PARTS}[1]).family())"
)
AddressBlock = Annotated[str, Meta(
    min_length=1, max_length=100,
    description="A CIDR (198.18.100.0/24, fd00:198:18:f00::/120) or an inclusive range of one family "
                "(198.18.100.10-198.18.100.20).",
    extra_json_schema=cel(ADDRESS_BLOCK_RULE, "must be a CIDR such as 198.18.100.0/24 or a range of one "
                          "IP family such as 198.18.100.10-198.18.100.20"),
)]
IPAddress = Annotated[str, Meta(max_length=45, extra_json_schema=cel("isIP(self)", "must be an IP address"))]
Name = Annotated[str, Meta(min_length=1, max_length=253)]


class LabelSelectorRequirement(Struct, omit_defaults=True):
    key: Name
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[Annotated[str, Meta(max_length=63)]], Meta(max_length=64)] = field(default_factory=list)


class LabelSelector(Struct, omit_defaults=True):
    """A standard Kubernetes label selector; an empty selector matches everything."""

    matchLabels: Annotated[dict[str, str], Meta(max_length=64)] = field(default_factory=dict)
    matchExpressions: Annotated[list[LabelSelectorRequirement], Meta(
        max_length=16,
        extra_json_schema=cel("self.all(r, (r.operator in ['In', 'NotIn']) == (size(r.values) > 0))",
                              "In and NotIn need values; Exists and DoesNotExist take none"),
    )] = field(default_factory=list)


class Condition(Struct, omit_defaults=True):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    lastTransitionTime: str = ""
    observedGeneration: int = 0


# -- IPPool ---------------------------------------------------------------------------------------
class IPPoolSpec(Struct, omit_defaults=True):
    """Addresses Portico may give to Services of type LoadBalancer."""

    addresses: Annotated[list[AddressBlock], Meta(min_length=1, max_length=256)]
    autoAssign: Annotated[bool, Meta(description="Give addresses from this pool to Services that do not ask "
                                                 "for a pool by name.")] = True
    avoidBuggyIPs: Annotated[bool, Meta(description="Skip IPv4 addresses ending in .0 and .255, which some "
                                                    "clients mishandle.")] = False
    serviceSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    priority: Annotated[int, Meta(ge=0, le=1_000_000, description="Lower is tried first when several pools "
                                                                   "match a Service; ties go by name.")] = 1000


class FamilyUsage(Struct):
    total: int  # saturates at 2^63-1 (an IPv6 /64 is larger)
    used: int
    available: int


class IPPoolStatus(Struct, omit_defaults=True):
    ipv4: FamilyUsage | None = None
    ipv6: FamilyUsage | None = None
    strandedServices: list[str] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)


class IPPool(Struct, omit_defaults=True):
    KIND: ClassVar[str] = "IPPool"
    PLURAL: ClassVar[str] = "ippools"
    SCOPE: ClassVar[str] = "Cluster"
    spec: IPPoolSpec
    status: IPPoolStatus | None = None


# -- IPAllocation -----------------------------------------------------------------------------------
class ServiceRef(Struct):
    namespace: Name
    name: Name
    uid: Name


class IPAllocationSpec(Struct, omit_defaults=True):
    """One address owned by one Service, or by several sharing it under one key. The object's name is
    the address in canonical form, so the API server itself refuses to hand one address out twice."""

    address: Annotated[IPAddress, Meta(extra_json_schema=cel("self == oldSelf", "address is immutable"))]
    pool: Name
    services: Annotated[list[ServiceRef], Meta(min_length=1, max_length=64)]
    sharingKey: Annotated[str, Meta(max_length=253)] = ""


class IPAllocation(Struct, omit_defaults=True):
    KIND: ClassVar[str] = "IPAllocation"
    PLURAL: ClassVar[str] = "ipallocations"
    SCOPE: ClassVar[str] = "Cluster"
    spec: IPAllocationSpec


PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "IPPool": [
        {"name": "Addresses", "type": "string", "jsonPath": ".spec.addresses"},
        {"name": "Auto", "type": "boolean", "jsonPath": ".spec.autoAssign"},
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
        {"name": "IPv4 Used", "type": "integer", "jsonPath": ".status.ipv4.used"},
        {"name": "IPv4 Free", "type": "integer", "jsonPath": ".status.ipv4.available"},
        {"name": "IPv6 Used", "type": "integer", "jsonPath": ".status.ipv6.used"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "IPAllocation": [
        {"name": "Address", "type": "string", "jsonPath": ".spec.address"},
        {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
        {"name": "Service", "type": "string", "jsonPath": ".spec.services[0].name"},
        {"name": "Namespace", "type": "string", "jsonPath": ".spec.services[0].namespace"},
        {"name": "Sharing", "type": "string", "jsonPath": ".spec.sharingKey"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}

KINDS: tuple[type[IPPool] | type[IPAllocation], ...] = (IPPool, IPAllocation)
