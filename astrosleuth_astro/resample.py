"""Flux-conserving resampling used around the network.

The networks are native 4x. Other scales are made from the 4x result:

* scale 2: 2x2 block average of the 4x image (``ccdproc.block_average``);
* scale 1 ("enhance"): 4x4 block average (binning) back to the input grid;
* scale 3: exact area-overlap resampling from the 4x grid to the 3x grid.

All three keep the *mean* of every input-pixel footprint (pixel values are intensities
per pixel area, so a flat background of level b stays b), and none mixes values across
input-pixel boundaries: for integer scales each output pixel lies inside one input pixel.

Bilinear upsampling matching ``torch.nn.functional.interpolate(..., mode="bilinear",
align_corners=False)`` is provided here too, in numpy, so the default (onnxruntime-only)
path needs no torch. It can produce any band of output rows, for streaming.
"""

from __future__ import annotations

import numpy as np

from .errors import OptionError

#: Native scale of the AstroSleuth networks: scales 1-3 are made from a 4x result.
NATIVE_SCALE = 4

SCALES = (1, 2, 3, 4)


def _block_average(img: np.ndarray, factor: int) -> np.ndarray:
    import ccdproc  # imported lazily: it pulls in a lot of astropy

    block = (1,) * (img.ndim - 2) + (factor, factor)
    return np.asarray(ccdproc.block_average(img, block), dtype=np.float32)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Dense ``(n_out, n_in)`` matrix of area-overlap weights (rows sum to 1)."""
    edges_in = np.arange(n_in + 1, dtype=np.float64)
    edges_out = np.linspace(0.0, n_in, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resample(img: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Resample the last two axes of ``img`` to ``out_shape`` by exact area overlap.

    Parameters
    ----------
    img : ndarray, shape (..., H, W)
    out_shape : (int, int)
        Output ``(H', W')``.

    Returns
    -------
    ndarray, shape (..., H', W'), float32
        Every output pixel is the area-weighted mean of the input pixels it covers.
    """
    h, w = img.shape[-2:]
    ry = _area_matrix(h, out_shape[0]).astype(np.float32)
    rx = _area_matrix(w, out_shape[1]).astype(np.float32)
    # Separable: rows then columns. The matrices are small (a few thousand squared at
    # most per band), and BLAS does the work.
    tmp = np.einsum("ij,...jk->...ik", ry, np.asarray(img, dtype=np.float32))
    return np.einsum("...ik,lk->...il", tmp, rx).astype(np.float32)


def from_native(img: np.ndarray, native: int, scale: int) -> np.ndarray:
    """Turn a ``native``-x result into a ``scale``-x one, conserving flux per footprint.

    Parameters
    ----------
    img : ndarray, shape (..., native*H, native*W)
    native : int
        Scale of ``img`` relative to the input (4 for the AstroSleuth networks).
    scale : int
        Wanted output scale, ``1 <= scale <= native``.
    """
    if scale == native:
        return img
    if not 1 <= scale < native:
        raise OptionError("scale", scale, f"not supported (choose from {SCALES})")
    if native % scale == 0:
        return _block_average(img, native // scale)
    h, w = img.shape[-2] // native, img.shape[-1] // native
    return area_resample(img, (h * scale, w * scale))


def _bilinear_taps(n_in: int, scale: int, start: int, stop: int):
    """Source indices and weights for output positions ``start..stop-1`` (align_corners=False)."""
    pos = (np.arange(start, stop, dtype=np.float64) + 0.5) / scale - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (pos - i0).astype(np.float32)
    return i0, i1, frac


def upsample_bilinear(
    img: np.ndarray, scale: int, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Bilinear upsampling identical to torch's ``align_corners=False`` mode.

    Parameters
    ----------
    img : ndarray, shape (..., H, W)
    scale : int
        Integer upsampling factor.
    rows : (int, int), optional
        Only compute output rows ``rows[0]:rows[1]`` (for band-by-band streaming).

    Returns
    -------
    ndarray, shape (..., rows, scale*W), float32
    """
    h, w = img.shape[-2:]
    r0, r1 = rows if rows is not None else (0, h * scale)
    y0, y1, fy = _bilinear_taps(h, scale, r0, r1)
    src = np.asarray(img, dtype=np.float32)
    top = src[..., y0, :]
    bot = src[..., y1, :]
    vert = top + (bot - top) * fy[:, None]
    # Along x, output column s*i + k reads columns i + d_k and i + d_k + 1 with the same
    # weight for every i: shifted slices of the edge-replicated row, not a gather (the
    # same arithmetic as the taps, so the same bits, a few times faster).
    pad = np.concatenate([vert[..., :1], vert, vert[..., -1:]], axis=-1)
    out = np.empty((*vert.shape[:-1], w, scale), dtype=np.float32)
    for k in range(scale):
        pos = (k + 0.5) / scale - 0.5  # relative to the input column i
        d = int(np.floor(pos))
        frac = np.float32(pos - d)
        left = pad[..., 1 + d : 1 + d + w]
        right = pad[..., 2 + d : 2 + d + w]
        np.subtract(right, left, out=out[..., k])
        out[..., k] *= frac
        out[..., k] += left
    return out.reshape(*vert.shape[:-1], w * scale)


#: Above this fraction of nonzero input pixels, :func:`add_upsampled_bilinear` runs the
#: dense upsampling (each nonzero pixel touches up to (2 * scale)**2 output pixels).
SPARSE_FRACTION = 0.02


def add_upsampled_bilinear(
    out: np.ndarray,
    img: np.ndarray,
    scale: int,
    rows: tuple[int, int] | None = None,
    cols: tuple[int, int] | None = None,
) -> np.ndarray:
    """``out += upsample_bilinear(img, scale, rows)[..., cols[0]:cols[1]]``, cheaply for
    a mostly zero ``img``.

    An output pixel whose four taps are all zero is exactly 0 in the upsampling, so when
    few input pixels are nonzero (the clipped residual of a stretch: the few noise pixels
    below its black point) only the output pixels next to them are computed, with the
    same float32 operations as :func:`upsample_bilinear`: the sum is bit-identical.

    Parameters
    ----------
    out : ndarray, shape (C, rows, cols), float32
        Added to in place.
    img : ndarray, shape (C, H, W)
    scale : int
    rows, cols : (int, int), optional
        Output rows and columns of the upsampled image (default: all).

    Returns
    -------
    ndarray
        ``out``.
    """
    _, h, w = img.shape
    r0, r1 = rows if rows is not None else (0, h * scale)
    c0, c1 = cols if cols is not None else (0, w * scale)
    src = np.asarray(img, dtype=np.float32)
    ii, jj = np.nonzero(np.any(src != 0, axis=0))
    if ii.size == 0:
        return out
    if ii.size > SPARSE_FRACTION * h * w:
        out += upsample_bilinear(src, scale, rows=(r0, r1))[..., c0:c1]
        return out
    y0, y1, fy = _bilinear_taps(h, scale, r0, r1)
    x0, x1, fx = _bilinear_taps(w, scale, c0, c1)
    # Output rows that read input row i: those whose taps are (i - 1, i) or (i, i + 1),
    # a contiguous run because the taps never decrease; the same for columns.
    ya, yb = np.searchsorted(y0, ii - 1, "left"), np.searchsorted(y0, ii, "right")
    xa, xb = np.searchsorted(x0, jj - 1, "left"), np.searchsorted(x0, jj, "right")
    ky, kx = int((yb - ya).max()), int((xb - xa).max())
    yy = ya[:, None, None] + np.arange(ky)[None, :, None]
    xx = xa[:, None, None] + np.arange(kx)[None, None, :]
    keep = (yy < yb[:, None, None]) & (xx < xb[:, None, None])
    flat = np.unique((yy * (c1 - c0) + xx)[keep])
    ys, xs = np.divmod(flat, c1 - c0)
    # The same operations, in the same order, as upsample_bilinear.
    top, bot = src[:, y0[ys], x0[xs]], src[:, y1[ys], x0[xs]]
    left = top + (bot - top) * fy[ys]
    top, bot = src[:, y0[ys], x1[xs]], src[:, y1[ys], x1[xs]]
    right = top + (bot - top) * fy[ys]
    out[:, ys, xs] += left + (right - left) * fx[xs]
    return out


def upsample_nearest(
    img: np.ndarray, scale: int, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Nearest-neighbour upsampling (each input pixel becomes a ``scale x scale`` block)."""
    h, w = img.shape[-2:]
    r0, r1 = rows if rows is not None else (0, h * scale)
    ys = np.arange(r0, r1) // scale
    return np.repeat(img[..., ys, :], scale, axis=-1)
