"""The records of a batch: inputs found, jobs, what a worker is told, what it reports."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AstroSleuthError
from ..pipeline import UpscaleOptions

#: Output name pattern when ``--name`` is not given (the single-file naming).
DEFAULT_NAME = "{stem}_x{scale}{ext}"
#: File name of the manifest in the output directory.
MANIFEST_NAME = "manifest.json"
#: Fields of the ``--name`` pattern.
NAME_FIELDS = ("stem", "name", "ext", "scale", "reldir", "index", "model")

DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"

# Output states (see output_state).
MISSING, COMPLETE, INCOMPLETE, STALE, FOREIGN = (
    "missing",
    "complete",
    "incomplete",
    "stale",
    "foreign",
)


@dataclass(frozen=True)
class InputFile:
    """One input image found by :func:`expand_inputs`.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the image.
    reldir : str
        Its directory relative to the directory or glob root it was found under (``"."``
        for files named directly and for sequence frames); the ``{reldir}`` name field.
    """

    path: Path
    reldir: str = "."


@dataclass(frozen=True)
class Job:
    """One file to upscale: ``index`` (0-based position), ``input`` and ``output`` paths."""

    index: int
    input: Path
    output: Path


@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds the model: what it is given to :func:`~astrosleuth_astro.api.get_backend`.

    Attributes
    ----------
    model : str
        Registry name, or the absolute path of a weights file (workers must reach it).
    backend, device : str
    options : tuple of (str, object)
        NEXT model options.
    sha256 : str
        sha256 of the weights the client loaded; a worker whose file differs refuses to run.
    threads : int or None
        Inference threads per process; None: :func:`inference_threads` decides.
    precision : str
        Network precision (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``).
    """

    model: str
    backend: str = "auto"
    device: str = "cpu"
    options: tuple[tuple[str, Any], ...] = ()
    sha256: str = ""
    threads: int | None = None
    precision: str = "auto"

    @classmethod
    def for_options(cls, options: UpscaleOptions, net: Any, threads: int | None) -> ModelSpec:
        """The spec of the model ``options`` name, loaded by the client as ``net``."""
        model = str(options.model)
        if Path(model).is_file():
            model = os.path.abspath(model)  # workers may run elsewhere: give them the full path
        sha256 = getattr(net, "sha256", "")
        return cls(
            model,
            options.backend,
            options.device,
            options.model_options,
            sha256,
            threads,
            options.precision,
        )

    @property
    def key(self) -> tuple:
        # With the sha256: a model file replaced between two batches is loaded again.
        return (self.model, self.backend, self.device, self.options, self.sha256, self.precision)


@dataclass(frozen=True)
class JobOptions:
    """Per-file options: how to upscale (:class:`~astrosleuth_astro.pipeline.UpscaleOptions`;
    its model is built from the job's :class:`ModelSpec`), which HDU to read and whether
    to replace existing outputs."""

    upscale: UpscaleOptions = field(default_factory=UpscaleOptions)
    hdu: int | str | None = None
    overwrite: bool = False


@dataclass
class JobResult:
    """What happened to one file (one manifest entry, plus the exit code it implies).

    ``status`` is ``done``, ``skipped`` or ``failed``; ``error`` the one-line message of a
    failure; ``exit_code`` 0, 2 (input problem) or 1 (internal error).
    """

    index: int
    input: str
    output: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    extra: dict = field(default_factory=dict)

    def entry(self) -> dict:
        """The manifest entry (``extra`` adds keys, e.g. ``bands`` for a banded image)."""
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            **self.extra,
        }


def failed(job: Job, message: str, code: int, seconds: float = 0.0) -> JobResult:
    return JobResult(job.index, str(job.input), str(job.output), FAILED, seconds, message, code)


def failure(job: Job, exc: Exception, seconds: float = 0.0) -> JobResult:
    """The result of a job that raised ``exc``: its one-line message and exit code (2 for
    a problem of the input, 1 for an internal error or lack of memory)."""
    if isinstance(exc, AstroSleuthError):
        return failed(job, str(exc), exc.exit_code, seconds)
    if isinstance(exc, MemoryError):
        return failed(job, f"{job.input}: out of memory", 1, seconds)
    return failed(job, f"internal error: {type(exc).__name__}: {exc}", 1, seconds)


def exit_code(results: Iterable[JobResult]) -> int:
    """0 when every file succeeded, else 1 if any internal error, else 2."""
    codes = {r.exit_code for r in results if r.status == FAILED}
    if not codes:
        return 0
    return 1 if 1 in codes else 2
