"""Tiled, batched, streaming inference for the 4x super-resolution networks.

The networks are fully convolutional, so an image of any size can be upscaled one tile at a
time. Done naively that leaves seams and, worse for astronomy, faint spurious "stars" along
tile edges, where the convolutions of a tile see zero padding instead of sky. This module
avoids both:

* **Context.** Every tile is run with ``pad`` low-resolution (LR) pixels of real context on
  each side (the image itself is conceptually reflect-padded by ``pad``, see
  :func:`reflect_pad`), and only the central part of its output is used. When ``pad`` covers
  the network's effective receptive field the tile output there *is* the whole-image output.
* **Ownership and feathering.** The tile cores partition the image. Around every boundary
  between two neighbouring tiles a band of ``2 * scale * feather`` high-resolution (HR)
  pixels is blended with a raised-cosine ramp (``a + w * (b - a)``, so two identical tiles
  blend to exactly that value). The band lies inside both tiles' context, so its pixels still
  see ``pad - feather`` LR pixels of context; the blend only matters when a caller's ``pad``
  is too small for the network, where it turns a hard seam into a smooth transition.
* **Reference.** The "whole-image result" that the tiled result reproduces is
  ``net(reflect_pad(image, pad))`` cropped by ``scale * pad`` on every side; it is what
  :func:`upscale_whole` computes.

Measured context needs. ``max |tiled - whole|`` over every output pixel, for a 128x128
star-field-like input in [0, 1] (noise on a sky level plus bright Gaussian stars), 64x64
tiles, no feathering, as a function of the context ``pad`` in LR pixels. Random-init nets
with variance-preserving weights (Kaiming normal for PReLU slope 0.25, times a gain), which
-- unlike PyTorch's default init, whose signal dies out after a few layers -- carry
information through the whole depth like trained networks do:

=============================================  =======  =======  =======  =======  =======  =======
context (LR px)                                    8       16       20       24       28       36
=============================================  =======  =======  =======  =======  =======  =======
FAST 33x64 convs, gain 1.0 (residual std 0.06)  1.3e-1   1.0e-2   1.5e-3   1.5e-4   4.5e-6   0
FAST 33x64 convs, gain 0.9 (residual std 0.02)  3.2e-3   2.5e-4   3.7e-5   3.8e-6   1.2e-7   0
FAST 33x64 convs, PyTorch default init          1.4e-7   6e-8     6e-8     6e-8     6e-8     0
=============================================  =======  =======  =======  =======  =======  =======

FAST's theoretical receptive field is 35 LR px (33 LR convs plus the two convs after the
upsamplings), so from 36 px on the tiles are bit-identical to the whole image. An
ESRGAN-style RRDB with 6 blocks has a 93 px theoretical receptive field, but its 0.2
residual scaling keeps the effective one short: with Kaiming-initialised blocks the error is
2.9e-3 at 8 px and reaches the float32 rounding floor (~1e-5 on outputs of std 1.3) by
16 px; with the block weights doubled (outputs of std 13, far from a real model) it is
3.1e-2 at 24 px, 1.3e-3 at 32 px and 1.4e-4 at 40 px. Defaults: ``pad = DEFAULT_PAD = 32``
and ``feather = pad // 8 = 4``, so every output pixel has at least 28 px of context; with
those, three random full-size FAST networks (gain 1.0) gave ``max |tiled - whole|`` of
1.6e-7 to 2.4e-7 on a 150x131 star field with 64 px tiles (float32 rounding level). The default is a constant, not derived from ``net`` (an opaque
callable): a caller that knows the model (registry entry) passes ``pad`` itself.

Memory does not grow with the image height: besides the output array (which may be a
``np.memmap``), only one tile row of HR output (``C x (scale * tile + 2 * band) x scale*W``
float32), one pending blend band, one LR row band of input, and one batch of tiles are held.
Finished output rows are written (or yielded, see :func:`iter_tile_rows`) as soon as they are
final.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, ModelError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PAD",
    "DEFAULT_TILE",
    "choose_tile",
    "default_feather",
    "iter_tile_rows",
    "reflect_index",
    "reflect_pad",
    "upscale_tiled",
    "upscale_whole",
]

#: Largest tile core, in LR pixels per side. Images up to this size run as one tile.
DEFAULT_TILE = 256
#: LR context pixels on each side of a tile when the caller passes ``pad=None``.
#: Measured (module docstring): FAST-like 33-conv networks with unit-gain random weights
#: differ by 1.5e-4 at 24 px and 4.5e-6 at 28 px; 32 leaves 28 px outside the feather band.
DEFAULT_PAD = 32
#: Tiles per forward call.
DEFAULT_BATCH_SIZE = 4

Net = Callable[[np.ndarray], Any]
Progress = Callable[[int, int], Any]


# --------------------------------------------------------------------------- padding


def reflect_index(idx: np.ndarray, length: int) -> np.ndarray:
    """Map integer positions onto ``[0, length)`` by mirror reflection.

    Parameters
    ----------
    idx : ndarray of int
        Positions, possibly negative or ``>= length`` (any distance: reflection repeats).
    length : int
        Axis length, ``>= 1``.

    Returns
    -------
    ndarray of intp
        Same shape as ``idx``. Matches ``np.pad(..., mode="reflect")`` (edge pixel not
        repeated) for ``length >= 2``; a length-1 axis maps everything to 0 (where numpy's
        ``reflect`` fails, constant extension is the only sensible mirror).
    """
    idx = np.asarray(idx, dtype=np.intp)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * length - 2
    m = np.mod(idx, period)
    return np.where(m < length, m, period - m)


def reflect_pad(image: np.ndarray, pad: int) -> np.ndarray:
    """Reflect-pad the two spatial axes of a ``(C, H, W)`` image by ``pad`` pixels.

    This defines the border handling of the whole engine: the tiles at the image border
    see exactly this context.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    pad : int
        Pixels added on each side of both spatial axes, ``>= 0``; may exceed ``H`` or ``W``
        (the reflection repeats).

    Returns
    -------
    ndarray, shape (C, H + 2*pad, W + 2*pad)
        Same dtype as ``image``; see :func:`reflect_index` for the mirror convention.
    """
    _, h, w = image.shape
    rows = reflect_index(np.arange(-pad, h + pad), h)
    cols = reflect_index(np.arange(-pad, w + pad), w)
    return image[:, rows[:, None], cols[None, :]]


# --------------------------------------------------------------------------- geometry


def choose_tile(
    height: int, width: int, tile: int | tuple[int, int] = DEFAULT_TILE
) -> tuple[int, int]:
    """Tile core size actually used for an image.

    Each axis is split into ``n = ceil(L / tile)`` tiles of equal size ``ceil(L / n)``
    (``<= tile``), so the tiles overlap by less than ``n`` pixels in total instead of the
    last tile being mostly redundant. An axis no longer than ``tile`` is one tile.

    Parameters
    ----------
    height, width : int
        LR image size in pixels, ``>= 1``.
    tile : int or (int, int)
        Largest core size in LR pixels, ``>= 1`` (one value for both axes, or
        ``(tile_h, tile_w)``).

    Returns
    -------
    (int, int)
        ``(tile_h, tile_w)`` core size in LR pixels.

    Raises
    ------
    InputError
        If a tile size is below 1 or the image is empty.
    """
    th, tw = _tile_pair(tile)
    if height < 1 or width < 1:
        raise InputError(f"image: empty image of {height}x{width} pixels")
    return _balanced(height, th), _balanced(width, tw)


def default_feather(pad: int) -> int:
    """Default half-width, in LR pixels, of the blend band around tile boundaries.

    ``pad // 8``: the band eats into the context of its pixels, so it is kept a small
    fraction of ``pad`` (4 px, i.e. a 32 HR px wide blend, for the default pad of 32).
    """
    return pad // 8


def _as_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, else :class:`InputError` naming the option."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= low
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def _tile_pair(tile: int | tuple[int, int]) -> tuple[int, int]:
    pair = (tile, tile) if np.ndim(tile) == 0 else tuple(tile)
    if len(pair) != 2:
        raise InputError(f"tile: expected an int or (tile_h, tile_w), got {tile!r}")
    return _as_int("tile", pair[0], 1), _as_int("tile", pair[1], 1)


def _balanced(length: int, tile: int) -> int:
    n = -(-length // tile)
    return -(-length // n)


@dataclass(frozen=True)
class _Axis:
    """Tiling of one spatial axis (LR unless noted)."""

    length: int
    tile: int  # core size, same for every tile
    starts: np.ndarray  # (n,) first core pixel of each tile
    cuts: np.ndarray  # (n + 1,) ownership boundaries: tile i owns [cuts[i], cuts[i+1])
    band: int  # HR half-width of the blend band around each interior cut
    scale: int
    pad: int

    @property
    def n(self) -> int:
        return len(self.starts)

    def window(self, i: int, length: int) -> np.ndarray:
        """LR source indices (reflected) of tile ``i`` including its context."""
        s = int(self.starts[i])
        return reflect_index(np.arange(s - self.pad, s + self.tile + self.pad), length)

    def kept(self, i: int) -> tuple[int, int]:
        """HR range ``[a, b)`` of tile ``i``'s output that goes into the result."""
        a = self.scale * int(self.cuts[i]) - (self.band if i > 0 else 0)
        b = self.scale * int(self.cuts[i + 1]) + (self.band if i < self.n - 1 else 0)
        return a, b

    def offset(self, i: int) -> int:
        """HR position of tile ``i``'s first output pixel."""
        return self.scale * (int(self.starts[i]) - self.pad)


def plan_axis(length: int, tile: int, pad: int, scale: int, feather: int) -> _Axis:
    """The tile plan along one axis, as :func:`upscale_tiled` uses it.

    Parameters
    ----------
    length : int
        Input pixels along the axis.
    tile, pad : int
        Tile core size and context padding, input pixels.
    scale : int
        Network upscale factor.
    feather : int
        Blend width between neighbouring tiles, input pixels.

    Returns
    -------
    _Axis
        Tile starts, the cuts between tiles' kept cores, and the blend band; its ``n`` and
        ``kept(i)`` tell a banded run (:mod:`astrosleuth_astro.batch.bands`) which tile
        rows its output rows come from.
    """
    n = -(-length // tile)
    if n == 1:
        starts = np.zeros(1, dtype=np.intp)
    else:
        # Evenly spread, first flush with 0 and last flush with the end; gaps <= tile.
        starts = (np.arange(n, dtype=np.intp) * (length - tile)) // (n - 1)
    cuts = np.empty(n + 1, dtype=np.intp)
    cuts[0], cuts[-1] = 0, length
    # Boundary in the middle of each overlap: both neighbours have the most context there.
    cuts[1:-1] = (starts[1:] + starts[:-1] + tile) // 2
    band = 0
    if n > 1:
        # The band must stay inside the context and two bands must not meet inside a core.
        band = min(scale * feather, scale * pad, int(scale * np.diff(cuts).min()) // 2)
    return _Axis(length, tile, starts, cuts, band, scale, pad)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine weights of the incoming tile across a ``2 * n`` wide band, (2n,) f4."""
    x = (np.arange(2 * n, dtype=np.float64) + 0.5) / (2 * n)
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


# --------------------------------------------------------------------------- engine


def _check_args(
    image: np.ndarray, scale: int, pad: int | None, feather: int | None, batch_size: int
) -> tuple[np.ndarray, int, int]:
    if not getattr(image, "row_source", False):
        # A row source (pipeline.RowSource) computes the rows it is asked for: keep it.
        image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"image: expected a (C, H, W) array, got shape {image.shape}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise InputError(f"image: empty image of shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"image: expected a real-valued array, got dtype {image.dtype}")
    _as_int("scale", scale, 1)
    _as_int("batch_size", batch_size, 1)
    pad = _as_int("pad", DEFAULT_PAD if pad is None else pad, 0)
    feather = _as_int("feather", default_feather(pad) if feather is None else feather, 0)
    return image, pad, feather


def iter_tile_rows(
    image: np.ndarray,
    net: Net,
    *,
    scale: int = 4,
    tile: int | tuple[int, int] = DEFAULT_TILE,
    pad: int | None = None,
    feather: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    rows: tuple[int, int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Upscale ``image`` tile by tile, yielding finished bands of output rows top to bottom.

    Parameters
    ----------
    image, net, scale, tile, pad, feather, batch_size, progress
        As for :func:`upscale_tiled`.
    rows : (int, int), optional
        Only output rows ``[r0, r1)`` are wanted (one band of a banded run): a batch none
        of whose tiles keeps a row there is not computed, and the rows it would give are
        zeros. The wanted rows are exactly those of the whole-image run.

    Yields
    ------
    y0 : int
        First HR output row of the band.
    rows : ndarray, shape (C, n_rows, scale * W), float32
        Final output rows ``[y0, y0 + n_rows)``. The bands are contiguous, in order, and
        cover ``[0, scale * H)`` exactly once. ``rows`` is a view of an internal buffer that
        is overwritten once the generator resumes: copy or write it out before asking for
        the next band.

    Raises
    ------
    InputError
        For a bad image shape or argument (e.g. ``tile < 1``).
    ModelError
        If ``net`` returns an array of the wrong shape (e.g. a 2x model run with
        ``scale=4``).
    """
    # Validate now, not at the first next(): errors surface where the call is made.
    image, pad, feather = _check_args(image, scale, pad, feather, batch_size)
    tiles = choose_tile(image.shape[1], image.shape[2], tile)
    return _rows(
        image, net, int(scale), tiles, pad, feather, int(batch_size), progress, wanted=rows
    )


def _rows(
    image: np.ndarray,
    net: Net,
    scale: int,
    tiles: tuple[int, int],
    pad: int,
    feather: int,
    batch_size: int,
    progress: Progress | None,
    target: np.ndarray | None = None,
    wanted: tuple[int, int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The row generator; with ``target`` (shape ``(C, scale*H, scale*W)``) each tile row
    is assembled in place in ``target`` instead of in a width-sized strip, and the bands
    yielded are views of ``target`` (for :func:`upscale_tiled`: no strip grows with the
    image width, and nothing is copied twice)."""
    c, h, w = image.shape
    th, tw = tiles
    ay = plan_axis(h, th, pad, scale, feather)
    ax = plan_axis(w, tw, pad, scale, feather)
    ph, pw = th + 2 * pad, tw + 2 * pad
    total = ay.n * ax.n

    # Weights are computed once per band width (same for all tiles: one tile shape).
    wx = _ramp(ax.band)[None, None, :] if ax.band else None
    wy = _ramp(ay.band)[None, :, None] if ay.band else None
    col_src = []
    for j in range(ax.n):
        idx = ax.window(j, w)
        # Interior tiles read a plain slice of the row band (cheaper than a gather).
        contiguous = idx[0] == int(ax.starts[j]) - pad and idx[-1] - idx[0] == pw - 1
        col_src.append(slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx)
    col_kept = [ax.kept(j) for j in range(ax.n)]

    max_rows = max(b - a for a, b in (ay.kept(i) for i in range(ay.n)))
    strip = np.empty((c, max_rows, scale * w), dtype=np.float32) if target is None else None
    pending = np.empty((c, 2 * ay.band, scale * w), dtype=np.float32)
    batch = np.empty((min(batch_size, total), c, ph, pw), dtype=np.float32)
    expected = (c, scale * ph, scale * pw)

    # Tile rows that keep an output row in ``wanted`` (all of them without ``wanted``).
    needed = [
        wanted is None or (ay.kept(i)[0] < wanted[1] and ay.kept(i)[1] > wanted[0])
        for i in range(ay.n)
    ]
    rowband_of = -1
    rowband = None
    done = 0
    order = [(i, j) for i in range(ay.n) for j in range(ax.n)]
    for b0 in range(0, total, batch_size):
        chunk = order[b0 : b0 + batch_size]
        for k, (i, j) in enumerate(chunk):
            if rowband_of != i:
                # One LR band of input rows per tile row, gathered (and made float32) once.
                rowband = np.asarray(image[:, ay.window(i, h), :], dtype=np.float32)
                rowband_of = i
            src = col_src[j]
            if isinstance(src, slice):
                batch[k] = rowband[:, :, src]
            else:
                # mode="clip" (indices are in range anyway) lets take() skip buffering.
                np.take(rowband, src, axis=2, out=batch[k], mode="clip")
        if any(needed[i] for i, _ in chunk):
            result = np.asarray(net(batch[: len(chunk)]))
        else:  # no wanted row comes from this batch: its rows are passed along unused
            result = np.broadcast_to(np.float32(0), (len(chunk), *expected))
        if result.shape != (len(chunk), *expected):
            raise ModelError(
                f"network: returned shape {result.shape} for input {batch[: len(chunk)].shape}"
                f"; expected {(len(chunk), *expected)} (scale={scale})"
            )
        done += len(chunk)
        if progress is not None:
            progress(done, total)

        for k, (i, j) in enumerate(chunk):
            y_a, y_b = ay.kept(i)
            nrows = y_b - y_a
            oy = y_a - ay.offset(i)
            x_a, x_b = col_kept[j]
            ox = x_a - ax.offset(j)
            tile_out = result[k, :, oy : oy + nrows, ox : ox + (x_b - x_a)]
            # Rows already final from tile row i - 1 (its last 2 * band rows) were copied
            # to `pending` before they are overwritten here.
            buf = strip[:, :nrows] if strip is not None else target[:, y_a:y_b]
            dst = buf[:, :, x_a:x_b]
            if j > 0 and ax.band:
                # Blend with the left neighbour already in the strip: a + w * (b - a).
                nb = 2 * ax.band
                _lerp_into(dst[:, :, :nb], tile_out[:, :, :nb], wx)
                dst[:, :, nb:] = tile_out[:, :, nb:]
            else:
                dst[...] = tile_out
            if j < ax.n - 1:
                continue

            # Tile row i is complete: blend its top band with the pending one and emit.
            rows = buf
            if i > 0 and ay.band:
                _lerp_into(pending, rows[:, : 2 * ay.band], wy, dst=rows[:, : 2 * ay.band])
            if i < ay.n - 1:
                final = nrows - 2 * ay.band
                pending[...] = rows[:, final:]
            else:
                final = nrows
            yield y_a, rows[:, :final]


def _lerp_into(a: np.ndarray, b: np.ndarray, w: np.ndarray, dst: np.ndarray | None = None) -> None:
    """``dst = a + w * (b - a)`` (``dst`` defaults to ``a``); exact when ``a == b``."""
    diff = np.subtract(b, a)
    diff *= w
    if dst is None:
        a += diff
    else:
        np.add(a, diff, out=dst)


def upscale_tiled(
    image: np.ndarray,
    net: Net,
    *,
    scale: int = 4,
    tile: int | tuple[int, int] = DEFAULT_TILE,
    pad: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    out: np.ndarray | None = None,
    feather: int | None = None,
) -> np.ndarray:
    """Upscale a ``(C, H, W)`` image with a fully convolutional network, tile by tile.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        LR image, float32 in [0, 1] (stretched domain); ``C = 3`` for the AstroSleuth
        networks. Any real dtype and byte order works, and a ``np.memmap`` is read one row
        band at a time: the input is never resized or copied whole. Any size from 1x1 up.
    net : callable
        ``net(batch) -> upscaled``: ``(N, C, h, w)`` float32 to ``(N, C, scale*h,
        scale*w)`` array-like (a backend from :mod:`astrosleuth_astro.engine.backends`,
        or any such function). ``N <= batch_size``; every call has the same ``h, w``.
    scale : int
        The network's native scale factor (4 for AstroSleuth).
    tile : int or (int, int)
        Largest tile core in LR pixels (default 256); see :func:`choose_tile`. Images no
        larger than this run as one tile.
    pad : int, optional
        LR context pixels on each side of every tile (``None``: :data:`DEFAULT_PAD` = 32,
        measured for FAST-like networks; pass the model's value when known). The network
        sees tiles of ``tile + 2 * pad`` pixels.
    batch_size : int
        Tiles per ``net`` call.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``, called after every ``net`` call.
    out : ndarray, shape (C, scale*H, scale*W), optional
        Where to write the result (any float dtype, e.g. a ``np.memmap`` of ``'>f4'`` backed
        by a FITS file). Written top to bottom, one row of tiles at a time; a float32
        ``out`` (either byte order) also holds the row being assembled, so the last few
        rows of each tile row are written again when the next one is blended in. A new
        float32 array when omitted.
    feather : int, optional
        Half-width in LR pixels of the raised-cosine blend band around tile boundaries
        (``None``: :func:`default_feather`, ``pad // 8``). Pixels in the band keep
        ``pad - feather`` pixels of context.

    Returns
    -------
    ndarray, shape (C, scale*H, scale*W)
        ``out`` if given, else a new float32 array. Equals :func:`upscale_whole` to within
        the network's sensitivity to context beyond ``pad - feather`` pixels (exactly for
        per-pixel-local networks).

    Raises
    ------
    InputError
        For a bad image, ``out`` or argument (e.g. ``tile < 1``, ``pad < 0``).
    ModelError
        If ``net`` returns an array of the wrong shape.
    """
    image, pad, feather = _check_args(image, scale, pad, feather, batch_size)
    c, h, w = image.shape
    shape = (c, int(scale) * h, int(scale) * w)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif getattr(out, "shape", None) != shape:
        raise InputError(
            f"out: expected an array of shape {shape}, got {getattr(out, 'shape', out)!r}"
        )
    tiles = choose_tile(h, w, tile)
    args = (image, net, int(scale), tiles, pad, feather, int(batch_size), progress)
    if isinstance(out, np.ndarray) and out.dtype.kind == "f" and out.dtype.itemsize == 4:
        # float32 of either byte order: tile rows are assembled in `out` itself (the same
        # float32 arithmetic as in the strip), so no width-sized strip is needed.
        for _ in _rows(*args, target=out):
            pass
    else:
        for y0, band in _rows(*args):
            out[:, y0 : y0 + band.shape[1], :] = band
    return out


def upscale_whole(
    image: np.ndarray, net: Net, *, scale: int = 4, pad: int | None = None
) -> np.ndarray:
    """Reference result: the network run once on the whole reflect-padded image.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    net : callable
        As for :func:`upscale_tiled`.
    scale : int
    pad : int, optional
        Reflect padding in LR pixels (``None``: :data:`DEFAULT_PAD`).

    Returns
    -------
    ndarray, shape (C, scale*H, scale*W), float32
        ``net(reflect_pad(image, pad)[None])[0]`` cropped by ``scale * pad`` on each side.
        Needs memory for the whole image at once: for tests and small images.
    """
    image, pad, _ = _check_args(image, scale, pad, 0, 1)
    scale = int(scale)
    _, h, w = image.shape
    padded = reflect_pad(image, pad).astype(np.float32)[None]
    result = np.asarray(net(padded))[0]
    p = scale * pad
    return np.ascontiguousarray(result[:, p : p + scale * h, p : p + scale * w], dtype=np.float32)
