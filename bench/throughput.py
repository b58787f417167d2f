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

``--against REV`` times instead the default options (no ``conserve_flux`` given) of this
checkout against those of an earlier commit (issue 23's target is "at most 25 % slower
than today's default"): the commit is checked out with ``git worktree`` into a temporary
folder, and child processes of the same Python import one or the other, alternately,
``--rounds`` times; each child warms up and times ``--repeats`` calls on the array route.
The medians over all calls are reported, and their ratio.

Usage::

    python bench/throughput.py [--size 1024] [--scale 4] [--repeats 3] [--route array,file]
        [--model default] [--json OUT.json]
    python bench/throughput.py --against 2ae1e88 [--rounds 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
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


_CHILD = """
import json, sys, time
import numpy as np
import astrosleuth_astro as asa
print(asa.__file__, file=sys.stderr)
from astrosleuth_astro.sim import simulate
size, scale, repeats, model, seed = json.loads(sys.argv[1])
lr = np.ascontiguousarray(simulate((size, size), scale=1, seed=seed).lr[0], np.float32)
net = asa.get_backend(model)
asa.upscale(lr, model=net, scale=scale)
times = []
for _ in range(repeats):
    start = time.perf_counter()
    asa.upscale(lr, model=net, scale=scale)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def against(rev: str, args) -> list[dict]:
    """The default options of this checkout and of ``rev``, timed alternately."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(here), "worktree", "add", "--detach", "-f", str(old), rev],
            check=True,
            capture_output=True,
        )
        try:
            times: dict[str, list[float]] = {"this checkout": [], rev: []}
            spec = json.dumps([args.size, args.scale, args.repeats, args.model, SEED])
            for _ in range(args.rounds):
                for label, root in (("this checkout", here), (rev, old)):
                    env = {**os.environ, "PYTHONPATH": str(root)}
                    # cwd outside both trees: ``python -c`` puts the cwd first on sys.path.
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, spec],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=tmp,
                    )
                    times[label] += json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(
                ["git", "-C", str(here), "worktree", "remove", "--force", str(old)],
                capture_output=True,
            )
    base = statistics.median(times[rev])
    rows = []
    for label, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "code": label,
                "seconds_median": round(med, 3),
                "calls": len(ts),
                "vs_baseline": round(med / base, 3),
            }
        )
        print(f"{label:14s} {med:6.3f} s  x{med / base:.3f} of {rev}  ({len(ts)} calls)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="input side, px (default 1024)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--route", default="array,file", help="array, file or both")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", metavar="OUT.json")
    parser.add_argument("--against", metavar="REV", help="time the defaults against a commit")
    parser.add_argument("--rounds", type=int, default=6, help="with --against (default 6)")
    args = parser.parse_args(argv)
    if args.against:
        rows = against(args.against, args)
        if args.json:
            doc = {"size": args.size, "scale": args.scale, "against": args.against, "rows": rows}
            Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        return 0
    routes = [r.strip() for r in args.route.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for r in routes:
        if r not in ("array", "file"):
            parser.error(f"--route: unknown route {r!r} (array, file)")

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
