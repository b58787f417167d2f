"""A batch's outputs: names from a pattern, whether an existing one can be kept, and
what a killed writer left."""

from __future__ import annotations

import os
import re
import string
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..conserve import DEFAULT_MODE
from ..errors import AstroSleuthError, InputError
from ..io import read_image
from ..io.atomic import remove_stale_temps as io_remove_stale_temps
from ..io.formats import IMAGE_FORMATS, format_from_name
from .inputs import is_inside
from .jobs import (
    COMPLETE,
    DEFAULT_NAME,
    FOREIGN,
    INCOMPLETE,
    MISSING,
    NAME_FIELDS,
    STALE,
    InputFile,
    Job,
)


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
        if not is_inside(out, root) or out == root:
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
    conserve_flux: str = DEFAULT_MODE,
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
    path: Path, shape, sha256: str, scale: int, stretch: str, conserve_flux: str = DEFAULT_MODE
) -> str:
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


def remove_stale_temps(output: str | os.PathLike[str]) -> list[Path]:
    """Remove every leftover of a killed writer of ``output`` (temporary files and the
    banded path's scratch directories), whoever wrote it.

    A batch owns its outputs: it holds the output directory's lock
    (:mod:`astrosleuth_astro.batch.lock`), and the scheduler runs one attempt of a file at
    a time, so a leftover of another process or host is a dead attempt's
    (:func:`astrosleuth_astro.io.atomic.remove_stale_temps`).

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    return io_remove_stale_temps(output, owned_by_anyone=True)
