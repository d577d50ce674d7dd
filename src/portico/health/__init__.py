"""Active health monitors: pure state machines and check semantics, probers at the edge."""
