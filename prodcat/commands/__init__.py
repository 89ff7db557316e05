"""Subcommands of the ``prodcat`` CLI, one module each (see ``prodcat.cli``)."""
