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
median of its 8 neighbours *and* is not explained by its surroundings:

* a bright one is a star's when its neighbours' median differs from the median of the
  ring of 16 pixels around them by at least :data:`SUPPORT_RATIO` (2 %) of the deviation
  and by :data:`SUPPORT_SIGMA` sigmas: a star's core, even binned to under a pixel FWHM,
  spills that much into its neighbours, while a hot pixel or a cosmic ray sits on flat
  sky (measured: below 0.3 % for the hot pixels of a simulated raw frame, 5-10 % for the
  stars of the M67 plate binned by 4);
* a dark one is a dead pixel only when it is also more than the same limit below the
  darkest pixel of the ring (a saddle between two stars of a crowded field is below its
  neighbours, not below its surroundings), and not at the bottom of a valley its
  neighbours fall into. So a dead pixel is found even on a star's wing.

A bad column is found as a column (:func:`bad_columns`): each of its pixels has two bad
neighbours. Defects are taken round by round (:func:`find_defects`), so that a dead pixel
does not make its neighbours look bright.

What is not found: a hot pixel on a bright star's steep wing, whose neighbours rise as an
undersampled star's do (``tests/test_defects.py``, strict xfails).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

#: A defect deviates from its neighbours' median by more than this many sigmas.
DEFECT_SIGMA = 10.0
#: ...and its neighbours' median differs from the outer ring's by less than this
#: fraction of that deviation (or by less than :data:`SUPPORT_SIGMA` sigmas).
SUPPORT_RATIO = 0.02
#: A rise of the neighbours smaller than this many sigmas is noise, not a star's wing.
SUPPORT_SIGMA = 0.5
#: Rounds of :func:`find_defects`: each takes the defects that have no stronger one of
#: the other sign next to them, fills them, and tests those again.
MAX_PASSES = 6
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
    img = np.array(img, dtype=np.float32)  # a copy: found defects are filled in it
    limit = nsigma * float(sigma)
    if not np.isfinite(limit) or limit <= 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32)
    # A superset first: x - median8 > limit needs x - min3x3 > limit (and the other sign
    # alike); the fast min/max filters leave a few candidates for the exact medians.
    cand = (img - ndimage.minimum_filter(img, 3, mode="nearest") > limit) | (
        ndimage.maximum_filter(img, 3, mode="nearest") - img > limit
    )
    found_y, found_x, found_v = [], [], []
    # Bad columns first: a pixel of a column that is off as a whole has two bad
    # neighbours, which a star's wing could pass for.
    cols = bad_columns(img, limit)
    if cols.size:
        cy = np.repeat(np.arange(img.shape[0]), cols.size)
        cx = np.tile(cols, img.shape[0])
        fill = np.median(_ring_values(img, cy, cx, _RING8), axis=1).astype(np.float32)
        found_y.append(cy)
        found_x.append(cx)
        found_v.append(fill)
        img[cy, cx] = fill
        cand[:, cols] = False
    ys, xs = np.nonzero(cand)
    # A defect pulls its neighbours' medians: on a star's wing a dead pixel makes the
    # pixels next to it look bright. So the most deviant defect of each neighbourhood is
    # taken first and filled, and the others are tested again without it.
    for _ in range(MAX_PASSES):
        if ys.size == 0:
            break
        hit, dev, m8 = _test(img, ys, xs, limit, float(sigma))
        if not hit.any():
            break
        hy, hx, hdev = ys[hit], xs[hit], dev[hit]
        # Deferred: a hit next to a stronger hit of the other sign (its median may be
        # pulled by it). Streaks and columns (same sign) are all taken at once.
        # (Sparse: the hits' own neighbourhoods only, not a filter over the image.)
        up = np.zeros(img.shape, np.float32)
        down = np.zeros(img.shape, np.float32)
        up[hy, hx] = np.maximum(hdev, 0.0)
        down[hy, hx] = np.maximum(-hdev, 0.0)
        up = _ring_values(up, hy, hx, _RING8).max(axis=1)
        down = _ring_values(down, hy, hx, _RING8).max(axis=1)
        first = np.where(hdev > 0, down <= hdev, up <= -hdev)
        ty, tx, tv = hy[first], hx[first], m8[hit][first].astype(np.float32)
        found_y.append(ty)
        found_x.append(tx)
        found_v.append(tv)
        img[ty, tx] = tv
        # Candidates left: the hits not taken yet (the rest are settled).
        rest = np.ones(hy.size, bool)
        rest[np.nonzero(first)[0]] = False
        ys, xs = hy[rest], hx[rest]
    if not found_y:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32)
    return np.concatenate(found_y), np.concatenate(found_x), np.concatenate(found_v)


def bad_columns(img: np.ndarray, limit: float) -> np.ndarray:
    """Columns whose median over the rows sits more than ``limit`` from the median of the
    medians of the two columns on either side (a bad or hot CCD column; two columns a side,
    so that a bad column's neighbours do not look bad by contrast).

    Returns
    -------
    ndarray of int
        The columns' indices (edge columns replicated).
    """
    h, w = img.shape
    if w < 5 or h < 8:
        return np.zeros(0, int)
    # Column medians first (robust to the stars a column crosses), then each against the
    # median of its four neighbours: one median over the rows instead of one per pixel.
    col = np.pad(np.median(img, axis=0), 2, mode="edge")
    side = np.median(np.stack([col[k : k + w] for k in (0, 1, 3, 4)]), axis=0)
    return np.nonzero(np.abs(col[2:-2] - side) > limit)[0]


def _test(
    img: np.ndarray, ys: np.ndarray, xs: np.ndarray, limit: float, sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which candidates are defects: far from their neighbours' median, and neither a
    star's pixel nor a dip between sources (the rule of the module docstring).

    Returns
    -------
    hit : ndarray of bool
    dev : ndarray
        Value minus the median of the 8 neighbours.
    m8 : ndarray
        That median.
    """
    m8 = np.median(_ring_values(img, ys, xs, _RING8), axis=1)
    ring16 = _ring_values(img, ys, xs, _RING16)
    m16 = np.median(ring16, axis=1)
    v = img[ys, xs]
    dev = v - m8
    rise = m8 - m16
    # A bright pixel is a star's when its neighbours rise (or fall: the edge of a star)
    # away from the ring by a share of its deviation. A dark one is a dead pixel only when
    # it is also below the darkest pixel of the ring around it (a saddle between stars of
    # a crowded field is not), and not at the bottom of a valley the neighbours fall into.
    big = (np.abs(rise) >= SUPPORT_RATIO * np.abs(dev)) & (np.abs(rise) >= SUPPORT_SIGMA * sigma)
    star = (dev > 0) & big
    dip = (dev < 0) & ((v > ring16.min(axis=1) - limit) | ((rise < 0) & big))
    return (np.abs(dev) > limit) & ~star & ~dip, dev, m8


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

    Two passes: the defects first, then the clipped pixels at the highest level of the
    pixels that are not defects (a single hot pixel above a saturated star's plateau must
    not hide it).

    Parameters
    ----------
    read_rows : callable
        ``read_rows(slice)`` -> ``(C, n, W)`` float32 rows of the input (NaN allowed).
    fill : ndarray, shape (C,), or None
        The value of non-finite pixels with no finite neighbour (None: all finite).
    shape : (int, int, int)
    sigma, top : ndarray, shape (C,)
        Background noise and maximum per channel (the maximum of the finite pixels).
    block_rows : int

    Returns
    -------
    c, y, x, fill : ndarray
        Every held pixel that is not simply non-finite, with the value the network is
        given there; NaN for clipped pixels (given as they are).
    """
    n_ch, h, _ = shape
    halo = 2

    def blocks():
        for r0 in range(0, h, block_rows):
            r1 = min(h, r0 + block_rows)
            a, b = max(0, r0 - halo), min(h, r1 + halo)
            yield r0, r1, a, read_rows(slice(a, b))

    def filled(raw: np.ndarray, c: int):
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
        return img, bad, ey, ex, efill

    found = []  # per block and channel: (c, rows, ys, xs, fill values)
    clipped = {}  # (channel, first row) -> clipped pixels of the block
    level = np.full(n_ch, -np.inf)  # the highest value that is not a defect
    for r0, r1, a, raw in blocks():
        for c in range(n_ch):
            img, bad, ey, ex, efill = filled(raw, c)
            dy, dx, dfill = find_defects(img, float(sigma[c]))
            real = ~bad[dy, dx]  # a filled pixel is not a defect of the data
            dy, dx, dfill = dy[real], dx[real], dfill[real]
            own_rows = slice(r0 - a, r1 - a)
            clean = np.where(bad, -np.inf, img)
            clean[dy, dx] = -np.inf
            level[c] = max(level[c], float(clean[own_rows].max(initial=-np.inf)))
            cy, cx = clipped_pixels(img, float(top[c]))
            kept = ~bad[cy, cx]
            clipped[(c, r0)] = (cy[kept], cx[kept])
            found.append(
                (
                    c,
                    r0,
                    r1,
                    a,
                    np.concatenate([ey, dy]),
                    np.concatenate([ex, dx]),
                    np.concatenate([efill, dfill]),
                )
            )
    # A level that is not the channel maximum is a clip level only if it forms a plateau
    # (clipped_pixels decides); a channel of defects only keeps its maximum.
    level = np.where(np.isfinite(level), level, np.asarray(top, dtype=np.float64))

    # Channels whose maximum is a defect: their clipped pixels are looked for again, at the
    # highest level that is not a defect (most images need no second pass).
    again = [c for c in range(n_ch) if level[c] < float(top[c])]
    if again:
        for r0, _, _, raw in blocks():
            for c in again:
                img, bad, *_ = filled(raw, c)
                cy, cx = clipped_pixels(img, float(level[c]))
                kept = ~bad[cy, cx]
                clipped[(c, r0)] = (cy[kept], cx[kept])
    parts = []
    for c, r0, r1, a, ys0, xs0, vals0 in found:
        cy, cx = clipped[(c, r0)]
        ys = np.concatenate([ys0, cy])
        xs = np.concatenate([xs0, cx])
        vals = np.concatenate([vals0, np.full(cy.size, np.nan, np.float32)])
        own = (ys >= r0 - a) & (ys < r1 - a)
        if not own.any():
            continue
        # A pixel found twice (a saturated hot pixel) is held once, with its first value.
        width = shape[2]
        _, first = np.unique(ys[own] * width + xs[own], return_index=True)
        sel = np.nonzero(own)[0][first]
        parts.append((np.full(sel.size, c), ys[sel] + a, xs[sel], vals[sel]))
    if not parts:
        empty = np.zeros(0, int)
        return empty, empty, empty, np.zeros(0, np.float32)
    c, y, x, v = (np.concatenate(p) for p in zip(*parts, strict=True))
    return c, y, x, v
