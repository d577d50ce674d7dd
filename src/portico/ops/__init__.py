"""What an operator sees: every VIP, node and pool as a table (`portico status`), and a walk along one Service's or
Gateway's path to the first broken step (`portico explain`). Built from what the cluster's objects already say —
conditions, PorticoNode reports, EndpointSlices, Events — read once into a Snapshot (the edge) and turned into rows
and steps by plain functions (pure), which the dashboard shows as well."""
