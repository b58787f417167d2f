"""NEXT's conditioning vectors: fetched from upstream at run time, read without running code.

AstroSleuth NEXT builds its condition from four constant 512-d vectors (``average``,
``stars``, ``detail``, ``spikes``) that are not part of the released weights. Upstream keeps
them in its ``modules/next.py`` as base64 literals::

    self.average = self.bytes2torch(b'<base64 of 512 little-endian float32>')

astrosleuth-astro does not ship them. The registry entry of a NEXT model names that source
file (``cond_vectors_url``, pinned to one upstream commit, and ``cond_vectors_sha256``);
:func:`fetch_cond_vectors` downloads it through :func:`.download.download_url` (HTTPS only,
size cap, sha256 check, atomic, file lock), reads the four vectors out of it and stores them
in the cache as ``next_cond_vectors.npy`` (float32, ``(4, 512)``, rows ``average, stars,
detail, spikes``), where :func:`astrosleuth_astro.archs.next_options.condition_vectors`
finds them. The downloaded source is deleted afterwards.

The source is never executed or imported: :func:`parse_vectors_source` builds its syntax
tree with :func:`ast.parse` and evaluates only the literal argument of the four assignments
with :func:`ast.literal_eval`, which accepts constants and nothing that could run.

No torch import here.
"""

from __future__ import annotations

import ast
import base64
import binascii
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..archs.next_options import COND_DIM, VECTOR_NAMES, cached_vectors_path, check_vectors
from ..errors import ModelError
from .http import cache_lock, download_url
from .registry import ModelEntry

__all__ = ["MAX_SOURCE_BYTES", "fetch_cond_vectors", "parse_vectors_source"]

log = logging.getLogger(__name__)

#: Largest accepted vectors source file (bytes); upstream's ``modules/next.py`` is ~27 kB.
MAX_SOURCE_BYTES = 4 * 1024 * 1024

_ROW_BYTES = COND_DIM * 4  # 512 float32


def _target_name(target: ast.expr) -> str | None:
    """``name`` for ``name = ...`` and ``self.name = ...`` targets, else None."""
    if isinstance(target, ast.Name):
        return target.id
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    ):
        return target.attr
    return None


def _decode(name: str, value: ast.expr, origin: str) -> np.ndarray:
    """Decode the literal of one vector assignment into 512 float32 values."""
    if isinstance(value, ast.Call):  # upstream: self.bytes2torch(b'...'); the call is not run
        if len(value.args) != 1 or value.keywords:
            raise ModelError(
                f"{origin}: the assignment of NEXT vector {name!r} is not a call with one "
                "base64 literal"
            )
        value = value.args[0]
    try:
        literal = ast.literal_eval(value)  # constants only: nothing is executed
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ModelError(
            f"{origin}: NEXT vector {name!r} is not assigned a literal base64 string"
        ) from None
    if isinstance(literal, str):
        try:
            literal = literal.encode("ascii")
        except UnicodeEncodeError:
            literal = None
    if not isinstance(literal, bytes):
        raise ModelError(f"{origin}: NEXT vector {name!r} is not assigned a base64 string")
    try:
        raw = base64.b64decode(b"".join(literal.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ModelError(f"{origin}: NEXT vector {name!r} is not valid base64") from None
    if len(raw) != _ROW_BYTES:
        raise ModelError(
            f"{origin}: NEXT vector {name!r} holds {len(raw)} bytes; expected {_ROW_BYTES} "
            f"({COND_DIM} float32)"
        )
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def parse_vectors_source(source: bytes | str, origin: str = "<source>") -> np.ndarray:
    """Read NEXT's conditioning vectors out of Python source text without running it.

    Looks for assignments to ``average``, ``stars``, ``detail`` and ``spikes`` (plain names
    or ``self.<name>`` attributes) whose value is a base64 literal or a call with one such
    literal as its only argument (upstream: ``self.bytes2torch(b'...')``; the call is not
    made). When a name is assigned more than once, the last assignment in the file wins, as
    in straight-line code. Each literal must decode to 512 little-endian float32 values.

    Parameters
    ----------
    source : bytes or str
        The file's content (bytes honour a PEP 263 coding line).
    origin : str
        File or URL named in error messages.

    Returns
    -------
    numpy.ndarray
        Read-only float32 ``(4, 512)``; rows ``average, stars, detail, spikes``.

    Raises
    ------
    ModelError
        Not Python source, a vector missing, not a literal, not base64, wrong length, or
        non-finite values.
    """
    try:
        tree = ast.parse(source, filename=origin, mode="exec")  # parses; runs nothing
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{origin}: not readable Python source ({detail})") from None
    found: dict[str, tuple[tuple[int, int], ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        where = (node.lineno, node.col_offset)
        for target in targets:
            name = _target_name(target)
            if name in VECTOR_NAMES and (name not in found or where > found[name][0]):
                found[name] = (where, value)
    missing = [name for name in VECTOR_NAMES if name not in found]
    if missing:
        raise ModelError(
            f"{origin}: no assignment of the NEXT conditioning vector(s) {', '.join(missing)}"
        )
    rows = [_decode(name, found[name][1], origin) for name in VECTOR_NAMES]
    return check_vectors(np.stack(rows), origin)


def _save_atomic(path: Path, vectors: np.ndarray) -> None:
    """Write ``vectors`` as ``.npy`` to ``path`` through a temporary file and a rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            np.save(out, np.ascontiguousarray(vectors, dtype="<f4"), allow_pickle=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cached_ok(path: Path) -> bool:
    try:
        check_vectors(np.load(path, allow_pickle=False), str(path))
    except (OSError, ValueError, EOFError, ModelError):
        return False
    return True


def fetch_cond_vectors(entry: ModelEntry, *, force: bool = False) -> Path:
    """Download NEXT's conditioning vectors for registry ``entry`` into the cache.

    Parameters
    ----------
    entry : ModelEntry
        A NEXT registry entry with ``cond_vectors_url``.
    force : bool
        Download again even when the cache holds valid vectors.

    Returns
    -------
    pathlib.Path
        The cached ``next_cond_vectors.npy``.

    Raises
    ------
    ModelError
        No ``cond_vectors_url``; refused URL, network error, size cap or sha256 mismatch
        (see :func:`.download.download_url`); vectors not found in the file.
    """
    url = entry.cond_vectors_url
    if not url:
        raise ModelError(f"{entry.name}: the registry lists no cond_vectors_url for this model")
    target = cached_vectors_path()
    with cache_lock(target, "another download of the NEXT vectors"):
        if not force and target.is_file():
            if _cached_ok(target):
                return target
            log.warning("%s: cached NEXT vectors are unreadable; downloading again", target)
        source = target.parent / f".{target.stem}.source"  # never imported
        try:
            download_url(
                url,
                source,
                sha256=entry.cond_vectors_sha256,
                force=True,
                max_bytes=MAX_SOURCE_BYTES,
            )
            vectors = parse_vectors_source(source.read_bytes(), url)
        finally:
            source.unlink(missing_ok=True)  # only the parsed vectors are kept
        _save_atomic(target, vectors)
    return target
