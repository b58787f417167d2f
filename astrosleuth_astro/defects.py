"""Pixels the network must not see as they are: defects and clipped (saturated) pixels.

A network reads its input through a receptive field of many pixels: one dead pixel (0 ADU
on a sky of 500) darkens the whole neighbourhood it sees, and a consistency step can only
move that damage around, ringing. So before the network:

* a **defect** (a dead, hot or cosmic-ray pixel, or a pixel of a bad column) is replaced
  by the median of its 8 neighbours, and
* a **clipped** pixel (at the channel's maximum, on a plateau of such pixels) is left as
  it is,

and after it both get their own ``s x s`` output block back at their input value (the
pipeline's "held" pixels, like non-finite ones): the block's mean is the input, nothing
spreads, and no value is made up.

A pixel is a defect when it is more than :data:`DEFECT_SIGMA` background sigmas from the
median of its 8 neighbours *and* those neighbours do not support it: their median is
within :data:`SUPPORT_RATIO` of the deviation from the median of the ring of 16 pixels
around them. A star's core has neighbours that rise towards it; a hot pixel or a cosmic
ray sits on flat sky. Stars sampled below about 2 pixels FWHM cannot always be told from
hot pixels by their shape (a centred FWHM-1.5 star's four diagonal neighbours are taken for
defects, ``tests/test_defects.py``): such pixels come out as flat blocks of exact flux,
which is what the data say about them. A defect on a bright star's wing can pass for
the star's gradient and is then not found.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

#: A defect deviates from its neighbours' median by more than this many sigmas.
DEFECT_SIGMA = 10.0
#: ...and its neighbours' median differs from the outer ring's by less than this
#: fraction of that deviation.
SUPPORT_RATIO = 0.1
#: At least this many pixels at the channel maximum make it a clipping level.
MIN_CLIPPED = 4

_RING8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_RING16 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2]


def _ring_values(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, ring) -> np.ndarray:
    """``(N, len(ring))`` values around pixels ``(ys, xs)``, edges replicated."""
    h, w = img.shape
    cols = [img[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] for dy, dx in ring]
    return np.stack(cols, axis=1)


def find_defects(
    img: np.ndarray, sigma: float, nsigma: float = DEFECT_SIGMA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Defective pixels of one 2-D channel, and the values that replace them.

    Parameters
    ----------
    img : ndarray, shape (H, W)
        Finite linear pixels, any units.
    sigma : float
        Background noise in the units of ``img``.
    nsigma : float
        Deviation, in sigmas, from the median of the 8 neighbours.

    Returns
    -------
    ys, xs : ndarray of int
        The defects' positions.
    fill : ndarray, float32
        The median of each one's 8 neighbours.
    """
    img = np.asarray(img, dtype=np.float32)
    limit = nsigma * float(sigma)
    if not np.isfinite(limit) or limit <= 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32)
    # A superset first: x - median8 > limit needs x - min3x3 > limit (and the other sign
    # alike); the fast min/max filters leave a few candidates for the exact medians.
    cand = (img - ndimage.minimum_filter(img, 3, mode="nearest") > limit) | (
        ndimage.maximum_filter(img, 3, mode="nearest") - img > limit
    )
    ys, xs = np.nonzero(cand)
    if ys.size == 0:
        return ys, xs, np.zeros(0, np.float32)
    m8 = np.median(_ring_values(img, ys, xs, _RING8), axis=1)
    m16 = np.median(_ring_values(img, ys, xs, _RING16), axis=1)
    dev = img[ys, xs] - m8
    hit = (np.abs(dev) > limit) & (np.abs(m8 - m16) < SUPPORT_RATIO * np.abs(dev))
    return ys[hit], xs[hit], m8[hit].astype(np.float32)


def clipped_pixels(img: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of one channel at its clipping level ``top``, when it is one.

    A level is a clipping level when at least :data:`MIN_CLIPPED` pixels sit exactly on
    it and each of them touches another (a plateau: a saturated core, a burnt-out
    region); a single brightest pixel is just that.

    Returns
    -------
    ys, xs : ndarray of int
    """
    at = np.asarray(img) >= top
    if np.count_nonzero(at) < MIN_CLIPPED:
        return np.zeros(0, int), np.zeros(0, int)
    neighbours = ndimage.convolve(at.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant")
    plateau = at & (neighbours >= 2)
    return np.nonzero(plateau)


def local_fill(img: np.ndarray, bad: np.ndarray, default: float) -> np.ndarray:
    """Values for the non-finite pixels of one channel: the median of their finite
    8 neighbours, or ``default`` where none is finite.

    Returns
    -------
    ndarray, float32, one value per ``True`` of ``bad`` (in ``np.nonzero`` order).
    """
    ys, xs = np.nonzero(bad)
    ring = _ring_values(np.asarray(img, dtype=np.float32), ys, xs, _RING8)
    ring = np.where(np.isfinite(ring), ring, np.nan)
    with np.errstate(all="ignore"):
        finite = np.isfinite(ring).any(axis=1)
        med = np.full(ys.size, default, dtype=np.float32)
        if finite.any():
            med[finite] = np.nanmedian(ring[finite], axis=1)
    return med


class HeldPixels:
    """Sparse per-pixel corrections of the input: positions, and fill values.

    Parameters
    ----------
    shape : (int, int, int)
        ``(C, H, W)`` of the image.
    c, y, x : ndarray of int
        Positions of the held pixels.
    fill : ndarray of float32
        The value the network sees there (NaN: the input's own value).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        c: np.ndarray,
        y: np.ndarray,
        x: np.ndarray,
        fill: np.ndarray,
    ) -> None:
        order = np.argsort(y, kind="stable")
        self.shape = shape
        self.c, self.y, self.x = (np.asarray(v, dtype=np.int64)[order] for v in (c, y, x))
        self.fill = np.asarray(fill, dtype=np.float32)[order]

    def __len__(self) -> int:
        return int(self.y.size)

    def _select(self, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entries in ``rows`` and their row positions within the selection (an entry
        appears once for each time its row is selected)."""
        h = self.shape[1]
        if isinstance(rows, slice):
            r0, r1, step = rows.indices(h)
            if step == 1:
                lo, hi = np.searchsorted(self.y, [r0, r1])
                idx = np.arange(lo, hi)
                return idx, self.y[idx] - r0
            rows = np.arange(r0, r1, step)
        rows = np.asarray(rows, dtype=np.int64) % h
        order = np.argsort(rows, kind="stable")
        ranked = rows[order]
        first = np.searchsorted(ranked, self.y, side="left")
        count = np.searchsorted(ranked, self.y, side="right") - first
        idx = np.repeat(np.arange(self.y.size), count)
        # For each repeated entry, its k-th occurrence among the selected rows.
        k = np.arange(idx.size) - np.repeat(np.cumsum(count) - count, count)
        return idx, order[np.repeat(first, count) + k]

    def mask_rows(self, rows: slice | np.ndarray, out: np.ndarray) -> np.ndarray:
        """Set the held pixels of ``rows`` in the boolean block ``out`` (C, n, W)."""
        idx, pos = self._select(rows)
        out[self.c[idx], pos, self.x[idx]] = True
        return out

    def fill_rows(self, rows: slice | np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the fill values of ``rows`` into the float block ``out`` (C, n, W)."""
        idx, pos = self._select(rows)
        keep = np.isfinite(self.fill[idx])
        idx, pos = idx[keep], pos[keep]
        out[self.c[idx], pos, self.x[idx]] = self.fill[idx]
        return out


def scan(
    read_rows: Callable[[slice], np.ndarray],
    fill: np.ndarray | None,
    shape: tuple[int, int, int],
    sigma: np.ndarray,
    top: np.ndarray,
    block_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The held pixels of a whole image, by blocks of rows with two rows of halo (what
    the ring of 16 needs): non-finite pixels next to finite ones (:func:`local_fill`),
    defects (:func:`find_defects`) and clipped pixels (:func:`clipped_pixels`).

    Parameters
    ----------
    read_rows : callable
        ``read_rows(slice)`` -> ``(C, n, W)`` float32 rows of the input (NaN allowed).
    fill : ndarray, shape (C,), or None
        The value of non-finite pixels with no finite neighbour (None: all finite).
    shape : (int, int, int)
    sigma, top : ndarray, shape (C,)
        Background noise and maximum per channel.
    block_rows : int

    Returns
    -------
    c, y, x, fill : ndarray
        Every held pixel that is not simply non-finite, with the value the network is
        given there; NaN for clipped pixels (given as they are).
    """
    n_ch, h, _ = shape
    halo = 2
    parts = []
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        raw = read_rows(slice(a, b))
        for c in range(n_ch):
            img = raw[c].copy()
            bad = ~np.isfinite(img)
            ey = ex = np.zeros(0, int)
            efill = np.zeros(0, np.float32)
            if bad.any():
                edge = bad & ndimage.binary_dilation(~bad, np.ones((3, 3), bool))
                ey, ex = np.nonzero(edge)
                efill = local_fill(img, edge, float(fill[c]) if fill is not None else 0.0)
                img[bad] = fill[c] if fill is not None else 0.0
                img[ey, ex] = efill
            dy, dx, dfill = find_defects(img, float(sigma[c]))
            real = ~bad[dy, dx]  # a filled pixel is not a defect of the data
            cy, cx = clipped_pixels(img, float(top[c]))
            kept = ~bad[cy, cx]
            ys = np.concatenate([ey, dy[real], cy[kept]])
            xs = np.concatenate([ex, dx[real], cx[kept]])
            vals = np.concatenate(
                [efill, dfill[real], np.full(int(kept.sum()), np.nan, np.float32)]
            )
            own = (ys >= r0 - a) & (ys < r1 - a)
            if not own.any():
                continue
            # A pixel found twice (a saturated hot pixel) is held once, with its first value.
            _, first = np.unique(ys[own] * img.shape[1] + xs[own], return_index=True)
            sel = np.nonzero(own)[0][first]
            parts.append((np.full(sel.size, c), ys[sel] + a, xs[sel], vals[sel]))
    if not parts:
        empty = np.zeros(0, int)
        return empty, empty, empty, np.zeros(0, np.float32)
    c, y, x, v = (np.concatenate(p) for p in zip(*parts, strict=True))
    return c, y, x, v
