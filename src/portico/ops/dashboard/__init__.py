"""`portico dashboard`: a read-only web page of every VIP, pool and node, live, with the user's own kubeconfig."""
