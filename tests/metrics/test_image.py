"""The one implementation of each image measure: PSNR, SSIM, the scoring stretch, bicubic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from astrosleuth_astro.metrics import (
    bicubic,
    psnr,
    psnr_from_mse,
    scoring_stretch,
    ssim,
    to_scoring_domain,
)
from astrosleuth_astro.sim import simulate


def test_psnr_and_psnr_from_mse():
    rng = np.random.default_rng(0)
    a = rng.random((3, 16, 16))
    b = a + 0.01
    assert psnr(a, b) == pytest.approx(40.0)
    assert psnr(a, b, peak=10.0) == pytest.approx(60.0)
    assert psnr(a, a) == math.inf and psnr_from_mse(0.0) == math.inf
    assert math.isnan(psnr_from_mse(float("nan")))
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    b[0, 0, 0] = np.nan  # non-finite pixels are left out
    assert psnr(a, b) == pytest.approx(40.0)


def test_ssim_is_the_mean_over_channels():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.random((3, 32, 32)).astype(np.float32)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    want = np.mean([structural_similarity(a[c], b[c], data_range=1.0) for c in range(3)])
    assert ssim(a, b) == float(want)
    assert ssim(a[0], b[0]) == structural_similarity(a[0], b[0], data_range=1.0)
    assert ssim(a, a) == 1.0


def test_scoring_stretch_fits_on_the_input_and_clips():
    sim = simulate((48, 48), scale=4, channels=1, wcs=False, seed=2)
    st = scoring_stretch(sim.lr)
    assert st.kind == "mtf"
    hr = to_scoring_domain(st, sim.hr)
    assert hr.dtype == np.float32 and hr.min() >= 0.0 and hr.max() <= 1.0
    np.testing.assert_array_equal(hr, np.clip(st.forward(sim.hr), 0.0, 1.0))


def test_bicubic_shape_levels_and_clip():
    x = np.full((2, 3, 5, 7), 0.4, dtype=np.float32)
    y = bicubic(x, 4)
    assert y.shape == (2, 3, 20, 28) and y.dtype == np.float32
    np.testing.assert_allclose(y, 0.4, atol=1e-6)
    step = np.zeros((1, 8, 8), np.float32)
    step[:, :, 4:] = 1.0  # overshoots on both sides of the edge
    assert bicubic(step, 4, clip=False).min() < 0 < 1 < bicubic(step, 4, clip=False).max()
    clipped = bicubic(step, 4)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_equals_torch_bicubic(scale):
    """The same numbers as ``F.interpolate(mode="bicubic", align_corners=False)`` (the
    trainer's bicubic before it moved here), to float32 rounding."""
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    x = np.random.default_rng(scale).random((2, 3, 13, 21), dtype=np.float32)
    ref = F.interpolate(torch.from_numpy(x), scale_factor=scale, mode="bicubic")
    np.testing.assert_allclose(bicubic(x, scale, clip=False), ref.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(bicubic(x[0], scale), ref[0].clamp(0, 1).numpy(), atol=2e-6)


def test_train_psnr_is_the_metrics_psnr():
    torch = pytest.importorskip("torch")
    from astrosleuth_astro.train.losses import psnr as train_psnr

    rng = np.random.default_rng(3)
    a = rng.random((1, 3, 8, 8))
    b = a + 0.02 * rng.standard_normal(a.shape)
    assert train_psnr(torch.from_numpy(a), torch.from_numpy(b)) == psnr(a, b)
    assert train_psnr(torch.tensor(1e-3)) == pytest.approx(30.0)
    assert train_psnr(torch.from_numpy(a), torch.from_numpy(a)) == math.inf
