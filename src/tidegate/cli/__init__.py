"""The ``tidegate`` command line."""

from tidegate.cli.commands import main

__all__ = ["main"]
