"""TrafficPolicy: which policy governs which Service, and what its fields mean (pure)."""
