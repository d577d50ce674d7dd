"""The ports Portico's components listen on, in one light module: the CLI reads the defaults from here without
importing the agent (which costs most of a second)."""

METRICS_PORT = 9470  # the agent's /metrics, /healthz and /readyz, on every node (hostNetwork)
HEARTBEAT_PORT = 9471  # the agents' authenticated UDP heartbeats, on each node's InternalIP
