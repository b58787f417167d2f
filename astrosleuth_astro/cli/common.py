"""What the subcommands share: the program name, the one-line-error parser, common flags."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

PROG = "astrosleuth-astro"


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_conserve_flux(p: argparse.ArgumentParser, help_text: str, default: str = "off") -> None:
    """``--conserve-flux [MODE]``: a bare flag means ``sources``; checked by ``resolve_mode``
    (one clear line, exit 2) rather than by argparse ``choices``."""
    p.add_argument(
        "--conserve-flux",
        nargs="?",
        const="sources",
        default=default,
        metavar="MODE",
        help=help_text,
    )


@contextmanager
def progress_bar(name: str, quiet: bool):
    """A tqdm bar on stderr: ``(progress, stage)`` callbacks for the pipeline.

    ``progress(done, total)`` moves the bar over the tiles; ``stage(name)`` shows the
    stage in the bar's label, so the star stages of ``--protect-stars`` (which can take
    longer than the network) do not look like a stall.
    """
    if quiet:
        yield None, None
        return
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="tile", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    def stage(label: str) -> None:
        bar.set_description_str(f"{name}: {label}")

    try:
        yield progress, stage
    finally:
        bar.close()


#: Flags whose name is not the API keyword with dashes (``protect_strength`` ->
#: ``--protect-strength``).
_FLAGS = {"color_matching": "--chroma-matching"}


def flag(keyword: str) -> str:
    """The CLI flag of an API keyword."""
    return _FLAGS.get(keyword, "--" + keyword.replace("_", "-"))
