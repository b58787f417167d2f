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
    stars' fluxes (see :func:`_local_backgrounds`).
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

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from .resample import upsample_nearest
from .sim import area_downsample
from .stars import (
    ANNULUS_FWHM,
    APERTURE_FWHM,
    DILATE_FWHM,
    MAX_FWHM_FRACTION,
    FlatSigmaClip,
    StarDetection,
    _photometry,
    count_peaks,
    detect_stars,
    luminance,
    smooth_psf,
    split_height,
)
from .stretch import background_stats, fit_stretch

__all__ = [
    "METRIC_KEYS",
    "REFERENCE_KEYS",
    "PROFILE_RADII_FWHM",
    "StarMetrics",
    "compute_metrics",
    "infer_scale",
    "measure",
    "radial_profile",
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
REFERENCE_KEYS = ("psnr_linear", "psnr_stretched", "ssim_stretched")

#: Radial profile bin width, in FWHM.
PROFILE_BIN_FWHM = 0.25
#: Where a shadow is looked for, in FWHM from the star's centre.
SHADOW_ZONE_FWHM = (1.0, 4.0)
#: Local background annulus of the shadow measurement, in FWHM (beyond the shadow zone).
SHADOW_BKG_FWHM = (4.5, 6.5)
#: Bin centres (in FWHM) of the stored radial profiles.
PROFILE_RADII_FWHM = np.arange(0.0, SHADOW_BKG_FWHM[1], PROFILE_BIN_FWHM) + PROFILE_BIN_FWHM / 2
#: Floor (LR pixels) of the FWHM that sets apertures, annuli, profiles and the match
#: radius, for undersampled images.
MIN_GEOMETRY_FWHM = 1.5
#: A reference whose background sigma is below this fraction of the input's is noise-free.
NOISE_FREE = 0.1
#: Least number of pixels for a profile bin to count.
MIN_BIN_PIXELS = 3


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


def _as_float(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


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


def _match(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, radius: float
) -> np.ndarray:
    """One-to-one nearest-first matching; ``out[i]`` = index in b matched to a[i], or -1."""
    from scipy.spatial import cKDTree

    out = np.full(len(xa), -1, dtype=int)
    if len(xa) == 0 or len(xb) == 0:
        return out
    tree = cKDTree(np.column_stack([xb, yb]))
    pairs = tree.query_ball_point(np.column_stack([xa, ya]), r=radius)
    cand = [
        (math.hypot(xa[i] - xb[j], ya[i] - yb[j]), i, j) for i, js in enumerate(pairs) for j in js
    ]
    used_b: set[int] = set()
    for _, i, j in sorted(cand):
        if out[i] < 0 and j not in used_b:
            out[i] = j
            used_b.add(j)
    return out


def _local_backgrounds(
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
    _, b_lr = _photometry(
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


def _aperture_sum(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, r: float, bkg) -> np.ndarray:
    """Exact-overlap circular aperture sums of ``img - bkg`` (``bkg`` per star)."""
    from photutils.aperture import ApertureStats, CircularAperture

    if len(xs) == 0:
        return np.zeros(0)
    ap = CircularAperture(np.column_stack([xs, ys]), r=r)
    st = ApertureStats(np.nan_to_num(img, nan=0.0), ap, local_bkg=np.asarray(bkg, dtype=float))
    return np.atleast_1d(np.asarray(st.sum, dtype=np.float64))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio of ``a`` against ``b``, in dB, over their finite pixels.

    The one PSNR of the package (metrics, ``bench``, the trainer's validation and the
    benchmarks use it). ``peak`` is in the images' units (1.0 for stretched data).
    Returns inf for identical images and nan when no pixel is finite in both.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    mse = float(np.mean((a[ok].astype(np.float64) - b[ok]) ** 2)) if ok.any() else float("nan")
    if not np.isfinite(mse):
        return float("nan")
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(peak * peak / mse)


def reference_metrics(sr: np.ndarray, hr: np.ndarray, lr: np.ndarray | None = None) -> dict:
    """``psnr_linear``, ``psnr_stretched`` and ``ssim_stretched`` of SR against HR.

    Parameters
    ----------
    sr, hr : ndarray, shape (H, W) or (C, H, W)
        Same shape, linear data in the same units.
    lr : ndarray, optional
        The input. Only used when HR is noise-free (a simulator's truth): an
        autostretch fitted on a noise-free background clips at the background itself and
        turns any noise into full-scale errors, so the stretch is then fitted on LR
        instead, as the pipeline and the trainer fit theirs.

    Notes
    -----
    One stretch (:func:`~.stretch.fit_stretch`, ``"auto"``) is fitted on HR and applied
    to both images; HR counts as noise-free when its background sigma is below
    ``NOISE_FREE`` times that of LR.
    """
    from skimage.metrics import structural_similarity

    sr = np.asarray(sr, dtype=np.float32)
    hr = np.asarray(hr, dtype=np.float32)
    if sr.shape != hr.shape:
        raise ValueError(f"reference: shape {hr.shape} differs from the output's {sr.shape}")
    sr3 = sr if sr.ndim == 3 else sr[np.newaxis]
    hr3 = hr if hr.ndim == 3 else hr[np.newaxis]
    finite = hr3[np.isfinite(hr3)]
    peak = float(finite.max() - finite.min()) if finite.size else float("nan")
    st = fit_stretch(hr3, "auto")
    if lr is not None:
        _, sig_hr = background_stats(hr3)
        _, sig_lr = background_stats(lr)
        if np.nanmedian(sig_hr) < NOISE_FREE * np.nanmedian(sig_lr):
            st = fit_stretch(lr, "auto")
    s_sr = st.forward(np.nan_to_num(sr3, nan=0.0))
    s_hr = st.forward(np.nan_to_num(hr3, nan=0.0))
    ssim = float(
        np.mean(
            [structural_similarity(s_sr[c], s_hr[c], data_range=1.0) for c in range(s_sr.shape[0])]
        )
    )
    return {
        "psnr_linear": _as_float(psnr(sr3, hr3, peak)),
        "psnr_stretched": _as_float(psnr(s_sr, s_hr, 1.0)),
        "ssim_stretched": _as_float(ssim),
    }


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
    match = _match(xl, yl, xs_m, ys_m, radius)
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
    b_lr, b_sr = _local_backgrounds(lum_lr, lum_sr, det_lr, xl, yl, f_geo, s)
    flux_l = _aperture_sum(lum_lr, xl, yl, APERTURE_FWHM * f_geo, b_lr)
    flux_s = _aperture_sum(lum_sr, x_sr, y_sr, APERTURE_FWHM * f_geo * s, b_sr) / (s * s)
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
    grown = _grow_labels(segm_l, max(1, int(round(f_geo))))
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
    n_hall = _hallucinated(det_lr, det_sr, lum_sr, s, match if n else np.zeros(0, int), used)

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
        "split_fraction": _as_float(split.sum() / single.sum()) if single.any() else None,
        "background_noise_ratio": _as_float(
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


def _grow_labels(segm: np.ndarray, pixels: int) -> np.ndarray:
    """Labels dilated by ``pixels`` (grey dilation: where footprints meet, the larger label
    wins; only used to tell "this star" from "another star")."""
    from scipy import ndimage

    size = 2 * pixels + 1
    yy, xx = np.mgrid[-pixels : pixels + 1, -pixels : pixels + 1]
    disk = (xx * xx + yy * yy) <= pixels * pixels
    grown = ndimage.grey_dilation(segm, footprint=disk, mode="constant", cval=0)
    return np.where(segm > 0, segm, grown) if size > 1 else segm


def _hallucinated(
    det_lr: StarDetection,
    det_sr: StarDetection,
    lum_sr: np.ndarray,
    s: int,
    match: np.ndarray,
    used: np.ndarray,
) -> int:
    """Count SR sources that are unmatched, away from LR stars, and above the LR threshold."""
    from scipy import ndimage

    cat_s = det_sr.catalog
    if len(cat_s) == 0:
        return 0
    matched_sr = set(int(j) for j in match if j >= 0)
    h, w = det_lr.shape
    # Every LR star's footprint (used or not) dilated by DILATE_FWHM FWHM: SR sources there
    # are pieces of that star (splits), not new stars.
    near = ndimage.distance_transform_edt(det_lr.segmentation == 0) <= DILATE_FWHM * det_lr.fwhm
    binned = area_downsample(lum_sr, s)
    smooth = smooth_psf(binned - det_lr.background, det_lr.fwhm)
    thr = det_lr.threshold_sigma * det_lr.rms
    # As LR detection: connected pixels above the threshold, at least n_pixels of them.
    comp, _ = ndimage.label(smooth >= thr, structure=np.ones((3, 3)))
    sizes = np.bincount(comp.ravel())
    npix = max(5, int(round(np.pi / 4.0 * det_lr.fwhm**2)))
    big = sizes >= npix
    big[0] = False
    count = 0

    broad = MAX_FWHM_FRACTION * det_lr.fwhm * s
    for j, row in enumerate(cat_s):
        if j in matched_sr:
            continue
        # Nebula knots and galaxies are not stars in LR either (detect_stars drops them).
        if np.isfinite(row["fwhm"]) and row["fwhm"] > broad and not row["saturated"]:
            continue
        x = (float(row["x"]) + 0.5) / s - 0.5
        y = (float(row["y"]) + 0.5) / s - 0.5
        ix, iy = int(round(x)), int(round(y))
        if not (0 <= ix < w and 0 <= iy < h) or near[iy, ix]:
            continue
        y0, y1, x0, x1 = max(iy - 1, 0), min(iy + 2, h), max(ix - 1, 0), min(ix + 2, w)
        if np.any(big[comp[y0:y1, x0:x1]]):
            count += 1
    return count


def _nanmedian(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return _as_float(np.median(a)) if a.size else None


def _nanmad(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return _as_float(np.median(np.abs(a - np.median(a)))) if a.size else None


def _nanpercentile(a: np.ndarray, q: float) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return _as_float(np.percentile(a, q)) if a.size else None


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
