"""Throughput of each flux-conservation mode, side by side in one run (issue 23).

The same input is upscaled by the same loaded network with ``conserve_flux`` ``off`` (the
raw network, the default before issue 23), ``sources``, ``consistent`` (the default) and
``all``. The modes run interleaved, ``--repeats`` rounds of each, after one warm-up call,
so that a machine's drift affects them alike; the median wall time of each is reported,
with input megapixels per minute and the ratio to ``off``.

Two routes: ``array`` (:func:`astrosleuth_astro.upscale` on a float32 array) and ``file``
(:func:`astrosleuth_astro.upscale_file`, FITS in and out, what the CLI does).

The input is a simulated star field (:func:`astrosleuth_astro.sim.simulate`, seed 23403)
of ``--size`` x ``--size`` input pixels.

Usage::

    python bench/throughput.py [--size 1024] [--scale 4] [--repeats 3] [--route array,file]
        [--model default] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("off", "sources", "consistent", "all")
SEED = 23_403


def _input(size: int) -> np.ndarray:
    from astrosleuth_astro.sim import simulate

    # The simulator's HR truth is not needed: a 1-px "scale" keeps it small.
    return np.ascontiguousarray(simulate((size, size), scale=1, seed=SEED).lr[0], np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="input side, px (default 1024)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--route", default="array,file", help="array, file or both")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", metavar="OUT.json")
    args = parser.parse_args(argv)
    routes = [r.strip() for r in args.route.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for r in routes:
        if r not in ("array", "file"):
            parser.error(f"--route: unknown route {r!r} (array, file)")

    import os

    from astropy.io import fits

    import astrosleuth_astro as asa

    net = asa.get_backend(args.model)
    lr = _input(args.size)
    mp = lr.size / 1e6
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.fits"
        fits.PrimaryHDU(lr).writeto(src)

        def once(route: str, mode: str) -> float:
            start = time.perf_counter()
            if route == "array":
                asa.upscale(lr, model=net, scale=args.scale, conserve_flux=mode)
            else:
                dst = Path(tmp) / f"out_{mode}.fits"
                asa.upscale_file(
                    src, dst, model=net, scale=args.scale, conserve_flux=mode, overwrite=True
                )
            return time.perf_counter() - start

        for route in routes:
            once(route, "off")  # warm-up: threads, allocator, file cache
            times: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(args.repeats):
                for mode in modes:
                    times[mode].append(once(route, mode))
            base = statistics.median(times["off"]) if "off" in times else None
            for mode in modes:
                med = statistics.median(times[mode])
                row = {
                    "route": route,
                    "mode": mode,
                    "seconds_median": round(med, 3),
                    "seconds": [round(t, 3) for t in times[mode]],
                    "input_mp_per_min": round(60.0 * mp / med, 2),
                    "vs_off": round(med / base, 3) if base else None,
                }
                results.append(row)
                print(
                    f"{route:5s} {mode:10s} {med:7.2f} s  {row['input_mp_per_min']:6.2f} input MP/min"
                    + (f"  x{row['vs_off']:.3f} of off" if base else ""),
                    flush=True,
                )
    if args.json:
        doc = {
            "size": args.size,
            "scale": args.scale,
            "repeats": args.repeats,
            "model": args.model,
            "cpu_count": os.cpu_count(),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
