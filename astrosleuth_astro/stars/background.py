"""The sky under the stars: luminance, background and noise maps, PSF smoothing."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import SigmaClip, sigma_clipped_stats
from scipy import ndimage

#: Smallest box of Background2D (pixels); smaller images use global statistics.
MIN_BOX = 16


def luminance(data: np.ndarray) -> np.ndarray:
    """The detection image: the image itself (2-D) or the mean of a cube's planes.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        Linear image in any units.

    Returns
    -------
    ndarray of float32, shape (H, W)
        Same units as ``data`` (a mean, not a sum, so levels and noise keep their units).
    """
    arr = np.asarray(data)
    if arr.ndim == 3:
        if arr.shape[0] == 1:
            return np.asarray(arr[0], dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            return np.nanmean(arr, axis=0, dtype=np.float64).astype(np.float32)
    if arr.ndim != 2:
        raise ValueError(f"stars: expected a (H, W) or (C, H, W) image, got shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32)


def _box_size(shape: tuple[int, int], fwhm: float) -> int | None:
    """Background2D box (pixels) for an image of ``shape``; None for global statistics."""
    small = min(shape)
    if small < 3 * MIN_BOX:
        return None
    box = int(np.clip(8.0 * fwhm, MIN_BOX, 256))
    return int(min(box, small // 3))


def estimate_background(
    img: np.ndarray, fwhm: float, mask: np.ndarray | None, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Background and RMS maps (float32) of ``img`` with ``mask`` (stars) and ``bad`` left out."""
    box = _box_size(img.shape, fwhm)
    ignore = bad if mask is None else (bad | mask)
    if box is not None:
        from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bkg = Background2D(
                    img,
                    box,
                    mask=ignore if ignore.any() else None,
                    filter_size=(3, 3),
                    sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
                    bkg_estimator=MedianBackground(),
                    bkg_rms_estimator=MADStdBackgroundRMS(),
                    exclude_percentile=50.0,
                )
            back = np.asarray(bkg.background, dtype=np.float32)
            rms = np.asarray(bkg.background_rms, dtype=np.float32)
            if np.all(np.isfinite(back)) and np.all(np.isfinite(rms)):
                return back, _positive(rms)
        except ValueError:  # every box masked: fall through to global statistics
            pass
    sample = img[~ignore] if (~ignore).any() else img[~bad]
    _, med, std = sigma_clipped_stats(sample, sigma=3.0, maxiters=10, stdfunc="mad_std")
    back = np.full(img.shape, med, dtype=np.float32)
    rms = np.full(img.shape, std, dtype=np.float32)
    return back, _positive(rms)


def _positive(rms: np.ndarray) -> np.ndarray:
    """RMS with zeros (noise-free data) replaced by a tiny positive floor."""
    good = rms[rms > 0]
    floor = float(np.median(good)) * 1e-3 if good.size else 1e-12
    return np.maximum(rms, max(floor, 1e-12)).astype(np.float32)


def smooth_psf(img: np.ndarray, fwhm: float) -> np.ndarray:
    """Smooth with a normalised Gaussian of the PSF's FWHM (pixels): the matched filter for
    detection. Separable, so the cost does not grow with the FWHM squared (upscaled images
    have 4x wider stars)."""
    sigma = max(float(fwhm), 0.5) / 2.3548
    return ndimage.gaussian_filter(img, sigma, mode="reflect", truncate=3.0)


class FlatSigmaClip(SigmaClip):
    """SigmaClip that clips a whole N-d cutout through astropy's compiled loop.

    ``ApertureStats`` clips each aperture's 2-D cutout with ``axis=None``, which astropy
    runs in Python-level numpy; clipping the same values flattened along ``axis=0`` takes
    its compiled loop instead, with the same masks (tested). Detection of seven test images
    (four real, three simulated) took 10.9 s against 13.1 s, with identical catalogues.
    The mask comes back in the cutout's shape.
    """

    def __call__(self, data, axis=None, masked=True, return_bounds=False, copy=True):
        if axis is None and masked and not return_bounds and np.ndim(data) > 1:
            shape = np.shape(data)
            flat = np.ma.masked_array(data).reshape(-1)
            return super().__call__(flat, axis=0, masked=True, copy=copy).reshape(shape)
        return super().__call__(
            data, axis=axis, masked=masked, return_bounds=return_bounds, copy=copy
        )
