"""Tests of the synthetic star-field simulator."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astrosleuth_astro.sim import (
    area_downsample,
    make_pair,
    psf_kernel,
    simulate,
    to_hdu,
)


@pytest.fixture(scope="module")
def field():
    return simulate((64, 80), scale=4, seed=7, hot_pixels=0.0)


def test_determinism_by_seed():
    a = simulate((32, 32), seed=3)
    b = simulate((32, 32), seed=3)
    c = simulate((32, 32), seed=4)
    np.testing.assert_array_equal(a.hr, b.hr)
    np.testing.assert_array_equal(a.lr, b.lr)
    assert list(a.catalog["flux"]) == list(b.catalog["flux"])
    assert a.header_lr == b.header_lr
    assert not np.array_equal(a.lr, c.lr)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_and_dtypes(channels, scale):
    r = simulate((24, 40), scale=scale, channels=channels, seed=1)
    assert r.hr.shape == (channels, 24 * scale, 40 * scale)
    assert r.lr.shape == (channels, 24, 40)
    assert r.lr_clean.shape == r.lr.shape
    assert r.hr.dtype == np.float32 and r.lr.dtype == np.float32
    if channels == 1:
        assert r.hr2d.shape == (24 * scale, 40 * scale)
        assert r.lr2d.shape == (24, 40)
    else:
        with pytest.raises(ValueError):
            _ = r.lr2d
    hr, lr = make_pair((24, 40), scale=scale, channels=channels, seed=1)
    np.testing.assert_array_equal(hr, r.hr)
    np.testing.assert_array_equal(lr, r.lr)


def test_realistic_adu_range(field):
    med = float(np.median(field.lr))
    assert 500 < med < 2500
    assert field.lr.min() >= 0 and field.lr.max() <= 60000


def test_area_downsampled_truth_is_observation_minus_noise(field):
    p = field.params
    down = area_downsample(field.hr.astype(np.float64), 4)
    unsat = down < p["saturation"] * 0.99
    np.testing.assert_allclose(down[unsat], field.lr_clean[unsat], rtol=1e-5)
    resid = (field.lr - down)[unsat]
    # Zero-mean, and its variance is Poisson + read noise (in ADU**2).
    expected_var = down[unsat] / p["gain"] + (p["read_noise"] / p["gain"]) ** 2
    z = resid / np.sqrt(expected_var)
    assert abs(z.mean()) < 0.05
    assert 0.9 < z.std() < 1.1


def test_colour_stars_have_colours():
    r = simulate((48, 48), channels=3, seed=2)
    col = np.asarray(r.catalog["color"])
    assert col.shape == (len(r.catalog), 3)
    np.testing.assert_allclose(col.mean(axis=1), 1.0, rtol=1e-9)
    assert col[:, 0].std() > 0.05


def test_catalog_positions_match_flux():
    # Sparse, bright, no nebula: each catalogued star has its centroid where it was put.
    r = simulate(
        (64, 64),
        seed=11,
        n_stars=12,
        flux_range=(5e4, 2e5),
        nebulosity=0.0,
        gradient=0.0,
        hot_pixels=0.0,
        read_noise=0.0,
    )
    img = r.lr_clean[0].astype(np.float64) - r.params["background"]
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    for row in r.catalog:
        x, y = row["x"], row["y"]
        if not (5 < x < 58 and 5 < y < 58):
            continue
        sl = (
            slice(int(round(y)) - 4, int(round(y)) + 5),
            slice(int(round(x)) - 4, int(round(x)) + 5),
        )
        w = img[sl]
        cx = (w * xx[sl]).sum() / w.sum()
        cy = (w * yy[sl]).sum() / w.sum()
        # Neighbours can pull the centroid a bit; isolated stars sit within 0.15 px.
        d = np.hypot(xx - x, yy - y)
        others = np.hypot(r.catalog["x"] - x, r.catalog["y"] - y)
        if np.sort(others)[1] > 8:
            assert abs(cx - x) < 0.15 and abs(cy - y) < 0.15
        assert d.shape == img.shape
    # Total flux: the LR sum of one isolated, central star recovers its catalogue flux.
    for seed in range(20):
        lone = simulate(
            (64, 64),
            seed=seed,
            n_stars=1,
            flux_range=(1e5, 1e5 + 1),
            nebulosity=0.0,
            gradient=0.0,
            hot_pixels=0.0,
            background=1000.0,
        )
        if 20 < lone.catalog["x"][0] < 44 and 20 < lone.catalog["y"][0] < 44:
            break
    star = lone.lr_clean[0].astype(np.float64) - 1000.0
    assert star.sum() == pytest.approx(lone.catalog["flux"][0], rel=0.01)


def test_saturation_respected():
    sat = 20000.0
    r = simulate(
        (64, 64),
        seed=5,
        saturation=sat,
        flux_range=(1e4, 5e6),
        flux_index=1.2,
        hot_pixels=1e-3,
    )
    assert r.lr.max() <= sat and r.hr.max() <= sat
    assert r.catalog["saturated"].any()
    # Saturated stars are flat-topped at the full well in the observation.
    row = r.catalog[np.argmax(r.catalog["flux"])]
    assert row["saturated"]
    iy, ix = int(round(row["y"])), int(round(row["x"]))
    assert r.lr[0, max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2].max() == sat
    assert not r.catalog["saturated"][r.catalog["peak"] < sat].any()


def test_hot_pixels():
    r = simulate((64, 64), seed=9, hot_pixels=0.01, nebulosity=0.0, n_stars=0)
    hot = r.lr[0] > 5000
    assert 10 < hot.sum() < 90


def test_wcs_consistent_between_hr_and_lr():
    r = simulate((40, 56), scale=4, seed=12, wcs=True)
    w_lr = WCS(r.header_lr)
    w_hr = WCS(r.header_hr)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 55.5, 50)
    y = rng.uniform(-0.5, 39.5, 50)
    ra1, dec1 = w_lr.pixel_to_world_values(x, y)
    ra2, dec2 = w_hr.pixel_to_world_values((x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5)
    np.testing.assert_allclose(ra1, ra2, atol=1e-9)
    np.testing.assert_allclose(dec1, dec2, atol=1e-9)
    # Pixel scale is 1.5"/px in LR, 0.375"/px in HR.
    scale_lr = np.sqrt(abs(np.linalg.det(w_lr.pixel_scale_matrix))) * 3600
    assert scale_lr == pytest.approx(1.5)
    assert simulate((8, 8), wcs=False).header_lr.get("CTYPE1") is None


def test_to_hdu_roundtrip(tmp_path):
    r = simulate((16, 24), seed=1)
    hdu = to_hdu(r, "lr")
    assert hdu.data.shape == (16, 24)
    path = tmp_path / "f.fits"
    hdu.writeto(path)
    with fits.open(path) as hl:
        np.testing.assert_array_equal(hl[0].data, r.lr[0])
        assert hl[0].header["BUNIT"] == "ADU"
    rgb = to_hdu(simulate((16, 24), channels=3, seed=1), "hr")
    assert rgb.data.shape == (3, 64, 96)
    with pytest.raises(ValueError):
        to_hdu(r, "mid")


def test_psf_kernel_normalised_and_fwhm():
    for psf in ("moffat", "gaussian"):
        k = psf_kernel(6.0, psf, beta=3.0, radius=30)
        assert k.sum() == pytest.approx(1.0)
        row = k[30] / k[30, 30]
        # Half maximum at 3 px from the centre.
        assert np.interp(0.5, row[30:][::-1], np.arange(31)[::-1]) == pytest.approx(3.0, abs=0.05)
