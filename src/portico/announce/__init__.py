"""Making VIPs reachable: which node announces each address (ranking over heartbeating peers), and how
(ARP/NDP answers in layer 2; BGP later)."""
