"""Batch upscaling: many inputs, one output directory, resumable, with a manifest.

What a batch does, in order:

1. **Expand the inputs** (:func:`expand_inputs`): files, glob patterns, directories (their
   image files; with ``recursive`` their sub-directories too) and Siril sequences (``.seq``
   files, read by :func:`read_seq`, give their FITS frames).
2. **Name the outputs** (:func:`plan_jobs`) with a pattern such as ``"{stem}_x{scale}.fits"``
   (fields in :data:`NAME_FIELDS`). Two inputs that would write the same output, or an
   output that is one of the inputs, are a usage error before any work is done.
3. **Run every file** (:func:`process_job`) in this process, in local worker processes
   (:func:`run_local`), or on a Dask cluster (:mod:`.cluster`, :mod:`.bands`). A bad
   file is reported and the others go on.
4. **Resume**: an output that already exists and is complete (a FITS file of the expected
   size whose provenance keywords name the same model sha256 and scale, see
   :func:`output_state`) is skipped; an incomplete or stale one is redone.
5. **Keep a manifest** (:class:`Manifest`, ``manifest.json``): each input, its output, its
   status (``done``, ``skipped``, ``failed``, or ``pending`` while not yet finished), the
   seconds it took and the error message. It is rewritten atomically as results come in, so
   an interrupted batch leaves a manifest that says what was finished.

Exit codes (:func:`exit_code`): 0 when every file was done or skipped; 2 when a file failed
because of its input (unreadable, not an image, bad layout...) or a usage problem; 1 when a
file failed with an internal error (1 wins over 2).

Workers load the model once per process (:func:`worker_backend` caches it) and use a fixed
number of inference threads (:func:`inference_threads`), so that N local processes do not
oversubscribe the cores. torch results depend on the number of intra-op threads (by one
float32 rounding step); onnxruntime results do not. Runs with the same number of threads per
task are bit-for-bit identical whatever runs them (this process, local workers, a cluster).

Modules, in import order: :mod:`.jobs` (the records: ``InputFile``, ``Job``,
``ModelSpec``, ``JobOptions``, ``JobResult``), :mod:`.inputs` (expansion), :mod:`.outputs`
(names, resume states, leftovers), :mod:`.worker` (one file, the per-process model),
:mod:`.manifest`, :mod:`.local` (worker processes), :mod:`.cluster` (Dask: one task per
file) and :mod:`.bands` (one image in bands). The orchestrator that picks among them is
:mod:`astrosleuth_astro.runner`.
"""

from .inputs import expand_inputs, read_seq
from .jobs import (
    DEFAULT_NAME,
    MANIFEST_NAME,
    NAME_FIELDS,
    InputFile,
    Job,
    JobOptions,
    JobResult,
    ModelSpec,
    exit_code,
)
from .local import run_local
from .manifest import Manifest
from .outputs import output_state, plan_jobs, remove_stale_temps
from .worker import THREADS_ENV, inference_threads, job_output_state, process_job, worker_backend

__all__ = [
    "DEFAULT_NAME",
    "MANIFEST_NAME",
    "NAME_FIELDS",
    "THREADS_ENV",
    "InputFile",
    "Job",
    "JobOptions",
    "job_output_state",
    "JobResult",
    "Manifest",
    "ModelSpec",
    "exit_code",
    "expand_inputs",
    "inference_threads",
    "output_state",
    "plan_jobs",
    "process_job",
    "read_seq",
    "remove_stale_temps",
    "run_local",
    "worker_backend",
]
