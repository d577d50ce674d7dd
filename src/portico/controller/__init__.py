"""The Portico controller: external addresses for Services of type LoadBalancer."""
