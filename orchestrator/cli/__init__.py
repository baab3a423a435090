"""The ``orchestrator`` command line (typer + rich)."""
