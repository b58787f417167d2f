"""Star maps of a training pair, for the star-aware loss (numpy + photutils, no torch).

A bank item's stars are found once, when the item is made, on its stretched **HR target**:

1. the sky background and its noise are measured with photutils ``Background2D`` on the
   LR luminance (the observation the network sees; the HR truth of a simulated field is
   noise-free, so its own noise says nothing about which stars are visible);
2. the HR luminance, smoothed by a Gaussian of about one LR pixel, is thresholded at
   ``background + nsigma * rms`` (both upsampled to the HR grid) with photutils
   ``detect_sources``; each connected source is one footprint (blended stars share one);
3. a Euclidean distance transform gives, for every HR pixel, the distance to the nearest
   footprint pixel (in **LR pixels**, 0 inside a footprint) and that footprint's label.

The two planes are cropped, flipped and rotated with the pair; the loss derives its zones
from them (core: distance 0; ring: ``0 < d <= ring``; flux region: ``d <= radius``).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

#: Distances are capped here (LR pixels): beyond it nothing is a star zone.
MAX_DISTANCE = 64.0


def star_maps(lr: np.ndarray, hr: np.ndarray, scale: int, nsigma: float = 3.0) -> np.ndarray:
    """Distance-to-star and nearest-star-label planes of a stretched pair.

    Parameters
    ----------
    lr : ndarray, shape (C, h, w)
        Stretched LR image in [0, 1] (the background and noise are measured on it).
    hr : ndarray, shape (C, h * scale, w * scale)
        Stretched HR target in [0, 1] (the stars are found on it).
    scale : int
        HR pixels per LR pixel.
    nsigma : float
        Threshold in LR background sigmas (per LR pixel).

    Returns
    -------
    ndarray of float32, shape (2, h * scale, w * scale)
        Plane 0: distance in LR pixels from each HR pixel to the nearest footprint pixel
        (0 inside footprints, capped at ``MAX_DISTANCE``; ``MAX_DISTANCE`` everywhere when
        no star is found). Plane 1: that footprint's label (1, 2, ...; 0 where the
        distance is capped).
    """
    from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground
    from photutils.segmentation import detect_sources

    lum_lr = np.asarray(lr, dtype=np.float64).mean(axis=0)
    lum_hr = np.asarray(hr, dtype=np.float64).mean(axis=0)
    h, w = lum_lr.shape
    box = int(max(8, min(h, w) // 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bkg = Background2D(
                lum_lr,
                box,
                filter_size=(3, 3),
                bkg_estimator=MedianBackground(),
                bkg_rms_estimator=MADStdBackgroundRMS(),
                exclude_percentile=50.0,
            )
            back, rms = np.asarray(bkg.background), np.asarray(bkg.background_rms)
        except ValueError:  # too few usable boxes: global statistics
            med = float(np.median(lum_lr))
            back = np.full_like(lum_lr, med)
            rms = np.full_like(lum_lr, 1.4826 * float(np.median(np.abs(lum_lr - med))))
    rms = np.maximum(rms, 1e-4)  # a flat (noise-free, clipped) LR must not detect everything
    thr_lr = back + nsigma * rms
    thr = ndimage.zoom(thr_lr, scale, order=1, mode="nearest", grid_mode=True)
    smooth = ndimage.gaussian_filter(lum_hr, 0.5 * scale, mode="reflect", truncate=3.0)
    out = np.empty((2,) + lum_hr.shape, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = detect_sources(smooth, thr, npixels=scale * scale)
    if segm is None:
        out[0] = MAX_DISTANCE
        out[1] = 0.0
        return out
    labels = np.asarray(segm.data, dtype=np.int32)
    dist, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    dist = np.minimum(dist / scale, MAX_DISTANCE)
    near = labels[idx[0], idx[1]]
    out[0] = dist
    out[1] = np.where(dist < MAX_DISTANCE, near, 0)
    return out
