"""``python -m astrosleuth_astro.train CONFIG [options]``: the same as
``astrosleuth-astro train`` (see :mod:`.command`)."""

from __future__ import annotations

import argparse
import sys

from ..errors import AstroSleuthError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, export; return the exit code."""
    from .command import add_arguments, run

    ap = argparse.ArgumentParser(
        prog="python -m astrosleuth_astro.train",
        description="Train an astrosleuth-astro model from a TOML config.",
    )
    add_arguments(ap)
    # Older spelling of --out.
    ap.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except AstroSleuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
