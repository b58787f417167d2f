"""Exact flux conservation per input pixel.

A network can move flux: the measured median aperture flux of real, undersampled stars
drops by up to 20-30 % through the shipped default model (``models/default.md``). This
module puts it back, exactly and cheaply. For every input pixel it is applied to, the
``scale x scale`` output pixels that cover it are corrected so that their mean equals
the input pixel's value; binning the output by ``scale`` then gives the input back at
those pixels (up to float32 rounding).

How a pixel's missing flux ``r`` is shared among its output pixels decides what the
correction looks like. It is shared in proportion to ``1 / slope**2``, where ``slope`` is
the derivative of the display stretch at each output pixel
(:meth:`~astrosleuth_astro.stretch.Stretch.slope`): that share is the one that changes the
*stretched* picture least, in the least-squares sense, for the required linear sum. In
practice almost all of a star's missing flux goes to its bright core, where the stretch is
flat, and the faint wings and the sky around it barely move.

Two modes:

``"sources"``
    Only input pixels that hold a source: more than ``SOURCE_SIGMA`` background sigmas
    above the background, grown by ``SOURCE_GROW`` pixels. The sky keeps the network's
    (denoised) values, so stars keep their flux and the background does not get its noise
    back.
``"all"``
    Every finite input pixel. The output binned by ``scale`` is the input: nothing is
    gained or lost anywhere, noise included, so the sky of a noisy input looks blockier
    than the network's output.

Measured with the default model (``bench/model_targets.py --conserve-flux``): see the
README's "Flux" section.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .stretch import Stretch, background_stats

CONSERVE_MODES = ("off", "sources", "all")
#: A pixel holds a source when it lies this many background sigmas above the background.
SOURCE_SIGMA = 5.0
#: Source masks grow by this many input pixels (8-connected), to take in faint wings.
SOURCE_GROW = 1


def resolve_mode(value: bool | str | None) -> str:
    """``conserve_flux`` as one of :data:`CONSERVE_MODES` (``True`` means ``"sources"``)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "sources"
    if isinstance(value, str) and value in CONSERVE_MODES:
        return value
    raise InputError(
        f"--conserve-flux: {value!r} is not a mode (choose from {', '.join(CONSERVE_MODES)})"
    )


def source_threshold(data: np.ndarray, nsigma: float = SOURCE_SIGMA) -> np.ndarray:
    """Per-channel level above which a pixel holds a source.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        Linear input image, any units. NaN and inf are ignored.
    nsigma : float
        Threshold in background sigmas above the background median.

    Returns
    -------
    ndarray, shape (C,), float64
        Background median plus ``nsigma`` sigma (sigma-clipped, MAD-based, from
        :func:`~astrosleuth_astro.stretch.background_stats`), in the units of ``data``.
        A channel with no noise (sigma 0) gets its median: every pixel above it counts.
    """
    med, sig = background_stats(data)
    return np.nan_to_num(med, nan=np.inf) + nsigma * np.nan_to_num(sig, nan=0.0)


def source_mask(lr: np.ndarray, threshold: np.ndarray, grow: int = SOURCE_GROW) -> np.ndarray:
    """Input pixels that hold a source: above ``threshold``, grown by ``grow`` pixels.

    Parameters
    ----------
    lr : ndarray, shape (C, H, W)
        Linear input pixels.
    threshold : ndarray, shape (C,)
        From :func:`source_threshold`.
    grow : int
        Dilation, in pixels (8-connected).

    Returns
    -------
    ndarray of bool, shape (C, H, W)
    """
    above = np.asarray(lr) > np.asarray(threshold, dtype=np.float64)[:, None, None]
    if grow > 0:
        square = np.ones((3, 3), dtype=bool)
        above = np.stack([ndimage.binary_dilation(c, square, iterations=grow) for c in above])
    return above


def block_mean(img: np.ndarray, scale: int) -> np.ndarray:
    """Mean over each ``scale x scale`` block of the last two axes (float64)."""
    *lead, hh, ww = img.shape
    blocks = np.asarray(img, dtype=np.float64).reshape(
        *lead, hh // scale, scale, ww // scale, scale
    )
    return blocks.mean(axis=(-3, -1))


def _spread(values: np.ndarray, scale: int) -> np.ndarray:
    """Each input pixel's value repeated over its ``scale x scale`` footprint."""
    return np.repeat(np.repeat(values, scale, axis=-2), scale, axis=-1)


def conserve_flux(
    native: np.ndarray,
    lr: np.ndarray,
    stretch: Stretch,
    mask: np.ndarray | None = None,
    scale: int = 4,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Correct ``native`` in place so each masked input pixel's footprint keeps its flux.

    Parameters
    ----------
    native : ndarray, shape (C, scale*H, scale*W), float32
        Linear upscaled pixels, in the units of ``lr`` (a band of whole input rows).
    lr : ndarray, shape (C, H, W)
        The input pixels those rows come from, linear and finite where ``mask`` is set.
    stretch : Stretch
        The display stretch the network ran in; it decides how a footprint's missing
        flux is shared among its output pixels (see the module docstring).
    mask : ndarray of bool, shape (C, H, W), optional
        Input pixels to correct (default: every one).
    scale : int
        Output pixels per input pixel along each axis.
    bounds : (ndarray, ndarray), each shape (C,), optional
        Per-channel range no corrected pixel may leave (the input's minimum and maximum,
        for example: a core cannot be pushed past saturation). The flux a pixel cannot
        take goes to the others in its footprint; this is always possible when every
        ``lr`` value lies inside the range. Pixels already outside it stay where they are.

    Returns
    -------
    ndarray
        ``native``, corrected: for every masked input pixel the mean of its
        ``scale x scale`` output pixels equals the input value (float32 rounding aside).
    """
    n_ch, h, w = lr.shape
    if native.shape != (n_ch, scale * h, scale * w):
        raise ValueError(
            f"native has shape {native.shape}, expected {(n_ch, scale * h, scale * w)}"
        )
    target = np.asarray(lr, dtype=np.float64)
    x = np.asarray(native, dtype=np.float64)
    # Share ~ 1/slope**2: the least-squares smallest change in the stretched picture
    # that gives each footprint the required linear mean.
    weight = stretch.slope(x) ** -2.0
    if bounds is not None:
        lo, hi = (np.asarray(b, dtype=np.float64).reshape(-1, 1, 1) for b in bounds)
        free_up, free_down = x < hi, x > lo
    # Each round fills what the last one could not place (pixels that reached a bound);
    # a footprint has scale**2 pixels, so that many rounds always place everything.
    for _ in range(scale * scale if bounds is not None else 1):
        residual = target - block_mean(x, scale)
        if mask is not None:
            residual[~mask] = 0.0
        if not residual.any():
            break
        r = _spread(residual, scale)
        wr = weight
        if bounds is not None:
            wr = np.where(np.where(r > 0, free_up, free_down), weight, 0.0)
        total = block_mean(wr, scale)
        # A footprint with no free pixel cannot move (only when lr is out of range).
        share = np.divide(wr, _spread(total, scale), out=np.zeros_like(wr), where=wr > 0)
        x = x + share * r
        if bounds is None:
            break
        over = (r > 0) & (x > np.maximum(hi, native))
        under = (r < 0) & (x < np.minimum(lo, native))
        if not (over.any() or under.any()):
            break
        x = np.where(over, np.maximum(hi, native), np.where(under, np.minimum(lo, native), x))
        free_up &= ~over
        free_down &= ~under
    native[...] = x
    return native
