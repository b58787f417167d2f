"""Consistency with the data: the output, binned by the scale, gives the input back.

The network's native 4x output ``x`` (linear units) is corrected so that the mean of every
input pixel's ``4 x 4`` footprint moves to a *target*: the input value where the data are
significant, and the network's own value plus the smooth, low-frequency part of the
difference elsewhere. What is put back, and how:

1. **The residual** ``r = y - D x`` per input pixel (``y`` the input, ``D`` the 4x4 block
   mean).
2. **The target** ``t`` (mode ``"consistent"``, the default): ``t = lp + g (r - lp)``.
   ``g`` is 1 where the input or the network is more than
   :data:`~astrosleuth_astro.conserve.SOURCE_SIGMA` background sigmas above the
   background, falls to ``s**2 / (s**2 + sigma**2)`` on the faint wings around sources and
   is 0 on the sky (:func:`source_weights`). ``lp`` is the residual of the sky pixels
   smoothed by a Gaussian of :data:`SKY_SMOOTH` input pixels (a normalised convolution
   over the sky only, :func:`sky_lowpass`): it removes any offset or large-scale error of
   the network's sky without giving back the pixel-to-pixel noise of the input. Mode
   ``"all"`` takes ``t = r`` everywhere, ``"sources"`` ``t = g r + (1 - g) c`` with one
   constant ``c`` per channel, the sky's mean residual.
3. **A smooth correction** ``c = U z`` with ``D U z = t`` exactly, ``U`` the bilinear
   upsampling: ``D U`` is the separable kernel ``[1/8, 3/4, 1/8]`` (with the edges'
   reflection), whose inverse decays as ``0.17**k`` and is applied as a finite filter
   (:func:`solve_block_mean`). The correction is continuous across footprint edges (no
   4x4 blocks), unlike a per-footprint constant.
4. **No overshoot**: the corrected pixel stays inside the local range of the data and of
   the network (:func:`local_bounds`): between the smaller of the network's value and the
   input's minimum over 5x5 input pixels less one sigma, and the larger of the network's
   value and the input's maximum plus one sigma; never below 0 where that input minimum
   is not. Where the bound takes something away (the ringing of a smooth correction next
   to a bright star), the footprint's remainder is shared among its own pixels by
   :func:`~astrosleuth_astro.conserve.conserve_flux`, in proportion to ``1 / slope**2``
   of the display stretch (into the star's core, where the stretch is flat).

Every step reads a fixed neighbourhood of input rows (:data:`CONTEXT_ROWS`), so a band of
output rows is corrected the same wherever it is computed (here, or on a Dask worker).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .conserve import (
    SOURCE_GROW,
    conserve_flux,
    source_gain,
    source_mask,
)
from .resample import upsample_bilinear
from .stretch import Stretch

#: Gaussian sigma, in input pixels, of the low-pass applied to the sky's residual.
SKY_SMOOTH = 1.0
#: The Gaussian is cut at this many sigmas.
SKY_TRUNCATE = 3.0
#: Half-width, in input pixels, of the finite inverse of ``D U`` (its taps decay as
#: ``0.1716**k``: 9 leave 2e-8 of the correction, below float32 rounding, so the remainder
#: step only runs where a bound cut the correction).
INVERSE_RADIUS = 9
#: Half-width of the window of input pixels whose range bounds the corrected pixels.
BOUND_RADIUS = 2
#: The local range is widened by this many background sigmas.
BOUND_SLACK = 1.0
#: A footprint whose mean is off its target by more than this fraction of (target +
#: sigma) gets the remainder shared among its pixels (float32 keeps about 6e-8).
REMAINDER_TOLERANCE = 1e-7
#: Input rows on each side of a band that its correction reads.
CONTEXT_ROWS = (
    int(np.ceil(SKY_SMOOTH * SKY_TRUNCATE)) + SOURCE_GROW + INVERSE_RADIUS + BOUND_RADIUS + 1
)


def _inverse_taps(radius: int = INVERSE_RADIUS) -> np.ndarray:
    """Taps of the inverse of ``[1/8, 3/4, 1/8]``, cut at ``radius`` and summing to 1."""
    a, b = 0.75, 0.125
    root = np.sqrt(a * a - 4 * b * b)
    rho = (root - a) / (2 * b)  # -0.1716: the inverse's geometric decay
    taps = rho ** np.abs(np.arange(-radius, radius + 1)) / root
    return taps / taps.sum()  # a constant residual is corrected by the same constant


_INVERSE = _inverse_taps()


def solve_block_mean(t: np.ndarray) -> np.ndarray:
    """``z`` whose bilinear 4x upsampling has 4x4 block means ``t`` (last two axes).

    Bilinear upsampling (``align_corners=False``) followed by the 4x4 block mean is the
    separable kernel ``[1/8, 3/4, 1/8]`` on the input grid, reflected at the edges
    (the edge row's ``[7/8, 1/8]``). Its inverse is applied as a finite filter of
    :data:`INVERSE_RADIUS` taps each side, with the same reflection.

    Parameters
    ----------
    t : ndarray, shape (..., H, W)

    Returns
    -------
    ndarray, shape (..., H, W), float32
    """
    # float32, as the correction is applied (the taps sum to 1 and decay fast: the
    # rounding stays at float32's, about 1e-7 of the correction).
    z = ndimage.correlate1d(
        np.asarray(t, dtype=np.float32), _INVERSE.astype(np.float32), axis=-1, mode="reflect"
    )
    return ndimage.correlate1d(z, _INVERSE.astype(np.float32), axis=-2, mode="reflect")


def sky_lowpass(residual: np.ndarray, sky: np.ndarray, sigma: float = SKY_SMOOTH) -> np.ndarray:
    """The residual of the sky pixels, smoothed and spread over every pixel.

    A normalised convolution: ``G * (sky r) / G * sky`` with a Gaussian ``G`` of ``sigma``
    input pixels, so sources neither bias it nor leave holes in it. Where no sky pixel is
    near (a large source), it is 0.

    Parameters
    ----------
    residual : ndarray, shape (C, H, W)
        Input minus the network's footprint mean, linear units.
    sky : ndarray of bool or float, shape (C, H, W)
        Weight of each pixel (1 on the sky, 0 on sources and held pixels).
    sigma : float
        In input pixels.
    """
    # float32: a low-pass of a residual of a few sigma needs no more, at half the traffic.
    w = np.asarray(sky, dtype=np.float32)
    smooth = (0, sigma, sigma)
    num = ndimage.gaussian_filter(w * residual, smooth, mode="reflect", truncate=SKY_TRUNCATE)
    den = ndimage.gaussian_filter(w, smooth, mode="reflect", truncate=SKY_TRUNCATE)
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 1e-3)
    return out


def source_weights(
    lr: np.ndarray,
    level: np.ndarray,
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """``g``: how much of each input pixel's residual is significant, 0 to 1.

    1 where the input or the network's own value is above the source level (a pixel
    more than 5 sigma above the background is a source whichever of the two says so);
    on the faint wings (the input's sources grown by one pixel) the share
    ``s**2 / (s**2 + sigma**2)`` of :func:`~astrosleuth_astro.conserve.source_gain`; 0 on
    the sky.

    Parameters
    ----------
    lr, level : ndarray, shape (C, H, W)
        The input, and the network's output averaged over each input pixel's footprint.
    levels : (ndarray, ndarray, ndarray)
        Background, noise and source level per channel
        (:func:`~astrosleuth_astro.conserve.source_levels`).
    """
    background, sigma, threshold = levels
    support = source_mask(lr, threshold, SOURCE_GROW)
    g = source_gain(level, background, sigma, threshold, support)
    return np.where(lr > threshold[:, None, None], 1.0, g)


def local_bounds(lr: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The input's local range, which a correction may not push an output pixel out of.

    Parameters
    ----------
    lr : ndarray, shape (C, H, W)
        Linear input.
    sigma : ndarray, shape (C,)
        Background noise per channel.

    Returns
    -------
    low, high : ndarray, shape (C, H, W), float64
        Minimum and maximum of the input over (2 :data:`BOUND_RADIUS` + 1)^2 pixels,
        widened by :data:`BOUND_SLACK` sigmas.
    nonneg : ndarray of bool, shape (C, H, W)
        Where that minimum is not negative (no output pixel there may become negative).
    """
    size = (1, 2 * BOUND_RADIUS + 1, 2 * BOUND_RADIUS + 1)
    slack = BOUND_SLACK * np.asarray(sigma, dtype=np.float64)[:, None, None]
    # A minimum or maximum is one of the values: float32 data filtered in float32 gives
    # the same numbers at half the memory traffic.
    src = lr if lr.dtype == np.float32 else np.asarray(lr, dtype=np.float64)
    low = ndimage.minimum_filter(src, size, mode="nearest").astype(np.float64)
    high = ndimage.maximum_filter(src, size, mode="nearest").astype(np.float64)
    return low - slack, high + slack, low >= 0


_BYTES_AS_INT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _any_in_blocks(mask: np.ndarray) -> np.ndarray:
    """``mask.any(axis=(1, 3))`` for a C-contiguous ``(n, s, W, s)`` boolean array.

    The ``s`` booleans of one block row are read as one integer (for ``s`` of 1, 2, 4
    or 8): two orders of magnitude faster than numpy's reduction over short axes.
    """
    n, s, w, _ = mask.shape
    as_int = _BYTES_AS_INT.get(s)
    if as_int is None or not mask.flags.c_contiguous:
        return mask.any(axis=(1, 3))
    words = mask.view(as_int).reshape(n, s, w)
    return np.bitwise_or.reduce(words, axis=1) != 0


def make_consistent(
    native: np.ndarray,
    lr: np.ndarray,
    level: np.ndarray,
    rows: tuple[int, int],
    mode: str,
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
    stretch: Stretch,
    good: np.ndarray | None = None,
    scale: int = 4,
    limits: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> np.ndarray:
    """Correct ``native`` in place so that it is consistent with the input.

    Parameters
    ----------
    native : ndarray, shape (C, scale*(b-a), scale*W), float32
        The network's linear output for input rows ``[a, b)`` (``rows`` within ``lr``).
    lr : ndarray, shape (C, n, W)
        The input (linear, finite) for a window of rows that contains ``[a, b)`` with
        :data:`CONTEXT_ROWS` rows each side where the image has them.
    level : ndarray, shape (C, n, W)
        The network's output averaged over each input pixel's footprint, same rows as
        ``lr``.
    rows : (int, int)
        ``(a, b)`` as indices into the rows of ``lr``.
    mode : {"consistent", "sources", "all"}
    levels : (ndarray, ndarray, ndarray)
        Background, noise and source level per channel, measured on the whole input.
    stretch : Stretch
        The display stretch of the run (shares the remainder of a bounded footprint).
    good : ndarray of bool, shape (C, n, W), optional
        False at held pixels: the caller restores their footprints, so no remainder is
        put into them (they still take part in the correction, with the value the
        network saw).
    scale : int
        Output pixels per input pixel (the network's native scale).
    limits : (ndarray, ndarray or None), optional
        The input's minimum and maximum per channel: the local range never reaches past
        them (a star next to a saturated core is not pushed above saturation).

    Returns
    -------
    ndarray
        ``native``, corrected: each footprint's mean equals the target (module docstring)
        to float32 rounding.
    """
    a, b = rows
    lr64 = np.asarray(lr, dtype=np.float64)
    level = np.asarray(level, dtype=np.float64)
    ok = np.ones(lr.shape, dtype=bool) if good is None else np.asarray(good, dtype=bool)
    # Held pixels take part with the value the network was given (``lr`` is the filled
    # input): the correction around a defect is then the one of the repaired image, and
    # the held footprints themselves are restored by the caller.
    residual = lr64 - level
    if mode == "all":
        target_res = residual
    else:
        g = source_weights(lr64, level, levels)
        sky = g == 0
        if mode == "sources":
            base = np.zeros_like(residual)
            for c in range(residual.shape[0]):
                if sky[c].any():
                    base[c] = np.mean(residual[c][sky[c]])
        else:
            base = sky_lowpass(residual, sky)
        target_res = base + g * (residual - base)
    # The smooth solve reads the window; only the band's own rows are used.
    z = solve_block_mean(target_res)
    lo_r, hi_r = max(0, a - 1), min(lr.shape[1], b + 1)  # bilinear needs one row each side
    n = scale * (a - lo_r)
    # The bounds of the band's own rows need BOUND_RADIUS rows of context, not the window.
    c0, c1 = max(0, a - BOUND_RADIUS), min(lr.shape[1], b + BOUND_RADIUS)
    low, high, nonneg = (
        v[:, a - c0 : a - c0 + b - a] for v in local_bounds(lr[:, c0:c1], levels[1])
    )
    if limits is not None:
        low = np.maximum(low, np.asarray(limits[0], dtype=np.float64)[:, None, None])
        if limits[1] is not None:
            high = np.minimum(high, np.asarray(limits[1], dtype=np.float64)[:, None, None])
    target = level[:, a:b] + target_res[:, a:b]
    nb, width = b - a, lr.shape[2]
    # No pixel below 0 where the input's local minimum is not: a floor per footprint
    # (a broadcast maximum is cheaper than a masked one).
    floor = np.where(nonneg, 0.0, -np.inf).astype(np.float32)
    # Channel by channel, in float32 and with the bounds broadcast over each footprint:
    # a band's temporaries stay a few bytes per output pixel.
    for c in range(native.shape[0]):
        x = native[c].reshape(nb, scale, width, scale)
        lo = np.minimum(x, low[c, :, None, :, None].astype(np.float32))
        np.maximum(lo, floor[c, :, None, :, None], out=lo)
        hi = np.maximum(x, high[c, :, None, :, None].astype(np.float32))
        corrected = upsample_bilinear(z[c, lo_r:hi_r], scale, rows=(n, n + scale * nb))
        view = corrected.reshape(x.shape)
        view += x
        # Where the bound cuts the correction, the footprint's mean is no longer its
        # target; elsewhere it is, to the filter's cut (2e-8) and float32 rounding.
        cut = (view < lo) | (view > hi)
        np.clip(view, lo, hi, out=view)
        native[c] = corrected
        # The footprints the bound left short: their own pixels share the remainder,
        # weighted by the stretch, inside the same bounds. Only those whose mean is off by
        # more than float32 rounding are gathered.
        short = _any_in_blocks(cut) & ok[c, a:b]
        if short.any():
            ys, xs = np.nonzero(short)
            got = x[ys, :, xs, :].mean(axis=(1, 2), dtype=np.float64)
            off = np.abs(target[c, ys, xs] - got)
            keep = off > REMAINDER_TOLERANCE * (np.abs(target[c, ys, xs]) + float(levels[1][c]))
            short[ys[~keep], xs[~keep]] = False
        if short.any():
            shape = (1, scale * nb, scale * width)
            conserve_flux(
                native[c : c + 1],
                target[c : c + 1],
                stretch.select([c]),
                gain=short[None],
                scale=scale,
                bounds=(lo.reshape(shape), hi.reshape(shape)),
            )
    return native
