"""Allows `python -m edgeproxy`."""

from edgeproxy.cli import main

raise SystemExit(main())
