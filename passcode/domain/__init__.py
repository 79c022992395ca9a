"""Pure domain core: pass format, status rules, masking, QR rendering. Imports no I/O."""
