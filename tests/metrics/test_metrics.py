"""Star-aware metrics against known answers on synthetic star fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro.cli import main
from astrosleuth_astro.metrics import (
    METRIC_KEYS,
    REFERENCE_KEYS,
    compute_metrics,
    infer_scale,
    measure,
)
from astrosleuth_astro.resample import upsample_bilinear
from astrosleuth_astro.sim import area_downsample
from astrosleuth_astro.stars import detect_stars

SCALE = 4
NOISE = 20.0  # LR noise, ADU
SKY = 1000.0


def gaussian_stars(shape, xs, ys, fluxes, fwhm):
    """Sum of point-sampled circular Gaussians (``fluxes`` = sums), float64."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    sig = fwhm / 2.3548
    out = np.zeros(shape)
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        out += (
            f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig * sig)) / (2 * np.pi * sig * sig)
        )
    return out


def grid_field(n=4, spacing=40, fwhm=2.5, flux=2e4, seed=0):
    """Isolated Gaussian stars on a jittered grid: HR truth, noisy LR, LR star positions.

    Rings up to 4 FWHM and the 6.5 FWHM background annulus of one star stay clear of the
    others, so injected effects are measured star by star.
    """
    rng = np.random.default_rng(seed)
    size = n * spacing
    xs = (np.arange(n) + 0.5) * spacing
    gx, gy = np.meshgrid(xs, xs)
    x = gx.ravel() + rng.uniform(-0.5, 0.5, n * n)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, n * n)
    f = flux * rng.uniform(0.5, 2.0, n * n)
    hr_stars = gaussian_stars(
        (size * SCALE, size * SCALE),
        (x + 0.5) * SCALE - 0.5,
        (y + 0.5) * SCALE - 0.5,
        f * SCALE**2,
        fwhm * SCALE,
    )
    hr = SKY + hr_stars
    lr = area_downsample(hr, SCALE) + rng.normal(0.0, NOISE, (size, size))
    return hr.astype(np.float32), lr.astype(np.float32), x, y, hr_stars


@pytest.fixture(scope="module")
def field():
    hr, lr, x, y, stars = grid_field()
    det = detect_stars(lr)
    return hr, lr, x, y, stars, det


def _noisy(hr, sigma=NOISE, seed=1):
    return (hr + np.random.default_rng(seed).normal(0.0, sigma, hr.shape)).astype(np.float32)


def _ring(shape, xs, ys, radius, width, depth):
    """Gaussian rings (profile ``-depth exp(-(r - radius)^2 / 2 width^2)``) at SR positions."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    out = np.zeros(shape)
    for x, y in zip(xs, ys, strict=True):
        r = np.hypot(xx - x, yy - y)
        out -= depth * np.exp(-0.5 * ((r - radius) / width) ** 2)
    return out


def _sr_pos(v):
    return (np.asarray(v) + 0.5) * SCALE - 0.5


def test_detection_finds_the_grid(field):
    _, _, x, y, _, det = field
    assert len(det.catalog) == 16
    assert det.fwhm == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize("depth", [1.0, 3.0, 5.0])
def test_injected_rings_are_measured_within_15_percent(field, depth):
    hr, lr, x, y, _, det = field
    sigma = NOISE  # SR noise, white, so the RMS of the SR background is NOISE
    f_sr = det.fwhm * SCALE
    sr = _noisy(hr, sigma) + _ring(
        hr.shape, _sr_pos(x), _sr_pos(y), 2.25 * f_sr, 0.5 * f_sr, depth * sigma
    )
    m = compute_metrics(lr, sr.astype(np.float32), lr_detection=det)
    assert m["shadow_depth_sigma_median"] == pytest.approx(depth, rel=0.15)
    assert m["shadow_depth_sigma_p90"] >= m["shadow_depth_sigma_median"]


def test_clean_flux_conserving_interpolation_has_no_shadow(field):
    _, lr, *_, det = field
    m = compute_metrics(lr, upsample_bilinear(lr, SCALE), lr_detection=det)
    assert m["shadow_depth_sigma_median"] < 0.5
    assert m["flux_ratio_median"] == pytest.approx(1.0, abs=0.01)
    assert m["n_missed"] == 0 and m["n_hallucinated"] == 0 and m["split_fraction"] == 0.0
    # Bilinear interpolation averages neighbouring pixels: less noise per pixel.
    assert 0.5 < m["background_noise_ratio"] < 0.8


def test_truth_output_scores_as_perfect(field):
    hr, lr, *_, det = field
    m = compute_metrics(lr, _noisy(hr), lr_detection=det, reference=hr)
    assert m["n_stars"] == 16
    assert m["flux_ratio_median"] == pytest.approx(1.0, abs=0.01)
    assert m["fwhm_ratio_median"] == pytest.approx(1.0, abs=0.05)
    assert m["centroid_error_px_median"] < 0.03
    # White SR noise of NOISE per SR pixel, LR noise NOISE per LR pixel.
    assert m["background_noise_ratio"] == pytest.approx(1.0, abs=0.1)
    assert set(m) == set(METRIC_KEYS) | set(REFERENCE_KEYS)
    assert m["psnr_stretched"] > 15 and 0 < m["ssim_stretched"] <= 1


def test_ten_percent_flux_loss(field):
    hr, lr, x, y, stars, det = field
    sr = _noisy(SKY + 0.9 * stars)
    m = compute_metrics(lr, sr, lr_detection=det)
    assert m["flux_ratio_median"] == pytest.approx(0.90, abs=0.01)
    assert m["flux_ratio_mad"] < 0.02


def test_extra_point_sources_are_hallucinations(field):
    hr, lr, x, y, _, det = field
    # Three bright point sources midway between grid stars (empty sky in LR).
    ex, ey = np.array([40.0, 80.0, 120.0]), np.array([40.0, 120.0, 80.0])
    extra = gaussian_stars(
        hr.shape, _sr_pos(ex), _sr_pos(ey), np.full(3, 2e4 * SCALE**2), 2.5 * SCALE
    )
    m = compute_metrics(lr, _noisy(hr + extra), lr_detection=det)
    assert m["n_hallucinated"] == 3
    assert m["n_missed"] == 0


def test_faint_sr_blobs_below_the_lr_threshold_are_not_hallucinations(field):
    hr, lr, *_, det = field
    # One LR sigma of peak once binned back: far below the detection threshold.
    blob = gaussian_stars(
        hr.shape,
        [_sr_pos(40.0)],
        [_sr_pos(40.0)],
        [20.0 * 2 * np.pi * (2.5 / 2.3548 * SCALE) ** 2],
        2.5 * SCALE,
    )
    m = compute_metrics(lr, _noisy(hr + blob), lr_detection=det)
    assert m["n_hallucinated"] == 0


def test_doubled_star_counts_as_split(field):
    hr, lr, x, y, stars, det = field
    f_sr = 2.5 * SCALE
    i = 5
    one = gaussian_stars(hr.shape, [_sr_pos(x[i])], [_sr_pos(y[i])], [1.0], f_sr)
    flux = float(np.sum(stars * one) / np.sum(one * one))  # this star's HR sum
    two = gaussian_stars(
        hr.shape,
        [_sr_pos(x[i]) - 0.8 * f_sr, _sr_pos(x[i]) + 0.8 * f_sr],
        [_sr_pos(y[i])] * 2,
        [flux / 2, flux / 2],
        f_sr,
    )
    sr = _noisy(hr - flux * one + two)
    res = measure(lr, sr, lr_detection=det)
    assert res.summary["split_fraction"] == pytest.approx(1 / 16)
    k = int(np.argmin(np.hypot(res.stars["x"] - x[i], res.stars["y"] - y[i])))
    assert res.stars["split"][k] and res.stars["n_peaks_sr"][k] == 2
    assert res.summary["n_hallucinated"] == 0  # the second half is part of the star


def test_known_sub_pixel_shift_is_measured(field):
    from scipy import ndimage

    hr, lr, *_, det = field
    dx, dy = 0.3, -0.2  # LR pixels
    shifted = ndimage.shift(
        hr.astype(np.float64), (dy * SCALE, dx * SCALE), order=3, mode="nearest"
    )
    m = compute_metrics(lr, _noisy(shifted), lr_detection=det)
    assert m["centroid_error_px_median"] == pytest.approx(np.hypot(dx, dy), abs=0.04)


def test_vanished_star_is_missed(field):
    hr, lr, x, y, stars, det = field
    i = 3
    one = gaussian_stars(hr.shape, [_sr_pos(x[i])], [_sr_pos(y[i])], [1.0], 2.5 * SCALE)
    flux = float(np.sum(stars * one) / np.sum(one * one))
    m = compute_metrics(lr, _noisy(hr - flux * one), lr_detection=det)
    assert m["n_missed"] == 1


def test_infer_scale():
    assert infer_scale((3, 10, 12), (3, 40, 48)) == 4
    with pytest.raises(ValueError, match="integer multiple"):
        infer_scale((10, 12), (40, 47))


def test_metrics_cli_json(tmp_path, field, capsys):
    hr, lr, *_ = field
    sr = upsample_bilinear(lr, SCALE)
    for name, arr in (("lr", lr), ("sr", sr), ("hr", hr)):
        fits.PrimaryHDU(arr).writeto(tmp_path / f"{name}.fits")
    rc = main(
        [
            "metrics",
            "--input",
            str(tmp_path / "lr.fits"),
            "--output",
            str(tmp_path / "sr.fits"),
            "--reference",
            str(tmp_path / "hr.fits"),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == list(METRIC_KEYS) + list(REFERENCE_KEYS)
    assert out["n_stars"] == 16 and out["shadow_depth_sigma_median"] < 0.5
    # A scale that does not map the shapes is a usage error.
    rc = main(
        [
            "metrics",
            "--input",
            str(tmp_path / "lr.fits"),
            "--output",
            str(tmp_path / "sr.fits"),
            "--scale",
            "3",
        ]
    )
    assert rc == 2
