"""Star-aware metrics of a super-resolved image: what PSNR does not see.

:func:`measure` compares an input (LR) with its upscaled output (SR), star by star, and
optionally with a high-resolution reference (HR). :func:`compute_metrics` returns the
summary as a dict with these keys (the public interface; values are floats, ``None``
where undefined):

``n_stars``
    Stars detected in LR and used (those at least one FWHM from the border).
``flux_ratio_median``, ``flux_ratio_mad``
    Per matched unsaturated star, SR aperture flux / scale**2 over LR aperture flux; the
    median and the (unscaled) median absolute deviation. Apertures of
    :data:`~.stars.APERTURE_FWHM` LR FWHM, the same geometry in LR and SR pixels. Local
    background: the sigma-clipped median of the LR annulus (:data:`~.stars.ANNULUS_FWHM`,
    other stars masked) for LR; that plus the mean SR - LR difference in the annulus
    (SR binned to LR) for SR, so that the denoising of a network does not bias faint
    stars' fluxes (see :func:`local_backgrounds`).
``fwhm_ratio_median``
    SR FWHM / scale over LR FWHM (pixel-integrated Gaussian fits), matched unsaturated
    stars.
``centroid_error_px_median``
    Distance between the LR centroid and the SR centroid mapped back to LR pixels
    (``x_lr = (x_sr + 0.5) / scale - 0.5``), in LR pixels, matched unsaturated stars.
``shadow_depth_sigma_median``, ``shadow_depth_sigma_p90``
    Per star: the azimuthally averaged radial profile of SR around the star (bins of
    :data:`PROFILE_BIN_FWHM` FWHM, other stars masked), minus the local background (as for
    the fluxes, see below); its most negative value between 1
    and 4 FWHM (:data:`SHADOW_ZONE_FWHM`) is the deficit; divided by the local
    background RMS of SR (MAD standard deviation in the same annulus), so a ring 3 sigma
    below the background gives 3.0. Positive = a shadow, 0 = none. Median and 90th
    percentile over the used stars.
``n_hallucinated``
    SR sources with no LR counterpart, outside every LR star's dilated footprint, that
    are above the LR detection threshold once SR is binned back to the LR grid (smoothed
    like LR, at least as many connected pixels above the threshold as LR detection needs),
    and not much broader than the PSF (LR detection drops those as nebula knots too).
``n_missed``
    LR stars with no SR source within the match radius.
``split_fraction``
    Fraction of the matched stars with a single peak in LR whose SR footprint (the LR
    footprint on the SR grid) holds more than one significant peak
    (:func:`~.stars.count_peaks` with :func:`~.stars.split_height`).
``background_noise_ratio``
    Background RMS of SR over that of LR (medians of the Background2D RMS maps).
``psnr_linear``, ``psnr_stretched``, ``ssim_stretched`` (with a reference only)
    Against HR: PSNR on the linear data (peak = HR's range); PSNR and SSIM after one
    stretch fitted on HR (:func:`~.stretch.fit_stretch`, ``"auto"``; on LR when HR is a
    noise-free truth, see :func:`reference_metrics`) applied to both. SSIM
    is scikit-image's ``structural_similarity`` (7x7 uniform window, data range 1,
    averaged over channels).

All radii in FWHM use the LR FWHM (times the scale on the SR grid), floored at
:data:`MIN_GEOMETRY_FWHM` LR pixels for undersampled images.

Matching: stars are detected in LR and in SR (:func:`~.stars.detect_stars`, SR with the
LR FWHM times the scale); SR positions are mapped to LR pixels and matched one-to-one,
nearest first, within ``max(1.5, FWHM)`` LR pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ..resample import upsample_nearest
from ..stars import (
    APERTURE_FWHM,
    StarDetection,
    count_peaks,
    detect_stars,
    luminance,
    split_height,
)
from .image import as_float, reference_metrics
from .photometry import aperture_sum, local_backgrounds
from .profiles import PROFILE_RADII_FWHM, SHADOW_BKG_FWHM, radial_profile, shadow_depth
from .sources import grow_labels, hallucinated, match_nearest

__all__ = [
    "METRIC_KEYS",
    "MIN_GEOMETRY_FWHM",
    "StarMetrics",
    "compute_metrics",
    "infer_scale",
    "measure",
]

METRIC_KEYS = (
    "n_stars",
    "flux_ratio_median",
    "flux_ratio_mad",
    "fwhm_ratio_median",
    "centroid_error_px_median",
    "shadow_depth_sigma_median",
    "shadow_depth_sigma_p90",
    "n_hallucinated",
    "n_missed",
    "split_fraction",
    "background_noise_ratio",
)
#: Floor (LR pixels) of the FWHM that sets apertures, annuli, profiles and the match
#: radius, for undersampled images.
MIN_GEOMETRY_FWHM = 1.5


def infer_scale(lr_shape: tuple[int, ...], sr_shape: tuple[int, ...]) -> int:
    """The integer scale between two image shapes (last two axes).

    Raises
    ------
    ValueError
        When the shapes are not an integer multiple of each other on both axes.
    """
    h, w = lr_shape[-2:]
    sh, sw = sr_shape[-2:]
    if h == 0 or w == 0 or sh % h or sw % w or sh // h != sw // w or sh // h < 1:
        raise ValueError(
            f"output shape {tuple(sr_shape[-2:])} is not an integer multiple of the input "
            f"shape {tuple(lr_shape[-2:])} (give --scale)"
        )
    return sh // h


@dataclass
class StarMetrics:
    """The result of :func:`measure`.

    Attributes
    ----------
    summary : dict
        The metrics (keys :data:`METRIC_KEYS`, plus :data:`REFERENCE_KEYS` with a reference).
    stars : astropy.table.Table
        One row per used LR star: ``x``, ``y`` (LR pixels), ``fwhm`` (LR pixels), ``snr``,
        ``saturated``, ``matched``, ``x_sr``, ``y_sr`` (SR pixels), ``flux_ratio``,
        ``fwhm_ratio``, ``centroid_error`` (LR pixels), ``shadow_depth`` (sigma),
        ``rms_sr``/``rms_lr`` (local background RMS, data units), ``peak`` (LR, above
        the background), ``n_peaks_lr``, ``n_peaks_sr``, ``split``, and
        ``profile_sr``/``profile_lr``
        (background-subtracted radial profiles at :data:`PROFILE_RADII_FWHM`, divided by
        the star's LR peak above background).
    scale : int
    lr_detection, sr_detection : StarDetection
    """

    summary: dict
    stars: Table
    scale: int
    lr_detection: StarDetection
    sr_detection: StarDetection
    extra: dict = field(default_factory=dict)


def measure(
    lr: np.ndarray,
    sr: np.ndarray,
    *,
    scale: int | None = None,
    reference: np.ndarray | None = None,
    lr_detection: StarDetection | None = None,
    nsigma: float | None = None,
    saturation: float | None = None,
) -> StarMetrics:
    """Measure star fidelity of ``sr`` (an upscale of ``lr``), see the module notes.

    Parameters
    ----------
    lr : ndarray, shape (H, W) or (C, H, W)
        The input (linear, data units).
    sr : ndarray, shape (sH, sW) or (C, sH, sW)
        The output, same units (pixel values are intensities per pixel area).
    scale : int, optional
        Inferred from the shapes when omitted.
    reference : ndarray, optional
        HR truth, the shape of ``sr``; adds PSNR/SSIM.
    lr_detection : StarDetection, optional
        Reuse a detection of ``lr`` (when one input is compared with many outputs).
    nsigma, saturation
        Passed to :func:`~.stars.detect_stars`.

    Returns
    -------
    StarMetrics
    """
    s = infer_scale(np.shape(lr), np.shape(sr)) if scale is None else int(scale)
    if np.shape(sr)[-2] != s * np.shape(lr)[-2] or np.shape(sr)[-1] != s * np.shape(lr)[-1]:
        raise ValueError(
            f"output shape {np.shape(sr)[-2:]} is not {s} x the input shape {np.shape(lr)[-2:]}"
        )
    kw = {} if nsigma is None else {"nsigma": nsigma}
    lum_lr = luminance(lr).astype(np.float64)
    lum_sr = luminance(sr).astype(np.float64)
    det_lr = lr_detection or detect_stars(lum_lr, saturation=saturation, **kw)
    f_lr = det_lr.fwhm
    det_sr = detect_stars(lum_sr, fwhm=f_lr * s, saturation=saturation, reject_extended=False, **kw)
    cat_l, cat_s = det_lr.catalog, det_sr.catalog
    # Apertures, annuli and profiles scale with the FWHM, with a floor for undersampled
    # images (a 0.8 px FWHM would give sub-pixel apertures).
    f_geo = max(f_lr, MIN_GEOMETRY_FWHM)
    h, w = lum_lr.shape

    # Used LR stars: at least one FWHM from the border.
    xl, yl = np.asarray(cat_l["x"], dtype=float), np.asarray(cat_l["y"], dtype=float)
    used = (xl >= f_lr - 0.5) & (xl <= w - 0.5 - f_lr) & (yl >= f_lr - 0.5) & (yl <= h - 0.5 - f_lr)
    cat_l = cat_l[used]
    xl, yl = xl[used], yl[used]
    sat = np.asarray(cat_l["saturated"], dtype=bool)
    xs_sr, ys_sr = np.asarray(cat_s["x"], dtype=float), np.asarray(cat_s["y"], dtype=float)
    xs_m, ys_m = (xs_sr + 0.5) / s - 0.5, (ys_sr + 0.5) / s - 0.5
    radius = max(1.5, f_geo)
    match = match_nearest(xl, yl, xs_m, ys_m, radius)
    matched = match >= 0
    n = len(cat_l)

    # Positions in SR pixels: the matched SR centroid, else the LR centroid mapped.
    x_sr = np.where(
        matched, xs_sr[np.maximum(match, 0)] if len(xs_sr) else 0.0, (xl + 0.5) * s - 0.5
    )
    y_sr = np.where(
        matched, ys_sr[np.maximum(match, 0)] if len(ys_sr) else 0.0, (yl + 0.5) * s - 0.5
    )

    # Photometry with one geometry (LR FWHM) in both images.
    b_lr, b_sr = local_backgrounds(lum_lr, lum_sr, det_lr, xl, yl, f_geo, s)
    flux_l = aperture_sum(lum_lr, xl, yl, APERTURE_FWHM * f_geo, b_lr)
    flux_s = aperture_sum(lum_sr, x_sr, y_sr, APERTURE_FWHM * f_geo * s, b_sr) / (s * s)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux_ratio = np.where(matched & (flux_l > 0), flux_s / flux_l, np.nan)
        fwhm_sr = (
            np.asarray(cat_s["fwhm"], dtype=float)[np.maximum(match, 0)]
            if len(cat_s)
            else np.full(n, np.nan)
        )
        fwhm_ratio = np.where(matched, fwhm_sr / s / np.asarray(cat_l["fwhm"], dtype=float), np.nan)
    cen_err = np.where(
        matched, np.hypot((x_sr + 0.5) / s - 0.5 - xl, (y_sr + 0.5) / s - 0.5 - yl), np.nan
    )

    # Shadows and splits, star by star on the SR grid; other LR stars' footprints (dilated
    # by one FWHM, on the SR grid) are left out of each profile.
    from scipy import ndimage

    segm_l = det_lr.segmentation
    grown = grow_labels(segm_l, max(1, int(round(f_geo))))
    slices = ndimage.find_objects(segm_l)
    prof_sr = np.full((n, PROFILE_RADII_FWHM.size), np.nan)
    prof_lr = np.full((n, PROFILE_RADII_FWHM.size), np.nan)
    shadow = np.full(n, np.nan)
    rms_s = np.full(n, np.nan)
    rms_l = np.full(n, np.nan)
    n_pk_l = np.zeros(n, dtype=int)
    n_pk_s = np.zeros(n, dtype=int)
    r_px = int(np.ceil(SHADOW_BKG_FWHM[1] * f_geo)) + 1
    for i, row in enumerate(cat_l):
        lab = int(row["id"])
        peak = float(row["peak"])
        # Other stars near this one, on both grids.
        ly0, ly1 = max(int(yl[i]) - r_px, 0), min(int(yl[i]) + r_px + 2, h)
        lx0, lx1 = max(int(xl[i]) - r_px, 0), min(int(xl[i]) + r_px + 2, w)
        g = grown[ly0:ly1, lx0:lx1]
        others_lr = (g > 0) & (g != lab)
        others_sr = upsample_nearest(others_lr, s)
        off_x, off_y = lx0 * s, ly0 * s
        sr_stamp = lum_sr[ly0 * s : ly1 * s, lx0 * s : lx1 * s]
        p_sr, c_sr, _, rms_sr = radial_profile(
            sr_stamp, x_sr[i] - off_x, y_sr[i] - off_y, f_geo * s, others_sr, b_sr[i]
        )
        p_lr, _, _, rms_lr = radial_profile(
            lum_lr[ly0:ly1, lx0:lx1], xl[i] - lx0, yl[i] - ly0, f_geo, others_lr, b_lr[i]
        )
        shadow[i] = shadow_depth(p_sr, c_sr, rms_sr)
        rms_s[i], rms_l[i] = rms_sr, rms_lr
        if peak > 0:
            prof_sr[i] = p_sr / peak
            prof_lr[i] = p_lr / peak
        # Peaks inside the footprint, LR vs SR (the LR footprint on the SR grid).
        sl = slices[lab - 1] if lab - 1 < len(slices) else None
        if sl is None:
            continue
        foot = segm_l[sl] == lab
        bkg = float(row["background"])
        iy, ix = min(max(int(round(yl[i])), 0), h - 1), min(max(int(round(xl[i])), 0), w - 1)
        hgt = split_height(float(det_lr.rms[iy, ix]), peak)
        n_pk_l[i] = count_peaks(lum_lr[sl] - bkg, foot, hgt)
        sr_sl = (slice(sl[0].start * s, sl[0].stop * s), slice(sl[1].start * s, sl[1].stop * s))
        n_pk_s[i] = count_peaks(lum_sr[sr_sl] - bkg, upsample_nearest(foot, s), hgt)
    split = matched & (n_pk_l == 1) & (n_pk_s > 1)
    single = matched & (n_pk_l == 1)

    # Hallucinations: unmatched SR sources outside every dilated LR footprint that are above
    # the LR detection threshold on SR binned back to the LR grid.
    n_hall = hallucinated(det_lr, det_sr, lum_sr, s, match if n else np.zeros(0, int), used)

    good = matched & ~sat
    summary = {
        "n_stars": int(n),
        "flux_ratio_median": _nanmedian(flux_ratio[good]),
        "flux_ratio_mad": _nanmad(flux_ratio[good]),
        "fwhm_ratio_median": _nanmedian(fwhm_ratio[good]),
        "centroid_error_px_median": _nanmedian(cen_err[good]),
        "shadow_depth_sigma_median": _nanmedian(shadow),
        "shadow_depth_sigma_p90": _nanpercentile(shadow, 90),
        "n_hallucinated": int(n_hall),
        "n_missed": int(np.sum(~matched)),
        "split_fraction": as_float(split.sum() / single.sum()) if single.any() else None,
        "background_noise_ratio": as_float(
            float(np.median(det_sr.rms)) / float(np.median(det_lr.rms))
        ),
    }
    if reference is not None:
        summary.update(reference_metrics(sr, reference, lr))
    stars = Table(
        {
            "x": xl,
            "y": yl,
            "fwhm": np.asarray(cat_l["fwhm"], dtype=float),
            "snr": np.asarray(cat_l["snr"], dtype=float),
            "peak": np.asarray(cat_l["peak"], dtype=float),
            "saturated": sat,
            "matched": matched,
            "x_sr": x_sr,
            "y_sr": y_sr,
            "flux_ratio": flux_ratio,
            "fwhm_ratio": fwhm_ratio,
            "centroid_error": cen_err,
            "shadow_depth": shadow,
            "rms_sr": rms_s,
            "rms_lr": rms_l,
            "n_peaks_lr": n_pk_l,
            "n_peaks_sr": n_pk_s,
            "split": split,
            "profile_sr": prof_sr,
            "profile_lr": prof_lr,
        }
    )
    return StarMetrics(
        summary=summary, stars=stars, scale=s, lr_detection=det_lr, sr_detection=det_sr
    )


def _nanmedian(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return as_float(np.median(a)) if a.size else None


def _nanmad(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return as_float(np.median(np.abs(a - np.median(a)))) if a.size else None


def _nanpercentile(a: np.ndarray, q: float) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return as_float(np.percentile(a, q)) if a.size else None


def compute_metrics(
    lr: np.ndarray,
    sr: np.ndarray,
    *,
    scale: int | None = None,
    reference: np.ndarray | None = None,
    **kwargs,
) -> dict:
    """The summary dict of :func:`measure` (keys :data:`METRIC_KEYS` [+ :data:`REFERENCE_KEYS`])."""
    return measure(lr, sr, scale=scale, reference=reference, **kwargs).summary
