"""Portico: a load balancer for Kubernetes clusters that have no cloud load balancer."""
