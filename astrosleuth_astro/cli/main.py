"""The ``astrosleuth-astro`` command line.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback, no partial
output); 1 internal error; 130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from .._version import __version__
from ..errors import AstroSleuthError, OptionError
from .common import PROG, Parser, flag
from .models import add_export, add_models
from .tools import add_bench, add_compare, add_metrics, add_simulate, add_stars, add_train
from .upscale import add_upscale


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="FITS-faithful super-resolution of astronomical images.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_upscale(sub)
    add_models(sub)
    add_export(sub)
    add_simulate(sub)
    add_stars(sub)
    add_metrics(sub)
    add_compare(sub)
    add_bench(sub)
    add_train(sub)
    return parser


def _on_sigterm(signum, frame):
    # Turn SIGTERM into an exception so atomic writers clean up their temp files.
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("ASTROSLEUTH_DEBUG"))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except OptionError as exc:  # named by its Python keyword: say the flag instead
        print(f"{PROG}: error: {exc.named(flag(exc.keyword))}", file=sys.stderr)
        return exc.exit_code
    except AstroSleuthError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error; silence the final flush.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())
