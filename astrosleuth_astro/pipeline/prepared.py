"""Steps 1-2 of the pipeline on the whole input: the non-finite mask and the stretch.

:func:`prepare` returns a :class:`Prepared`, what every band of the output needs from the
whole input; in lazy mode its arrays are :class:`RowSource` s computed band by band.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..defects import HeldPixels
from ..defects import scan as scan_defects
from ..errors import InputError
from ..noise import NoiseModel
from ..stretch import Stretch, background_stats, fit_stretch


def as_chw(data: np.ndarray, name: str = "input") -> tuple[np.ndarray, bool]:
    """Validate an image array and view it as ``(C, H, W)``.

    Returns the view and whether the input was 2-D.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr, was_2d = arr[np.newaxis], True
    elif arr.ndim == 3:
        was_2d = False
    else:
        raise InputError(f"{name}: expected a 2-D image or a (3, H, W) cube, got {arr.ndim}-D data")
    if arr.shape[0] not in (1, 3):
        raise InputError(
            f"{name}: a cube must have 1 or 3 planes (colour as Siril writes it), got {arr.shape[0]}"
        )
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise InputError(f"{name}: empty image of shape {arr.shape[1:]}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name}: unsupported pixel type {arr.dtype}")
    return arr, was_2d


@dataclass
class Prepared:
    """What the pipeline derives from the whole input before the network runs.

    Computed once by :func:`prepare`; :func:`to_linear` and :func:`finish_rows` then turn
    any band of the network's output into final rows, so bands processed anywhere (here,
    or on Dask workers) give exactly the single-run result.

    Attributes
    ----------
    chw : ndarray, shape (C, H, W)
        The input as given (non-finite pixels included).
    work : ndarray, shape (C, H, W), float32
        What the network is given: the input, with non-finite pixels replaced by the
        median of their finite neighbours (the channel's median where none is), and
        defects by their neighbours' median (:mod:`~astrosleuth_astro.defects`).
    bad : ndarray of bool or None
        The held pixels, whose output blocks are the input's own value: non-finite
        pixels, defects and clipped pixels (None when there is none).
    stretch : Stretch
    stretched : ndarray, shape (C, H, W), float32
        ``stretch.forward(work)``: what the network sees.
    residual : ndarray or None
        The clipped residual (None when the stretch clips nothing).
    lo : ndarray, shape (C,)
        Channel minimum of ``work``.
    hi : ndarray, shape (C,) or None
        Channel maximum of ``work`` (the ceiling of flux conservation).
    constant : ndarray of bool, shape (C,)
        Channels with a single value: they come out exactly constant.
    was_2d : bool
    background : (ndarray, ndarray) or None
        :func:`~astrosleuth_astro.stretch.background_stats` of ``chw`` (median, noise per
        channel), measured once here for the defect scan and reused by the consistency
        step.
    noise : NoiseModel or None
        The noise model a noise-aware network is told (:mod:`astrosleuth_astro.noise`),
        fitted on first use by :func:`~astrosleuth_astro.pipeline.condition.noise_of`.
    """

    chw: np.ndarray
    work: np.ndarray
    bad: np.ndarray | None
    stretch: Stretch
    stretched: np.ndarray
    residual: np.ndarray | None
    lo: np.ndarray
    constant: np.ndarray
    was_2d: bool
    hi: np.ndarray | None = None
    background: tuple[np.ndarray, np.ndarray] | None = None
    noise: NoiseModel | None = None


class RowSource:
    """A read-only ``(C, H, W)`` array whose rows are computed when they are indexed.

    The tiled engine (:func:`~astrosleuth_astro.engine.tiles.upscale_tiled`) and the
    band-by-band post-processing only ever read bands of rows, so a whole-image
    intermediate (the stretched input, the clipped residual, the non-finite mask) need not
    exist: indexing ``src[c, rows, cols]`` calls ``compute(rows)`` for just those rows.
    ``np.asarray(src)`` computes every row (for callers that need the whole array).

    Parameters
    ----------
    shape : (int, int, int)
        ``(C, H, W)``.
    dtype : dtype
        The dtype ``compute`` returns.
    compute : callable
        ``compute(rows) -> ndarray`` of shape ``(C, n, W)`` for ``rows`` a slice or an
        integer index array along the row axis.
    """

    #: Marks an array-like that :mod:`~astrosleuth_astro.engine.tiles` reads by row bands.
    row_source = True
    ndim = 3

    def __init__(
        self,
        shape: tuple[int, int, int],
        dtype: np.dtype | type,
        compute: Callable[[slice | np.ndarray], np.ndarray],
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._compute = compute

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: object) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(n for n, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D row source: {key!r}")
        chans, rows, cols = key
        if isinstance(rows, int | np.integer):
            block = self._compute(slice(int(rows), int(rows) + 1 or None))[:, 0]
            return block[chans, cols]
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
        return self._compute(rows)[chans, :, cols]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        full = self._compute(slice(None))
        return full if dtype is None else full.astype(dtype, copy=False)


#: Pixels per block when :func:`prepare` scans the whole input (lazy mode).
SCAN_BLOCK_PIXELS = 1 << 18


def _row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of rows covering ``(C, H, W)`` in blocks of about ``SCAN_BLOCK_PIXELS``."""
    n_ch, h, w = shape
    rows = max(1, SCAN_BLOCK_PIXELS // max(1, n_ch * w))
    for r0 in range(0, h, rows):
        yield slice(r0, min(h, r0 + rows))


def has_finite(data: np.ndarray) -> bool:
    """Whether ``data`` (any shape, may be a ``np.memmap``) has at least one finite pixel.

    Scans blocks of rows and stops at the first finite value, so a normal image costs one
    block and an all-NaN one a single pass without a whole-image mask.
    """
    chw, _ = as_chw(data)
    if chw.dtype.kind in "iub":
        return chw.size > 0
    return any(np.isfinite(np.asarray(chw[:, rows])).any() for rows in _row_blocks(chw.shape))


def _channel_fill_lazy(chw: np.ndarray) -> np.ndarray:
    """Per-channel value used in place of non-finite pixels: the median of the rest."""
    fill = np.zeros(chw.shape[0], dtype=np.float32)
    for c in range(chw.shape[0]):
        step = max(1, int(np.sqrt(chw[c].size / 1_000_000)))
        raw = np.asarray(chw[c, ::step, ::step])
        sample = raw.astype(np.float32)[np.isfinite(raw)]
        if sample.size == 0:  # the subsample missed the few finite pixels
            parts = []
            for rows in _row_blocks((1, *chw.shape[1:])):
                block = np.asarray(chw[c, rows])
                parts.append(block.astype(np.float32)[np.isfinite(block)])
            sample = np.concatenate(parts)
        fill[c] = np.median(sample) if sample.size else 0.0
    return fill


def _prepare_rows(chw: np.ndarray, was_2d: bool, stretch: str | Stretch, lazy: bool) -> Prepared:
    """:func:`prepare`: whole-image values are found by scanning blocks of rows; in lazy
    mode ``work``, ``bad``, ``stretched`` and ``residual`` stay :class:`RowSource` s."""
    n_ch, h, w = chw.shape
    any_bad = any(
        not np.isfinite(np.asarray(chw[:, rows])).all() for rows in _row_blocks(chw.shape)
    )
    fill = _channel_fill_lazy(chw) if any_bad else None

    def filled_rows(rows: slice | np.ndarray) -> np.ndarray:
        raw = np.asarray(chw[:, rows, :])
        out = raw.astype(np.float32, copy=True)
        if fill is not None:
            np.copyto(out, np.broadcast_to(fill[:, None, None], out.shape), where=~np.isfinite(raw))
        return out

    stats = background_stats(chw)
    sigma = stats[1]
    top = np.full(n_ch, -np.inf)
    for rows in _row_blocks(chw.shape):
        block = filled_rows(rows)
        top = np.maximum(top, block.reshape(n_ch, -1).max(axis=1))

    # Defects, clipped pixels and the non-finite pixels next to data
    # (:mod:`~astrosleuth_astro.defects`), found with two rows of context.
    def raw_rows(rows: slice) -> np.ndarray:
        return np.asarray(chw[:, rows, :]).astype(np.float32)

    found = scan_defects(
        raw_rows, fill, chw.shape, np.nan_to_num(sigma), top, _block_rows(chw.shape)
    )
    held = HeldPixels(chw.shape, *found)

    def work_rows(rows: slice | np.ndarray) -> np.ndarray:
        return held.fill_rows(rows, filled_rows(rows))

    def bad_rows(rows: slice | np.ndarray) -> np.ndarray:
        return held.mask_rows(rows, ~np.isfinite(np.asarray(chw[:, rows, :])))

    work = RowSource(chw.shape, np.float32, work_rows)
    if not lazy:
        work = np.asarray(work)
    if isinstance(stretch, Stretch):
        st = stretch
    else:  # fitted on the filled image
        st = fit_stretch(work, stretch, linear_first=True)
    if st.channels != n_ch:
        raise InputError(f"stretch: fitted for {st.channels} channels, image has {n_ch}")
    lo = np.full(n_ch, np.inf)
    hi = np.full(n_ch, -np.inf)
    for rows in _row_blocks(chw.shape):
        block = work[:, rows]
        lo = np.minimum(lo, block.reshape(n_ch, -1).min(axis=1))
        hi = np.maximum(hi, block.reshape(n_ch, -1).max(axis=1))
    lo, hi = lo.astype(np.float32), hi.astype(np.float32)
    # A residual is non-zero only where a pixel lies outside [black, white]: confirm there.
    clipped = bool(np.any(lo < st.black) or np.any(hi > st.white))
    if clipped:
        clipped = any(np.any(st.clip_residual(work[:, rows])) for rows in _row_blocks(chw.shape))
    any_held = any_bad or len(held) > 0

    def stretched_rows(rows: slice | np.ndarray) -> np.ndarray:
        return st.forward(work_rows(rows))

    def residual_rows(rows: slice | np.ndarray) -> np.ndarray:
        return st.clip_residual(work_rows(rows))

    if lazy:
        bad = RowSource(chw.shape, bool, bad_rows) if any_held else None
        stretched = RowSource(chw.shape, np.float32, stretched_rows)
        residual = RowSource(chw.shape, np.float32, residual_rows) if clipped else None
    else:
        bad = bad_rows(slice(None)) if any_held else None
        stretched = st.forward(work)
        residual = st.clip_residual(work) if clipped else None
    return Prepared(
        chw=chw,
        work=work,
        bad=bad,
        stretch=st,
        stretched=stretched,
        residual=residual,
        lo=lo,
        constant=lo == hi,
        was_2d=was_2d,
        hi=hi,
        background=stats,
    )


def _block_rows(shape: tuple[int, ...]) -> int:
    """Rows per block of :func:`_row_blocks`."""
    n_ch, _, w = shape
    return max(1, SCAN_BLOCK_PIXELS // max(1, n_ch * w))


def prepare(data: np.ndarray, stretch: str | Stretch = "auto", lazy: bool = False) -> Prepared:
    """Steps 1-2 on the whole input: mask non-finite pixels, fit and apply the stretch.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        The input (may be a ``np.memmap``).
    stretch : str or Stretch
        A stretch kind to fit, or a fitted :class:`Stretch`.
    lazy : bool
        Do not build whole-image arrays: ``work``, ``bad``, ``stretched`` and
        ``residual`` are :class:`RowSource` s computed band by band when read (the
        values are identical). The memory then stays that of the input.

    Returns
    -------
    Prepared

    Raises
    ------
    InputError
        ``data`` has no finite pixel.
    """
    chw, was_2d = as_chw(data)
    if not has_finite(chw):
        # Nothing to upscale: a NaN image out would only look like a result.
        raise InputError("no finite pixels")
    return _prepare_rows(chw, was_2d, stretch, lazy)
