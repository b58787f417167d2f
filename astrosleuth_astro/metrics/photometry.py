"""Aperture photometry of the same stars in LR and SR: local backgrounds and aperture sums
(the ``flux_ratio_*`` keys of :func:`~astrosleuth_astro.metrics.measure`)."""

from __future__ import annotations

import numpy as np

from ..sim import area_downsample
from ..stars.background import FlatSigmaClip
from ..stars.detect import ANNULUS_FWHM, StarDetection, local_photometry


def local_backgrounds(
    lum_lr: np.ndarray,
    lum_sr: np.ndarray,
    det_lr: StarDetection,
    xl: np.ndarray,
    yl: np.ndarray,
    fwhm: float,
    s: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-star local background of LR and of SR (data units per pixel).

    LR: the sigma-clipped median of the ``ANNULUS_FWHM`` annulus, other stars masked.
    SR: that value plus the *mean* difference between SR binned to the LR grid and LR in
    the same annulus pixels. Why not SR's own median: the median of sky plus faint
    unresolved stars depends on the noise (a denoised or noise-free image has a lower one,
    by 0.2 sigma in the simulator's fields), which would show up as a flux change of
    tens of percent for faint stars. A mean difference is noise-independent and still
    catches a real shift of the background by a network.
    """
    from photutils.aperture import ApertureStats, CircularAnnulus

    bad = ~np.isfinite(lum_lr)
    _, b_lr = local_photometry(
        np.where(bad, 0.0, lum_lr), det_lr.background, det_lr.segmentation, xl, yl, fwhm, bad
    )
    if len(xl) == 0:
        return b_lr, b_lr
    diff = area_downsample(lum_sr, s) - lum_lr
    ann = CircularAnnulus(
        np.column_stack([xl, yl]), r_in=ANNULUS_FWHM[0] * fwhm, r_out=ANNULUS_FWHM[1] * fwhm
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = ApertureStats(
            np.where(np.isfinite(diff), diff, np.nan),
            ann,
            mask=(det_lr.segmentation > 0) | ~np.isfinite(diff),
            sigma_clip=FlatSigmaClip(sigma=5.0, maxiters=5),
        )
        delta = np.atleast_1d(np.asarray(st.mean, dtype=np.float64))
    delta = np.where(np.isfinite(delta), delta, 0.0)
    return b_lr, b_lr + delta


def aperture_sum(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, r: float, bkg) -> np.ndarray:
    """Exact-overlap circular aperture sums of ``img - bkg`` (``bkg`` per star)."""
    from photutils.aperture import ApertureStats, CircularAperture

    if len(xs) == 0:
        return np.zeros(0)
    ap = CircularAperture(np.column_stack([xs, ys]), r=r)
    st = ApertureStats(np.nan_to_num(img, nan=0.0), ap, local_bkg=np.asarray(bkg, dtype=float))
    return np.atleast_1d(np.asarray(st.sum, dtype=np.float64))
