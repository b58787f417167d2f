"""``make demo``: upscale the shipped sample and write the result plus a preview.

The sample is a 256x256 crop of the Digitized Sky Survey plate of the Horsehead nebula
(STScI/AURA; UK Schmidt plate (c) AAO/ROE), from the astropy-data repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from astropy.io import fits

from .api import upscale_file
from .preview import save_side_by_side

SAMPLE = "horsehead_dss_256.fits"


def sample_path() -> Path:
    """Path of the shipped demo sample (a linear int16 FITS with a TAN WCS)."""
    return Path(str(resources.files("astrosleuth_astro") / "data" / SAMPLE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m astrosleuth_astro.demo")
    parser.add_argument("--out", default="demo_output", help="output directory")
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = sample_path()
    dst = out_dir / "horsehead_x4.fits"
    png = out_dir / "horsehead_preview.png"
    start = time.perf_counter()
    report = upscale_file(src, dst, model=args.model, scale=4, overwrite=True)
    seconds = time.perf_counter() - start

    lr = fits.getdata(src).astype("float32")
    sr = fits.getdata(dst)
    save_side_by_side(png, lr, sr)
    print(f"input : {src} {lr.shape}")
    print(f"output: {dst} {sr.shape} (model {report.model}, {report.backend}, {seconds:.1f} s)")
    print(f"preview (input | output, same stretch): {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
