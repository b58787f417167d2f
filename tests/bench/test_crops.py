"""bench/crops.py: the three panels are the same window, stretched alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "crops.py"
_SPEC = importlib.util.spec_from_file_location("bench_crops", _PATH)
crops = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = crops
_SPEC.loader.exec_module(crops)


def test_panels_are_input_bicubic_and_model_side_by_side(tiny_fast_model):
    import astrosleuth_astro as asa
    from astrosleuth_astro.sim import simulate

    lr = simulate((24, 20), scale=1, seed=3, hot_pixels=0.0, wcs=False).lr[0].astype(np.float64)
    img = crops.panels(lr, asa.get_backend(tiny_fast_model))
    assert img.dtype == np.uint8 and img.shape == (96, 3 * 80 + 2 * crops.GAP)
    w = 80 + crops.GAP
    near, bic, ours = img[:, :80], img[:, w : w + 80], img[:, 2 * w :]
    # The first panel is the input itself, each pixel a 4x4 block.
    assert np.array_equal(near[::4, ::4].repeat(4, 0).repeat(4, 1), near)
    assert np.all(img[:, 80:w] == 255)  # the white gap
    # Same stretch: the three panels have about the same median sky level.
    meds = [np.median(p) for p in (near, bic, ours)]
    assert max(meds) - min(meds) <= 8


@pytest.mark.slow  # the crowded case renders a 4096^2 photutils field
def test_the_script_writes_the_pngs(tmp_path, tiny_fast_model):
    from astropy.io import fits
    from PIL import Image

    from astrosleuth_astro.sim import simulate

    fits.writeto(tmp_path / "HorseHead.fits", simulate((450, 780), scale=1, seed=4).lr[0])
    assert (
        crops.main(
            ["--model", str(tiny_fast_model), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    for name in crops.WINDOWS:
        assert Image.open(tmp_path / "o" / f"{name}.png").size == (3 * 256 + 2 * crops.GAP, 256)
