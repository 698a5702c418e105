"""``python -m bottle_cli``: the ``bottle`` command, by the same quick entry point."""

from bottle_cli.quick import main

raise SystemExit(main())
