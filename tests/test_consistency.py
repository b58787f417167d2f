"""Consistency with the data (issue 23 item 1): the default output, binned by the scale,
gives the input back where the data are significant, stays within the noise elsewhere,
and the correction is smooth and bounded by the data's local range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astrosleuth_astro.api import get_backend, upscale
from astrosleuth_astro.conserve import block_mean, source_levels
from astrosleuth_astro.consistency import (
    BOUND_SLACK,
    _inverse_taps,
    local_bounds,
    solve_block_mean,
)
from astrosleuth_astro.metrics.image import bicubic
from astrosleuth_astro.resample import upsample_bilinear
from astrosleuth_astro.sim import area_downsample, simulate
from astrosleuth_astro.stretch import background_stats


@pytest.fixture(scope="module")
def net():
    """The shipped default network: the claims are about the product's default."""
    return get_backend("default")


@pytest.fixture(scope="module")
def field():
    """A star field with nebulosity, linear float32 (background 1000, read noise 5)."""
    return simulate((96, 96), seed=2301, hot_pixels=0).lr[0].astype(np.float32)


@pytest.fixture(scope="module")
def raw_sky():
    """A noise-dominated raw uint16 frame: Poisson sky of 300 on a 1000 ADU pedestal."""
    rng = np.random.default_rng(2302)
    return (rng.poisson(300.0, (96, 96)) + 1000).astype(np.uint16)


def sigma_of(img) -> float:
    return float(background_stats(np.asarray(img, dtype=np.float64))[1][0])


def boundary_ratio(img: np.ndarray, s: int) -> float:
    """Mean |difference| of adjacent pixels across ``s x s`` block edges over inside them."""
    dx, dy = np.abs(np.diff(img, axis=1)), np.abs(np.diff(img, axis=0))
    bx, by = np.arange(dx.shape[1]) % s == s - 1, np.arange(dy.shape[0]) % s == s - 1
    across = np.concatenate([dx[:, bx].ravel(), dy[by].ravel()])
    inside = np.concatenate([dx[:, ~bx].ravel(), dy[~by].ravel()])
    return float(across.mean() / inside.mean())


def binned(out: np.ndarray, s: int) -> np.ndarray:
    return area_downsample(np.asarray(out, dtype=np.float64), s)


# --------------------------------------------------------------------------- the solve


@pytest.mark.parametrize("shape", [(1, 12, 17), (2, 31, 8)])
def test_solve_block_mean_gives_the_target_back(shape):
    """Bilinear 4x upsampling of the solution has exactly the target's 4x4 block means,
    edges included (the reflection of the edge row)."""
    rng = np.random.default_rng(3)
    t = rng.normal(0.0, 1.0, shape)
    z = solve_block_mean(t)
    up = upsample_bilinear(z.astype(np.float64), 4)
    np.testing.assert_allclose(block_mean(up, 4), t, atol=1e-6)


def test_inverse_taps_decay_and_keep_constants():
    taps = _inverse_taps()
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    assert abs(taps[0]) < 1e-6 * taps.max()  # the cut leaves nothing float32 can see
    z = solve_block_mean(np.full((1, 9, 9), 7.5))
    np.testing.assert_allclose(z, 7.5, rtol=1e-12)


# --------------------------------------------------------------------------- the modes


def test_all_is_exact_at_every_pixel(net, field):
    """``all``: binning the output gives every input pixel back, to float32 rounding."""
    out = np.asarray(upscale(field, model=net, conserve_flux="all"))
    sigma = sigma_of(field)
    assert np.max(np.abs(binned(out, 4) - field)) < 1e-4 * sigma + 1e-6 * np.abs(field).max()


@pytest.mark.parametrize("scale", [4, 2])
def test_consistent_is_exact_on_sources_and_unbiased_on_the_sky(net, field, scale):
    """The default: exact where the input is a source (> 5 sigma); on the sky no offset
    (<= 0.05 sigma) and no large-scale residual (8x8 input px RMS <= 0.15 sigma)."""
    out = np.asarray(upscale(field, model=net, scale=scale))
    res = binned(out, scale) - field
    background, sigma, threshold = (v[0] for v in source_levels(field[None]))
    src = field > threshold
    assert src.sum() > 30
    assert np.max(np.abs(res[src])) <= 1e-5 * (np.abs(field[src]).max() + sigma)
    sky = ~ndimage.binary_dilation(field > background + 3 * sigma, iterations=2)
    assert abs(np.mean(res[sky])) <= 0.05 * sigma
    r8 = res.reshape(12, 8, 12, 8).mean(axis=(1, 3))
    assert np.sqrt(np.mean(r8**2)) <= 0.15 * sigma


def test_off_is_the_raw_network_and_consistent_changes_it(net, field):
    """``off`` is the network as it is: its binned output is visibly not the input, which
    is what the default corrects (a check that the correction is not a no-op)."""
    off = np.asarray(upscale(field, model=net, conserve_flux="off"))
    cons = np.asarray(upscale(field, model=net))
    sigma = sigma_of(field)
    err_off = np.median(np.abs(binned(off, 4) - field)) / sigma
    err_cons = np.median(np.abs(binned(cons, 4) - field)) / sigma
    assert err_cons < err_off
    assert not np.array_equal(off, cons)


@pytest.mark.parametrize(
    "scale",
    [
        4,
        pytest.param(
            2,
            marks=pytest.mark.xfail(
                strict=True,
                reason="known limit of the noise-aware default (issue 26): it runs at 4x and "
                "is binned to 2x, and its 4x sky (the LR noise interpolated smoothly) binned "
                "by 2 has a boundary ratio of 2.00 raw, 1.96 consistent, against bicubic's "
                "1.68 (the legacy default: 1.47); no native 2x head yet",
            ),
        ),
    ],
)
def test_consistent_sky_is_smooth_on_a_noise_dominated_raw_frame(net, raw_sky, scale):
    """No checkerboard: on a frame that is all noise, the default's block-boundary ratio
    is at most bicubic's, and its sky noise at most 1.05x bicubic's."""
    out = np.asarray(upscale(raw_sky, model=net, scale=scale), dtype=np.float64)
    bic = bicubic(raw_sky.astype(np.float64), scale, clip=False)
    assert boundary_ratio(out, scale) <= boundary_ratio(bic, scale)
    assert np.std(out) <= 1.05 * np.std(bic)


def test_all_is_smooth_at_4x_on_a_noise_dominated_raw_frame(net, raw_sky):
    """``all`` puts back every pixel's noise, but with the bilinear correction, not as
    4x4 blocks: its boundary ratio on pure noise stays at most bicubic's at 4x.
    (At 2x a pattern at the input's Nyquist frequency is a 2x2 block whatever carries
    it; the README says so.)"""
    out = np.asarray(upscale(raw_sky, model=net, conserve_flux="all"), dtype=np.float64)
    bic = bicubic(raw_sky.astype(np.float64), 4, clip=False)
    assert boundary_ratio(out, 4) <= boundary_ratio(bic, 4)


# --------------------------------------------------------------------------- the bounds


@pytest.mark.parametrize("mode", ["consistent", "all"])
def test_no_new_negatives_and_no_overshoot(net, mode):
    """A bright, undersampled star next to a dark-ish sky: the correction rings nowhere.

    Every output pixel stays inside the union of the network's own value and the input's
    local range (5x5 input px, widened by one sigma); none becomes negative where the
    input is not."""
    rng = np.random.default_rng(2303)
    yy, xx = np.mgrid[:48, :48]
    img = 20.0 + rng.normal(0, 3.0, (48, 48))
    img += 5e4 * np.exp(-((yy - 23.3) ** 2 + (xx - 24.6) ** 2) / (2 * 0.6**2))
    img = np.clip(img, 0, None).astype(np.float32)
    off = np.asarray(upscale(img, model=net, conserve_flux="off"), dtype=np.float64)
    out = np.asarray(upscale(img, model=net, conserve_flux=mode), dtype=np.float64)
    low, high, _ = local_bounds(img[None].astype(np.float64), np.array([sigma_of(img)]))
    low4, high4 = (np.kron(v[0], np.ones((4, 4))) for v in (low, high))
    tol = 1e-4 * img.max()
    assert np.all(out >= np.minimum(off, low4) - tol)
    assert np.all(out <= np.maximum(off, high4) + tol)
    assert out.min() >= 0.0
    # The star's flux is kept all the same (the remainder goes into its own pixels).
    core = np.s_[22:25, 23:27]
    np.testing.assert_allclose(binned(out, 4)[core], img[core], rtol=1e-4)


def test_local_bounds_are_the_widened_local_range():
    rng = np.random.default_rng(4)
    lr = rng.normal(10.0, 1.0, (1, 20, 20))
    lr[0, 10, 10] = 100.0
    low, high, nonneg = local_bounds(lr, np.array([2.0]))
    assert high[0, 8, 12] == pytest.approx(100.0 + 2.0 * BOUND_SLACK)
    assert high[0, 2, 2] < 20.0
    assert low[0, 5, 5] == pytest.approx(lr[0, 3:8, 3:8].min() - 2.0 * BOUND_SLACK)
    assert nonneg.all()


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_any_in_blocks_is_any_over_the_block_axes(s):
    from astrosleuth_astro.consistency import _any_in_blocks

    rng = np.random.default_rng(s)
    mask = rng.random((6, s, 9, s)) > 0.95
    np.testing.assert_array_equal(_any_in_blocks(mask), mask.any(axis=(1, 3)))


def test_block_mean_is_the_float64_mean_of_each_block():
    rng = np.random.default_rng(5)
    img = rng.normal(100.0, 10.0, (2, 12, 20)).astype(np.float32)
    for s in (1, 2, 3, 4):
        h, w = 12 // s * s, 20 // s * s
        ref = img[:, :h, :w].astype(np.float64).reshape(2, h // s, s, w // s, s).mean(axis=(2, 4))
        np.testing.assert_allclose(block_mean(img[:, :h, :w], s), ref, rtol=1e-14)
