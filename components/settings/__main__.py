"""``venv/bin/python -m components.settings``: rewrite the files derived from the declarations."""

from components.settings.reference import main

raise SystemExit(main())
