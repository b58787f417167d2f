"""Safe HTTP(S) downloads into the user cache (stdlib ``urllib`` only; no torch).

Rules:

* HTTPS only; plain ``http`` is accepted only for loopback hosts (``127.0.0.1``,
  ``localhost``, ``::1``), which the tests use. Every redirect hop is checked the same way,
  and at most :data:`MAX_REDIRECTS` hops are followed.
* At most :data:`MAX_BYTES` are read (``Content-Length`` is checked up front as well).
* The body is streamed to a temporary file in the target folder, hashed on the way, checked
  against the expected sha256 (when known) and moved into place with ``os.replace``; on any
  failure the temporary file is removed, so the cache never holds a partial or wrong file.
* A :class:`filelock.FileLock` per target file (in ``<cache>/.locks``) serialises processes
  downloading the same model: the second one finds the finished file and does not download.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin, urlparse

from filelock import FileLock, Timeout

from .._version import __version__
from ..errors import ModelError

__all__ = [
    "LOCK_TIMEOUT_S",
    "cache_lock",
    "MAX_BYTES",
    "MAX_REDIRECTS",
    "check_url",
    "download_url",
    "sha256_file",
]

log = logging.getLogger(__name__)

#: Largest accepted download (bytes). The upstream files are 5-20 MB.
MAX_BYTES = 512 * 1024 * 1024
#: Most redirects followed for one download.
MAX_REDIRECTS = 5
#: Socket timeout (s) for connecting and for each read.
TIMEOUT_S = 60.0
#: How long (s) to wait for another process downloading the same file.
LOCK_TIMEOUT_S = 1800.0

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_CHUNK = 1 << 20

#: ``progress(done_bytes, total_bytes_or_None)`` callback type.
Progress = Callable[[int, "int | None"], None]


def sha256_file(path: str | os.PathLike) -> str:
    """Lowercase hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "").lower() in _LOOPBACK


def check_url(url: str, *, allow_loopback_http: bool = True) -> None:
    """Refuse URLs that downloads must not fetch.

    Parameters
    ----------
    url : str
        Absolute URL.
    allow_loopback_http : bool
        Accept plain ``http`` to loopback hosts (turned off for redirects away from a
        non-loopback server, so a remote server cannot point us at local services).

    Raises
    ------
    ModelError
        Not ``https`` (``http`` is allowed for loopback hosts only) or no host.
    """
    parts = urlparse(url)
    if not parts.hostname:
        raise ModelError(f"{url}: not a download URL (no host)")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_loopback_http and _is_loopback(url):
        return
    raise ModelError(f"{url}: refusing to download over {parts.scheme or 'no scheme'}; HTTPS only")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand 3xx responses back to :func:`_open` so every hop is checked."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _open(url: str, timeout: float) -> tuple[http.client.HTTPResponse, str]:
    seen: list[str] = []
    current = url
    local_origin = _is_loopback(url)
    while True:
        check_url(current, allow_loopback_http=local_origin)
        request = urllib.request.Request(
            current, headers={"User-Agent": f"astrosleuth-astro/{__version__}"}
        )
        try:
            return _OPENER.open(request, timeout=timeout), current
        except urllib.error.HTTPError as exc:
            location = (
                exc.headers.get("Location") if exc.code in (301, 302, 303, 307, 308) else None
            )
            exc.close()
            if location is None:
                raise ModelError(f"{current}: HTTP {exc.code} {exc.reason}") from None
            seen.append(current)
            current = urljoin(current, location)
            if current in seen:
                raise ModelError(f"{url}: redirect loop via {current}") from None
            if len(seen) > MAX_REDIRECTS:
                raise ModelError(f"{url}: more than {MAX_REDIRECTS} redirects") from None
        except urllib.error.URLError as exc:
            raise ModelError(f"{current}: cannot download ({exc.reason})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ModelError(f"{current}: cannot download ({exc})") from None


def _fetch_to(
    url: str,
    dest: Path,
    sha256: str,
    max_bytes: int,
    timeout: float,
    progress: Progress | None,
) -> None:
    response, final_url = _open(url, timeout)
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise ModelError(f"{final_url}: {total} bytes is over the {max_bytes}-byte limit")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            done = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(_CHUNK):
                    done += len(chunk)
                    if done > max_bytes:
                        raise ModelError(f"{final_url}: more than the {max_bytes}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
            if total is not None and done != total:
                raise ModelError(f"{final_url}: download cut short ({done} of {total} bytes)")
            got = digest.hexdigest()
            if sha256 and got != sha256:
                raise ModelError(
                    f"{final_url}: sha256 mismatch (expected {sha256}, got {got}); file discarded"
                )
            if not sha256:
                log.warning("%s: no sha256 known, not verified (sha256 %s)", final_url, got)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str = "",
    force: bool = False,
    progress: Progress | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest`` safely (see the module docstring).

    Parameters
    ----------
    url : str
        HTTPS URL (``http`` for loopback hosts only).
    dest : path-like
        Target file; its folder is created.
    sha256 : str
        Expected lowercase hex digest; ``""`` skips verification.
    force : bool
        Download even when ``dest`` exists and checks out.
    progress : callable, optional
        ``progress(done_bytes, total_bytes_or_None)`` after each chunk.
    max_bytes : int
        Size cap in bytes.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ModelError
        Refused URL, HTTP/network error, too many redirects, size cap, sha256 mismatch.
    """
    check_url(url)
    dest = Path(dest)
    sha256 = sha256.lower()
    with cache_lock(dest, "another download of this file"):
        if dest.is_file() and not force:
            # Another process may have finished it while we waited for the lock.
            if not sha256 or sha256_file(dest) == sha256:
                return dest
            log.warning("%s: cached file fails its sha256 check; downloading again", dest)
        _fetch_to(url, dest, sha256, max_bytes, timeout, progress)
    return dest


@contextmanager
def cache_lock(target: Path, holder: str) -> Iterator[None]:
    """Hold the inter-process lock of one cache file (``<folder>/.locks/<name>.lock``).

    Parameters
    ----------
    target : pathlib.Path
        The cache file the lock guards; its folder is created.
    holder : str
        What another process holding the lock is doing, for the time-out message.

    Raises
    ------
    ModelError
        The folder cannot be created, or the lock was not free within ``LOCK_TIMEOUT_S``.
    """
    try:
        lock_dir = target.parent / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"{target.parent}: cannot create the cache folder ({exc.strerror})"
        ) from None
    lock = FileLock(str(lock_dir / f"{target.name}.lock"), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise ModelError(f"{target}: timed out waiting for {holder}") from None
    try:
        yield
    finally:
        lock.release()
