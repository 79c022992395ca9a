"""I/O: PostgreSQL (truth) and Redis (hot copy, scan stream). Driver errors stop here."""
