"""Star detection and per-star measurement (:func:`detect_stars`, :func:`find_stars`).

The method is described in the package docstring (:mod:`astrosleuth_astro.stars`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy import ndimage

from .background import FlatSigmaClip, estimate_background, luminance
from .peaks import segment_stars
from .psf_fit import fit_gaussians

#: Aperture radius for photometry, in FWHM.
APERTURE_FWHM = 2.0


#: Inner and outer radius of the local-background annulus, in FWHM.
ANNULUS_FWHM = (4.0, 6.0)


#: Default dilation of the footprints for masks and star protection, in FWHM.
DILATE_FWHM = 2.0


#: Default detection threshold, in standard deviations of the smoothed image's noise.
DEFAULT_NSIGMA = 5.0


#: FWHM guess (pixels) when none is given: refined from the stars found with it.
FWHM_GUESS = 2.5


#: At most this many sources are fitted for that refinement (an evenly spaced subset).
FWHM_SAMPLE = 300


#: Stars whose fitted FWHM is below this fraction of the image's are not stars
#: (hot pixels, cosmic rays) and are dropped.
MIN_FWHM_FRACTION = 0.4


#: A source whose brightest neighbour pixel is below this fraction of its peak is a hot
#: pixel or a cosmic ray, not a star.
SHARP_FRACTION = 0.15


#: Unsaturated sources whose fitted FWHM exceeds this multiple of the image's are not stars
#: (nebula knots, galaxies) and are dropped.
MAX_FWHM_FRACTION = 2.0


#: Fraction of the peak within which pixels count as a flat (saturated) core.
FLAT_CORE = 0.002


@dataclass
class StarDetection:
    """Stars found in one image.

    Attributes
    ----------
    catalog : astropy.table.Table
        One row per star (see :func:`detect_stars`).
    segmentation : ndarray of int32, shape (H, W)
        Footprints: pixel value ``id`` for the star of that ``id``, 0 for the sky.
    background, rms : ndarray of float32, shape (H, W)
        Background level and noise RMS of the luminance, data units per pixel.
    fwhm : float
        The image's PSF FWHM in pixels: the median over unsaturated stars.
    threshold_sigma : float
        Detection threshold on the smoothed image, in units of the *unsmoothed*
        per-pixel RMS (``nsigma`` times the smoothed-noise ratio).
    """

    catalog: Table
    segmentation: np.ndarray
    background: np.ndarray
    rms: np.ndarray
    fwhm: float
    threshold_sigma: float

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.segmentation.shape)  # type: ignore[return-value]

    @property
    def dilation_radius(self) -> float:
        """Default mask dilation in pixels: ``DILATE_FWHM * fwhm``."""
        return DILATE_FWHM * self.fwhm


def _measure(
    img: np.ndarray,
    back: np.ndarray,
    rms: np.ndarray,
    segm: np.ndarray,
    fwhm_guess: float,
    saturation: float | None,
    bad: np.ndarray,
    max_sources: int | None = None,
) -> Table:
    """Measure every segment of ``segm`` (see :func:`detect_stars` for the columns).

    With ``max_sources``, only an evenly spaced subset of the labels (at most that many)
    is measured; each measurement is the same as in the full run.
    """
    sub = img - back
    labels = np.unique(segm)
    labels = labels[labels > 0]
    if max_sources is not None and labels.size > max_sources:
        labels = labels[:: int(np.ceil(labels.size / max_sources))]
    slices = ndimage.find_objects(segm)
    h, w = img.shape
    half = int(np.ceil(1.5 * fwhm_guess)) + 1
    size = 2 * half + 1
    # The stamps of every source, fitted together afterwards (see fit_gaussians).
    stamps = np.zeros((labels.size, size, size), dtype=np.float32)
    goods = np.zeros((labels.size, size, size), dtype=bool)
    starts = np.zeros((labels.size, 6))  # x0, y0 in the stamp; stamp origin; stamp shape
    found = []
    for lab in labels:
        sl = slices[lab - 1]
        if sl is None:
            continue
        foot = segm[sl] == lab
        vals = np.where(foot, sub[sl], -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(vals)), vals.shape)
        py, px = iy + sl[0].start, ix + sl[1].start
        raw_peak = float(img[py, px])
        peak = float(sub[py, px])
        area = int(foot.sum())
        # Hot pixels and cosmic rays: one pixel far above all its neighbours (a star, even
        # an undersampled or saturated one, lights its neighbours too).
        nb = sub[max(py - 1, 0) : py + 2, max(px - 1, 0) : px + 2].copy()
        nb[py - max(py - 1, 0), px - max(px - 1, 0)] = -np.inf
        if nb.size > 1 and float(nb.max()) < SHARP_FRACTION * peak:
            continue
        # Saturation: a known level is reached, or the core is flat (several pixels at the
        # maximum, clipping as a detector or a stack writes it).
        fp_raw = img[sl][foot]
        flat = int(np.sum(fp_raw >= raw_peak - FLAT_CORE * max(abs(peak), 1e-30)))
        saturated = (saturation is not None and raw_peak >= saturation) or (
            flat >= 3 and peak > 20.0 * float(rms[py, px])
        )
        # Fit stamp around the peak, neighbours and saturated/bad pixels left out.
        y0, y1 = max(py - half, 0), min(py + half + 1, h)
        x0, x1 = max(px - half, 0), min(px + half + 1, w)
        sl_seg = segm[y0:y1, x0:x1]
        good = ((sl_seg == lab) | (sl_seg == 0)) & ~bad[y0:y1, x0:x1]
        if saturated:
            good &= img[y0:y1, x0:x1] < raw_peak - FLAT_CORE * max(abs(peak), 1e-30)
        k = len(found)
        stamps[k, : y1 - y0, : x1 - x0] = sub[y0:y1, x0:x1]
        goods[k, : y1 - y0, : x1 - x0] = good
        starts[k] = (px - x0, py - y0, x0, y0, y1 - y0, x1 - x0)
        found.append((int(lab), sl, foot, peak, area, bool(saturated)))
    k = len(found)
    xs, ys, fwhms = fit_gaussians(
        stamps[:k],
        goods[:k],
        starts[:k, 0],
        starts[:k, 1],
        fwhm_guess,
        (starts[:k, 4], starts[:k, 5]),
    )
    rows = []
    for i, (lab, sl, foot, peak, area, saturated) in enumerate(found):
        if np.isfinite(xs[i]):
            x, y, fwhm = xs[i] + starts[i, 2], ys[i] + starts[i, 3], fwhms[i]
        else:  # moment centroid of the footprint, FWHM left undefined
            wts = np.clip(np.where(foot, sub[sl], 0.0), 0, None)
            tot = float(wts.sum())
            if tot <= 0:
                continue
            gy, gx = np.mgrid[sl]
            x, y, fwhm = float((wts * gx).sum() / tot), float((wts * gy).sum() / tot), np.nan
        rows.append((lab, float(x), float(y), float(fwhm), peak, area, saturated))
    names = ("id", "x", "y", "fwhm", "peak", "area", "saturated")
    if not rows:
        tab = Table(names=names, dtype=(np.int32, float, float, float, float, np.int32, bool))
    else:
        tab = Table(rows=rows, names=names)
    return tab


def local_photometry(
    img: np.ndarray,
    back: np.ndarray,
    segm: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    fwhm: float,
    bad: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Aperture flux with a sigma-clipped local-background annulus (other stars masked).

    Returns ``(flux, local_background)``; the local background falls back to the
    Background2D map where the annulus is empty.
    """
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture

    if len(xs) == 0:
        return np.zeros(0), np.zeros(0)
    pos = np.column_stack([xs, ys])
    r_ap = APERTURE_FWHM * fwhm
    ap = CircularAperture(pos, r=r_ap)
    ann = CircularAnnulus(pos, r_in=ANNULUS_FWHM[0] * fwhm, r_out=ANNULUS_FWHM[1] * fwhm)
    filled = np.where(bad, np.nan, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st_ann = ApertureStats(
            filled, ann, mask=(segm > 0) | bad, sigma_clip=FlatSigmaClip(sigma=3.0, maxiters=10)
        )
        local = np.atleast_1d(np.asarray(st_ann.median, dtype=np.float64))
        ix = np.clip(np.round(xs).astype(int), 0, img.shape[1] - 1)
        iy = np.clip(np.round(ys).astype(int), 0, img.shape[0] - 1)
        fallback = back[iy, ix].astype(np.float64)
        n_ann = np.atleast_1d(np.asarray(st_ann.sum_aper_area.value, dtype=np.float64))
        local = np.where(np.isfinite(local) & (n_ann >= 8), local, fallback)
        st_ap = ApertureStats(np.where(bad, 0.0, img), ap, local_bkg=local)
        flux = np.atleast_1d(np.asarray(st_ap.sum, dtype=np.float64))
    return flux, local


def detect_stars(
    data: np.ndarray,
    *,
    fwhm: float | None = None,
    nsigma: float = DEFAULT_NSIGMA,
    saturation: float | None = None,
    reject_extended: bool = True,
) -> StarDetection:
    """Detect and measure the stars of a linear image.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        Linear image in any units (ADU, e-, ...). Colour cubes are detected on their
        luminance (mean of the planes). NaN/inf pixels are ignored.
    fwhm : float, optional
        Expected PSF FWHM in pixels, used for the smoothing kernel, the background box and
        the fit stamps. By default it is estimated: a first detection with
        ``FWHM_GUESS`` is refined with the median fitted FWHM.
    nsigma : float
        Detection threshold, in standard deviations of the smoothed image's noise.
    saturation : float, optional
        Saturation level in data units (e.g. a FITS ``SATURATE`` card). Without it, stars
        with a flat core (several pixels at the maximum) are flagged.
    reject_extended : bool
        Drop unsaturated sources much broader than the PSF (nebula knots, galaxies). The
        metrics turn this off for an upscaled image, where a star a network broadened
        is still that star.

    Returns
    -------
    StarDetection
        ``catalog`` columns: ``id`` (footprint label), ``x``, ``y`` (0-based pixel
        centres), ``fwhm`` (pixels; NaN where the fit failed), ``flux`` (aperture sum above
        the local background: data units x pixels), ``peak`` (brightest footprint pixel
        above the local background, data units), ``background`` (local background, data
        units per pixel), ``snr`` (peak over the background RMS), ``area`` (footprint
        pixels), ``saturated`` (bool). ``catalog.meta`` holds ``fwhm`` (the image's PSF
        FWHM), ``rms`` (median background RMS), ``threshold_sigma``, ``aperture_radius``
        and the annulus radii (pixels), and the coordinate convention.
    """
    img = luminance(data).astype(np.float64)
    bad = ~np.isfinite(img)
    if bad.all():
        raise ValueError("stars: the image has no finite pixel")
    if bad.any():
        img = np.where(bad, np.nanmedian(img), img)
    guess = float(fwhm) if fwhm else FWHM_GUESS

    # Pass 1: background without a star mask, detection, a first FWHM. Its footprints
    # only mask the stars for the second background and give the FWHM estimate, so they
    # are not deblended (the union of the footprints is the same) and the estimate fits
    # a subset of them (a robust statistic of the sharp end; see _image_fwhm).
    back, rms = estimate_background(img, guess, None, bad)
    segm, thr, _ = segment_stars(img - back, guess, rms, nsigma, bad, deblend=False)
    if fwhm is None and segm.any():
        tab = _measure(img, back, rms, segm, guess, saturation, bad, FWHM_SAMPLE)
        est = _image_fwhm(tab)
        if np.isfinite(est) and not 0.75 < est / guess < 1.33:
            guess = est
    # Pass 2: background with the stars masked (dilated), then the final detection.
    if segm.any():
        grow = int(np.ceil(guess))
        star_pix = ndimage.binary_dilation(segm > 0, iterations=max(grow, 1))
        back, rms = estimate_background(img, guess, star_pix, bad)
        segm, thr, _ = segment_stars(img - back, guess, rms, nsigma, bad)
    tab = _measure(img, back, rms, segm, guess, saturation, bad)
    # Not stars: hot pixels and cosmic rays (much sharper than the PSF), nebula knots and
    # galaxies (much broader, and not saturated), failed fits of unsaturated sources.
    img_fwhm = _image_fwhm(tab)
    if not np.isfinite(img_fwhm):
        img_fwhm = guess
    if len(tab):
        f = np.asarray(tab["fwhm"], dtype=np.float64)
        sat = np.asarray(tab["saturated"], dtype=bool)
        with np.errstate(invalid="ignore"):
            drop = f < MIN_FWHM_FRACTION * img_fwhm
            if reject_extended:
                drop |= ~sat & ((f > MAX_FWHM_FRACTION * img_fwhm) | ~np.isfinite(f))
        if drop.any():
            tab = tab[~drop]
    # Footprints without a catalogue row (dropped above or unmeasurable) are sky.
    segm[(segm > 0) & ~np.isin(segm, np.asarray(tab["id"]))] = 0
    flux, local = local_photometry(img, back, segm, tab["x"], tab["y"], img_fwhm, bad)
    tab["flux"] = flux
    tab["background"] = local
    iy = np.clip(np.round(np.asarray(tab["y"])).astype(int), 0, img.shape[0] - 1)
    ix = np.clip(np.round(np.asarray(tab["x"])).astype(int), 0, img.shape[1] - 1)
    tab["snr"] = np.asarray(tab["peak"]) / rms[iy, ix]
    tab = tab["id", "x", "y", "fwhm", "flux", "peak", "background", "snr", "area", "saturated"]
    tab["x"].unit = tab["y"].unit = tab["fwhm"].unit = "pix"
    tab.meta.update(
        {
            "fwhm": float(img_fwhm),
            "rms": float(np.median(rms)),
            "threshold_sigma": float(thr),
            "nsigma": float(nsigma),
            "aperture_radius": float(APERTURE_FWHM * img_fwhm),
            "annulus_radii": [float(ANNULUS_FWHM[0] * img_fwhm), float(ANNULUS_FWHM[1] * img_fwhm)],
            "coords": "0-based pixel centres",
        }
    )
    return StarDetection(
        catalog=tab,
        segmentation=segm,
        background=back.astype(np.float32),
        rms=rms.astype(np.float32),
        fwhm=float(img_fwhm),
        threshold_sigma=float(thr),
    )


def _image_fwhm(tab: Table) -> float:
    """The image's PSF FWHM (pixels; NaN if no star), from the fitted FWHMs of the
    unsaturated sources.

    Why not the plain median: nebula knots and galaxies are detected too -- in a small
    nebulous field more of them than stars -- and they are broader than the PSF, while
    nothing real is sharper than it. So the FWHM is taken at the sharp end of the
    distribution: the first (sharpest) window of a factor ``1.3`` in FWHM that holds at
    least 15 % of the sources (3 at least), ignoring sub-pixel hot-pixel fits; the FWHM is
    the median of that window.
    """
    if len(tab) == 0:
        return float("nan")
    f = np.asarray(tab["fwhm"], dtype=np.float64)
    ok = np.isfinite(f) & ~np.asarray(tab["saturated"], dtype=bool) & (f >= 0.7)
    if not ok.any():
        ok = np.isfinite(f)
    if not ok.any():
        return float("nan")
    lf = np.sort(np.log(f[ok]))
    counts = np.searchsorted(lf, lf + np.log(1.3), side="right") - np.arange(lf.size)
    need = min(max(3, int(np.ceil(0.15 * lf.size))), int(counts.max()))
    best = int(np.argmax(counts >= need))
    window = lf[best : best + counts[best]]
    return float(np.exp(np.median(window)))


def find_stars(data: np.ndarray, **kwargs) -> Table:
    """The star catalogue of :func:`detect_stars` alone (same parameters)."""
    return detect_stars(data, **kwargs).catalog
