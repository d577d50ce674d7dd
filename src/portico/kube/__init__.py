"""Kubernetes API edge: client construction, informers, events."""
