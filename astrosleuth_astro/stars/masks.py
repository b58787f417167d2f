"""Star masks and footprint weights, at the input's or an upscaled resolution."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..resample import NATIVE_SCALE, from_native, upsample_bilinear, upsample_nearest
from .detect import DILATE_FWHM, StarDetection, detect_stars


def _footprint_distance(
    segm: np.ndarray, want_labels: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Euclidean distance (pixels) from every pixel to the nearest footprint pixel, and
    optionally that footprint's label."""
    sky = segm == 0
    if not (~sky).any():
        inf = np.full(segm.shape, np.inf, dtype=np.float32)
        return inf, (np.zeros(segm.shape, dtype=np.int32) if want_labels else None)
    if want_labels:
        dist, idx = ndimage.distance_transform_edt(sky, return_indices=True)
        return dist.astype(np.float32), segm[idx[0], idx[1]]
    return ndimage.distance_transform_edt(sky).astype(np.float32), None


def native_weights(
    segm: np.ndarray,
    radius: float,
    scale: int,
    rows: tuple[int, int] | None = None,
    want_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Soft star weights on the ``scale``-x grid, from LR footprints.

    The distance ``d`` (LR pixels) from each pixel to the nearest footprint is computed on
    the LR grid and interpolated bilinearly to the ``scale``-x grid; the weight is 1 for
    ``d <= radius / 2`` and falls with a raised cosine to exactly 0 at ``d = radius``.

    Parameters
    ----------
    segm : ndarray of int, shape (h, W)
        Footprint labels of LR rows that include a margin of at least ``radius + 2`` LR
        rows around the rows wanted (or the whole image).
    radius : float
        Dilation radius in LR pixels.
    scale : int
        Output grid factor.
    rows : (int, int), optional
        Output rows (on the ``scale``-x grid of ``segm``) to return; default all.
    want_labels : bool
        Also return the label of the nearest footprint (nearest-neighbour upsampled).

    Returns
    -------
    weights : ndarray of float32, shape (rows, scale * W)
        In [0, 1]; exactly 0 outside the dilated footprints.
    labels : ndarray of int32 or None
    """

    dist, lab = _footprint_distance(segm, want_labels)
    finite = np.where(np.isfinite(dist), dist, 1e6).astype(np.float32)
    d = upsample_bilinear(finite, scale, rows=rows)
    t = np.clip((d - 0.5 * radius) / max(0.5 * radius, 1e-6), 0.0, 1.0)
    wts = (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)
    wts[d >= radius] = 0.0
    labels = upsample_nearest(lab, scale, rows=rows) if lab is not None else None
    return wts, labels


def star_mask(
    data_or_detection: np.ndarray | StarDetection,
    *,
    factor: float = DILATE_FWHM,
    scale: int = 1,
    band_rows: int = 256,
    **detect_kwargs,
) -> np.ndarray:
    """Boolean mask of the stars' footprints dilated by ``factor`` FWHM.

    Parameters
    ----------
    data_or_detection : ndarray or StarDetection
        An image (stars are detected with ``detect_kwargs``) or a detection.
    factor : float
        Dilation radius in units of the image's FWHM (LR pixels).
    scale : int
        Resolution of the mask: 1 for the input grid, ``s`` for an ``s``-x upscale of it.
        The mask is exactly the set of pixels that star protection (at the same
        ``factor``) may change at that scale: it is built on the native 4x grid and an
        output pixel is masked when any 4x pixel it overlaps is.

    Returns
    -------
    ndarray of bool, shape (scale * H, scale * W)
    """
    det = (
        data_or_detection
        if isinstance(data_or_detection, StarDetection)
        else detect_stars(data_or_detection, **detect_kwargs)
    )
    return _mask_from_segm(det.segmentation, factor * det.fwhm, scale, band_rows)


def _mask_from_segm(segm: np.ndarray, radius: float, scale: int, band_rows: int) -> np.ndarray:
    """Band-by-band mask (bounded memory) at ``scale`` built on the native 4x grid."""

    h, w = segm.shape
    out = np.zeros((scale * h, scale * w), dtype=bool)
    if not segm.any() or radius <= 0:
        return out
    halo = int(np.ceil(radius)) + 2
    for a in range(0, h, band_rows):
        b = min(h, a + band_rows)
        lo, hi = max(0, a - halo), min(h, b + halo)
        rows = (NATIVE_SCALE * (a - lo), NATIVE_SCALE * (b - lo))
        wts, _ = native_weights(segm[lo:hi], radius, NATIVE_SCALE, rows=rows)
        touched = (wts > 0).astype(np.float32)
        red = from_native(touched, NATIVE_SCALE, scale) if scale != NATIVE_SCALE else touched
        out[scale * a : scale * b] = red > 0
    return out
