"""Peaks inside a footprint: split stars (two peaks where one star was) and deblending."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

from .background import smooth_psf

#: Deblending contrast: a component needs this fraction of its parent's flux
#: (SExtractor's DEBLEND_MINCONT default), so noise and spikes are not split off.
DEBLEND_CONTRAST = 0.005


#: A secondary maximum inside a star's footprint counts (a split star, a "cluster") when it
#: stands this many background sigmas above its saddle ...
SPLIT_SIGMA = 5.0


#: ... and at least this fraction of the star's peak (so noise on a bright star does not).
SPLIT_FRACTION = 0.05


def split_height(rms: float, peak: float) -> float:
    """Prominence a maximum needs to count as a peak of its own (data units).

    Parameters
    ----------
    rms : float
        Background noise RMS at the star, data units per pixel.
    peak : float
        The star's peak above the background, data units.
    """
    return max(SPLIT_SIGMA * float(rms), SPLIT_FRACTION * float(peak), 1e-12)


def count_peaks(img: np.ndarray, region: np.ndarray, h: float) -> int:
    """Number of local maxima of ``img`` inside ``region`` that stand ``h`` above their
    surroundings (regional maxima of dynamic >= h; a flat top counts once).

    Parameters
    ----------
    img : ndarray, shape (ny, nx)
        Background-subtracted stamp.
    region : ndarray of bool, shape (ny, nx)
        Where to count (a star's footprint).
    h : float
        Minimum prominence, in the units of ``img`` (e.g. a few noise sigmas).
    """
    from skimage.morphology import h_maxima

    if not region.any():
        return 0
    # Only the region's bounding box matters: every pixel outside the region is set below
    # all of it, so it can neither hold a maximum nor raise a saddle between two. One ring
    # of such pixels is kept around the box when the stamp had any: h_maxima finds no
    # maximum at all in an array whose range is below h, which the low pixels prevent.
    outside = not region.all()
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    img, region = img[box], region[box]
    if outside:
        img, region = np.pad(img, 1), np.pad(region, 1)
    work = np.where(region, img, np.nanmin(img[region]) - h).astype(np.float64)
    work = np.nan_to_num(work, nan=float(np.nanmin(work)))
    # One local maximum (no tie) means one regional maximum, which h_maxima always keeps
    # when lower pixels exist: the answer is 1 without the reconstruction.
    if outside and np.count_nonzero(_local_maxima(work, region)) == 1:
        return 1
    peaks = h_maxima(work, max(float(h), 1e-12)).astype(bool) & region
    _, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    return int(n)


def segment_stars(
    sub: np.ndarray,
    fwhm: float,
    rms: np.ndarray,
    nsigma: float,
    bad: np.ndarray,
    deblend: bool = True,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Segmentation (deblended unless ``deblend`` is False) of a background-subtracted image.

    Returns the label image, the threshold in unsmoothed-RMS units, and the smoothed image.
    """
    from photutils.segmentation import deblend_sources, detect_sources

    filled = np.where(bad, 0.0, sub).astype(np.float32)
    smooth = smooth_psf(filled, fwhm)
    # The smoothed image's noise, measured on it (white or correlated noise alike), in units
    # of the per-pixel RMS map.
    ratio = smooth / rms
    sample = ratio[~bad]
    step = max(1, int(np.sqrt(sample.size / 1_000_000)))
    # axis=0 on the 1-D sample: astropy's compiled loop, the same clipped statistics.
    _, _, noise = sigma_clipped_stats(
        sample[::step], sigma=3.0, maxiters=10, stdfunc="mad_std", axis=0
    )
    noise = float(noise) if np.isfinite(noise) and noise > 0 else 1.0
    thr_sigma = nsigma * noise
    npix = max(5, int(round(np.pi / 4.0 * fwhm * fwhm)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = detect_sources(smooth, thr_sigma * rms, npix, mask=bad if bad.any() else None)
        if segm is None:
            return np.zeros(sub.shape, dtype=np.int32), thr_sigma, smooth
        if not deblend:
            return np.asarray(segm.data, dtype=np.int32), thr_sigma, smooth
        candidates = _deblend_candidates(smooth, segm.data)
        if candidates.size:
            try:
                segm = deblend_sources(
                    smooth,
                    segm,
                    npix,
                    labels=candidates,
                    n_levels=32,
                    contrast=DEBLEND_CONTRAST,
                    progress_bar=False,
                )
            except ValueError:  # deblending can refuse odd segments; keep them whole
                pass
    return np.asarray(segm.data, dtype=np.int32), thr_sigma, smooth


def _deblend_candidates(smooth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels of the segments that deblending could split: those with two or more local
    maxima of ``smooth`` inside them.

    photutils splits a segment only where one of its multi-threshold levels has two
    components, and every component of a level holds a local maximum of the segment
    (its brightest pixel). A segment with a single maximum therefore comes back whole, so
    passing only the others as ``labels`` gives the same segmentation, labels included
    (new labels are numbered from the image's largest label either way), without
    thresholding every star 32 times. Ties count as maxima, which only adds candidates.
    Segments are 8-connected components, so no two touch and each pixel's neighbourhood
    outside its own segment is masked out.
    """
    peaks = _local_maxima(smooth, labels > 0)
    counts = np.bincount(labels[peaks], minlength=int(labels.max()) + 1)
    return np.nonzero(counts >= 2)[0]


def _local_maxima(img: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Pixels of ``inside`` that are >= each of their 8 neighbours inside it (ties
    included; pixels outside ``inside`` are ignored)."""
    work = np.where(inside, img, -np.inf)
    return inside & (work >= ndimage.maximum_filter(work, size=3, mode="constant", cval=-np.inf))
