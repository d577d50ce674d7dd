"""Address management for LoadBalancer Services: pure functions and plain data, no I/O."""
