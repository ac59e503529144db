"""The command line: thin typer commands over the public API."""
