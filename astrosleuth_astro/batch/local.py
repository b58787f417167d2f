"""Running a batch's jobs in this process or in local worker processes."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import AstroSleuthError
from ..io.atomic import pid_alive
from .jobs import Job, JobOptions, JobResult, ModelSpec, failed
from .worker import process_job, worker_backend

#: A job whose worker process died this many times is reported as failed.
MAX_ATTEMPTS = 3

_WORKER_MODEL: ModelSpec | None = None
_WORKER_ERROR: str | None = None


def _on_sigterm(signum, frame):
    # An exception, so that the atomic writers remove their temporary files.
    raise SystemExit(143)


#: Seconds between two checks that the batch process still lives.
PARENT_POLL_S = 0.5
#: Seconds a worker whose batch died has to clean up after SIGTERM before it is ended.
PARENT_GRACE_S = 5.0


def _die_with(parent: int) -> None:
    """End this worker when the batch process ``parent`` ends, however it ends.

    A worker killed with its batch (kill -9 of the parent, a crash) would otherwise finish
    its job and the queued ones, writing outputs that no manifest records. On Linux the
    kernel sends SIGTERM when the process that started this one (the forkserver, which
    itself exits with the batch) dies (``PR_SET_PDEATHSIG``); everywhere, a thread checks
    that the batch lives and sends SIGTERM when it does not. SIGTERM becomes SystemExit,
    so the atomic writer removes its temporary file; a worker still alive
    :data:`PARENT_GRACE_S` later is ended outright.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while pid_alive(parent):
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(PARENT_GRACE_S)
        os._exit(143)

    threading.Thread(target=watch, name="astrosleuth-parent-watch", daemon=True).start()


def _init_worker(spec: ModelSpec, parent: int | None = None) -> None:
    """ProcessPoolExecutor initializer: signals, threads, and the model, loaded once."""
    global _WORKER_MODEL, _WORKER_ERROR
    # Ctrl-C reaches the whole process group: the parent decides and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if parent is not None:
        _die_with(parent)
    _WORKER_MODEL = spec
    try:
        worker_backend(spec)
    except Exception as exc:  # noqa: BLE001 - reported per file instead of breaking the pool
        _WORKER_ERROR = (
            str(exc) if isinstance(exc, AstroSleuthError) else f"{type(exc).__name__}: {exc}"
        )


def _pool_job(job: Job, options: JobOptions) -> JobResult:
    try:
        if _WORKER_ERROR is not None:
            return failed(job, _WORKER_ERROR, 2)
        assert _WORKER_MODEL is not None
        return process_job(job, _WORKER_MODEL, options)
    except (KeyboardInterrupt, SystemExit):
        # Told to stop: the writers have cleaned up; leave now rather than take another job.
        os._exit(143)


def pool_call(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except (KeyboardInterrupt, SystemExit):
        os._exit(143)


def _mp_context():
    # Never fork a process that may hold torch/onnxruntime threads.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def make_pool(spec: ModelSpec, workers: int) -> cf.ProcessPoolExecutor:
    """Local worker processes, each loading the model once (:func:`_init_worker`)."""
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_mp_context(),
        initializer=_init_worker,
        initargs=(spec, os.getpid()),
    )


def stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop the workers now (SIGTERM: their writers remove temp files) and wait for them."""
    procs = list(getattr(pool, "_processes", {}).values())  # no public way to reach them
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(10)


def run_local(
    jobs: Sequence[Job],
    model: ModelSpec,
    options: JobOptions,
    *,
    workers: int = 1,
    on_result: Callable[[JobResult], None],
) -> None:
    """Run ``jobs`` in this process (``workers=1``) or in ``workers`` local processes.

    Each worker process loads the model once, ignores SIGINT (the parent stops it with
    SIGTERM, upon which its atomic writer removes its temporary file) and runs
    ``threads`` inference threads (``$ASTROSLEUTH_THREADS``, else cores // workers). A
    worker that dies (killed, out of memory) breaks the pool: a new one is started and
    the unfinished files are run again, at most :data:`MAX_ATTEMPTS` times each.
    """
    if workers <= 1:
        for job in jobs:
            on_result(process_job(job, model, options))
        return
    attempts: dict[int, int] = {}
    pending = list(jobs)
    while pending:
        pool = make_pool(model, min(workers, len(pending)))
        broken: list[Job] = []
        try:
            futures = {pool.submit(_pool_job, job, options): job for job in pending}
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    res = fut.result()
                except cf.process.BrokenProcessPool:
                    broken.append(job)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                    res = failed(job, f"internal error: {type(exc).__name__}: {exc}", 1)
                on_result(res)
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)
        pending = []
        for job in sorted(broken, key=lambda j: j.index):
            attempts[job.index] = attempts.get(job.index, 0) + 1
            if attempts[job.index] >= MAX_ATTEMPTS:
                on_result(
                    failed(
                        job,
                        f"{job.input}: the worker process died {MAX_ATTEMPTS} times "
                        "(out of memory, or killed)",
                        1,
                    )
                )
            else:
                pending.append(job)
