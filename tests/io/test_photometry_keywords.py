"""Calibration keywords follow the pixels: photometry from the header agrees before and after.

The upscaled pixels keep the input's per-pixel level, so aperture sums grow by ``s**2``;
``io.rescale_header`` moves the zero points and flux-per-count factors to match. Checked
with photutils aperture photometry on a simulated star field, through the real CLI.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture
from photutils.detection import DAOStarFinder

from astrosleuth_astro.cli import main
from astrosleuth_astro.io import rescale_header
from astrosleuth_astro.sim import simulate, to_hdu

MAGZP = 25.0
PHOTFLAM = 3.0e-19  # erg/cm2/s/A per count
PHOTZPT = -21.10


def _field(path):
    res = simulate((72, 80), channels=1, seed=3, n_stars=6, flux_range=(2e4, 1e5))
    hdu = to_hdu(res, which="lr")
    hdu.header["MAGZP"] = (MAGZP, "mag for 1 count")
    hdu.header["PHOTFLAM"] = PHOTFLAM
    hdu.header["PHOTZPT"] = PHOTZPT
    hdu.header["SATURATE"] = 60000.0
    hdu.header["GAIN"] = 1.6
    hdu.header["EXPTIME"] = 120.0
    hdu.writeto(path)
    return res


def _photometry(data, positions, radius, scale):
    """Background-subtracted aperture sums (counts) at ``positions`` (input pixels)."""
    pos = [((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5) for x, y in positions]
    aper = CircularAperture(pos, r=radius * scale)
    ann = CircularAnnulus(pos, r_in=(radius + 2) * scale, r_out=(radius + 5) * scale)
    sky = ApertureStats(data, ann).median
    return ApertureStats(data, aper).sum - sky * aper.area


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_magnitudes_and_fluxes_agree_before_and_after(tmp_path, scale):
    src, dst = tmp_path / "in.fits", tmp_path / "out.fits"
    _field(src)
    assert main(["upscale", str(src), "-o", str(dst), "--scale", str(scale), "--quiet"]) == 0
    data_in, hdr_in = fits.getdata(src), fits.getheader(src)
    data_out, hdr_out = fits.getdata(dst), fits.getheader(dst)
    # bright, isolated stars well inside the frame: photutils finds them on the input
    _, med, std = sigma_clipped_stats(data_in)
    found = DAOStarFinder(fwhm=2.5, threshold=20 * std)(data_in - med)
    assert found is not None and len(found) >= 2
    inner = (
        (found["xcentroid"] > 10)
        & (found["xcentroid"] < data_in.shape[1] - 11)
        & (found["ycentroid"] > 10)
        & (found["ycentroid"] < data_in.shape[0] - 11)
    )
    positions = list(zip(found["xcentroid"][inner], found["ycentroid"][inner], strict=True))
    assert positions
    sum_in = _photometry(data_in, positions, 4.0, 1)
    sum_out = _photometry(data_out, positions, 4.0, scale)
    # the pixels keep their level: sums grow by s**2 (the reason the keywords must move)
    assert np.allclose(sum_out / sum_in, scale**2, rtol=0.05)

    mag_in = hdr_in["MAGZP"] - 2.5 * np.log10(sum_in)
    mag_out = hdr_out["MAGZP"] - 2.5 * np.log10(sum_out)
    assert np.max(np.abs(mag_out - mag_in)) < 0.02
    flux_in, flux_out = hdr_in["PHOTFLAM"] * sum_in, hdr_out["PHOTFLAM"] * sum_out
    assert np.max(np.abs(flux_out / flux_in - 1)) < 0.02
    # HST STMAG = -2.5 log10(PHOTFLAM * sum) + PHOTZPT: PHOTZPT stays with PHOTFLAM rescaled
    st_in = -2.5 * np.log10(flux_in) + hdr_in["PHOTZPT"]
    st_out = -2.5 * np.log10(flux_out) + hdr_out["PHOTZPT"]
    assert np.max(np.abs(st_out - st_in)) < 0.02
    # per-pixel quantities are unchanged
    for key in ("PHOTZPT", "SATURATE", "GAIN", "EXPTIME"):
        assert hdr_out[key] == hdr_in[key]
    history = "\n".join(str(h) for h in hdr_out["HISTORY"])
    assert "MAGZP 25 -> " in history and "PHOTFLAM 3e-19 -> " in history


def test_rescale_header_calibration_rules():
    h = fits.Header()
    for key in ("MAGZP", "MAGZPT", "ZP", "ZPT", "PHOTZP", "MAGZERO"):
        h[key] = 25.0
    h["PHOTFLAM"], h["PHOTFNU"], h["NMGY"], h["FLUXMAG0"] = 1e-19, 3e-7, 0.005, 1e10
    h["PHOTZPT"], h["FLUXCONV"], h["BUNIT"], h["RDNOISE"] = -21.1, 0.1469, "MJy/sr", 4.5
    h["ZPERR"] = 0.01  # an error is not a zero point
    h["MAGZPT"] = "25.0"  # a string is left alone, never guessed at
    s = 2.5
    out = rescale_header(h, s)
    for key in ("MAGZP", "ZP", "ZPT", "PHOTZP", "MAGZERO"):
        assert out[key] == pytest.approx(25.0 + 5 * math.log10(s), abs=1e-12)
    assert out["MAGZPT"] == "25.0"
    assert out["PHOTFLAM"] == pytest.approx(1e-19 / s**2, rel=1e-12)
    assert out["PHOTFNU"] == pytest.approx(3e-7 / s**2, rel=1e-12)
    assert out["NMGY"] == pytest.approx(0.005 / s**2, rel=1e-12)
    assert out["FLUXMAG0"] == pytest.approx(1e10 * s**2, rel=1e-12)
    for key in ("PHOTZPT", "FLUXCONV", "BUNIT", "RDNOISE", "ZPERR"):
        assert out[key] == h[key]
    assert len(out["HISTORY"]) == 9  # one card per rescaled keyword
    assert all(len(str(c)) <= 72 for c in out["HISTORY"])
    assert h["MAGZP"] == 25.0  # the input header is not modified
    # scale 1: nothing moves
    same = rescale_header(h, 1)
    assert same["MAGZP"] == 25.0 and "HISTORY" not in same
