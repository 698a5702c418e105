"""bottle_cli: the ``bottle`` command, a thin typer CLI over the ``bottle`` library."""
