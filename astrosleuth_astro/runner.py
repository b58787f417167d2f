"""The one batch orchestrator: inputs to jobs, then local workers, bands or Dask.

:func:`run_batch` expands and names the inputs (:mod:`astrosleuth_astro.batch`), loads the
model once, and hands the jobs to one runner: this process or local worker processes
(:func:`astrosleuth_astro.batch.run_local`), a banded run of one image, or a Dask cluster
(:mod:`astrosleuth_astro.batch.cluster`, :mod:`astrosleuth_astro.batch.bands`). Every runner calls the same per-image job code, and
the manifest is kept here, in one place. The CLI enters through :func:`run_from_args`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import backend_for
from .batch.bands import auto_bands, process_banded
from .batch.cluster import DaskRunner, InlineRunner, PoolRunner, cluster_threads, connect, run_jobs
from .batch.inputs import GLOB_MAGIC, expand_inputs
from .batch.jobs import (
    DEFAULT_NAME,
    DONE,
    FAILED,
    MANIFEST_NAME,
    SKIPPED,
    Job,
    JobOptions,
    JobResult,
    ModelSpec,
    exit_code,
)
from .batch.local import make_pool, run_local, stop_pool
from .batch.lock import BatchLock
from .batch.manifest import Manifest
from .batch.outputs import plan_jobs
from .batch.worker import cores, inference_threads, set_inference_threads, worker_backend
from .errors import InputError
from .pipeline import UpscaleOptions

__all__ = ["BatchConfig", "run_batch", "run_from_args", "wants_batch"]


@dataclass
class BatchConfig:
    """Everything :func:`run_batch` needs (the CLI builds it from its arguments)."""

    inputs: Sequence[str]
    output: str | None = None
    name: str | None = None
    recursive: bool = False
    jobs: int = 1
    scheduler: str | None = None
    manifest: str | None = None
    bands: int | None = None
    options: JobOptions = field(default_factory=JobOptions)
    quiet: bool = False
    #: ``--quiet`` itself (``quiet`` is also set by ``--json``): no notes at all.
    silent: bool = False
    json: bool = False
    wait_lock: bool = False


def _output_dir(
    cfg: BatchConfig, n_specs: int, collection: bool
) -> tuple[Path | None, Path | None]:
    """``(directory, single_output_file)`` from ``-o``."""
    if cfg.output is None:
        return None, None
    out = Path(os.path.abspath(cfg.output))
    if out.is_dir():
        return out, None
    if n_specs > 1 or collection or cfg.name is not None:
        raise InputError(
            f"{cfg.output}: -o must be an existing directory for several inputs, a "
            f"directory, a glob, a .seq or --name ({', '.join(map(str, cfg.inputs))})"
        )
    return None, out


def _is_collection(spec: str) -> bool:
    p = Path(spec)
    return (
        p.is_dir()
        or p.suffix.lower() == ".seq"
        or (not p.exists() and bool(GLOB_MAGIC.search(spec)))
    )


def _model_spec(cfg: BatchConfig, net: Any, threads: int | None) -> ModelSpec:
    return ModelSpec.for_options(cfg.options.upscale, net, threads)


def run_batch(cfg: BatchConfig, *, log: Callable[[str], None] | None = None) -> int:
    """Run a batch; return its exit code (see the module docstring).

    Usage problems (no inputs found, colliding names, an output directory that does not
    exist, a model that cannot be loaded, an unreachable scheduler) raise
    :class:`~astrosleuth_astro.errors.InputError` before any file is processed. Problems
    of single files are reported in the manifest and the exit code.
    ``KeyboardInterrupt``/``SystemExit`` stop the batch: the manifest is written (unfinished
    files ``pending``), workers are stopped, and the exception propagates.
    """

    say = log or (lambda m: None)
    collection = any(_is_collection(str(s)) for s in cfg.inputs)
    out_dir, out_file = _output_dir(cfg, len(cfg.inputs), collection)
    if cfg.jobs < 1:
        raise InputError(f"--jobs: must be at least 1, got {cfg.jobs}")
    if cfg.bands is not None and cfg.bands < 1:
        raise InputError(f"--bands: must be at least 1, got {cfg.bands}")
    files = expand_inputs(cfg.inputs, recursive=cfg.recursive, exclude=out_dir)
    if not files:
        raise InputError("upscale: no input image")

    opts = cfg.options.upscale
    net = backend_for(opts)
    scale = opts.scale
    if out_file is not None:
        jobs = [Job(0, files[0].path, out_file)]
        if jobs[0].output == jobs[0].input:
            raise InputError(f"{out_file}: is the input itself (choose another output)")
    else:
        jobs = plan_jobs(
            files,
            out_dir,
            pattern=cfg.name or DEFAULT_NAME,
            scale=scale,
            model=getattr(net, "model_name", ""),
        )
    _prepare_dirs(jobs, out_dir)

    manifest_path = cfg.manifest or (out_dir / MANIFEST_NAME if out_dir is not None else None)
    if manifest_path is not None:
        manifest_path = Path(os.path.abspath(manifest_path))
        if manifest_path in {j.input for j in jobs} | {j.output for j in jobs}:
            raise InputError(f"{manifest_path}: the manifest would replace an input or output")
    lock_dir = out_dir if out_dir is not None else (out_file.parent if out_file else None)
    with BatchLock(lock_dir, wait=cfg.wait_lock, log=say) if lock_dir else nullcontext():
        return _run_locked(cfg, jobs, net, manifest_path, out_dir, say)


def _run_locked(
    cfg: BatchConfig,
    jobs: list[Job],
    net: Any,
    manifest_path: Path | None,
    out_dir: Path | None,
    say: Callable[[str], None],
) -> int:
    """The batch itself, under the output directory's lock."""
    opts = cfg.options.upscale
    meta = {
        "model": getattr(net, "model_name", str(opts.model)),
        "sha256": getattr(net, "sha256", ""),
        "scale": opts.scale,
        "output_dir": str(out_dir) if out_dir is not None else None,
    }
    manifest = Manifest(manifest_path, jobs, meta, log=say)
    done = [0]

    def on_result(res: JobResult) -> None:
        done[0] += 1
        manifest.record(res)
        line = f"[{done[0]}/{len(jobs)}] {res.input} -> {res.output}: {res.status} ({res.seconds:.1f} s)"
        if res.status == FAILED:
            say(f"{line}: {res.error}")
        elif not cfg.quiet:
            say(line)
        if res.extra.get("stretch_reason") and not cfg.silent:
            # auto read the file as display-referred: said even with --json, as for one file
            say(f"{res.input}: {res.extra['stretch_reason']}")

    manifest.write()
    try:
        _dispatch(cfg, jobs, net, on_result)
    except BaseException as exc:
        # Stopped (Ctrl-C, SIGTERM, an error): the manifest says what was finished and the
        # exit code the process is about to return.
        manifest.finish(_stop_code(exc), interrupted=True)
        raise
    code = exit_code(manifest.results.values())
    if not manifest.finish(code):
        # The files are done; only the record of them is missing. 1 still wins over 2.
        say(f"batch: the manifest could not be written: {manifest.write_error}")
        code = code if code == 1 else 2
    summary = manifest.as_dict()
    if cfg.json:
        print(json.dumps(summary, indent=2))
    counts = summary["counts"]
    where = f"; manifest {manifest_path}" if manifest_path is not None else ""
    if not cfg.quiet or counts[FAILED]:
        say(
            f"batch: {counts[DONE]} done, {counts[SKIPPED]} skipped, {counts[FAILED]} failed{where}"
        )
    return code


def _stop_code(exc: BaseException) -> int:
    """The exit code the CLI returns for an exception that stops a batch."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return getattr(exc, "exit_code", 1)


def _prepare_dirs(jobs: Sequence[Job], out_dir: Path | None) -> None:
    if out_dir is not None:
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise InputError(f"{out_dir}: output directory is not writable")
        for job in jobs:  # {reldir} patterns mirror the input tree inside out_dir
            if job.output.parent != out_dir:
                job.output.parent.mkdir(parents=True, exist_ok=True)


def _dispatch(cfg: BatchConfig, jobs: list[Job], net: Any, on_result) -> None:
    def banded(runner: Any, spec: ModelSpec, n_bands: int) -> None:
        for job in jobs:
            res = process_banded(
                job, spec, cfg.options, runner, n_bands, net, auto=cfg.bands is None
            )
            on_result(res)

    if cfg.scheduler:
        # Dask workers run one inference thread per task unless $ASTROSLEUTH_THREADS says more.
        spec = _model_spec(cfg, net, 1)
        with connect(cfg.scheduler) as client:
            parallel = cluster_threads(client)
            n_bands = auto_bands(cfg.bands, len(jobs), parallel)
            if n_bands > 1:
                banded(DaskRunner(client), spec, n_bands)
            else:
                run_jobs(client, jobs, spec, cfg.options, on_result=on_result)
        return

    threads = inference_threads(max(1, cores() // cfg.jobs) if cfg.jobs > 1 else None)
    spec = _model_spec(cfg, net, threads)
    if cfg.jobs == 1 and threads is not None:
        set_inference_threads(net, threads)
    worker_backend(spec, net)  # this process reuses the model it already loaded
    n_bands = auto_bands(cfg.bands, len(jobs), cfg.jobs)
    if n_bands <= 1:
        run_local(jobs, spec, cfg.options, workers=min(cfg.jobs, len(jobs)), on_result=on_result)
    elif cfg.jobs == 1:
        banded(InlineRunner(), spec, n_bands)
    else:
        pool = make_pool(spec, cfg.jobs)
        try:
            banded(PoolRunner(pool), spec, n_bands)
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)


# --------------------------------------------------------------------------- command line


def _scheduler_address(args: Any) -> str | None:
    return getattr(args, "scheduler", None) or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def wants_batch(args: Any) -> bool:
    """Whether ``upscale`` arguments ask for a batch (else the single-file path runs).

    A batch: several inputs, a directory, glob or ``.seq`` input, or any batch option
    (``--recursive``, ``--name``, ``--jobs`` > 1, ``--scheduler`` or
    ``$DASK_SCHEDULER_ADDRESS``, ``--manifest``, ``--bands``).
    """
    return (
        len(args.inputs) > 1
        or any(_is_collection(str(s)) for s in args.inputs)
        or bool(args.recursive)
        or args.name is not None
        or args.jobs != 1
        or args.manifest is not None
        or args.bands is not None
        or _scheduler_address(args) is not None
    )


def run_from_args(args: Any, options: UpscaleOptions, hdu: int | str | None) -> int:
    """Run the batch described by parsed ``upscale`` arguments; return the exit code."""
    if args.bands is not None and args.bands > 1 and options.protect_stars:
        raise InputError("--bands: cannot be combined with --protect-stars (stars are whole-image)")
    cfg = BatchConfig(
        inputs=[str(s) for s in args.inputs],
        output=args.output,
        name=args.name,
        recursive=args.recursive,
        jobs=args.jobs,
        scheduler=_scheduler_address(args),
        manifest=args.manifest,
        bands=args.bands,
        options=JobOptions(options, hdu=hdu, overwrite=args.overwrite),
        quiet=args.quiet or args.json,
        silent=args.quiet,
        json=args.json,
        wait_lock=getattr(args, "wait_lock", False),
    )
    return run_batch(cfg, log=lambda m: print(m, file=sys.stderr))
