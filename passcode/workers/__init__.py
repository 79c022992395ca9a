"""Background tasks that run inside the service: scan-log drain, status sync, key reload."""
