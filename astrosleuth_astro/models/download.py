"""Registry models made available locally: ``download(name)`` and ``resolve(--model)``.

The HTTP rules (HTTPS only, size limit, sha256 check, atomic replace, one lock per file)
live in :mod:`.http`; this module decides *what* to fetch for a registry entry.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError
from .cond_vectors import fetch_cond_vectors
from .http import (
    LOCK_TIMEOUT_S,
    MAX_BYTES,
    MAX_REDIRECTS,
    Progress,
    check_url,
    download_url,
    sha256_file,
)
from .registry import ModelEntry, get_entry, model_path

__all__ = [
    "LOCK_TIMEOUT_S",
    "MAX_BYTES",
    "MAX_REDIRECTS",
    "check_url",
    "download",
    "download_url",
    "resolve",
    "sha256_file",
]


def download(
    name: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
    onnx: bool = False,
) -> Path:
    """Make registry model ``name`` available locally and return its path.

    Shipped models are not downloaded: their path is returned when the file exists. For a
    NEXT model whose entry has a ``cond_vectors_url``, the conditioning vectors are fetched
    as well (see :mod:`.cond_vectors`; not for ``onnx=True``: an ONNX export holds them).

    Parameters
    ----------
    name : str
        Registry name (case-insensitive).
    force : bool
        Download again even when cached.
    progress : callable, optional
        ``progress(done_bytes, total_bytes_or_None)``.
    onnx : bool
        Fetch the model's ONNX file (``onnx`` / ``onnx_url``) instead of its weights.

    Returns
    -------
    pathlib.Path
        The cached (or shipped) file.

    Raises
    ------
    ModelError
        Unknown model, shipped file missing, or download failure (of the weights or of
        NEXT's conditioning vectors).
    """
    entry: ModelEntry = get_entry(name)
    target = model_path(entry.name, onnx=onnx)
    shipped = entry.onnx_path if onnx else entry.path
    if shipped is not None:
        if not shipped.is_file():
            raise ModelError(
                f"{shipped}: shipped file of model {entry.name!r} is missing and has no download URL"
            )
        path = shipped
    else:
        url = entry.onnx_url if onnx else entry.url
        assert url is not None  # model_path() raised otherwise
        path = download_url(
            url,
            target,
            sha256=entry.onnx_sha256 if onnx else entry.sha256,
            force=force,
            progress=progress,
        )
    if entry.cond_vectors_url and not onnx:
        fetch_cond_vectors(entry, force=force)
    return path


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or Path(text).suffix.lower() in (".pth", ".pt", ".safetensors", ".onnx", ".ckpt")
    )


def resolve(
    path_or_name: str | os.PathLike, *, onnx: bool = False, fetch: bool = True
) -> tuple[Path, ModelEntry | None]:
    """Turn a ``--model`` value (registry name or file path) into a file on disk.

    Parameters
    ----------
    path_or_name : str or os.PathLike
        Registry name (case-insensitive) or path to a ``.pth``/``.pt``/``.safetensors``/
        ``.onnx`` file. Registry names win over same-named files without a suffix.
    onnx : bool
        For registry names: return the ONNX file rather than the torch weights.
    fetch : bool
        Download a registry model that is not in the cache yet.

    Returns
    -------
    (pathlib.Path, ModelEntry or None)
        The file and its registry entry (None for a plain path).

    Raises
    ------
    ModelError
        Unknown name / missing file / shipped file not built / download failure.
    """
    if isinstance(path_or_name, os.PathLike) or _looks_like_path(str(path_or_name)):
        path = Path(path_or_name).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        return path, None
    name = str(path_or_name)
    try:
        entry = get_entry(name)
    except ModelError:
        path = Path(name).expanduser()
        if path.is_file():
            return path, None
        raise
    target = model_path(entry.name, onnx=onnx)
    if target.is_file():
        return target, entry
    if (entry.onnx_path if onnx else entry.path) is not None:
        raise ModelError(
            f"{target}: shipped file of model {entry.name!r} is missing (not built or not installed)"
        )
    if not fetch:
        raise ModelError(
            f"{entry.name}: not downloaded yet (expected at {target}); "
            f"run 'astrosleuth-astro models download {entry.name}'"
        )
    return download(entry.name, onnx=onnx), entry
