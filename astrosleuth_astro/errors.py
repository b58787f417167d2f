"""Exceptions that carry the CLI exit code.

Every error meant for a user derives from :class:`AstroSleuthError`. The CLI prints
``str(exc)`` as one line and exits with ``exc.exit_code``; anything else is an internal
error (exit code 1).
"""

from __future__ import annotations


class AstroSleuthError(Exception):
    """Base class for errors reported to the user without a traceback."""

    exit_code = 1


class InputError(AstroSleuthError, ValueError):
    """Bad input data, file, option or usage (exit code 2).

    The message must name the file (or option) and the problem in one line.
    """

    exit_code = 2


class ModelError(InputError):
    """A model file or name that cannot be loaded (exit code 2)."""
