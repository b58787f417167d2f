"""``astrosleuth-astro bench``: the command's arguments, checked, to :func:`.run.run_bench`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from .inputs import BARE_SIZE, PSNR_SIZE
from .run import run_bench


def _parse_models(spec: str, default_mp: float) -> list[tuple[str, float]]:
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, mp = item.partition("@")
        try:
            size = float(mp) if mp else default_mp
        except ValueError:
            raise InputError(f"--models: bad size in {item!r} (use NAME@MP)") from None
        if not size > 0:
            raise InputError(f"--models: size must be positive in {item!r}")
        out.append((name, size))
    if not out:
        raise InputError("--models: no model given")
    return out


def run_from_args(args) -> int:
    """``astrosleuth-astro bench`` (see :func:`run_bench`)."""
    default_mp = 0.02 if args.quick else args.size
    models = _parse_models(args.models, default_mp)
    if args.quick:
        models = [(name, min(mp, 0.02)) for name, mp in models]
    try:
        rss = None if args.no_rss else [float(s) for s in args.rss_sizes.split(",") if s]
    except ValueError:
        raise InputError(f"--rss-sizes: expected numbers, got {args.rss_sizes!r}") from None
    if rss is not None and args.quick:
        rss = [0.01, 0.02]
    if args.repeats < 1:
        raise InputError(f"--repeats: must be at least 1, got {args.repeats}")
    for p in args.inputs or []:
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file")
    result = run_bench(
        args.out,
        models,
        inputs=args.inputs or None,
        rss_sizes=rss,
        repeats=1 if args.quick else args.repeats,
        bare_size=96 if args.quick else BARE_SIZE,
        psnr_size=48 if args.quick else PSNR_SIZE,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print((Path(args.out) / "bench.md").read_text(), end="")
    return 0 if result else 1
