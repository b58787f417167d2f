"""One file of a batch, wherever it runs: the model loaded once per process, the
inference threads, and :func:`process_job`."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

from ..api import get_backend, upscale_image
from ..errors import InputError, ModelError
from ..io import LoadedImage, check_not_same, read_image
from .jobs import (
    COMPLETE,
    DONE,
    FOREIGN,
    MISSING,
    SKIPPED,
    Job,
    JobOptions,
    JobResult,
    ModelSpec,
    failure,
)
from .outputs import expected_shape, output_state, remove_stale_temps

#: Environment variable: inference threads per task (all runners).
THREADS_ENV = "ASTROSLEUTH_THREADS"

_BACKENDS: dict[tuple, Any] = {}
_BACKENDS_LOCK = threading.Lock()
#: How many models this process has loaded (tests check "once per worker").
LOADS = 0


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def inference_threads(default: int | None) -> int | None:
    """Threads per task: ``$ASTROSLEUTH_THREADS`` if set, else ``default`` (None: leave as is)."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"{THREADS_ENV}: must be a positive integer, got {env!r}") from None
        if n < 1:
            raise InputError(f"{THREADS_ENV}: must be a positive integer, got {env!r}")
        return n
    return default


def set_inference_threads(net: Any, threads: int) -> None:
    """Make ``net`` (and this process) run inference on ``threads`` threads."""
    with contextlib.suppress(ImportError):
        if "torch" in sys.modules or getattr(net, "name", "") == "torch":
            import torch

            torch.set_num_threads(threads)
            # Only possible before the first parallel work; later calls raise.
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
    model = getattr(net, "model", None)
    session = getattr(model, "session", None)
    if session is not None and hasattr(model, "path"):
        import onnxruntime as ort

        # onnxruntime fixes its thread pool when the session is built: rebuild it, with
        # spinning off so that idle threads do not steal the cores of the other workers.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model.session = ort.InferenceSession(
            str(model.path), sess_options=so, providers=session.get_providers()
        )


def worker_backend(spec: ModelSpec, net: Any = None) -> Any:
    """The backend for ``spec`` in this process, loaded on first use and then reused.

    Parameters
    ----------
    spec : ModelSpec
    net : Backend, optional
        An already built backend to register for ``spec`` (the client's own, so that a
        run in this process does not load the model twice).

    Raises
    ------
    ModelError
        The model loaded here has another sha256 than the client's.
    """
    global LOADS
    with _BACKENDS_LOCK:
        if net is not None:
            _BACKENDS[spec.key] = net
            return net
        cached = _BACKENDS.get(spec.key)
        if cached is not None:
            return cached

        loaded = get_backend(
            spec.model,
            backend=spec.backend,
            device=spec.device,
            precision=spec.precision,
            **dict(spec.options),
        )
        LOADS += 1
        got = getattr(loaded, "sha256", "")
        if spec.sha256 and got != spec.sha256:
            raise ModelError(
                f"{spec.model}: the model here has sha256 {got[:12]}..., the client's "
                f"{spec.sha256[:12]}... (give every worker the same model file)"
            )
        threads = inference_threads(spec.threads)
        if threads is not None:
            set_inference_threads(loaded, threads)
        _BACKENDS[spec.key] = loaded
        return loaded


def job_output_state(job: Job, image: LoadedImage, net: Any, options: JobOptions) -> str:
    """:func:`output_state` of ``job``'s output for this image, model and options; refuses
    (:class:`InputError`) an existing output that this package did not write, unless
    ``overwrite``."""
    opts = options.upscale
    state = output_state(
        job.output,
        expected_shape(image, opts.scale),
        sha256=getattr(net, "sha256", ""),
        scale=opts.scale,
        stretch=opts.stretch,
        conserve_flux=opts.conserve_flux,
    )
    if state == FOREIGN and not options.overwrite:
        raise InputError(
            f"{job.output}: exists and is not an astrosleuth-astro output (use --overwrite)"
        )
    return state


def process_job(job: Job, model: ModelSpec, options: JobOptions) -> JobResult:
    """Upscale one file of a batch; never raises for a problem of this file.

    Runs wherever the file is processed (this process, a local worker, a Dask worker):
    leftovers of a killed earlier attempt are removed, an existing complete output is
    skipped, an incomplete or stale one is replaced, and the output is written atomically.

    Returns
    -------
    JobResult
        ``done``, ``skipped`` or ``failed`` with the one-line error message.
    """

    start = time.perf_counter()
    try:
        net = worker_backend(model)
        remove_stale_temps(job.output)
        check_not_same(job.input, job.output)
        image = read_image(job.input, hdu=options.hdu)
        state = job_output_state(job, image, net, options)
        if state == COMPLETE and not options.overwrite:
            return JobResult(
                job.index, str(job.input), str(job.output), SKIPPED, time.perf_counter() - start
            )
        report = upscale_image(
            image, job.output, net, options.upscale, overwrite=options.overwrite or state != MISSING
        )
    except Exception as exc:  # noqa: BLE001 - one file must never stop the batch
        return failure(job, exc, time.perf_counter() - start)
    res = JobResult(job.index, str(job.input), str(job.output), DONE, time.perf_counter() - start)
    res.extra.update(stretch_entry(report.stretch, report.stretch_reason))
    return res


def stretch_entry(kind: str, reason: str) -> dict:
    """The manifest's record of the stretch ``auto`` (or the user) chose for one file: the
    same ``stretch`` and ``stretch_reason`` keys as the single-file ``--json``."""
    return {"stretch": kind, "stretch_reason": reason}
