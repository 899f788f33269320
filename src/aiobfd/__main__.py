"""``python -m aiobfd``: the daemon's command line."""

from .cli import main

raise SystemExit(main())
