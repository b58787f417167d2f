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
    Input pixels that hold a source get their flux back exactly: those where the
    network's own (denoised) value is more than ``SOURCE_SIGMA`` background sigmas above
    the background (deciding on the noisy input would favour pixels whose noise is
    positive, and add flux). Their neighbours (the input's sources grown by
    ``SOURCE_GROW`` pixels, the faint wings) get back the fraction ``s**2 / (s**2 +
    sigma**2)`` of it, ``s`` being the network's signal there above the background and
    ``sigma`` the background noise: a wing pixel whose input value is mostly noise keeps
    the network's value instead of getting the noise back as a dark or bright 4x4 block
    (see :func:`source_gain`). The sky gets one constant per channel and band of rows: the mean offset
    between the input and the network there (:func:`keep_sky_level`), so sources do not
    stand on a step; none of the sky's noise comes back.
``"all"``
    Every finite input pixel, exactly. The output binned by ``scale`` is the input:
    nothing is gained or lost anywhere, noise included, so the sky of a noisy input looks
    blockier than the network's output.

Measured with the default model (``bench/model_targets.py --conserve-flux``): see the
README's "Flux conservation" section.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import OptionError
from .stretch import Stretch, background_stats

CONSERVE_MODES = ("off", "consistent", "sources", "all")
#: The mode every entry point uses unless told otherwise.
DEFAULT_MODE = "consistent"
#: A pixel holds a source when the network puts it this many background sigmas above the
#: background.
SOURCE_SIGMA = 5.0
#: Source masks grow by this many input pixels (8-connected), to take in faint wings.
SOURCE_GROW = 1


def resolve_mode(value: bool | str | None) -> str:
    """``conserve_flux`` as one of :data:`CONSERVE_MODES`: ``None`` is the default
    (:data:`DEFAULT_MODE`), ``False`` ``"off"`` and ``True`` ``"sources"``."""
    if value is None:
        return DEFAULT_MODE
    if value is False:
        return "off"
    if value is True:
        return "sources"
    if isinstance(value, str) and value in CONSERVE_MODES:
        return value
    raise OptionError(
        "conserve_flux", value, f"not a mode (choose from {', '.join(CONSERVE_MODES)})"
    )


def source_levels(
    data: np.ndarray,
    nsigma: float = SOURCE_SIGMA,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel background, noise, and the level above which a pixel holds a source.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        Linear input image, any units. NaN and inf are ignored.
    nsigma : float
        Source level in background sigmas above the background median.
    stats : (ndarray, ndarray), optional
        :func:`~astrosleuth_astro.stretch.background_stats` of ``data``, when the caller
        has it already (the costly part: a sigma-clipped sample).

    Returns
    -------
    background, sigma, threshold : ndarray, shape (C,), float64
        Sigma-clipped background median and MAD-based noise
        (:func:`~astrosleuth_astro.stretch.background_stats`), and ``background + nsigma
        * sigma``, in the units of ``data``. A channel with no finite pixel gets an
        infinite threshold (no source).
    """
    med, sig = background_stats(data) if stats is None else stats
    med = np.nan_to_num(med, nan=np.inf)
    sig = np.nan_to_num(sig, nan=0.0)
    return med, sig, med + nsigma * sig


def _column(values: np.ndarray) -> np.ndarray:
    """(C,) -> (C, 1, 1) float64, to broadcast over a (C, H, W) image."""
    return np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)


def source_mask(lr: np.ndarray, threshold: np.ndarray, grow: int = SOURCE_GROW) -> np.ndarray:
    """Input pixels that hold a source: above ``threshold``, grown by ``grow`` pixels.

    Parameters
    ----------
    lr : ndarray, shape (C, H, W)
        Linear input pixels.
    threshold : ndarray, shape (C,)
        From :func:`source_levels`.
    grow : int
        Dilation, in pixels (8-connected).

    Returns
    -------
    ndarray of bool, shape (C, H, W)
    """
    above = np.asarray(lr) > _column(threshold)
    if grow > 0:
        square = np.ones((3, 3), dtype=bool)
        above = np.stack([ndimage.binary_dilation(c, square, iterations=grow) for c in above])
    return above


def source_gain(
    level: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray,
    threshold: np.ndarray,
    support: np.ndarray,
) -> np.ndarray:
    """The share of each input pixel's missing flux that ``"sources"`` puts back.

    The decision is taken on ``level``, the network's own (denoised) value of each input
    pixel, not on the input value: a choice made on the input would favour pixels whose
    noise is positive (they cross the threshold, or look brighter) and so add flux.

    Parameters
    ----------
    level : ndarray, shape (C, H, W)
        The network's output averaged over each input pixel's footprint, linear.
    background, sigma, threshold : ndarray, shape (C,)
        Background level and noise per channel, and the source level
        (:func:`source_levels`), in the units of ``level``.
    support : ndarray of bool, shape (C, H, W)
        Where corrections may happen at all: the input's sources, grown
        (:func:`source_mask`).

    Returns
    -------
    ndarray, shape (C, H, W), float64
        1 where ``level`` is above ``threshold``; elsewhere on ``support``
        ``s**2 / (s**2 + sigma**2)`` with ``s = max(level - background, 0)``; 0 off it.
    """
    x = np.asarray(level, dtype=np.float64)
    core = x > _column(threshold)
    signal = np.maximum(x - _column(background), 0.0)
    noise2 = _column(sigma) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        wing = np.where(signal > 0, signal**2 / (signal**2 + noise2), 0.0)
    return np.where(core, 1.0, np.where(support, wing, 0.0))


def block_mean(img: np.ndarray, scale: int) -> np.ndarray:
    """Mean over each ``scale x scale`` block of the last two axes (float64)."""
    *lead, hh, ww = img.shape
    # Column k of every block added in turn, then row k, accumulating in float64 without
    # a float64 copy of the image: the same sums in the same order as a reduction over the
    # block axes, at a fraction of the cost (numpy's reductions over an axis of 2-4
    # elements are slow).
    cols = np.asarray(img).reshape(*lead, hh, ww // scale, scale)
    acc = cols[..., 0].astype(np.float64)
    for k in range(1, scale):
        acc += cols[..., k]
    rows = acc.reshape(*lead, hh // scale, scale, ww // scale)
    sums = rows[..., 0, :].copy()
    for k in range(1, scale):
        sums += rows[..., k, :]
    return sums / (scale * scale)


def conserve_flux(
    native: np.ndarray,
    lr: np.ndarray,
    stretch: Stretch,
    gain: np.ndarray | None = None,
    scale: int = 4,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Correct ``native`` in place so each input pixel's footprint gets its flux back.

    Parameters
    ----------
    native : ndarray, shape (C, scale*H, scale*W), float32
        Linear upscaled pixels, in the units of ``lr`` (a band of whole input rows).
    lr : ndarray, shape (C, H, W)
        The input pixels those rows come from, linear and finite where ``gain`` > 0.
    stretch : Stretch
        The display stretch the network ran in; it decides how a footprint's missing
        flux is shared among its output pixels (see the module docstring).
    gain : ndarray of float or bool, shape (C, H, W), optional
        Share of each input pixel's missing flux to put back, 0 to 1 (default: 1, all
        of it, everywhere); a boolean mask selects pixels to make exact.
    scale : int
        Output pixels per input pixel along each axis.
    bounds : (ndarray, ndarray), each shape (C,) or shaped like ``native``, optional
        Range no corrected pixel may leave, per channel (the input's minimum and maximum,
        for example: a core cannot be pushed past saturation) or per output pixel. The flux a pixel cannot
        take goes to the others in its footprint; this is always possible when every
        ``lr`` value lies inside the range. Pixels already outside it stay where they are.

    Returns
    -------
    ndarray
        ``native``, corrected: the mean of each input pixel's ``scale x scale`` output
        pixels moves the fraction ``gain`` of the way to the input value (exactly there
        for ``gain`` 1, float32 rounding aside).
    """
    n_ch, h, w = lr.shape
    if native.shape != (n_ch, scale * h, scale * w):
        raise ValueError(
            f"native has shape {native.shape}, expected {(n_ch, scale * h, scale * w)}"
        )
    # Only the footprints that move are gathered, as (K, scale, scale) blocks: the sky of
    # a "sources" run is most of the image and costs nothing.
    g = np.ones(lr.shape) if gain is None else np.asarray(gain, dtype=np.float64)
    for c in range(n_ch):
        rows, cols = np.nonzero(g[c] > 0)
        if rows.size == 0:
            continue
        view = native[c].reshape(h, scale, w, scale)
        x = view[rows, :, cols, :]  # (K, scale, scale), a copy
        bounds_c = None
        if bounds is not None:
            bounds_c = tuple(
                _gather(np.asarray(bd)[c], rows, cols, h, w, scale)
                if np.ndim(bd) == 3
                else np.float64(np.asarray(bd)[c])
                for bd in bounds
            )
        fixed = _conserve_blocks(
            x, lr[c, rows, cols], g[c, rows, cols], stretch.select([c]), bounds_c
        )
        view[rows, :, cols, :] = fixed.astype(native.dtype, copy=False)
    return native


def keep_sky_level(
    native: np.ndarray,
    lr: np.ndarray,
    sky: np.ndarray,
    scale: int = 4,
    level: np.ndarray | None = None,
) -> np.ndarray:
    """Shift the sky footprints of ``native``, per channel, to the input's mean sky level.

    A network run in a stretched domain can bring the sky back a little low or high (the
    default model: about 0.02 background sigmas low). Sources made exact next to a sky left
    so would stand on a step, and aperture photometry with a local-background annulus would
    see it as extra flux. One constant per channel (a sigma-clipped mean of
    ``lr - footprint mean`` over ``sky``) moves the sky without adding any of its noise.

    Parameters
    ----------
    native : ndarray, shape (C, scale*H, scale*W), float32
        Modified in place.
    lr : ndarray, shape (C, H, W)
    sky : ndarray of bool, shape (C, H, W)
        Input pixels that are sky (finite, no source).
    scale : int
    level : ndarray, shape (C, H, W), optional
        ``block_mean(native, scale)`` when the caller has it already.

    Returns
    -------
    ndarray, shape (C,)
        The offset added to each channel's sky (0 where the channel has no sky).
    """
    from astropy.stats import sigma_clipped_stats

    n_ch, h, w = lr.shape
    offsets = np.zeros(n_ch)
    if level is None:
        level = block_mean(native, scale)
    for c in range(n_ch):
        if not sky[c].any():
            continue
        diff = (np.asarray(lr[c], dtype=np.float64) - level[c])[sky[c]]
        # axis=0 on a 1-D sample takes astropy's compiled clipping loop (same statistics).
        offsets[c] = sigma_clipped_stats(diff, sigma=3.0, maxiters=5, axis=0)[0]
        # One dense pass: the source footprints get + 0.0, which leaves them unchanged.
        shift = np.where(sky[c], np.float32(offsets[c]), np.float32(0.0))
        view = native[c].view()
        view.shape = (h, scale, w, scale)  # raises rather than silently adding to a copy
        view += shift[:, None, :, None]
    return offsets


def _gather(
    img: np.ndarray, rows: np.ndarray, cols: np.ndarray, h: int, w: int, scale: int
) -> np.ndarray:
    """The footprints ``(K, scale, scale)`` of input pixels ``(rows, cols)`` of one channel."""
    return np.asarray(img).reshape(h, scale, w, scale)[rows, :, cols, :].astype(np.float64)


def _conserve_blocks(
    blocks: np.ndarray,
    lr: np.ndarray,
    gain: np.ndarray,
    stretch: Stretch,
    bounds: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """:func:`conserve_flux` on gathered footprints ``(K, s, s)`` of one channel;
    ``bounds`` are scalars or gathered like the footprints."""
    x0 = np.asarray(blocks, dtype=np.float64)
    x = x0.copy()
    start = x.mean(axis=(1, 2))
    target = start + gain * (np.asarray(lr, dtype=np.float64) - start)
    # Share ~ 1/slope**2: the least-squares smallest change in the stretched picture
    # that gives each footprint the required linear mean.
    weight = stretch.slope(x[np.newaxis])[0] ** -2.0
    if bounds is None:
        share = weight / weight.mean(axis=(1, 2), keepdims=True)
        return x + share * (target - start)[:, None, None]
    lo, hi = bounds
    cap, floor = np.maximum(hi, x0), np.minimum(lo, x0)  # pixels already out stay put
    free_up, free_down = x < hi, x > lo
    # Each round fills what the last one could not place (pixels that reached a bound);
    # a footprint has s*s pixels, so that many rounds always place everything.
    for _ in range(x.shape[1] * x.shape[2]):
        need = (target - x.mean(axis=(1, 2)))[:, None, None]
        free = np.where(need > 0, free_up, free_down)
        wr = np.where(free, weight, 0.0)
        total = wr.mean(axis=(1, 2), keepdims=True)
        # A footprint with no free pixel cannot move (only when lr is out of range).
        share = np.divide(wr, total, out=np.zeros_like(wr), where=total > 0)
        x += share * need
        over, under = (need > 0) & (x > cap), (need < 0) & (x < floor)
        if not (over.any() or under.any()):
            break
        x = np.where(over, cap, np.where(under, floor, x))
        free_up &= ~over
        free_down &= ~under
    return x
