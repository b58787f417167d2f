"""Batches on a Dask cluster: one task per file, and the runners band tasks go through.

Dask is optional (``pip install 'astrosleuth-astro[dask]'``); it is imported only when a
scheduler is used. Nothing here is a scheduler of its own: files and bands are ordinary
``dask.distributed`` tasks on an existing cluster (``dask scheduler`` + ``dask worker``).

**Files.** :func:`run_jobs` submits one task per file
(:func:`astrosleuth_astro.batch.process_job`). Workers read their input and write their
output through paths they can reach themselves: every input, output and model file must be
on a file system shared by the client and all workers, under the same path (the client
sends absolute paths). A worker loads the model once per process
(:func:`~astrosleuth_astro.batch.worker_backend`) and checks that its weights have the
client's sha256. A worker that dies mid-task loses nothing: the scheduler runs the task
again on another worker (up to ``distributed.scheduler.allowed-failures`` times), the output
of the dead one was never committed (atomic writes), and the new attempt first removes the
temporary file the dead one left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._version import __version__
from ..errors import InputError
from .jobs import Job, JobOptions, JobResult, ModelSpec, failed
from .local import pool_call
from .worker import process_job

#: Retries of a task that raised (a worker that died is handled by allowed-failures).
RETRIES = 2
#: Seconds to connect to the scheduler, and to wait for a first worker.
CONNECT_TIMEOUT = 20
WORKER_TIMEOUT = 60


def _worker_version() -> str:
    return __version__


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (``tcp://host:port``), closed afterwards.

    Raises
    ------
    InputError
        Dask is not installed, the scheduler cannot be reached, it has no worker, or its
        workers run another astrosleuth-astro version (or cannot import it).
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            "--scheduler: Dask is not installed (pip install 'astrosleuth-astro[dask]')"
        ) from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError for bad URLs
        raise InputError(f"--scheduler {address}: cannot connect ({exc})") from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        except Exception:  # noqa: BLE001 - TimeoutError
            raise InputError(f"--scheduler {address}: no worker joined the cluster") from None
        try:
            versions = client.run(_worker_version)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"--scheduler {address}: the workers cannot run astrosleuth-astro "
                f"({type(exc).__name__}: {exc}); install it on every worker"
            ) from None
        other = {w: v for w, v in versions.items() if v != __version__}
        if other:
            worker, version = next(iter(other.items()))
            raise InputError(
                f"--scheduler {address}: worker {worker} runs astrosleuth-astro {version}, "
                f"this client {__version__} (install the same version everywhere)"
            )
        yield client
    finally:
        client.close()


def cluster_threads(client: Any) -> int:
    """Total worker threads of the cluster (tasks that can run at once)."""
    return max(1, sum(client.nthreads().values()))


def run_jobs(
    client: Any,
    jobs: Sequence[Job],
    model: ModelSpec,
    options: JobOptions,
    *,
    on_result: Callable[[JobResult], None],
    retries: int = RETRIES,
) -> None:
    """One Dask task per file; ``on_result`` is called as each one finishes.

    Workers run inference on ``$ASTROSLEUTH_THREADS`` threads (set on the workers), one by
    default: a Dask worker's parallelism is its threads and processes.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    spec = model if model.threads is not None else _with_threads(model, 1)
    tag = uuid.uuid4().hex[:8]
    futures = {}
    for job in jobs:
        fut = client.submit(
            process_job,
            job,
            spec,
            options,
            key=f"astrosleuth-file-{tag}-{job.index}",
            pure=False,
            retries=retries,
        )
        futures[fut] = job
    try:
        # This client is not the default one: give as_completed its event loop.
        for fut in as_completed(list(futures), loop=client.loop):
            job = futures[fut]
            try:
                res = fut.result()
            except KilledWorker:
                res = failed(
                    job,
                    f"{job.input}: the workers running it died too often (out of memory?)",
                    1,
                )
            except Exception as exc:  # noqa: BLE001 - reported for this file only
                res = failed(job, f"internal error: {type(exc).__name__}: {exc}", 1)
            on_result(res)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise


def _with_threads(spec: ModelSpec, threads: int) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, threads=threads)


# --------------------------------------------------------------------------- runners


class InlineRunner:
    """Runs tasks in this process, one after the other."""

    def map(self, fn: Callable, items: Sequence[Any], *args: Any) -> list:
        return [fn(item, *args) for item in items]


class PoolRunner:
    """Runs tasks in local worker processes (:func:`~astrosleuth_astro.batch.local.make_pool`)."""

    def __init__(self, pool: cf.ProcessPoolExecutor) -> None:
        self.pool = pool

    def map(self, fn: Callable, items: Sequence[Any], *args: Any) -> list:
        futures = [self.pool.submit(pool_call, fn, item, *args) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


class DaskRunner:
    """Runs tasks on a Dask cluster, retried elsewhere if their worker dies."""

    def __init__(self, client: Any, retries: int = RETRIES) -> None:
        self.client = client
        self.retries = retries

    def map(self, fn: Callable, items: Sequence[Any], *args: Any) -> list:
        tag = uuid.uuid4().hex[:8]
        futures = [
            self.client.submit(
                fn,
                item,
                *args,
                key=f"astrosleuth-{fn.__name__}-{tag}-{i}",
                pure=False,
                retries=self.retries,
            )
            for i, item in enumerate(items)
        ]
        try:
            return self.client.gather(futures)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
            raise
