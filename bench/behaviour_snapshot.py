"""Fingerprint what the package writes, to show that a refactor changes no output.

Run it before and after a change and compare the two JSON files::

    python bench/behaviour_snapshot.py -o before.json
    ... change the code ...
    python bench/behaviour_snapshot.py -o after.json --compare before.json

It drives only the public surfaces (the CLI, ``python -m astrosleuth_astro.demo`` and
the Python API), so it runs unchanged across a reorganisation of the package. Each case
records the sha256 of every output's pixels (as written, in the file's byte order) and of
its header cards, leaving out only what legitimately changes between runs (``DATE``, the
version string, and timings in batch manifests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

VOLATILE = {"DATE", "ASTSLVER"}


def fingerprint(path: Path) -> dict:
    """sha256 of the pixels and of the header cards of every HDU of a FITS file."""
    out = {}
    with fits.open(path) as hdul:
        for i, hdu in enumerate(hdul):
            cards = [
                str(c)
                for c in hdu.header.cards
                if c.keyword not in VOLATILE and "astrosleuth-astro " not in str(c.value)
            ]
            data = b"" if hdu.data is None else np.ascontiguousarray(hdu.data).tobytes()
            out[str(i)] = {
                "data": hashlib.sha256(data).hexdigest(),
                "header": hashlib.sha256("\n".join(cards).encode()).hexdigest(),
            }
    return out


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "astrosleuth_astro.cli", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def outputs(directory: Path) -> dict:
    return {p.name: fingerprint(p) for p in sorted(directory.glob("*.fits"))}


def run_cases(work: Path) -> dict:
    result: dict = {}
    inputs = work / "in"
    inputs.mkdir()
    for seed, channels in ((1, "1"), (2, "1"), (3, "3")):
        cli("simulate", "-o", str(inputs / f"field{seed}.fits"), "--size", "96", "96",
            "--channels", channels, "--seed", str(seed))  # fmt: skip

    demo = work / "demo"
    subprocess.run(
        [sys.executable, "-m", "astrosleuth_astro.demo", "--out", str(demo)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result["demo"] = fingerprint(demo / "horsehead_x4.fits")

    files = [str(p) for p in sorted(inputs.glob("*.fits"))]
    variants = {
        "batch": [],
        "batch_jobs2": ["--jobs", "2"],
        "batch_scale2_conserve_all": ["--scale", "2", "--conserve-flux", "all"],
        "batch_protect_sources": ["--protect-stars", "--conserve-flux"],
        "batch_scale3_luminance": ["--scale", "3", "--luminance-only", "--stretch", "asinh"],
    }
    for name, extra in variants.items():
        out = work / name
        out.mkdir()
        cli("upscale", *files, "-o", str(out), "--quiet", *extra)
        result[name] = outputs(out)

    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        out = work / "dask"
        out.mkdir()
        cli("upscale", *files, "-o", str(out), "--quiet", "--scheduler", cluster.scheduler_address)
        result["dask"] = outputs(out)
        out = work / "dask_bands"
        out.mkdir()
        cli("upscale", files[0], "-o", str(out / "banded.fits"), "--quiet", "--bands", "3",
            "--scheduler", cluster.scheduler_address)  # fmt: skip
        result["dask_bands"] = outputs(out)

    # The Python API on an NDData and an HDU.
    from astropy.nddata import CCDData

    import astrosleuth_astro as aa

    with fits.open(files[0]) as hdul:
        hdu = fits.PrimaryHDU(hdul[0].data.astype(np.float32), hdul[0].header)
    ccd = CCDData(hdu.data, unit="adu", meta=hdu.header)
    up = aa.upscale(ccd, scale=2, conserve_flux="sources")
    result["api_ccd"] = hashlib.sha256(np.ascontiguousarray(up.data).tobytes()).hexdigest()
    up = aa.upscale(hdu, protect_stars=True)
    result["api_hdu"] = hashlib.sha256(np.ascontiguousarray(up.data).tobytes()).hexdigest()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="JSON fingerprint to write")
    parser.add_argument("--compare", help="an earlier fingerprint; exit 1 if any case differs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ASTROSLEUTH_SCRATCH", tmp)
        result = run_cases(Path(tmp))
    Path(args.output).write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = sorted(k for k in before.keys() | result.keys() if before.get(k) != result.get(k))
        print("identical" if not differ else f"differ: {', '.join(differ)}")
        return 1 if differ else 0
    print(f"wrote {args.output} ({len(result)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
