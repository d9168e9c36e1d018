"""``python -m tidegate.cli``: the command line."""

from tidegate.cli.commands import main

main()
