"""Use cases that combine the pure domain with the stores; handlers call these."""
