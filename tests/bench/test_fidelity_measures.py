"""bench/fidelity.py: each measure on constructed outputs whose answer is known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

_PATH = Path(__file__).resolve().parents[2] / "bench" / "fidelity.py"
_SPEC = importlib.util.spec_from_file_location("bench_fidelity", _PATH)
fd = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = fd  # dataclasses look their module up while the class is made
_SPEC.loader.exec_module(fd)

FWHM = 2.5
SIGMA = 2.0
#: Star positions (x, y), 24 px apart (isolated: > 4 FWHM), off the pixel grid.
STARS = [(20.3 + 24 * i + 0.17 * j, 20.6 + 24 * j - 0.21 * i) for i in range(3) for j in range(3)]


def _field(seed: int = 0) -> np.ndarray:
    """96 x 96: a sky of 100 with noise SIGMA and nine bright Gaussian stars."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96].astype(float)
    s = FWHM / (2 * np.sqrt(2 * np.log(2)))
    img = np.full((96, 96), 100.0)
    for k, (x, y) in enumerate(STARS):
        flux = 3000.0 * (1 + 0.2 * k)
        img += flux / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    return img + rng.normal(0.0, SIGMA, img.shape)


def _nearest(img: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(img, s, axis=0), s, axis=1)


def _bilinear(img: np.ndarray, s: int) -> np.ndarray:
    """Bilinear upsampling with pixel centres aligned (output px j at input (j + 0.5)/s - 0.5)."""
    h, w = img.shape
    y = (np.arange(h * s) + 0.5) / s - 0.5
    x = (np.arange(w * s) + 0.5) / s - 0.5
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return ndimage.map_coordinates(img, [yy, xx], order=1, mode="nearest")


@pytest.fixture(scope="module")
def lr():
    return _field()


@pytest.fixture(scope="module")
def ref(lr):
    return fd.reference(lr, FWHM)


def test_reference_finds_the_noise_and_the_planted_stars(ref):
    assert ref.sigma == pytest.approx(SIGMA, rel=0.1)
    assert ref.background == pytest.approx(100.0, abs=0.5)
    assert len(ref.stars) == len(STARS)
    d = np.hypot(*(ref.stars[:, None, :] - np.array(STARS)[None, :, :]).transpose(2, 0, 1))
    assert np.all(d.min(axis=0) < 0.3)  # each planted star found where it is
    # the sky excludes the stars' cores and keeps most of the frame
    for x, y in STARS:
        assert not ref.sky[round(y), round(x)]
    assert 0.6 < ref.sky.mean() < 0.99


@pytest.mark.parametrize("s", [4, 2])
def test_nearest_upsampling_is_faithful(lr, ref, s):
    out = _nearest(lr, s)
    assert fd.binned_median_abs_sigma(ref, out) < 1e-9
    assert fd.binned_rms8_sigma(ref, out) < 1e-9
    assert abs(fd.sky_offset_sigma(ref, out)) < 1e-9
    assert fd.flux_ratio_median(ref, out) == pytest.approx(1.0, abs=0.01)
    # the boxes cover the same sky in both images: a symmetric copy of each pixel moves
    # no centroid at all
    assert fd.centroid_shift_px(ref, out) < 1e-9
    # it copies each input pixel: the sky noise of the input
    assert fd.sky_noise_sigma(ref, out) == pytest.approx(1.0, abs=0.1)
    assert fd.negative_pixels(ref, out) == 0


def test_a_constant_offset_is_measured_in_sigma(lr, ref):
    out = _nearest(lr, 4) + 0.5 * ref.sigma
    assert fd.sky_offset_sigma(ref, out) == pytest.approx(0.5, abs=1e-6)
    assert fd.binned_median_abs_sigma(ref, out) == pytest.approx(0.5, abs=1e-6)
    assert fd.binned_rms8_sigma(ref, out) == pytest.approx(0.5, abs=1e-6)
    # the annulus background takes the offset out of the star fluxes
    assert fd.flux_ratio_median(ref, out) == pytest.approx(1.0, abs=0.01)


def test_lost_flux_and_moved_stars_are_seen(lr, ref):
    out = _nearest(lr, 4)
    bg = ref.background
    dimmer = bg + 0.9 * (out - bg)
    assert fd.flux_ratio_median(ref, dimmer) == pytest.approx(0.9, abs=0.01)
    # one output pixel to the right is a quarter of an input pixel
    moved = np.roll(out, 1, axis=1)
    assert fd.centroid_shift_px(ref, moved) == pytest.approx(0.25, abs=0.03)


def test_boundary_ratio_tells_blocks_from_smooth_output():
    yy, xx = np.mgrid[:64, :64].astype(float)
    smooth = 100 + 20 * np.cos(2 * np.pi * xx / 40) * np.sin(2 * np.pi * yy / 56 + 0.3)
    rng = np.random.default_rng(1)
    noisy = _field(2)[:64, :64]
    ref_s = fd.reference(smooth, 2.5)
    ref_n = fd.reference(noisy, FWHM)
    for s in (4, 2):
        # nearest: every change is at a block boundary
        assert fd.boundary_ratio_linear(ref_n, _nearest(noisy, s)) > 1.5
        assert fd.boundary_ratio_stretched(ref_n, _nearest(noisy, s)) > 1.5
        # a little output noise keeps it finite, and still far above 1
        speckled = _nearest(noisy, s) + rng.normal(0, 0.01, (64 * s, 64 * s))
        assert 1.5 < fd.boundary_ratio_linear(ref_n, speckled) < np.inf
        # bilinear of a smooth image: no grid
        up = _bilinear(smooth, s)
        assert fd.boundary_ratio_linear(ref_s, up) == pytest.approx(1.0, abs=0.1)
        assert fd.boundary_ratio_stretched(ref_s, up) == pytest.approx(1.0, abs=0.15)


def test_boundary_ratio_leaves_out_the_known_defects(lr):
    """A defect's own block is flat at its input value; its huge steps must not decide
    the grid measure, for any method: with the defects known, a smooth output with a few
    flat defect blocks scores as the smooth output does."""
    img = lr.copy()
    defects = np.zeros(img.shape, bool)
    for y, x in [(10, 40), (50, 70), (80, 12)]:
        img[y, x] += 5000.0
        defects[y, x] = True
    up = _bilinear(lr, 4)
    held = up.copy()
    held[defects.repeat(4, axis=0).repeat(4, axis=1)] = np.repeat(img[defects], 16)
    plain = fd.reference(img, FWHM)
    known = fd.reference(img, FWHM, defects=defects)
    assert fd.boundary_ratio_linear(plain, held) > 1.5 * fd.boundary_ratio_linear(plain, up)
    assert fd.boundary_ratio_linear(known, held) == pytest.approx(
        fd.boundary_ratio_linear(known, up), rel=0.02
    )


def test_negative_pixels_counts_only_new_negatives(lr):
    img = lr.copy()
    img[50, 50] = -5.0  # a negative input pixel: negatives next to it are not new
    ref = fd.reference(img, FWHM)
    out = _nearest(img, 4)
    assert fd.negative_pixels(ref, out) == 0  # the 16 copies of (50, 50) are not counted
    out[4 * 51 + 1, 4 * 49 + 2] = -1.0  # in a neighbour of (50, 50): not counted
    planted = [(3, 7), (100, 20), (200, 333), (383, 0), (0, 383), (150, 151), (151, 150)]
    for y, x in planted:
        out[y, x] = -0.5
    assert fd.negative_pixels(ref, out) == len(planted)


def test_psnr_linear_and_stretched():
    rng = np.random.default_rng(3)
    truth = 100 + 50 * rng.random((64, 64))
    ref = fd.reference(truth.reshape(16, 4, 16, 4).mean(axis=(1, 3)), 2.0)
    peak = truth.max() - truth.min()
    assert fd.psnr_linear(truth + 0.01 * peak, truth) == pytest.approx(40.0, abs=1e-6)
    assert fd.psnr_linear(truth, truth) == np.inf
    assert fd.psnr_stretched(ref, truth, truth) == np.inf
    assert 10 < fd.psnr_stretched(ref, truth + 0.05 * peak, truth) < 60


def test_measure_has_the_json_keys(lr, ref):
    out = _nearest(lr, 2)
    m = fd.measure(ref, out, truth=_nearest(lr, 2))
    assert set(m) == set(fd.MEASURES) - {"sky_noise_vs_bicubic", "seconds"}
    assert set(fd.measure(ref, out)) == set(m) - {"psnr_linear", "psnr_stretched"}
    with pytest.raises(ValueError):
        fd.sky_offset_sigma(ref, out[:-1])


def test_positions_map_to_the_centre_of_their_output_block():
    # input pixel (x, y) covers output [s x - 0.5, s x + s - 0.5]: its centre is s x + (s - 1)/2
    xy = np.array([[0.0, 0.0], [10.0, 3.0], [2.25, 7.5]])
    np.testing.assert_allclose(fd.to_output(xy, 4), [[1.5, 1.5], [41.5, 13.5], [10.5, 31.5]])
    np.testing.assert_allclose(fd.to_output(xy, 2), [[0.5, 0.5], [20.5, 6.5], [5.0, 15.5]])
