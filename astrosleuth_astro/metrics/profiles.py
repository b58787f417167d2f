"""Radial star profiles and shadow depth: the dark rings a network can draw around stars.

:func:`radial_profile` is the azimuthally averaged, background-subtracted profile around
one star; :func:`shadow_depth` is its deepest deficit between 1 and 4 FWHM in units of
the local background RMS (the ``shadow_depth_sigma_*`` keys of
:func:`~astrosleuth_astro.metrics.measure`).
"""

from __future__ import annotations

import numpy as np
from astropy.stats import sigma_clipped_stats

__all__ = [
    "MIN_BIN_PIXELS",
    "PROFILE_BIN_FWHM",
    "PROFILE_RADII_FWHM",
    "SHADOW_BKG_FWHM",
    "SHADOW_ZONE_FWHM",
    "radial_profile",
    "shadow_depth",
]

#: Radial profile bin width, in FWHM.
PROFILE_BIN_FWHM = 0.25
#: Where a shadow is looked for, in FWHM from the star's centre.
SHADOW_ZONE_FWHM = (1.0, 4.0)
#: Local background annulus of the shadow measurement, in FWHM (beyond the shadow zone).
SHADOW_BKG_FWHM = (4.5, 6.5)
#: Bin centres (in FWHM) of the stored radial profiles.
PROFILE_RADII_FWHM = np.arange(0.0, SHADOW_BKG_FWHM[1], PROFILE_BIN_FWHM) + PROFILE_BIN_FWHM / 2
#: Least number of pixels for a profile bin to count.
MIN_BIN_PIXELS = 3


def radial_profile(
    img: np.ndarray,
    x: float,
    y: float,
    fwhm: float,
    mask: np.ndarray | None = None,
    background: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Azimuthally averaged, background-subtracted radial profile around ``(x, y)``.

    Parameters
    ----------
    img : ndarray, shape (H, W)
        Image (data units per pixel).
    x, y : float
        Centre, 0-based pixels.
    fwhm : float
        The star's FWHM in the pixels of ``img``: bins are ``PROFILE_BIN_FWHM * fwhm``
        wide and run to ``SHADOW_BKG_FWHM[1] * fwhm``.
    mask : ndarray of bool, optional
        Pixels to leave out (other stars).
    background : float, optional
        The local background to subtract; by default the sigma-clipped median of the
        ``SHADOW_BKG_FWHM`` annulus.

    Returns
    -------
    profile : ndarray
        Mean of each bin minus the local background (NaN for bins with too few pixels),
        at radii ``PROFILE_RADII_FWHM * fwhm``.
    counts : ndarray of int
        Pixels in each bin.
    background : float
        The background subtracted (NaN if the annulus is empty).
    rms : float
        MAD standard deviation in that annulus (NaN if empty).
    """
    h, w = img.shape
    n_bins = PROFILE_RADII_FWHM.size
    empty = (np.full(n_bins, np.nan), np.zeros(n_bins, dtype=int), np.nan, np.nan)
    r_out = SHADOW_BKG_FWHM[1] * fwhm
    x0, x1 = max(int(np.floor(x - r_out)), 0), min(int(np.ceil(x + r_out)) + 1, w)
    y0, y1 = max(int(np.floor(y - r_out)), 0), min(int(np.ceil(y + r_out)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return empty
    stamp = np.asarray(img[y0:y1, x0:x1], dtype=np.float64)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    r = np.hypot(xx - x, yy - y) / fwhm
    good = np.isfinite(stamp)
    if mask is not None:
        good &= ~mask[y0:y1, x0:x1]
    ring = good & (r >= SHADOW_BKG_FWHM[0]) & (r < SHADOW_BKG_FWHM[1])
    if ring.sum() < 8:
        return empty
    _, bkg, rms = sigma_clipped_stats(stamp[ring], sigma=3.0, maxiters=10, stdfunc="mad_std")
    if background is not None and np.isfinite(background):
        bkg = float(background)
    idx = np.floor(r / PROFILE_BIN_FWHM).astype(int)
    sel = good & (idx < n_bins)
    sums = np.bincount(idx[sel], weights=stamp[sel] - bkg, minlength=n_bins)[:n_bins]
    cnt = np.bincount(idx[sel], minlength=n_bins)[:n_bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(cnt >= MIN_BIN_PIXELS, sums / cnt, np.nan)
    return prof, cnt, float(bkg), float(rms)


def shadow_depth(profile: np.ndarray, counts: np.ndarray, rms: float) -> float:
    """Deepest deficit of a profile in the shadow zone, in units of ``rms`` (>= 0; NaN if
    undefined).

    The profile's bins are merged in pairs (``2 * PROFILE_BIN_FWHM`` = 0.5 FWHM wide) for
    this: a ring is at least that wide, and the wider bins halve the noise floor of a
    "most negative value" (about 0.1 sigma with white noise, 0.3 with the correlated noise
    of an interpolated image, instead of twice that).
    """
    n = (profile.size // 2) * 2
    p = np.where(np.isfinite(profile[:n]), profile[:n], 0.0)
    c = np.where(np.isfinite(profile[:n]), counts[:n], 0)
    sums = (p * c).reshape(-1, 2).sum(axis=1)
    cnt = c.reshape(-1, 2).sum(axis=1)
    centres = PROFILE_RADII_FWHM[:n].reshape(-1, 2).mean(axis=1)
    zone = (
        (centres >= SHADOW_ZONE_FWHM[0])
        & (centres <= SHADOW_ZONE_FWHM[1])
        & (cnt >= MIN_BIN_PIXELS)
    )
    if not zone.any() or not (np.isfinite(rms) and rms > 0):
        return float("nan")
    vals = sums[zone] / cnt[zone]
    return float(max(0.0, -vals.min()) / rms)
