"""The local lab: a real Kubernetes control plane and network namespaces on one machine."""
