"""Entry point of ``python -m bootstrap`` (see bootstrap.cli)."""

from bootstrap.cli import main

raise SystemExit(main())
