"""``python -m passcode`` runs the command line."""

from passcode.cli import main

raise SystemExit(main())
