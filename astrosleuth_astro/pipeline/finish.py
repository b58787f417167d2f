"""Steps 3-8 of the pipeline for a band of rows: from the network's output to final rows.

:func:`to_linear` undoes the stretch, :class:`FluxKeeper` gives input pixels their flux
back, :func:`finish_rows` resamples and restores what the input held exactly. A band is
finished the same wherever it runs (here, or on a Dask worker).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ..conserve import block_mean, source_levels
from ..consistency import CONTEXT_ROWS, make_consistent
from ..resample import (
    NATIVE_SCALE,
    add_upsampled_bilinear,
    from_native,
    upsample_bilinear,
    upsample_nearest,
)
from .prepared import Prepared

if TYPE_CHECKING:  # annotations only
    from ..stars.protect import StarProtector

#: Most input rows post-processed at a time (bounded memory for huge images).
BAND_ROWS = 64
#: Most input pixels per post-processing band: wide images get fewer rows per band, so
#: the band's temporaries (float64 in the inverse stretch, at 4x) do not grow with width.
BAND_PIXELS = 64 * 2048
#: ITU-R BT.601 luma weights, used for --luminance-only (YCbCr chroma transfer).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def band_rows(width: int) -> int:
    """Input rows per post-processing band for an image ``width`` pixels wide.

    :data:`BAND_ROWS` halved until the band holds at most :data:`BAND_PIXELS` input
    pixels (at least 1 row). It always divides :data:`BAND_ROWS`, so cuts at multiples of
    :data:`BAND_ROWS` (:func:`astrosleuth_astro.batch.bands.plan_bands`) fall on band
    boundaries.
    """
    rows = BAND_ROWS
    while rows > 1 and rows * width > BAND_PIXELS:
        rows //= 2
    return rows


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
    """Step 7 band by band: the output made consistent with the input
    (:func:`~astrosleuth_astro.consistency.make_consistent`) on the native 4x rows of input
    rows ``[a, b)``, with the source levels measured once on the whole input (so bands
    agree) and :data:`~astrosleuth_astro.consistency.CONTEXT_ROWS` input rows of context
    on each side.

    Parameters
    ----------
    prep : Prepared
    mode : {"consistent", "sources", "all"}
    levels : (ndarray, ndarray, ndarray), optional
        Background, noise and source level per channel (default:
        :func:`~astrosleuth_astro.conserve.source_levels` of the whole input); a banded
        run passes the ones its client measured.
    """

    #: Input rows of context a band's correction reads on each side.
    context = CONTEXT_ROWS

    def __init__(
        self,
        prep: Prepared,
        mode: str,
        levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.prep, self.mode = prep, mode
        if levels is None:
            levels = source_levels(prep.chw, stats=prep.background)
        self.levels = levels

    def apply(
        self, lin: np.ndarray, a: int, b: int, level: np.ndarray, level_row0: int = 0
    ) -> np.ndarray:
        """Correct ``lin`` (native rows of input rows ``[a, b)``) in place.

        ``level[:, r - level_row0]`` is the network's footprint mean of input row ``r``,
        for every row within :attr:`context` of the band.
        """
        prep, k = self.prep, self.context
        h = prep.stretched.shape[-2]
        lo, hi = max(0, a - k), min(h, b + k)
        lr = np.asarray(prep.work[:, lo:hi, :], dtype=np.float32)
        good = None if prep.bad is None else ~np.asarray(prep.bad[:, lo:hi, :])
        return make_consistent(
            lin,
            lr,
            level[:, lo - level_row0 : hi - level_row0],
            (a - lo, b - lo),
            self.mode,
            self.levels,
            prep.stretch,
            good,
            NATIVE_SCALE,
            limits=(prep.lo, prep.hi),
        )


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


def linear_band(
    prep: Prepared,
    band: np.ndarray,
    rows: tuple[int, int],
    luminance_only: bool = False,
    protector: StarProtector | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Steps 3-6 for input rows ``rows``: the network's band in linear units, stars
    repaired (:func:`to_linear`, then ``protector``)."""
    a, b = rows
    with clock(timings, "inverse"):
        lin = to_linear(prep, band, rows, luminance_only=luminance_only)
    if protector is not None:
        with clock(timings, "stars"):
            protector.apply(lin, a, b)
    return lin


def finish_bands(
    prep: Prepared,
    bands: Iterable[tuple[int, int, np.ndarray]],
    scale: int,
    *,
    luminance_only: bool = False,
    protector: StarProtector | None = None,
    flux: FluxKeeper | None = None,
    emit: tuple[int, int] | None = None,
    timings: dict[str, float] | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Steps 3-8 for consecutive bands of rows: the final output rows, band by band.

    The one sequence every runner applies (:func:`~astrosleuth_astro.pipeline.
    upscale_array` here, the Dask band workers there): inverse stretch and clipped
    residual (:func:`to_linear`), star protection, consistency with the input
    (``flux``), resampling to the output scale and the restored pixels
    (:func:`finish_rows`). The consistency step reads :attr:`FluxKeeper.context` rows
    around each band, so a band is finished once the bands after it are linear: at most
    that many rows of linear bands are held.

    Parameters
    ----------
    prep : Prepared
    bands : iterable of (int, int, ndarray)
        ``(a, b, band)``: the network's native output ``(C, 4*(b-a), 4*W)`` for input
        rows ``[a, b)``, consecutive, in order.
    scale : int
        The output scale.
    luminance_only : bool
        Keep the network's luminance and the input's chroma (:func:`to_linear`).
    protector : StarProtector, optional
        Prepared on the whole image (star protection).
    flux : FluxKeeper, optional
        Consistency, with levels measured on the whole input.
    emit : (int, int), optional
        Only yield the bands inside these input rows (the others are context).
    timings : dict, optional
        Seconds added to ``"inverse"`` and ``"stars"``.

    Yields
    ------
    (int, int, ndarray)
        ``(a, b, rows)``, the output rows ``(C, scale*(b-a), scale*W)``.
    """
    lo_emit, hi_emit = emit if emit is not None else (0, prep.stretched.shape[-2])
    if flux is None:
        for a, b, band in bands:
            if lo_emit <= a < hi_emit:
                lin = linear_band(prep, band, (a, b), luminance_only, protector, timings)
                with clock(timings, "inverse"):
                    yield a, b, finish_rows(prep, lin, (a, b), scale)
        return
    level_rows: dict[int, np.ndarray] = {}  # first row -> footprint means of a band
    pending: list[tuple[int, int, np.ndarray]] = []
    for a, b, band in bands:
        lin = linear_band(prep, band, (a, b), luminance_only, protector, timings)
        with clock(timings, "inverse"):
            level_rows[a] = block_mean(lin, NATIVE_SCALE).astype(np.float32)
        if lo_emit <= a < hi_emit:
            pending.append((a, b, lin))
        while pending and pending[0][1] + flux.context <= b:
            yield _finish_pending(prep, pending.pop(0), level_rows, scale, flux, timings)
    while pending:
        yield _finish_pending(prep, pending.pop(0), level_rows, scale, flux, timings)


def _finish_pending(
    prep: Prepared,
    item: tuple[int, int, np.ndarray],
    level_rows: dict[int, np.ndarray],
    scale: int,
    flux: FluxKeeper,
    timings: dict[str, float] | None,
) -> tuple[int, int, np.ndarray]:
    """One band of :func:`finish_bands` whose context is complete."""
    a, b, lin = item
    with clock(timings, "inverse"):
        starts = sorted(level_rows)
        level = np.concatenate([level_rows[r] for r in starts], axis=1)
        flux.apply(lin, a, b, level, starts[0])
        # Bands wholly before this one's context are no longer needed.
        for r in starts:
            if level_rows[r].shape[1] + r + flux.context <= a:
                del level_rows[r]
        return a, b, finish_rows(prep, lin, (a, b), scale)
