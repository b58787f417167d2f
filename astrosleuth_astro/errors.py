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


class OptionError(InputError):
    """A bad option value (exit code 2), named by its Python keyword.

    ``str(exc)`` names the keyword (``stretch='log': ...``), which is what a caller of the
    Python API wrote; a front-end that spells the option differently (the CLI's
    ``--stretch``) renders the same problem with :meth:`named`.

    Parameters
    ----------
    keyword : str
        The option's keyword in the Python API (``"scale"``, ``"conserve_flux"``...).
    value : object
        The value given.
    problem : str
        What is wrong with it, without the option's name.
    """

    def __init__(self, keyword: str, value: object, problem: str) -> None:
        self.keyword, self.value, self.problem = keyword, value, problem
        super().__init__(f"{keyword}={value!r}: {problem}")

    def named(self, name: str, sep: str = " ") -> str:
        """The message with the option spelled ``name``: ``--scale 7: ...`` (or, with
        ``sep="="``, ``-scale=7: ...``)."""
        return f"{name}{sep}{self.value}: {self.problem}"
