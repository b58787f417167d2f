"""LR and SR sources: one-to-one matching, grown footprints, and the count of SR sources
that are not LR stars (the ``n_missed`` and ``n_hallucinated`` keys of
:func:`~astrosleuth_astro.metrics.measure`)."""

from __future__ import annotations

import math

import numpy as np

from ..sim import area_downsample
from ..stars.background import smooth_psf
from ..stars.detect import DILATE_FWHM, MAX_FWHM_FRACTION, StarDetection


def match_nearest(
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


def grow_labels(segm: np.ndarray, pixels: int) -> np.ndarray:
    """Labels dilated by ``pixels`` (grey dilation: where footprints meet, the larger label
    wins; only used to tell "this star" from "another star")."""
    from scipy import ndimage

    size = 2 * pixels + 1
    yy, xx = np.mgrid[-pixels : pixels + 1, -pixels : pixels + 1]
    disk = (xx * xx + yy * yy) <= pixels * pixels
    grown = ndimage.grey_dilation(segm, footprint=disk, mode="constant", cval=0)
    return np.where(segm > 0, segm, grown) if size > 1 else segm


def hallucinated(
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
