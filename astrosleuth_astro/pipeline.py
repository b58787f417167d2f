"""The linear-data pipeline around a network: stretch, tiles, exact inverse.

``upscale_array`` is the core of every entry point (Python API, CLI, Siril, batch):

1. Non-finite pixels (NaN stack borders, inf) are masked and filled with the channel's
   background so they do not disturb the network; they are put back, unchanged, at the
   matching output pixels, so they never spread into their neighbours.
2. The data is mapped into [0, 1] with an invertible stretch fitted on the whole input
   (:mod:`astrosleuth_astro.stretch`).
3. The network runs tile by tile (:mod:`astrosleuth_astro.engine.tiles`). Mono images are
   replicated to 3 channels and the 3 outputs averaged.
4. The exact inverse stretch maps the result back to linear data in the input's units.
5. What the stretch clipped (values below the black point, above the white point) is not
   lost: that *clipped residual* ``x - clip(x, black, white)`` is carried through plain
   bilinear interpolation and added back. Bilinear interpolation keeps the residual's
   mean over each input-pixel footprint (up to the image border), so the clipped part of
   the flux is conserved without the network ever having to represent it.
6. Optionally (``protect_stars``), stars are repaired inside their footprints on the
   native 4x grid (:mod:`astrosleuth_astro.protect`): stars are detected once on the whole
   linear input, and pixels outside the dilated footprints are not touched.
7. Optionally (``conserve_flux``), input pixels get their flux back: the 4x4 output
   pixels of every pixel that holds a source (or of every pixel) are corrected to average
   to its value (:mod:`astrosleuth_astro.conserve`).
8. Scales 1-3 are made from the native 4x result by flux-conserving area resampling.

Steps 4-8 run band by band over output rows, so the output may be a memory-mapped array.
Without star protection, steps 1-2 are not applied to the whole image either: the
stretched input, the clipped residual and the non-finite mask are computed one band of
rows at a time as the tiles and bands read them (:class:`RowSource`), so memory does not
grow with the image height.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .conserve import (
    SOURCE_GROW,
    block_mean,
    keep_sky_level,
    resolve_mode,
    source_gain,
    source_levels,
    source_mask,
)
from .conserve import conserve_flux as _conserve_flux
from .engine.backends import repeat_mean
from .engine.tiles import upscale_tiled
from .errors import InputError
from .resample import (
    NATIVE_SCALE,
    SCALES,
    add_upsampled_bilinear,
    from_native,
    upsample_bilinear,
    upsample_nearest,
)
from .stretch import Stretch, fit_stretch

#: Most input rows post-processed at a time (bounded memory for huge images).
BAND_ROWS = 64
#: Most input pixels per post-processing band: wide images get fewer rows per band, so
#: the band's temporaries (float64 in the inverse stretch, at 4x) do not grow with width.
BAND_PIXELS = 64 * 2048
#: ITU-R BT.601 luma weights, used for --luminance-only (YCbCr chroma transfer).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Net = Callable[[np.ndarray], np.ndarray]

#: Stages reported in ``timings`` by :func:`upscale_array` (seconds, wall clock).
TIMED_STAGES = ("stretch", "stars", "network", "tiling", "inverse", "write")
#: Names that ``upscale_array``'s ``stage`` callback receives, in order.
STAGES = ("detecting stars", "upscaling", "repairing stars")


@contextmanager
def clock(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    """Add the wall-clock seconds spent in the ``with`` block to ``timings[stage]``.

    Does nothing when ``timings`` is None.
    """
    if timings is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def _timed_net(net: Net, timings: dict[str, float]) -> Net:
    """``net`` whose calls add their wall-clock seconds to ``timings["network"]``."""

    def run(batch: np.ndarray) -> np.ndarray:
        with clock(timings, "network"):
            return net(batch)

    return run


@dataclass
class PipelineResult:
    """Output of :func:`upscale_array`.

    Attributes
    ----------
    data : ndarray
        The upscaled linear image, float32, ``(sH, sW)`` for 2-D input or ``(C, sH, sW)``.
    stretch : Stretch
        The stretch that was fitted (or given) and inverted.
    scale : int
    """

    data: np.ndarray
    stretch: Stretch
    scale: int


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


def _channel_fill(chw: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Per-channel value used in place of non-finite pixels: the median of the rest."""
    fill = np.zeros(chw.shape[0], dtype=np.float32)
    for c in range(chw.shape[0]):
        step = max(1, int(np.sqrt(chw[c].size / 1_000_000)))
        sample = chw[c, ::step, ::step]
        sample = sample[~bad[c, ::step, ::step]]
        if sample.size == 0:  # the subsample missed the few finite pixels
            sample = chw[c][~bad[c]]
        fill[c] = np.median(sample) if sample.size else 0.0
    return fill


def band_rows(width: int) -> int:
    """Input rows per post-processing band for an image ``width`` pixels wide.

    :data:`BAND_ROWS` halved until the band holds at most :data:`BAND_PIXELS` input
    pixels (at least 1 row). It always divides :data:`BAND_ROWS`, so cuts at multiples of
    :data:`BAND_ROWS` (:func:`astrosleuth_astro.distributed.plan_bands`) fall on band
    boundaries.
    """
    rows = BAND_ROWS
    while rows > 1 and rows * width > BAND_PIXELS:
        rows //= 2
    return rows


def mono_net(net: Net) -> Net:
    """Run a 3-channel network on 1-channel tiles: the mean of its 3 outputs for a grey
    input. A backend's own ``mono()`` form is used when it has one (FAST on torch runs a
    one-channel network with the same result, :class:`~astrosleuth_astro.archs.compact.
    MonoCompactSR`)."""
    own = getattr(net, "mono", None)
    return own() if callable(own) else repeat_mean(net)


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
        The input with non-finite pixels replaced by the channel's median.
    bad : ndarray of bool or None
        Where the input is not finite (None when it is finite everywhere).
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


def _channel_fill_lazy(chw: np.ndarray) -> np.ndarray:
    """:func:`_channel_fill` of the float32 image without whole-image masks (same values)."""
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


def _prepare_lazy(chw: np.ndarray, was_2d: bool, stretch: str | Stretch) -> Prepared:
    """:func:`prepare` with ``work``, ``bad``, ``stretched`` and ``residual`` as
    :class:`RowSource` s: whole-image values are found by scanning blocks of rows."""
    n_ch, h, w = chw.shape
    any_bad = any(
        not np.isfinite(np.asarray(chw[:, rows])).all() for rows in _row_blocks(chw.shape)
    )
    fill = _channel_fill_lazy(chw) if any_bad else None
    copy = any_bad or chw.dtype != np.float32

    def work_rows(rows: slice | np.ndarray) -> np.ndarray:
        raw = np.asarray(chw[:, rows, :])
        out = raw.astype(np.float32, copy=copy)
        if fill is not None:
            np.copyto(out, np.broadcast_to(fill[:, None, None], out.shape), where=~np.isfinite(raw))
        return out

    work = RowSource(chw.shape, np.float32, work_rows)
    if isinstance(stretch, Stretch):
        st = stretch
    else:  # fitted on the filled image (no copy when nothing is filled or converted)
        st = fit_stretch(work if copy else chw, stretch)
    if st.channels != n_ch:
        raise InputError(f"stretch: fitted for {st.channels} channels, image has {n_ch}")
    lo = np.full(n_ch, np.inf)
    hi = np.full(n_ch, -np.inf)
    for rows in _row_blocks(chw.shape):
        block = work_rows(rows)
        for c in range(n_ch):
            lo[c] = min(lo[c], np.min(block[c]))
            hi[c] = max(hi[c], np.max(block[c]))
    lo, hi = lo.astype(np.float32), hi.astype(np.float32)
    # A residual is non-zero only where a pixel lies outside [black, white]: confirm there.
    clipped = bool(np.any(lo < st.black) or np.any(hi > st.white))
    if clipped:
        clipped = any(np.any(st.clip_residual(work_rows(rows))) for rows in _row_blocks(chw.shape))

    def bad_rows(rows: slice | np.ndarray) -> np.ndarray:
        return ~np.isfinite(np.asarray(chw[:, rows, :]))

    def stretched_rows(rows: slice | np.ndarray) -> np.ndarray:
        return st.forward(work_rows(rows))

    def residual_rows(rows: slice | np.ndarray) -> np.ndarray:
        return st.clip_residual(work_rows(rows))

    return Prepared(
        chw=chw,
        work=work,
        bad=RowSource(chw.shape, bool, bad_rows) if any_bad else None,
        stretch=st,
        stretched=RowSource(chw.shape, np.float32, stretched_rows),
        residual=RowSource(chw.shape, np.float32, residual_rows) if clipped else None,
        lo=lo,
        constant=lo == hi,
        was_2d=was_2d,
        hi=hi,
    )


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
    """
    chw, was_2d = as_chw(data)
    if lazy:
        return _prepare_lazy(chw, was_2d, stretch)
    n_ch, h, w = chw.shape
    bad = ~np.isfinite(chw)
    any_bad = bool(bad.any())
    work = chw.astype(np.float32, copy=any_bad or chw.dtype != np.float32)
    if any_bad:
        fill = _channel_fill(work, bad)
        np.copyto(work, fill[:, None, None].repeat(h, 1).repeat(w, 2), where=bad)
    st = stretch if isinstance(stretch, Stretch) else fit_stretch(work, stretch)
    if st.channels != n_ch:
        raise InputError(f"stretch: fitted for {st.channels} channels, image has {n_ch}")
    residual = st.clip_residual(work)
    # Constant channels must come out exactly constant (no network bias on flat input).
    lo = np.array([np.min(work[c]) for c in range(n_ch)])
    hi = np.array([np.max(work[c]) for c in range(n_ch)])
    return Prepared(
        chw=chw,
        work=work,
        bad=bad if any_bad else None,
        stretch=st,
        stretched=st.forward(work),
        residual=residual if np.any(residual) else None,
        lo=lo,
        constant=lo == hi,
        was_2d=was_2d,
        hi=hi,
    )


def to_linear(
    prep: Prepared,
    block: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int] | None = None,
    luminance_only: bool = False,
) -> np.ndarray:
    """Steps 3-5 for a block of the network's native output: back to linear units.

    Parameters
    ----------
    prep : Prepared
    block : ndarray, shape (C, 4*(r1-r0), 4*(c1-c0))
        Network output (stretched domain) for input rows ``rows`` and columns ``cols``.
    rows, cols : (int, int)
        Input-pixel ranges of the block (``cols`` defaults to every column).
    luminance_only : bool
        Keep the network's luminance and the input's (bilinear) chroma.
    """
    n = NATIVE_SCALE
    h, w = prep.stretched.shape[-2:]
    (r0, r1), (c0, c1) = rows, cols or (0, w)
    # One input pixel of context is all bilinear x4 needs; positions stay exact.
    lo_r, hi_r, lo_c, hi_c = max(0, r0 - 1), min(h, r1 + 1), max(0, c0 - 1), min(w, c1 + 1)
    sub_rows, sub_cols = (n * (r0 - lo_r), n * (r1 - lo_r)), slice(n * (c0 - lo_c), n * (c1 - lo_c))

    def upsampled(arr: np.ndarray) -> np.ndarray:
        return upsample_bilinear(arr[:, lo_r:hi_r, lo_c:hi_c], n, rows=sub_rows)[:, :, sub_cols]

    band = np.asarray(block, dtype=np.float32)
    if luminance_only and band.shape[0] == 3:
        up = upsampled(prep.stretched)
        band = up + np.tensordot(LUMA, band - up, axes=1)[np.newaxis]
    lin = prep.stretch.inverse(band)
    if prep.residual is not None:
        # Mostly zero (the noise pixels below the black point): only the output pixels
        # next to its nonzero pixels are computed, with the same result.
        residual = prep.residual[:, lo_r:hi_r, lo_c:hi_c]
        add_upsampled_bilinear(
            lin, residual, n, rows=sub_rows, cols=(sub_cols.start, sub_cols.stop)
        )
    return lin


class FluxKeeper:
    """Step 7 band by band: :func:`~astrosleuth_astro.conserve.conserve_flux` on the
    native 4x rows of input rows ``[a, b)``, with the source levels measured once on the
    whole input (so bands agree) and the source mask grown across band edges.

    Parameters
    ----------
    prep : Prepared
    mode : {"sources", "all"}
    levels : (ndarray, ndarray, ndarray), optional
        Background, noise and source level per channel (default:
        :func:`~astrosleuth_astro.conserve.source_levels` of the whole input); a banded
        run passes the ones its client measured.
    """

    def __init__(
        self,
        prep: Prepared,
        mode: str,
        levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.prep, self.mode = prep, mode
        if mode == "sources" and levels is None:
            levels = source_levels(prep.chw)
        self.levels = levels
        self.grow = SOURCE_GROW if mode == "sources" else 0

    def apply(self, lin: np.ndarray, a: int, b: int) -> np.ndarray:
        prep, g = self.prep, self.grow
        h = prep.stretched.shape[-2]
        lo, hi = max(0, a - g), min(h, b + g)
        ctx = np.asarray(prep.work[:, lo:hi, :], dtype=np.float32)
        rows = slice(a - lo, a - lo + (b - a))
        gain = level = None
        if self.mode == "sources":
            support = source_mask(ctx, self.levels[2], g)[:, rows]
            level = block_mean(lin, NATIVE_SCALE)  # the network's value per input pixel
            gain = source_gain(level, *self.levels, support)
        good = None if prep.bad is None else ~np.asarray(prep.bad[:, a:b, :])
        if good is not None:
            gain = good if gain is None else np.where(good, gain, 0.0)
        lr = ctx[:, rows]
        if self.mode == "sources":
            sky = gain == 0 if good is None else (gain == 0) & good
            keep_sky_level(lin, lr, sky, NATIVE_SCALE, level)
        bounds = None if prep.hi is None else (prep.lo, prep.hi)
        return _conserve_flux(lin, lr, prep.stretch, gain, NATIVE_SCALE, bounds)


def finish_rows(prep: Prepared, lin: np.ndarray, rows: tuple[int, int], scale: int) -> np.ndarray:
    """Steps 7 and 1 (undone) for input rows ``rows``: resample to ``scale``, restore
    constant channels and non-finite pixels. ``lin`` covers every column at 4x."""
    a, b = rows
    lin = from_native(lin, NATIVE_SCALE, scale)
    rows_s = (scale * a, scale * b)
    if prep.constant.any():
        lin[prep.constant] = prep.lo[prep.constant][:, None, None]
    if prep.bad is not None:
        mask = upsample_nearest(prep.bad, scale, rows=rows_s)
        if mask.any():
            orig = upsample_nearest(prep.chw, scale, rows=rows_s)
            lin[mask] = orig[mask]
    return lin


def upscale_array(
    data: np.ndarray,
    net: Net,
    *,
    scale: int = 4,
    stretch: str | Stretch = "auto",
    luminance_only: bool = False,
    tile: int = 256,
    pad: int | None = None,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    out: np.ndarray | None = None,
    work: np.ndarray | None = None,
    protect_stars: bool = False,
    protect_strength: float = 1.0,
    conserve_flux: bool | str = False,
    timings: dict[str, float] | None = None,
) -> PipelineResult:
    """Upscale a linear (or display-referred) image with a 4x network.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W) with C in {1, 3}
        The image in any units (ADU, e-, surface brightness, or [0, 1] for pictures).
    net : callable
        ``(N, 3, h, w)`` float32 in [0, 1] -> ``(N, 3, 4h, 4w)``, e.g. a
        :class:`~astrosleuth_astro.engine.backends.Backend`.
    scale : {1, 2, 3, 4}
        Output scale. 4 is native; 2 and 3 are area-resampled from 4x; 1 bins 4x4.
    stretch : {"auto", "mtf", "asinh", "none"} or Stretch
        How to map the data into the network's [0, 1] domain (see
        :mod:`astrosleuth_astro.stretch`). A fitted :class:`Stretch` is used as is, which
        lets many bands or frames share one stretch.
    luminance_only : bool
        For colour images: take luminance (BT.601 Y) from the network and the chroma
        from a bilinear upsampling of the input.
    tile, pad, batch_size : int
        Tiling: tile size and context padding in input pixels, tiles per forward.
    progress : callable, optional
        ``progress(done, total)`` after each batch of tiles.
    stage : callable, optional
        ``stage(name)`` when a long stage begins, with a name from :data:`STAGES`:
        ``"detecting stars"`` and ``"repairing stars"`` (only with ``protect_stars``,
        which can take longer than the network) and ``"upscaling"`` (the tiles, whose
        progress ``progress`` reports).
    out : ndarray, optional
        Destination ``(C, sH, sW)`` (may be a ``np.memmap``); written band by band.
    work : ndarray, optional
        Scratch ``(C, 4H, 4W)`` float32 for the network's stretched output (may be a
        ``np.memmap`` for huge images). For scale 4 it may be ``out`` itself.
    protect_stars : bool
        Repair what the network does to stars (dark rings, flux, split cores) inside the
        stars' dilated footprints; nothing outside them changes. See
        :mod:`astrosleuth_astro.protect`.
    protect_strength : float
        0 to 1: how strongly stars are pulled to the repaired target (1 = fully).
    conserve_flux : {False, True, "off", "sources", "all"}
        Give input pixels their flux back, after star protection. ``"sources"`` (or
        ``True``): pixels more than 5 background sigmas above the background exactly (the
        output binned by 4 equals the input there), their neighbours as far as their
        signal-to-noise allows, the sky not at all. ``"all"``: every finite pixel
        exactly. See :mod:`astrosleuth_astro.conserve`.
    timings : dict, optional
        When given, wall-clock seconds per stage are added to it (keys
        :data:`TIMED_STAGES`: ``stretch`` = masking, fitting and applying the stretch;
        ``stars`` = star detection and protection; ``network`` = the network calls;
        ``tiling`` = the rest of the tiled engine (gathering tiles, blending);
        ``inverse`` = inverse stretch, clipped residual, flux conservation, resampling;
        ``write`` = copying
        finished rows into ``out``).

    Returns
    -------
    PipelineResult
    """
    if scale not in SCALES:
        raise InputError(f"--scale: {scale} is not supported (choose from 1, 2, 3, 4)")
    if tile is not None and tile < 1:
        raise InputError(f"--tile: must be a positive number of pixels, got {tile}")
    flux_mode = resolve_mode(conserve_flux)
    stage = stage or (lambda _name: None)
    with clock(timings, "stretch"):
        # Star protection needs the whole linear input; otherwise nothing whole-image is
        # built: the stretch (and residual, mask) is applied band by band as rows are read.
        prep = prepare(data, stretch, lazy=not protect_stars)
    n_ch, h, w = prep.chw.shape

    protector = None
    if protect_stars:
        from .protect import StarProtector

        # Detected once on the whole linear input, before tiling: tiles and bands agree.
        stage("detecting stars")
        with clock(timings, "stars"):
            protector = StarProtector(prep.work, strength=protect_strength, scale=NATIVE_SCALE)

    net_c = mono_net(net) if n_ch == 1 else net
    if timings is not None:
        net_c = _timed_net(net_c, timings)
        t_tiled = time.perf_counter()
        net_before = timings.get("network", 0.0)
    full_shape = (n_ch, NATIVE_SCALE * h, NATIVE_SCALE * w)
    out_shape = (n_ch, scale * h, scale * w)
    if out is None and work is None and scale == NATIVE_SCALE:
        # The network writes into the output, whose bands are then finished in place.
        out = np.empty(out_shape, dtype=np.float32)
    if work is None:
        work = out if (out is not None and scale == NATIVE_SCALE) else None
    if work is not None and tuple(work.shape) != full_shape:
        raise ValueError(f"work array has shape {work.shape}, expected {full_shape}")
    stage("upscaling")
    net_out = upscale_tiled(
        prep.stretched,
        net_c,
        scale=NATIVE_SCALE,
        tile=tile,
        pad=pad,
        batch_size=batch_size,
        progress=progress,
        out=work,
    )
    if timings is not None:
        tiled = time.perf_counter() - t_tiled - (timings.get("network", 0.0) - net_before)
        timings["tiling"] = timings.get("tiling", 0.0) + tiled

    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out array has shape {out.shape}, expected {out_shape}")

    if protector is not None and protector.active:

        def native_block(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            n = NATIVE_SCALE
            blk = net_out[:, n * r0 : n * r1, n * c0 : n * c1]
            return to_linear(prep, blk, (r0, r1), (c0, c1), luminance_only)

        stage("repairing stars")
        with clock(timings, "stars"):
            protector.prepare(native_block)

    flux = FluxKeeper(prep, flux_mode) if flux_mode != "off" else None
    step = band_rows(w)
    for a in range(0, h, step):
        b = min(h, a + step)
        with clock(timings, "inverse"):
            band = net_out[:, NATIVE_SCALE * a : NATIVE_SCALE * b, :]
            lin = to_linear(prep, band, (a, b), luminance_only=luminance_only)
        if protector is not None:
            with clock(timings, "stars"):
                protector.apply(lin, a, b)
        with clock(timings, "inverse"):
            if flux is not None:
                flux.apply(lin, a, b)
            rows = finish_rows(prep, lin, (a, b), scale)
        with clock(timings, "write"):
            out[:, scale * a : scale * b, :] = rows

    result = out[0] if prep.was_2d else out
    return PipelineResult(data=result, stretch=prep.stretch, scale=scale)
