"""Batch upscaling: many inputs, one output directory, resumable, with a manifest.

What a batch does, in order:

1. **Expand the inputs** (:func:`expand_inputs`): files, glob patterns, directories (their
   image files; with ``recursive`` their sub-directories too) and Siril sequences (``.seq``
   files, read by :func:`read_seq`, give their FITS frames).
2. **Name the outputs** (:func:`plan_jobs`) with a pattern such as ``"{stem}_x{scale}.fits"``
   (fields in :data:`NAME_FIELDS`). Two inputs that would write the same output, or an
   output that is one of the inputs, are a usage error before any work is done.
3. **Run every file** (:func:`process_job`) in this process, in local worker processes
   (:func:`run_local`), or on a Dask cluster (:mod:`astrosleuth_astro.distributed`). A bad
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
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import glob
import json
import multiprocessing
import os
import re
import shutil
import signal
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .api import get_backend, upscale_image
from .errors import AstroSleuthError, InputError, ModelError
from .io import LoadedImage, check_not_same, read_image
from .io.atomic import TEMP_PREFIX, atomic_output
from .io.formats import IMAGE_FORMATS, format_from_name
from .pipeline import UpscaleOptions

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

#: Output name pattern when ``--name`` is not given (the single-file naming).
DEFAULT_NAME = "{stem}_x{scale}{ext}"
#: File name of the manifest in the output directory.
MANIFEST_NAME = "manifest.json"
#: Fields of the ``--name`` pattern.
NAME_FIELDS = ("stem", "name", "ext", "scale", "reldir", "index", "model")
#: Environment variable: inference threads per task (all runners).
THREADS_ENV = "ASTROSLEUTH_THREADS"
#: A job whose worker process died this many times is reported as failed.
MAX_ATTEMPTS = 3
#: Seconds between two manifest writes while results come in (the last one is always written).
MANIFEST_INTERVAL = 1.0

DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"

# Output states (see output_state).
MISSING, COMPLETE, INCOMPLETE, STALE, FOREIGN = (
    "missing",
    "complete",
    "incomplete",
    "stale",
    "foreign",
)

_GLOB_MAGIC = re.compile(r"[*?[]")
_FITS_EXTS = (".fit", ".fits", ".fts", ".FIT", ".FITS", ".FTS")


# --------------------------------------------------------------------------- records


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


def _failed(job: Job, message: str, code: int, seconds: float = 0.0) -> JobResult:
    return JobResult(job.index, str(job.input), str(job.output), FAILED, seconds, message, code)


def exit_code(results: Iterable[JobResult]) -> int:
    """0 when every file succeeded, else 1 if any internal error, else 2."""
    codes = {r.exit_code for r in results if r.status == FAILED}
    if not codes:
        return 0
    return 1 if 1 in codes else 2


# --------------------------------------------------------------------------- inputs


def read_seq(path: str | os.PathLike[str]) -> list[Path]:
    """The FITS frames of a Siril sequence file (``.seq``).

    A ``.seq`` (Siril's ``src/io/seqfile.c``) holds ``#`` comments, one
    ``S 'name' beg number selnum fixed reference [version variable fz drizzle]`` line (the
    name is quoted in the current format, bare in old ones), an optional ``T`` line for
    single-file sequences (``TS`` SER, ``TA`` film, ``TF`` FITS cube), and one
    ``I filenum incl ...`` line per image. Frame ``filenum`` of a regular sequence is the
    file ``{name}{filenum}{ext}``, the number zero-padded to ``fixed`` digits when
    ``fixed > 1``, next to the ``.seq``; ``ext`` is ``.fit``, ``.fits`` or ``.fts`` (the first
    that exists; ``.fz`` appended for compressed sequences).

    Every frame listed is returned, whether selected (``incl``) in Siril or not.

    Raises
    ------
    InputError
        An unreadable or malformed file, or a SER/film/FITS-cube sequence (convert those to
        FITS frames in Siril first).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the sequence ({exc.strerror})") from None
    name: str | None = None
    number = fixed = fz = 0
    kind = None
    frames: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "#":
            continue
        try:
            if line[0] == "S":
                rest = line[2:]
                if rest.startswith("'"):
                    end = rest.index("'", 1)
                    name, numbers = rest[1:end], rest[end + 1 :].split()
                else:
                    name, *numbers = rest.split()
                values = [int(v) for v in numbers]
                if len(values) < 5:
                    raise ValueError("too few fields")
                number, fixed = values[1], values[3]
                fz = values[7] if len(values) > 7 else 0
            elif line[0] == "T" and len(line) > 1 and line[1] in "SAF":
                kind = {"S": "SER", "A": "film", "F": "FITS cube"}[line[1]]
            elif line[0] == "I":
                if name is None:
                    raise ValueError("image line before the S line")
                frames.append(int(line[2:].split()[0]))
        except (ValueError, IndexError):
            raise InputError(
                f"{path}: not a Siril sequence (line {lineno}: {line[:60]!r})"
            ) from None
    if name is None:
        raise InputError(f"{path}: not a Siril sequence (no S line)")
    if kind is not None:
        raise InputError(
            f"{path}: a {kind} sequence; only sequences of FITS frames are supported "
            "(convert it to FITS frames in Siril first)"
        )
    if not frames or len(frames) != number:
        raise InputError(f"{path}: declares {number} images but lists {len(frames)}")
    base = path.parent
    out = []
    for num in frames:
        stem = f"{name}{num:0{fixed}d}" if fixed > 1 else f"{name}{num}"
        candidates = [base / f"{stem}{ext}{'.fz' if fz else ''}" for ext in _FITS_EXTS]
        out.append(next((c for c in candidates if c.exists()), candidates[0]))
    return out


def _is_image_name(path: Path) -> bool:
    return format_from_name(path) is not None and not path.name.startswith(".")


def _inside(path: Path, directory: Path | None) -> bool:
    if directory is None:
        return False
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def _scan_dir(root: Path, recursive: bool, exclude: Path | None) -> list[InputFile]:
    found = []
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for dirpath, dirnames, filenames in walker:
        # Hidden directories (ours: temp/scratch files) and the output tree are not inputs.
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not _inside(Path(dirpath, d), exclude)
        )
        for fname in sorted(filenames):
            p = Path(dirpath, fname)
            if p.is_file() and _is_image_name(p) and not _inside(p, exclude):
                found.append(InputFile(p, os.path.relpath(dirpath, root)))
    return found


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_inputs(
    specs: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = False,
    exclude: str | os.PathLike[str] | None = None,
) -> list[InputFile]:
    """Turn command-line inputs into the list of images to process.

    Parameters
    ----------
    specs : sequence of str or path-like
        Each one a file, a directory (its image files, by name: FITS, TIFF, PNG, JPEG;
        hidden files skipped), a Siril ``.seq`` (its frames) or a glob pattern (``*``, ``?``,
        ``[...]``; ``**`` spans directories with ``recursive``). A file that does not exist is
        kept: it fails as a bad input when processed, without stopping the others.
    recursive : bool
        Directories are searched through their sub-directories, and ``**`` in globs.
    exclude : path-like, optional
        A directory whose files are never inputs (the output directory).

    Returns
    -------
    list of InputFile
        In the order given (directories and globs sorted), duplicates removed.

    Raises
    ------
    InputError
        A glob that matches nothing, a directory without images, a malformed ``.seq``.
    """
    excl = Path(os.path.abspath(exclude)) if exclude is not None else None
    found: list[InputFile] = []
    for spec in specs:
        text = os.fspath(spec)
        path = Path(os.path.abspath(text))
        if path.is_dir():
            files = _scan_dir(path, recursive, excl)
            if not files:
                hint = "" if recursive else " (use --recursive for sub-directories)"
                raise InputError(f"{text}: no image files in this directory{hint}")
            found += files
        elif path.suffix.lower() == ".seq":
            if not path.is_file():
                raise InputError(f"{text}: no such sequence file")
            found += [InputFile(Path(os.path.abspath(p))) for p in read_seq(path)]
        elif not path.exists() and _GLOB_MAGIC.search(text):
            root = Path(os.path.abspath(_glob_root(text)))
            matches = sorted(glob.glob(text, recursive=recursive))
            files = []
            for m in matches:
                p = Path(os.path.abspath(m))
                if p.is_file() and p.suffix.lower() == ".seq":
                    files += [InputFile(Path(os.path.abspath(q))) for q in read_seq(p)]
                elif p.is_file() and _is_image_name(p) and not _inside(p, excl):
                    files.append(InputFile(p, os.path.relpath(p.parent, root)))
            if not files:
                raise InputError(f"{text}: matches no image file")
            found += files
        else:
            found.append(InputFile(path))
    seen: set[Path] = set()
    unique = []
    for f in found:
        if f.path not in seen:
            seen.add(f.path)
            unique.append(f)
    return unique


# --------------------------------------------------------------------------- outputs


def split_ext(name: str) -> tuple[str, str]:
    """``(stem, ext)`` of a file name; image extensions count whole (``.fits.gz``, ``.fit.fz``)."""

    lower = name.lower()
    for suffix in sorted(IMAGE_FORMATS, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def check_name_pattern(pattern: str) -> None:
    """Refuse a ``--name`` pattern with unknown fields or a bad format."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise InputError(f"--name: {pattern!r} is not a valid pattern ({exc})") from None
    for f in fields:
        base = re.split(r"[.\[!:]", f, maxsplit=1)[0]
        if base not in NAME_FIELDS:
            raise InputError(
                f"--name: unknown field {{{f}}} (use {', '.join('{' + n + '}' for n in NAME_FIELDS)})"
            )
    if not pattern or pattern.endswith(("/", os.sep)):
        raise InputError(f"--name: {pattern!r} does not name a file")


def plan_jobs(
    files: Sequence[InputFile],
    output_dir: str | os.PathLike[str] | None,
    *,
    pattern: str = DEFAULT_NAME,
    scale: int = 4,
    model: str = "",
) -> list[Job]:
    """Name every output and check that the names are safe, before any work.

    Parameters
    ----------
    files : sequence of InputFile
    output_dir : path-like or None
        Where outputs go; None: next to each input.
    pattern : str
        Output file name; fields ``{stem}`` (input name without its extension),
        ``{name}`` (input file name), ``{ext}`` (its extension with the dot; ``.fits.gz``
        and ``.fits.fz`` count as one), ``{scale}``,
        ``{reldir}`` (its directory relative to the directory or glob it was found in, to
        mirror a tree), ``{index}`` (1-based position) and ``{model}`` (model name).
    scale : int
    model : str

    Returns
    -------
    list of Job

    Raises
    ------
    InputError
        An unknown field, a name that leaves the output directory, two inputs with the same
        output, or an output that is one of the inputs.
    """
    check_name_pattern(pattern)
    out_root = Path(os.path.abspath(output_dir)) if output_dir is not None else None
    jobs = []
    by_output: dict[Path, Path] = {}
    inputs = {f.path for f in files}
    for i, f in enumerate(files):
        stem, ext = split_ext(f.path.name)
        fields = {
            "stem": stem,
            "name": f.path.name,
            "ext": ext,
            "scale": scale,
            "reldir": f.reldir,
            "index": i + 1,
            "model": model,
        }
        name = pattern.format(**fields)
        root = out_root if out_root is not None else f.path.parent
        out = Path(os.path.normpath(root / name))
        if not _inside(out, root) or out == root:
            raise InputError(f"--name: {name!r} for {f.path} leaves the output directory {root}")
        if out in by_output:
            raise InputError(
                f"{out}: both {by_output[out]} and {f.path} would be written there "
                "(use --name with {reldir} or {index})"
            )
        if out in inputs:
            raise InputError(f"{out}: is one of the inputs (choose another -o or --name)")
        by_output[out] = f.path
        jobs.append(Job(i, f.path, out))
    return jobs


def expected_shape(image, scale: int) -> tuple[int, ...]:
    """Shape of the output :func:`~astrosleuth_astro.api.upscale_image` writes for ``image``."""
    data = image.restore_shape(image.data)
    return (*data.shape[:-2], scale * data.shape[-2], scale * data.shape[-1])


def output_state(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    *,
    sha256: str,
    scale: int,
    stretch: str = "auto",
    conserve_flux: str = "off",
) -> str:
    """Whether an existing output can be kept.

    Parameters
    ----------
    path : path-like
        The output file.
    shape : tuple of int
        The expected data shape (:func:`expected_shape`).
    sha256, scale : str, int
        The model weights' sha256 and the scale of this run.
    stretch : str
        This run's stretch; compared with ``ASTSLSTR`` unless ``"auto"``.
    conserve_flux : str
        This run's flux conservation mode; compared with ``ASTSLFLX`` (absent = ``"off"``),
        so a rerun with another mode does not keep outputs made without it.

    Returns
    -------
    str
        ``"missing"``; ``"complete"`` (FITS: provenance keywords with this sha256 and scale,
        the expected ``NAXISn``, and the file long enough for its data; TIFF/PNG/JPEG carry
        no provenance: readable with the expected shape); ``"stale"`` (an astrosleuth-astro
        output of another model, scale, stretch or size); ``"incomplete"`` (truncated or
        unreadable); ``"foreign"`` (a valid FITS file without astrosleuth-astro provenance).
        ``"stale"`` also covers another flux conservation mode.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return MISSING
    if not path.is_file():
        return FOREIGN
    fmt = format_from_name(path)
    if fmt != "fits":
        try:
            image = read_image(path)
        except (AstroSleuthError, OSError, ValueError):
            return INCOMPLETE
        got = image.restore_shape(image.data).shape
        return COMPLETE if tuple(got) == tuple(shape) else STALE
    return _fits_state(path, shape, sha256, scale, stretch, conserve_flux)


def _fits_state(
    path: Path, shape, sha256: str, scale: int, stretch: str, conserve_flux: str = "off"
) -> str:
    import warnings

    import numpy as np
    from astropy.io import fits

    compressed = str(path).lower().endswith((".gz", ".fz"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                hdu = hdul[1] if str(path).lower().endswith(".fz") else hdul[0]
                header = hdu.header
                if "ASTSLSHA" not in header or "ASTSLSCL" not in header:
                    return FOREIGN
                naxis = tuple(
                    int(header.get(f"NAXIS{i}", 0)) for i in range(header["NAXIS"], 0, -1)
                )
                if compressed:
                    # No size to check: read it all (a truncated stream fails).
                    data = hdu.data
                    ok = data is not None and tuple(data.shape) == tuple(shape)
                else:
                    # The data section, padded to whole 2880-byte blocks, must all be there.
                    info = hdul.fileinfo(0)
                    padded = -(-4 * int(np.prod(shape)) // 2880) * 2880
                    ok = info is not None and path.stat().st_size >= info["datLoc"] + padded
        same = (
            str(header["ASTSLSHA"]) == sha256
            and float(header["ASTSLSCL"]) == float(scale)
            and naxis == tuple(shape)
            and int(header.get("BITPIX", 0)) == -32
            and (stretch == "auto" or str(header.get("ASTSLSTR", "")) == stretch)
            and str(header.get("ASTSLFLX", "off")) == conserve_flux
        )
    except Exception:  # noqa: BLE001 - astropy raises many types for damaged files
        return INCOMPLETE
    if not same:
        return STALE
    return COMPLETE if ok else INCOMPLETE


_TEMP_RE = re.compile(rf"^{re.escape(TEMP_PREFIX)}(?:[0-9a-f]{{12}}|bands-[A-Za-z0-9_]+)-(.+)$")


def remove_stale_temps(output: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed writer of ``output`` left next to it.

    :func:`~astrosleuth_astro.io.atomic.atomic_output` removes its temporary file on any
    exception, but a process killed with SIGKILL (or a worker whose machine died) cannot:
    ``.astrosleuth-<12 hex>-<name>`` files (and ``.astrosleuth-bands-*-<name>`` scratch
    directories of the banded path) stay. A batch owns its outputs, so before an output is
    (re)written its leftovers are removed. Two batches must not write the same outputs at
    the same time.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    out = Path(output)
    removed = []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return removed
    for entry in names:
        m = _TEMP_RE.match(entry)
        if m is None or m.group(1) != out.name:
            continue
        p = out.parent / entry
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


# --------------------------------------------------------------------------- workers

_BACKENDS: dict[tuple, Any] = {}
_BACKENDS_LOCK = threading.Lock()
#: How many models this process has loaded (tests check "once per worker").
LOADS = 0


def _cores() -> int:
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
        upscale_image(
            image, job.output, net, options.upscale, overwrite=options.overwrite or state != MISSING
        )
    except AstroSleuthError as exc:
        return _failed(job, str(exc), exc.exit_code, time.perf_counter() - start)
    except MemoryError:
        return _failed(job, f"{job.input}: out of memory", 1, time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one file must never stop the batch
        return _failed(
            job, f"internal error: {type(exc).__name__}: {exc}", 1, time.perf_counter() - start
        )
    return JobResult(job.index, str(job.input), str(job.output), DONE, time.perf_counter() - start)


# --------------------------------------------------------------------------- manifest


class Manifest:
    """``manifest.json``: the state of every file of a batch, rewritten atomically.

    The file is a JSON object: ``version``, ``model``, ``sha256``, ``scale``, ``started``,
    ``updated``, ``finished`` (null until the batch ends), ``interrupted``, ``exit_code``,
    ``counts`` (per status) and ``files``: one ``{"input", "output", "status", "seconds",
    "error"}`` per input, in input order, ``status`` ``pending`` until it is finished.
    """

    def __init__(self, path: str | os.PathLike[str] | None, jobs: Sequence[Job], meta: dict):
        self.path = Path(path) if path is not None else None
        self.meta = dict(meta)
        self.started = _now()
        self.results: dict[int, JobResult] = {}
        self.jobs = list(jobs)
        self._last = 0.0
        self.finished: str | None = None
        self.interrupted = False

    def record(self, result: JobResult) -> None:
        self.results[result.index] = result
        if time.monotonic() - self._last >= MANIFEST_INTERVAL:
            self.write()

    def entries(self) -> list[dict]:
        out = []
        for job in self.jobs:
            res = self.results.get(job.index)
            if res is None:
                res = JobResult(job.index, str(job.input), str(job.output), PENDING)
            out.append(res.entry())
        return out

    def as_dict(self) -> dict:
        files = self.entries()
        counts = {s: 0 for s in (DONE, SKIPPED, FAILED, PENDING)}
        for e in files:
            counts[e["status"]] += 1
        return {
            "version": __version__,
            **self.meta,
            "started": self.started,
            "updated": _now(),
            "finished": self.finished,
            "interrupted": self.interrupted,
            "exit_code": exit_code(self.results.values()) if self.finished else None,
            "counts": counts,
            "files": files,
        }

    def write(self) -> None:
        self._last = time.monotonic()
        if self.path is None:
            return
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def finish(self, interrupted: bool = False) -> None:
        self.finished = _now()
        self.interrupted = interrupted
        self.write()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- local runs

_WORKER_MODEL: ModelSpec | None = None
_WORKER_ERROR: str | None = None


def _on_sigterm(signum, frame):
    # An exception, so that the atomic writers remove their temporary files.
    raise SystemExit(143)


def _init_worker(spec: ModelSpec) -> None:
    """ProcessPoolExecutor initializer: signals, threads, and the model, loaded once."""
    global _WORKER_MODEL, _WORKER_ERROR
    # Ctrl-C reaches the whole process group: the parent decides and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
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
            return _failed(job, _WORKER_ERROR, 2)
        assert _WORKER_MODEL is not None
        return process_job(job, _WORKER_MODEL, options)
    except (KeyboardInterrupt, SystemExit):
        # Told to stop: the writers have cleaned up; leave now rather than take another job.
        os._exit(143)


def _pool_call(fn: Callable, *args: Any) -> Any:
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
        max_workers=workers, mp_context=_mp_context(), initializer=_init_worker, initargs=(spec,)
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
                    res = _failed(job, f"internal error: {type(exc).__name__}: {exc}", 1)
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
                    _failed(
                        job,
                        f"{job.input}: the worker process died {MAX_ATTEMPTS} times "
                        "(out of memory, or killed)",
                        1,
                    )
                )
            else:
                pending.append(job)
