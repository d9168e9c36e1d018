"""The ``tidegate`` command line: ``commands`` (the parser and the ``jobs`` commands), ``client`` (the REST
client, errors and exit codes), ``follow`` (following a job as it runs) and ``run`` (``tidegate run``)."""

from tidegate.cli.commands import main

__all__ = ["main"]
