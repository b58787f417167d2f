"""Steps 3-8 of the pipeline for a band of rows: from the network's output to final rows.

:func:`to_linear` undoes the stretch, :class:`FluxKeeper` gives input pixels their flux
back, :func:`finish_rows` resamples and restores what the input held exactly. A band is
finished the same wherever it runs (here, or on a Dask worker).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ..conserve import (
    SOURCE_GROW,
    block_mean,
    keep_sky_level,
    source_gain,
    source_levels,
    source_mask,
)
from ..conserve import conserve_flux as _conserve_flux
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


def finish_band(
    prep: Prepared,
    band: np.ndarray,
    rows: tuple[int, int],
    scale: int,
    luminance_only: bool = False,
    protector: StarProtector | None = None,
    flux: FluxKeeper | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Steps 3-8 for input rows ``rows``: the final output rows from the network's band.

    The one sequence every runner applies to a band (:func:`~astrosleuth_astro.pipeline.
    upscale_array` here, the Dask band workers there): inverse stretch and clipped
    residual (:func:`to_linear`), star protection, flux conservation, resampling to the
    output scale and the restored pixels (:func:`finish_rows`).

    Parameters
    ----------
    prep : Prepared
    band : ndarray, shape (C, 4*(b-a), 4*W)
        The network's native output for input rows ``[a, b)``, every column.
    rows : (int, int)
        ``(a, b)``.
    scale : int
        The output scale.
    luminance_only : bool
        Keep the network's luminance and the input's chroma (:func:`to_linear`).
    protector : StarProtector, optional
        Prepared on the whole image (star protection).
    flux : FluxKeeper, optional
        Flux conservation, with levels measured on the whole input.
    timings : dict, optional
        Seconds added to ``"inverse"`` and ``"stars"``.
    """
    a, b = rows
    with clock(timings, "inverse"):
        lin = to_linear(prep, band, rows, luminance_only=luminance_only)
    if protector is not None:
        with clock(timings, "stars"):
            protector.apply(lin, a, b)
    with clock(timings, "inverse"):
        if flux is not None:
            flux.apply(lin, a, b)
        return finish_rows(prep, lin, rows, scale)
