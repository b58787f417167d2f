"""One large image split into bands of tile rows, run by local processes or Dask.

**Bands.** :func:`process_banded` upscales one image across the workers. The client reads
the image and fits the stretch on all of it, prepares what the pipeline derives from the
whole image (the NaN fill value, clipped residual, constant channels), writes the stretched
input to scratch files next to the output, and creates the output FITS
(:func:`~astrosleuth_astro.io.open_fits_output`, data section sparse, committed atomically
at the end). Each band task (:func:`run_band`) runs the tile engine over the whole image's
tile grid, but only computes the batches of tiles whose output rows fall in its band, and
writes its rows of the output with ``pwrite`` at their offset in the data section. The
result equals the single-machine result bit for bit because

* the tile grid, the batches of tiles given to the network and the feathering are those of
  the whole image (the engine plans them from the full image size; a band skips batches,
  it never forms different ones), so the network sees the same input tensors;
* every pipeline step after the network is row-local and is run on the same 64-row
  post-processing bands as the pipeline (band edges are multiples of
  :data:`~astrosleuth_astro.pipeline.BAND_ROWS`), with the values the pipeline computes on
  the whole image (stretch, fill value, residual, constant channels);
* a row of the output is computed from tiles whose output rows contain it: a band also runs
  the tile row that straddles its edges (that is its overhead: about one tile row per cut).

``pwrite`` writes only the band's bytes (no shared pages, safe on NFS); a retried band
writes the same bytes again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..api import input_stretch, upscaled_header
from ..conserve import DEFAULT_MODE, source_levels
from ..engine.tiles import (
    choose_tile,
    iter_tile_rows,
)
from ..errors import ModelError
from ..io import check_not_same, format_from_name, open_fits_output, read_image
from ..io.atomic import TEMP_PREFIX
from ..noise import NoiseModel
from ..pipeline import (
    BAND_ROWS,
    NATIVE_SCALE,
    FluxKeeper,
    Prepared,
    UpscaleOptions,
    band_rows,
    finish_bands,
    mono_net,
    prepare,
)
from ..pipeline.condition import cond_channels_of, conditioned, noise_of
from .jobs import (
    COMPLETE,
    DONE,
    MISSING,
    SKIPPED,
    Job,
    JobOptions,
    JobResult,
    ModelSpec,
    failure,
)
from .outputs import expected_shape, remove_stale_temps
from .worker import job_output_state, process_job, stretch_entry, worker_backend


def auto_bands(bands: int | None, n_files: int, parallel: int) -> int:
    """Bands per image: ``bands`` if given, else ``parallel`` for a single file, else 1."""
    if bands is not None:
        return bands
    return parallel if n_files == 1 and parallel > 1 else 1


def plan_bands(height: int, n_bands: int) -> list[tuple[int, int]]:
    """Split ``height`` input rows into about ``n_bands`` bands ``[a, b)``.

    Cuts are multiples of :data:`~astrosleuth_astro.pipeline.BAND_ROWS` (the pipeline's
    post-processing bands), so a band's rows are post-processed exactly as in one run.
    """

    if n_bands <= 1 or height <= BAND_ROWS:
        return [(0, height)]
    cuts = sorted(
        {int(round(k * height / n_bands / BAND_ROWS)) * BAND_ROWS for k in range(1, n_bands)}
    )
    edges = [0] + [c for c in cuts if 0 < c < height] + [height]
    return list(zip(edges[:-1], edges[1:], strict=True))


@dataclass(frozen=True)
class BandTask:
    """What a band task needs (all paths on the shared file system)."""

    index: int
    rows: tuple[int, int]
    scale: int
    tile: int
    pad: int | None
    batch_size: int
    luminance_only: bool
    stretch: Any
    has_residual: bool
    any_bad: bool
    constant: np.ndarray
    lo: np.ndarray
    stretched: str
    residual: str | None
    bad: str | None
    orig: str | None
    target: str
    offset: int
    out_hw: tuple[int, int]
    #: Flux conservation (:mod:`astrosleuth_astro.conserve`): mode, the whole input's
    #: background, noise and source level per channel, and the filled linear input.
    conserve_flux: str = DEFAULT_MODE
    flux_levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    work: str | None = None
    hi: np.ndarray | None = None
    #: The whole input's noise model, for a noise-aware network (None otherwise).
    noise: NoiseModel | None = None


def process_banded(
    job: Job,
    model: ModelSpec,
    options: JobOptions,
    runner: Any,
    n_bands: int,
    net: Any,
    *,
    auto: bool = True,
) -> JobResult:
    """Upscale one file in bands run by ``runner``; returns its batch result.

    Falls back to one task for the whole file when banding does not apply: outputs that
    are not plain FITS (``.gz``, ``.fz``, TIFF, PNG, JPEG), ``protect_stars`` (stars are
    repaired on the whole image), or too few tile rows (with ``auto``: fewer than two per
    band).
    """

    start = time.perf_counter()

    def result(status: str) -> JobResult:
        return JobResult(
            job.index, str(job.input), str(job.output), status, time.perf_counter() - start
        )

    try:
        remove_stale_temps(job.output)
        check_not_same(job.input, job.output)
        image = read_image(job.input, hdu=options.hdu)
        opts = options.upscale
        shape = expected_shape(image, opts.scale)
        state = job_output_state(job, image, net, options)
        if state == COMPLETE and not options.overwrite:
            return result(SKIPPED)
        plain_fits = format_from_name(job.output) == "fits" and not str(
            job.output
        ).lower().endswith((".gz", ".fz"))

        plan = opts.tiling(net)  # what upscale_image would use
        tile = plan[0]
        n_rows = -(-image.height // choose_tile(image.height, image.width, tile)[0])
        n = min(n_bands, n_rows // 2) if auto else n_bands
        bands = plan_bands(image.height, n)
        # os.pwrite: POSIX only (Windows runs the whole file as one task).
        if not plain_fits or opts.protect_stars or len(bands) < 2 or not hasattr(os, "pwrite"):
            del image
            (res,) = runner.map(process_job, [job], model, options)
            return res
        overwrite = options.overwrite or state != MISSING
        tasks, scratch = _prepare(image, job, opts, bands, plan, cond_channels_of(net))
        try:
            header = upscaled_header(image.header, tasks[0].stretch, net, opts)
            del image
            with open_fits_output(job.output, shape, header, overwrite=overwrite) as out:
                target, offset = str(out.filename), int(out.offset)
                del out  # the workers write the file; this process only commits it
                tasks = [_at(t, target, offset) for t in tasks]
                runner.map(run_band, tasks, model)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - one file must never stop the batch
        return failure(job, exc, time.perf_counter() - start)
    res = result(DONE)
    res.extra["bands"] = len(bands)
    res.extra.update(stretch_entry(tasks[0].stretch.kind, tasks[0].stretch.reason))
    return res


def _at(task: BandTask, target: str, offset: int) -> BandTask:
    from dataclasses import replace

    return replace(task, target=target, offset=offset)


def _prepare(
    image,
    job: Job,
    opts: UpscaleOptions,
    bands,
    plan: tuple[int, int | None, int],
    n_cond: int = 0,
):
    """What the pipeline computes on the whole image, as scratch files and task fields.

    Uses the pipeline's own :func:`~astrosleuth_astro.pipeline.prepare`, with the stretch
    fitted as :func:`~astrosleuth_astro.api.upscale_image` fits it (and, for a
    noise-aware network, ``n_cond > 0``, the noise model it is told).
    """

    prep = prepare(image.restore_shape(image.data), input_stretch(image, opts.stretch))
    noise = noise_of(prep) if n_cond else None
    n_ch, h, w = prep.chw.shape
    flux_mode = opts.conserve_flux
    levels = source_levels(prep.chw, stats=prep.background) if flux_mode != "off" else None

    scratch = Path(
        tempfile.mkdtemp(
            prefix=f"{TEMP_PREFIX}bands-", suffix=f"-{job.output.name}", dir=job.output.parent
        )
    )
    try:

        def save(name: str, arr: np.ndarray) -> str:
            path = scratch / f"{name}.npy"
            np.save(path, np.ascontiguousarray(arr))
            return str(path)

        paths = {
            "stretched": save("stretched", prep.stretched),
            "residual": save("residual", prep.residual) if prep.residual is not None else None,
            "bad": save("bad", prep.bad) if prep.bad is not None else None,
            "orig": save("orig", prep.chw) if prep.bad is not None else None,
            "work": save("work", prep.work) if flux_mode != "off" else None,
        }
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    tile, pad, batch_size = plan
    scale = opts.scale
    tasks = [
        BandTask(
            index=i,
            rows=rows,
            scale=scale,
            tile=int(tile),
            pad=pad,
            batch_size=batch_size,
            luminance_only=opts.luminance_only,
            stretch=prep.stretch,
            has_residual=prep.residual is not None,
            any_bad=prep.bad is not None,
            constant=prep.constant,
            lo=prep.lo,
            target="",
            offset=0,
            out_hw=(scale * h, scale * w),
            conserve_flux=flux_mode,
            flux_levels=levels,
            hi=prep.hi,
            noise=noise,
            **paths,
        )
        for i, rows in enumerate(bands)
    ]
    return tasks, scratch


def run_band(task: BandTask, model: ModelSpec) -> dict:
    """Compute one band of output rows and write them into the output FITS.

    Returns
    -------
    dict
        ``{"index", "rows", "seconds", "batches"}`` (network calls actually computed).
    """

    start = time.perf_counter()
    net = worker_backend(model)
    stretched = np.load(task.stretched, mmap_mode="r")
    n_ch, h, w = stretched.shape
    net_c = mono_net(net) if n_ch == 1 else net
    if cond_channels_of(net):
        if task.noise is None:
            raise ModelError(f"{task.target}: a noise-aware network needs the input's noise model")
        net_c = conditioned(net_c, task.stretch, task.noise)
    n = NATIVE_SCALE
    a, b = task.rows

    calls = [0]

    def counted(batch: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return net_c(batch)

    aux = {
        name: (np.load(path, mmap_mode="r") if path else None)
        for name, path in (
            ("residual", task.residual),
            ("bad", task.bad),
            ("orig", task.orig),
            ("work", task.work),
        )
    }
    aux["stretched"] = stretched
    prep, flux = _band_prep(task, aux)
    step = band_rows(w)
    # Consistency reads rows around each band: the task also runs whole post-processing
    # bands of context on each side (the pipeline's own bands, so the values agree).
    extra = 0 if flux is None else -(-flux.context // step) * step
    a0, b0 = max(0, a - extra), min(h, b + extra)
    fd = os.open(task.target, os.O_WRONLY)
    rows_gen = iter_tile_rows(
        stretched,
        counted,
        scale=n,
        tile=task.tile,
        pad=task.pad,
        batch_size=task.batch_size,
        rows=(n * a0, n * b0),  # the engine computes only the batches these rows need
    )
    try:
        finished = finish_bands(
            prep,
            _sub_bands(rows_gen, a0, b0, step, n_ch, n * w),
            task.scale,
            luminance_only=task.luminance_only,
            flux=flux,
            emit=(a, b),
        )
        done = a
        for s0, s1, out_rows in finished:
            _write_rows(fd, task, s0, s1, out_rows)
            done = s1
        if done != b:
            raise RuntimeError(f"band {task.rows}: the engine stopped at row {done}")
        os.fsync(fd)
    finally:
        rows_gen.close()
        os.close(fd)
    return {
        "index": task.index,
        "rows": list(task.rows),
        "seconds": round(time.perf_counter() - start, 3),
        "batches": calls[0],
    }


def _band_prep(task: BandTask, aux: dict) -> tuple[Prepared, FluxKeeper | None]:
    """The pipeline's :class:`~astrosleuth_astro.pipeline.Prepared` and consistency step,
    from the whole-image values that the client prepared."""
    prep = Prepared(
        chw=aux["orig"],
        # The filled linear input, which only the consistency step reads after preparation.
        work=aux["work"] if aux["work"] is not None else aux["stretched"],
        bad=aux["bad"],
        stretch=task.stretch,
        stretched=aux["stretched"],
        residual=aux["residual"],
        lo=task.lo,
        constant=task.constant,
        was_2d=False,
        hi=task.hi,
    )
    flux = None
    if task.conserve_flux != "off":
        flux = FluxKeeper(prep, task.conserve_flux, task.flux_levels)
    return prep, flux


def _sub_bands(rows_gen, a: int, b: int, step: int, n_ch: int, width: int):
    """The engine's output rows regrouped into the pipeline's post-processing bands
    ``(s0, s1, native rows)`` of input rows ``[a, b)``."""
    n = NATIVE_SCALE
    edges = list(range(a, b, step)) + [b]
    k = 0
    s0, s1 = edges[0], edges[1]
    buf = np.empty((n_ch, n * (s1 - s0), width), dtype=np.float32)
    for y0, rows in rows_gen:
        y1 = y0 + rows.shape[1]
        while k < len(edges) - 1:
            r0, r1 = n * s0, n * s1
            lo, hi = max(y0, r0), min(y1, r1)
            if hi > lo:
                buf[:, lo - r0 : hi - r0] = rows[:, lo - y0 : hi - y0]
            if y1 < r1:
                break  # this post-processing band needs more rows
            yield s0, s1, buf
            k += 1
            if k < len(edges) - 1:
                s0, s1 = edges[k], edges[k + 1]
                buf = np.empty((n_ch, n * (s1 - s0), width), dtype=np.float32)
        if k >= len(edges) - 1:
            return


def _write_rows(fd: int, task: BandTask, a: int, b: int, lin: np.ndarray) -> None:
    """``pwrite`` rows ``[scale*a, scale*b)`` of every plane into the FITS data section."""
    out_h, out_w = task.out_hw
    r0 = task.scale * a
    for c in range(lin.shape[0]):
        data = memoryview(np.ascontiguousarray(lin[c], dtype=">f4").tobytes())
        pos = task.offset + 4 * ((c * out_h + r0) * out_w)
        while data:
            written = os.pwrite(fd, data, pos)
            data, pos = data[written:], pos + written
