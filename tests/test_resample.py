"""Resampling helpers: torch-identical bilinear, exact area resampling for scales 1-3."""

import numpy as np
import pytest

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.resample import (
    area_resample,
    from_native,
    upsample_bilinear,
    upsample_nearest,
)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bilinear_matches_torch(scale):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 7, 5), dtype=np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x), scale_factor=scale, mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(upsample_bilinear(x, scale), ref, atol=1e-6)
    np.testing.assert_allclose(
        upsample_bilinear(x, scale, rows=(3, 9)), ref[..., 3:9, :], atol=1e-6
    )


def test_nearest_rows():
    x = np.arange(12.0).reshape(3, 4)
    full = upsample_nearest(x, 3)
    assert full.shape == (9, 12)
    np.testing.assert_array_equal(full[::3, ::3], x)
    np.testing.assert_array_equal(upsample_nearest(x, 3, rows=(2, 7)), full[2:7])


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_from_native_conserves_footprint_means(scale):
    rng = np.random.default_rng(1)
    lr_h, lr_w = 5, 7
    x4 = rng.random((2, 4 * lr_h, 4 * lr_w)).astype(np.float32)
    out = from_native(x4, 4, scale)
    assert out.shape == (2, scale * lr_h, scale * lr_w)
    # the mean over each input-pixel footprint is the same at every scale
    m4 = x4.reshape(2, lr_h, 4, lr_w, 4).mean(axis=(2, 4))
    ms = out.reshape(2, lr_h, scale, lr_w, scale).mean(axis=(2, 4))
    np.testing.assert_allclose(ms, m4, rtol=1e-5)


def test_area_resample_keeps_constant():
    x = np.full((8, 12), 3.25, dtype=np.float32)
    np.testing.assert_allclose(area_resample(x, (6, 9)), 3.25, rtol=1e-6)


def test_bad_scale():
    with pytest.raises(InputError):
        from_native(np.zeros((8, 8)), 4, 5)


@pytest.mark.parametrize("density", [0.0, 0.002, 0.01, 0.3])
def test_add_upsampled_bilinear_is_bit_identical_to_the_dense_sum(density):
    """The sparse path (few nonzero pixels, as in a clipped residual) and the dense
    fallback must both give exactly ``out + upsample_bilinear(...)`` for any window."""
    from astrosleuth_astro.resample import add_upsampled_bilinear, upsample_bilinear

    rng = np.random.default_rng(int(density * 1000))
    for _ in range(60):
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        s = int(rng.choice([2, 3, 4]))
        img = np.zeros((c, h, w), np.float32)
        hit = rng.random((c, h, w)) < density
        img[hit] = rng.normal(0, 5, hit.sum())
        r0 = int(rng.integers(0, h * s))
        r1 = int(rng.integers(r0 + 1, h * s + 1))
        c0 = int(rng.integers(0, w * s))
        c1 = int(rng.integers(c0 + 1, w * s + 1))
        base = rng.normal(0, 1, (c, r1 - r0, c1 - c0)).astype(np.float32)
        dense = base + upsample_bilinear(img, s, rows=(r0, r1))[..., c0:c1]
        ours = add_upsampled_bilinear(base.copy(), img, s, rows=(r0, r1), cols=(c0, c1))
        np.testing.assert_array_equal(ours, dense)
