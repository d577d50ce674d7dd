"""Portico's API: the CRD types (the one place they are declared) and their generated schemas."""
