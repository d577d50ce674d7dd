"""portico.io/v1alpha1 types. `portico.api.crds` turns them into the CRDs in charts/portico/crds/.

Validation that the API server can do is declared here (OpenAPI bounds and CEL rules), so bad
objects are refused at `kubectl apply` time with a message naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

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
        extra_json_schema=cel("self.all(r, (r.operator in ['In', 'NotIn']) == (has(r.values) && size(r.values) > 0))",
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


# -- Announcement: L2Advertisement, BGPPeer, BGPAdvertisement ---------------------------------------
InterfaceName = Annotated[str, Meta(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.:@-]+$",
                                    description="A network interface name on the node (Linux: at most 15 "
                                                "characters).")]
ASN = Annotated[int, Meta(ge=1, le=4_294_967_294, description="An autonomous system number (2 or 4 bytes).")]
COMMUNITY_RULE = ("self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535) || "
                  "self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') "
                  "&& self.split(':').all(p, int(p) <= 4294967295) || "
                  "self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole']")
Community = Annotated[str, Meta(max_length=32, description="A BGP community: standard (65000:100), large "
                                                           "(65000:1:2) or well-known (no-export, ...).",
                                extra_json_schema=cel(COMMUNITY_RULE, "must be a community such as 65000:100, "
                                                                      "a large community such as 65000:1:2, or "
                                                                      "no-export, no-advertise, no-peer, ..."))]
PoolNames = Annotated[list[Name], Meta(max_length=64, description="Pools by name; empty: every pool.")]


class L2AdvertisementSpec(Struct, omit_defaults=True):
    """Answer ARP (IPv4) and neighbour solicitations (IPv6) for these pools' addresses from one healthy node."""

    ipPools: PoolNames = field(default_factory=list)
    nodeSelector: LabelSelector | None = None  # nodes that may announce; none: every node
    interfaces: Annotated[list[InterfaceName], Meta(
        max_length=16, description="Where to answer; empty: the interface holding the node's InternalIP.")] = (
        field(default_factory=list))


class AnnouncementStatus(Struct, omit_defaults=True):
    conditions: list[Condition] = field(default_factory=list)  # NodesSelected: does the nodeSelector match a node


# A list map keyed by node: each agent server-side-applies only its own entry, no node overwrites another's.
PER_NODE = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["node"]}


class NodeProblem(Struct, omit_defaults=True):
    """What keeps one node from answering where the advertisement says (e.g. a missing interface)."""

    node: Name
    message: str


class L2AdvertisementStatus(Struct, omit_defaults=True):
    conditions: list[Condition] = field(default_factory=list)  # NodesSelected
    problems: Annotated[list[NodeProblem], Meta(extra_json_schema=PER_NODE)] = field(default_factory=list)


class L2Advertisement(Struct, omit_defaults=True):
    KIND: ClassVar[str] = "L2Advertisement"
    PLURAL: ClassVar[str] = "l2advertisements"
    SCOPE: ClassVar[str] = "Cluster"
    spec: L2AdvertisementSpec
    status: L2AdvertisementStatus | None = None


class SecretKeyRef(Struct, omit_defaults=True):
    name: Name
    namespace: Name = "portico-system"
    key: Name = "password"


class BFDSpec(Struct, omit_defaults=True):
    """Bidirectional Forwarding Detection with the peer: it drops this node's routes after
    intervalMs x multiplier of silence (a dead link or node), not after a BGP hold time."""

    intervalMs: Annotated[int, Meta(ge=10, le=60_000, description="Desired transmit and required receive "
                                                                  "interval, milliseconds.")] = 100
    multiplier: Annotated[int, Meta(ge=2, le=255, description="Packets missed before the session is down.")] = 3


class BGPPeerSpec(Struct, omit_defaults=True):
    """A BGP router the selected nodes peer with (a session from each node)."""

    peerAddress: IPAddress
    peerASN: ASN
    myASN: ASN
    peerPort: Annotated[int, Meta(ge=1, le=65535)] = 179
    holdTime: Annotated[int, Meta(ge=0, le=65535, description="Seconds; 0 disables keepalives, else >= 3.",
                                  extra_json_schema=cel("self == 0 || self >= 3",
                                                        "must be 0 or at least 3 seconds"))] = 90
    keepaliveTime: Annotated[int, Meta(ge=0, le=21845, description="Seconds; at most a third of holdTime.")] = 30
    passwordSecret: SecretKeyRef | None = None  # TCP MD5 password (RFC 2385)
    nodeSelector: LabelSelector | None = None  # nodes that peer; none: every node
    ebgpMultiHop: bool = False
    bfd: BFDSpec | None = None  # none: no BFD (failure detected by the hold time)


class PeerSession(Struct, omit_defaults=True):
    """One node's session with the peer, written by that node's agent."""

    node: Name
    state: str  # Idle, Connect, Active, OpenSent, OpenConfirm, Established; NotConfigured: see message
    message: str = ""


class BGPPeerStatus(Struct, omit_defaults=True):
    sessions: Annotated[list[PeerSession], Meta(extra_json_schema=PER_NODE)] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)  # NodesSelected


class BGPPeer(Struct, omit_defaults=True):
    KIND: ClassVar[str] = "BGPPeer"
    PLURAL: ClassVar[str] = "bgppeers"
    SCOPE: ClassVar[str] = "Cluster"
    spec: Annotated[BGPPeerSpec, Meta(extra_json_schema=cel(
        "self.holdTime == 0 || self.keepaliveTime * 3 <= self.holdTime",
        "keepaliveTime must be at most a third of holdTime", fieldPath=".keepaliveTime"))]
    status: BGPPeerStatus | None = None


class BGPAdvertisementSpec(Struct, omit_defaults=True):
    """Advertise these pools' addresses to BGP peers, with these path attributes."""

    ipPools: PoolNames = field(default_factory=list)
    peers: Annotated[list[Name], Meta(max_length=64, description="BGPPeers by name; empty: every peer.")] = (
        field(default_factory=list))
    nodeSelector: LabelSelector | None = None  # nodes that advertise; none: every node
    communities: Annotated[list[Community], Meta(max_length=32)] = field(default_factory=list)
    localPref: Annotated[int, Meta(ge=0, le=4_294_967_295, description="LOCAL_PREF (iBGP peers only).")] | None = (
        None)
    aggregationLength: Annotated[int, Meta(ge=0, le=32, description="Advertise IPv4 addresses as prefixes of "
                                                                    "this length (32: each address).")] = 32
    aggregationLengthV6: Annotated[int, Meta(ge=0, le=128)] = 128


class BGPAdvertisement(Struct, omit_defaults=True):
    KIND: ClassVar[str] = "BGPAdvertisement"
    PLURAL: ClassVar[str] = "bgpadvertisements"
    SCOPE: ClassVar[str] = "Cluster"
    spec: BGPAdvertisementSpec
    status: AnnouncementStatus | None = None


def _list_map(key: str) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class HeartbeatEndpoint(Struct):
    """Where this node's agent takes heartbeats from its peers."""

    address: IPAddress
    port: Annotated[int, Meta(ge=1, le=65535)]


class ServiceProblem(Struct, omit_defaults=True):
    service: Name  # namespace/name
    message: str


class ServiceHealth(Struct, omit_defaults=True):
    """How this node's own endpoints of one Service fare under its health monitor."""

    service: Name  # namespace/name
    healthy: int
    total: int


class SessionReport(Struct, omit_defaults=True):
    peer: Name  # the BGPPeer
    state: str
    message: str = ""


class AdvertisementProblem(Struct, omit_defaults=True):
    advertisement: Name  # the L2Advertisement
    message: str


# Written by agents only, and possibly thousands long: no per-item CEL (it would exceed the API server's cost budget).
Addresses = Annotated[list[Annotated[str, Meta(max_length=45)]], Meta(extra_json_schema={"x-kubernetes-list-type":
                                                                                        "set"})]


class PorticoNodeStatus(Struct, omit_defaults=True):
    """What one node's agent does and sees, written by that agent alone (the controller makes users' status of it)."""

    heartbeat: HeartbeatEndpoint | None = None  # set once the agent runs: it is a peer from then on
    layer2: Addresses = field(default_factory=list)  # VIPs this node answers ARP/NDP for
    bgp: Addresses = field(default_factory=list)  # VIPs this node advertises over BGP
    unreachable: Annotated[list[Name], Meta(extra_json_schema={"x-kubernetes-list-type": "set"})] = field(
        default_factory=list)  # peers whose heartbeats this node does not hear
    forwardingProblems: Annotated[list[ServiceProblem], Meta(extra_json_schema=_list_map("service"))] = field(
        default_factory=list)
    bgpSessions: Annotated[list[SessionReport], Meta(extra_json_schema=_list_map("peer"))] = field(
        default_factory=list)
    l2Problems: Annotated[list[AdvertisementProblem], Meta(extra_json_schema=_list_map("advertisement"))] = field(
        default_factory=list)
    health: Annotated[list[ServiceHealth], Meta(extra_json_schema=_list_map("service"))] = field(
        default_factory=list)


# On a PorticoNode: `portico uninstall` asks that node's agent to withdraw and remove what it made.
RETIRE_ANNOTATION = "portico.io/retire"


class PorticoNode(Struct, omit_defaults=True):
    """One per node running an agent, named after the node (and deleted with it)."""

    KIND: ClassVar[str] = "PorticoNode"
    PLURAL: ClassVar[str] = "porticonodes"
    SCOPE: ClassVar[str] = "Cluster"
    status: PorticoNodeStatus | None = None


# -- TrafficPolicy -------------------------------------------------------------------------------------
# Durations are Gateway API Durations (GEP-2257); CEL's duration() reads the same strings, so the schema
# can compare them.
Duration = Annotated[str, Meta(max_length=20, pattern=r"^([0-9]{1,5}(h|m|s|ms)){1,4}$",
                               description="A duration such as 1s, 500ms or 1m30s (Gateway API Duration).")]
StatusRange = Annotated[str, Meta(max_length=7, pattern=r"^[1-5][0-9]{2}(-[1-5][0-9]{2})?$",
                                  description="An HTTP status code (200) or an inclusive range (200-399).")]
TRAFFIC_POLICY_CONTROLLER = "portico.io/traffic-policy-controller"


class PolicyTargetRef(Struct, omit_defaults=True):
    """Gateway API LocalPolicyTargetReference: an object in the policy's own namespace."""

    kind: Literal["Service"]
    name: Name
    group: Literal[""] = ""  # the core API group


class EndpointWeight(Struct, omit_defaults=True):
    """Endpoints matched by pod-name prefix, node or zone take `weight` slots (0: no new flows, a drain)."""

    kind: Literal["Pod", "Node", "Zone"]
    name: Annotated[str, Meta(min_length=1, max_length=253)]
    weight: Annotated[int, Meta(ge=0, le=100)]


class LoadBalancing(Struct, omit_defaults=True):
    algorithm: Annotated[Literal["random", "round-robin", "maglev", "least-connections"], Meta(description=(
        "How a new flow picks its backend: random; round-robin (per node); maglev, a consistent hash that sends "
        "a client to the same backend from every node and moves few clients when backends change; "
        "least-connections (HTTP backends of Gateways and Ingresses only: HAProxy counts connections, the "
        "kernel does not, so at layer 4 it is random)."))] = "random"
    hashKey: Annotated[Literal["ClientAddress", "FiveTuple"], Meta(description=(
        "What maglev hashes: the client address (a client keeps its backend) or the whole flow."))] = "ClientAddress"
    weights: Annotated[list[EndpointWeight], Meta(max_length=64, description=(
        "Most specific match wins: a pod-name prefix (the longest), then node, then zone, else defaultWeight."))] = (
        field(default_factory=list))
    defaultWeight: Annotated[int, Meta(ge=0, le=100)] = 1


class CookieConfig(Struct, omit_defaults=True):
    """Gateway API SessionPersistence's cookieConfig."""

    lifetimeType: Annotated[Literal["Session", "Permanent"], Meta(description=(
        "Session: the cookie lasts as long as the browser session; Permanent: it carries Max-Age = "
        "absoluteTimeout (which it then needs)."))] = "Session"


class Persistence(Struct, omit_defaults=True):
    """ClientAddress: in the kernel (and in HAProxy for HTTP backends), a client's new flows follow its first one for
    `timeout`; a prefix length below the address length makes a whole network of clients one client (a
    persistence mask). Cookie (HTTP backends only; the Gateway API SessionPersistence shape): HAProxy sets a cookie
    naming the backend, and a request carrying it goes there while that backend is in rotation."""

    type: Literal["ClientAddress", "Cookie"] = "ClientAddress"
    timeout: Duration = "3h"
    ipv4PrefixLength: Annotated[int, Meta(ge=1, le=32)] = 32
    ipv6PrefixLength: Annotated[int, Meta(ge=1, le=128)] = 128
    sessionName: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[!#-'*+.0-9A-Z^-z|~-]+$",
                                     description="The cookie's name (an RFC 6265 token); default "
                                                 "PORTICO_SESSION.")] | None = None
    absoluteTimeout: Annotated[Duration, Meta(description="How long after it was set a cookie stops pinning.")] | \
        None = None
    idleTimeout: Annotated[Duration, Meta(description="How long without a request a cookie stops pinning.")] | \
        None = None
    cookieConfig: CookieConfig | None = None


class HTTPHealthCheck(Struct, omit_defaults=True):
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    path: Annotated[str, Meta(max_length=1024, pattern=r"^/[\x21-\x7e]*$")] = "/"
    host: Annotated[str, Meta(max_length=253, description="The Host header (and TLS server name); empty: the "
                                                          "endpoint's address.")] = ""
    expectedStatuses: Annotated[list[StatusRange], Meta(min_length=1, max_length=16)] = field(
        default_factory=lambda: ["200-399"])
    bodyContains: Annotated[str, Meta(max_length=1024, description="Healthy only if the first 64 KiB of the "
                                                                   "body contain this text.")] = ""


class UDPHealthCheck(Struct, omit_defaults=True):
    send: Annotated[str, Meta(min_length=1, max_length=512, description="The datagram's payload.")]
    expect: Annotated[str, Meta(max_length=512, description="Healthy only if the reply contains this; empty: "
                                                            "any reply. No reply or an ICMP error is down.")] = ""


CheckType = Literal["TCP", "HTTP", "HTTPS", "UDP", "ICMP"]
CHECK_TYPES: tuple[str, ...] = get_args(CheckType)


class HealthCheck(Struct, omit_defaults=True):
    """An active monitor: every `interval` each agent probes the endpoints on its own node; `unhealthyThreshold`
    failures in a row take one out of rotation on every node, `healthyThreshold` successes bring it back."""

    type: CheckType
    port: Annotated[int, Meta(ge=1, le=65535, description="Default: the endpoint's target port.")] | None = None
    interval: Annotated[Duration, Meta(extra_json_schema=cel(
        "duration(self) >= duration('100ms') && duration(self) <= duration('5m')",
        "must be between 100ms and 5m"))] = "1s"
    timeout: Duration = "500ms"
    healthyThreshold: Annotated[int, Meta(ge=1, le=20)] = 2
    unhealthyThreshold: Annotated[int, Meta(ge=1, le=20)] = 3
    http: HTTPHealthCheck | None = None  # type HTTP or HTTPS
    udp: UDPHealthCheck | None = None  # type UDP
    whenNoneHealthy: Annotated[Literal["Reject", "Withdraw"], Meta(description=(
        "Reject: new flows are refused at once (TCP reset, ICMP unreachable). Withdraw: no node announces the "
        "VIP, so BGP routers send clients elsewhere."))] = "Reject"


def _when_checked(rule: str, message: str, field_path: str) -> dict[str, str]:
    return {"rule": f"!has(self.healthCheck) || ({rule})", "message": message,
            "fieldPath": f".healthCheck{field_path}"}


# On the spec (the API server drops validations on an optional object's own schema here): guarded by has().
TRAFFIC_POLICY_RULES = [
    {"rule": "!has(self.loadBalancing) || self.loadBalancing.hashKey == 'ClientAddress' || "
             "self.loadBalancing.algorithm == 'maglev'", "message": "hashKey applies to algorithm maglev only",
     "fieldPath": ".loadBalancing.hashKey"},
    {"rule": "!has(self.persistence) || self.persistence.type == 'Cookie' || (!has(self.persistence.sessionName) && "
             "!has(self.persistence.absoluteTimeout) && !has(self.persistence.idleTimeout) && "
             "!has(self.persistence.cookieConfig))",
     "message": "sessionName, absoluteTimeout, idleTimeout and cookieConfig apply to type Cookie only",
     "fieldPath": ".persistence.type"},
    {"rule": "!has(self.persistence) || !has(self.persistence.cookieConfig) || "
             "self.persistence.cookieConfig.lifetimeType != 'Permanent' || has(self.persistence.absoluteTimeout)",
     "message": "lifetimeType Permanent needs absoluteTimeout (the cookie's Max-Age)",
     "fieldPath": ".persistence.cookieConfig.lifetimeType"},
    _when_checked("duration(self.healthCheck.timeout) <= duration(self.healthCheck.interval)",
                  "must not be longer than interval", ".timeout"),
    _when_checked("!has(self.healthCheck.http) || self.healthCheck.type in ['HTTP', 'HTTPS']",
                  "applies to type HTTP or HTTPS only", ".http"),
    _when_checked("self.healthCheck.type != 'UDP' || has(self.healthCheck.udp)",
                  "type UDP needs udp.send, the payload to send", ".udp"),
    _when_checked("!has(self.healthCheck.udp) || self.healthCheck.type == 'UDP'", "applies to type UDP only",
                  ".udp"),
]


class ConnectionRate(Struct, omit_defaults=True):
    perSecond: Annotated[int, Meta(ge=1, le=1_000_000)]
    burst: Annotated[int, Meta(ge=0, le=1_000_000, description="New connections allowed above the rate at once.")] = 0


class RequestRate(Struct, omit_defaults=True):
    perSecond: Annotated[int, Meta(ge=1, le=1_000_000)]
    burst: Annotated[int, Meta(ge=0, le=1_000_000, description="Requests allowed above the rate at once.")] = 0


Bandwidth = Annotated[str, Meta(max_length=12, pattern=r"^[1-9][0-9]{0,8}(k|M|G)?$", description=(
    "Bits per second, with an optional SI suffix (10M = 10,000,000 bit/s), as kubernetes.io/egress-bandwidth."))]


class Limits(Struct, omit_defaults=True):
    """Enforced in the kernel on each node, and counted (portico_limit_drops_total)."""

    maxConnections: Annotated[int, Meta(ge=1, le=100_000_000, description="Concurrent connections per "
                                                                          "frontend (VIP and port).")] | None = None
    maxConnectionsPerClient: Annotated[int, Meta(ge=1, le=1_000_000, description="Concurrent connections per "
                                                                                 "client address.")] | None = None
    connectionRatePerClient: ConnectionRate | None = None
    requestRatePerClient: Annotated[RequestRate, Meta(description=(
        "HTTP backends of Gateways and Ingresses only: requests per second per client address, counted by HAProxy "
        "over a sliding second (refused ones too); those over perSecond + burst are answered 429."))] | None = None
    bandwidth: Annotated[Bandwidth, Meta(description="Per frontend and direction.")] | None = None


class TrafficPolicySpec(Struct, omit_defaults=True):
    targetRefs: Annotated[list[PolicyTargetRef], Meta(min_length=1, max_length=16, extra_json_schema=cel(
        "self.all(t, self.exists_one(u, u.kind == t.kind && u.name == t.name))", "must not name a target twice"))]
    loadBalancing: LoadBalancing | None = None
    persistence: Persistence | None = None
    healthCheck: HealthCheck | None = None
    limits: Limits | None = None


class ParentRef(Struct, omit_defaults=True):
    """Gateway API ParentReference, as policy status uses it."""

    kind: str
    name: Name
    namespace: Name
    group: str = ""


class PolicyAncestorStatus(Struct, omit_defaults=True):
    """Gateway API PolicyAncestorStatus: the policy's standing at one target."""

    ancestorRef: ParentRef
    controllerName: str
    conditions: list[Condition] = field(default_factory=list)  # Accepted (reason Accepted, Conflicted, TargetNotFound)


class TrafficPolicyStatus(Struct, omit_defaults=True):
    # The targets' names again, for `kubectl get` (a printer column shows only the first match of targetRefs[*]).
    targets: Annotated[list[Name], Meta(max_length=16)] = field(default_factory=list)
    ancestors: Annotated[list[PolicyAncestorStatus], Meta(max_length=16)] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)  # Accepted: True when every target accepted it
    healthy: int | None = None  # backends the monitors find healthy, over every accepted target
    total: int | None = None  # ready backends


class TrafficPolicy(Struct, omit_defaults=True):
    """How Portico balances, pins, checks and limits traffic to the Services it targets."""

    KIND: ClassVar[str] = "TrafficPolicy"
    PLURAL: ClassVar[str] = "trafficpolicies"
    SCOPE: ClassVar[str] = "Namespaced"
    spec: Annotated[TrafficPolicySpec, Meta(extra_json_schema={"x-kubernetes-validations": TRAFFIC_POLICY_RULES})]
    status: TrafficPolicyStatus | None = None


def _columns(*columns: tuple[str, str, str]) -> list[dict[str, str]]:
    """kubectl's columns for a kind, (name, type, JSONPath) each; every kind ends with its age."""
    return [{"name": n, "type": t, "jsonPath": p} for n, t, p in (*columns, AGE_COLUMN)]


READY_COLUMN = ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status')
AGE_COLUMN = ("Age", "date", ".metadata.creationTimestamp")
NODES_COLUMN = ("Nodes", "string", '.status.conditions[?(@.type=="NodesSelected")].message')
PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "IPPool": _columns(
        ("Addresses", "string", ".spec.addresses"),
        ("Auto", "boolean", ".spec.autoAssign"),
        ("Priority", "integer", ".spec.priority"),
        ("IPv4 Used", "integer", ".status.ipv4.used"),
        ("IPv4 Free", "integer", ".status.ipv4.available"),
        ("IPv6 Used", "integer", ".status.ipv6.used"),
        READY_COLUMN,
    ),
    "IPAllocation": _columns(
        ("Address", "string", ".spec.address"),
        ("Pool", "string", ".spec.pool"),
        ("Service", "string", ".spec.services[0].name"),
        ("Namespace", "string", ".spec.services[0].namespace"),
        ("Sharing", "string", ".spec.sharingKey"),
    ),
    "L2Advertisement": _columns(
        ("Pools", "string", ".spec.ipPools"),
        ("Interfaces", "string", ".spec.interfaces"),
        NODES_COLUMN,
        ("Problems", "string", ".status.problems[*].message"),
    ),
    "BGPPeer": _columns(
        ("Address", "string", ".spec.peerAddress"),
        ("Peer ASN", "integer", ".spec.peerASN"),
        ("My ASN", "integer", ".spec.myASN"),
        ("Hold", "integer", ".spec.holdTime"),
        NODES_COLUMN,
    ),
    "BGPAdvertisement": _columns(
        ("Pools", "string", ".spec.ipPools"),
        ("Peers", "string", ".spec.peers"),
        ("Communities", "string", ".spec.communities"),
        ("Local Pref", "integer", ".spec.localPref"),
        NODES_COLUMN,
    ),
    "PorticoNode": _columns(
        ("Heartbeat", "string", ".status.heartbeat.address"),
        ("L2", "string", ".status.layer2"),
        ("BGP", "string", ".status.bgp"),
        ("Unreachable", "string", ".status.unreachable"),
        ("Problems", "string", ".status.forwardingProblems[*].message"),
    ),
    "TrafficPolicy": _columns(
        ("Targets", "string", ".status.targets"),
        ("Accepted", "string", '.status.conditions[?(@.type=="Accepted")].status'),
        ("Healthy", "integer", ".status.healthy"),
        ("Backends", "integer", ".status.total"),
    ),
}

Kind = (type[IPPool] | type[IPAllocation] | type[L2Advertisement] | type[BGPPeer] | type[BGPAdvertisement]
        | type[PorticoNode] | type[TrafficPolicy])
KINDS: tuple[Kind, ...] = (IPPool, IPAllocation, L2Advertisement, BGPPeer, BGPAdvertisement, PorticoNode,
                           TrafficPolicy)
