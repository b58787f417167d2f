"""Crops of held-out cases as PNG pictures: input, bicubic, the model (issue 26 item 4).

For each case a ``crop`` x ``crop`` input-pixel window is upscaled 4x through the public
pipeline with default options and by bicubic (linear, unclipped), and the three panels
(input shown with nearest-neighbour pixels, bicubic, model) are written side by side as
one 8-bit grey PNG, all three through the **same** stretch: an ``mtf`` stretch fitted on
the input window (:func:`astrosleuth_astro.stretch.fit_stretch`), so the sky's texture and
the stars' profiles compare directly.

Cases: ``crowded`` (``bench/generalisation.py``'s ``sim2_undersampled``, photutils-made,
3500 stars per 512^2), ``raw_frame`` (``bench/fidelity.py``'s raw uint16-like frame with a
1000 ADU pedestal and defects), ``nebula`` (the Horsehead plate's held-out columns, which
no model was trained on: ``HorseHead.fits`` columns 668-891, from ``--data``).

Usage::

    python bench/crops.py [--model default] [--data ../shared/data] [--out docs/img/crops]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parent / "generalisation.py"
if "bench_generalisation" in sys.modules:
    gen = sys.modules["bench_generalisation"]
else:  # it loads bench/fidelity.py as gen.fd
    _spec = importlib.util.spec_from_file_location("bench_generalisation", _PATH)
    gen = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = gen
    _spec.loader.exec_module(gen)


#: Input-pixel window of each case: (row, column) of its top-left corner, side.
WINDOWS = {"crowded": (200, 200, 64), "raw_frame": (96, 96, 64), "nebula": (380, 700, 64)}
#: Gap between panels, output pixels.
GAP = 4


def case_input(name: str, data_dir: Path) -> np.ndarray | None:
    """The whole linear input of a case (None when its data file is missing)."""
    if name == "crowded":
        return np.asarray(gen.sim2("sim2_undersampled", 4).lr, dtype=np.float64)
    if name == "raw_frame":
        return np.asarray(gen.fd.raw_frame().lr, dtype=np.float64)
    from astropy.io import fits

    path = Path(data_dir) / "HorseHead.fits"
    if not path.is_file():
        return None
    data = np.asarray(fits.getdata(path), dtype=np.float64)
    return data.reshape(data.shape[-2:])


def panels(lr: np.ndarray, net, scale: int = 4) -> np.ndarray:
    """Input (nearest), bicubic and model, stretched alike, side by side, uint8."""
    import astrosleuth_astro as asa
    from astrosleuth_astro.metrics.image import bicubic
    from astrosleuth_astro.stretch import fit_stretch

    st = fit_stretch(lr, "mtf")
    near = np.kron(lr, np.ones((scale, scale)))
    bic = bicubic(lr, scale, clip=False)
    ours = np.asarray(asa.upscale(lr, model=net, scale=scale), dtype=np.float64)
    imgs = [np.clip(st.forward(x[None])[0], 0.0, 1.0) for x in (near, bic, ours)]
    h, w = imgs[0].shape
    out = np.ones((h, 3 * w + 2 * GAP))
    for i, img in enumerate(imgs):
        out[:, i * (w + GAP) : i * (w + GAP) + w] = img
    return np.round(out * 255.0).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="docs/img/crops")
    args = ap.parse_args(argv)
    from PIL import Image

    import astrosleuth_astro as asa

    net = asa.get_backend(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (y, x, n) in WINDOWS.items():
        full = case_input(name, Path(args.data))
        if full is None:
            print(
                f"{name}: skipped, {Path(args.data) / 'HorseHead.fits'} not found", file=sys.stderr
            )
            continue
        lr = np.ascontiguousarray(full[y : y + n, x : x + n])
        path = out / f"{name}.png"
        Image.fromarray(panels(lr, net)).save(path)
        print(f"{path}: input, bicubic, {args.model} (rows {y}-{y + n}, columns {x}-{x + n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
