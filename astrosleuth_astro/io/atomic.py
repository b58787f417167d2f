"""Atomic creation of output files.

Every output of the package is written to a temporary file in the *target directory* and
renamed onto the final name only once it is complete, so that

* an interrupted run (error, ``KeyboardInterrupt``, full disk) never leaves a partial
  output behind, and never destroys an existing file;
* readers never see a half-written file: :func:`os.replace` within one directory (one file
  system) is atomic on POSIX and Windows.

The temporary name ends with the final file name, so writers that choose the format or the
compression from the name (astropy writes gzip for ``*.fits.gz``, Pillow picks PNG/JPEG from
the suffix) behave as they would on the real name. It also names its owner:
``.astrosleuth-<12 hex>-<host>-<pid>-out.fits`` (``<host>``: 8 hex digits of a hash of the
host name). A process killed with SIGKILL cannot remove its temporary file; the next writer
of the same output removes it (:func:`remove_stale_temps`) when the owner is a process of
this host that no longer runs, and leaves it alone while the owner lives or when it belongs
to another host.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from .files import format_bytes

__all__ = [
    "TEMP_PREFIX",
    "atomic_output",
    "check_not_same",
    "check_output_path",
    "pid_alive",
    "remove_stale_temps",
    "temp_owner",
]

#: Prefix of the temporary files (hidden on POSIX, easy to recognise and clean up).
TEMP_PREFIX = ".astrosleuth-"
#: A temporary name: token, owner host and pid (absent in names of older versions), then the
#: output's name.
#: ``bands-<id>`` scratch directories of the banded batch path have no owner.
_TEMP_RE = re.compile(
    rf"^{re.escape(TEMP_PREFIX)}(?:[0-9a-f]{{12}}(?:-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+))?"
    r"|bands-[A-Za-z0-9_]+)-(?P<name>.+)$"
)


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_owner(name: str) -> tuple[str, int] | None:
    """``(host id, pid)`` of the process that owns a temporary file name, if it says."""
    m = _TEMP_RE.match(name)
    if m is None or m.group("pid") is None:
        return None
    return m.group("host"), int(m.group("pid"))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(
    output: str | os.PathLike[str], *, owned_by_anyone: bool = False
) -> list[Path]:
    """Remove what killed writers of ``output`` left next to it.

    Parameters
    ----------
    output : path-like
        The output file whose leftovers are looked for (same directory, same name).
    owned_by_anyone : bool
        Remove every leftover of ``output``, whoever wrote it (a batch does, under its lock:
        no other batch writes its outputs, and the scheduler runs one attempt of a file at a
        time). By default only those of a process of this host that no longer runs.

    Returns
    -------
    list of pathlib.Path
        What was removed (files, and the banded path's scratch directories).
    """
    out = Path(output)
    removed: list[Path] = []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return removed
    here = _host_id()
    for entry in names:
        m = _TEMP_RE.match(entry)
        if m is None or m.group("name") != out.name:
            continue
        if not owned_by_anyone:
            owner = temp_owner(entry)
            if owner is None or owner[0] != here or owner[1] == os.getpid() or pid_alive(owner[1]):
                continue  # unknown, another host's, ours, or still being written
        path = out.parent / entry
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check, before any work is done, that ``path`` can be created as an output.

    Parameters
    ----------
    path : str or path-like
        The output file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        If the directory does not exist or is not writable, if ``path`` is a directory,
        if it exists and ``overwrite`` is false, or if it is a read-only file (replacing it
        needs its write permission even with ``overwrite``).
    """
    out = Path(path)
    directory = out.parent
    if out.is_dir():
        raise InputError(f"{out}: is a directory, not an output file")
    if not directory.is_dir():
        raise InputError(f"{out}: output directory {str(directory)!r} does not exist")
    # os.access is advisory (root passes it everywhere); creating the temp file below is
    # the real test, but this gives the clear message before hours of work.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{out}: output directory {str(directory)!r} is not writable")
    if os.path.lexists(out) and not overwrite:
        raise InputError(f"{out}: exists (use --overwrite)")
    if overwrite:
        _check_replaceable(out)
    return out


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a file its owner protected (``chmod a-w``), as ``rm`` asks first.

    Replacing goes through a rename in the directory, which the file's own mode does not
    stop; a read-only file is the user saying "keep this". Root passes ``os.access``
    everywhere, so a file with no write bit at all is refused for root too.
    """
    try:
        st = os.stat(out)  # follows a link: the file the user protected
    except OSError:
        return  # absent (or a dangling link): nothing to protect
    if not os.access(out, os.W_OK) or not st.st_mode & 0o222:
        raise InputError(f"{out}: is read-only; --overwrite does not replace it (chmod u+w first)")


def check_not_same(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str]) -> None:
    """Refuse an output that is the input file itself (same inode, through any link).

    Parameters
    ----------
    input_path, output_path : str or path-like
        The two files. A missing output cannot be the input and passes.

    Raises
    ------
    InputError
        If both names resolve to the same file.
    """
    try:
        same = os.path.samefile(input_path, output_path)
    except OSError:
        # One of them does not exist (or cannot be stat'ed): they cannot be one file.
        same = False
    if same:
        raise InputError(
            f"{output_path}: is the same file as the input {input_path} (choose another output)"
        )


def _fsync_path(path: Path) -> None:
    """Flush a file's data to disk (best effort for directories)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable. Not possible on Windows; harmless to skip there.
    with contextlib.suppress(OSError):
        _fsync_path(directory)


def _reserve_temp_name(out: Path) -> Path:
    """Return a temp name next to ``out`` that does not exist, checking the dir is writable."""
    directory = out.parent
    for _ in range(100):
        owner = f"{_host_id()}-{os.getpid()}"
        tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{owner}-{out.name}"
        try:
            # Create and remove once: proves we can create files here (root included, e.g.
            # on a read-only mount) and that the name is free.
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            reason = "is not writable" if exc.errno in (errno.EACCES, errno.EPERM) else None
            if exc.errno == errno.EROFS:
                reason = "is on a read-only file system"
            if reason is None:
                reason = f"cannot be written ({exc.strerror})"
            raise InputError(f"{out}: output directory {str(directory)!r} {reason}") from exc
        os.close(fd)
        os.unlink(tmp)
        return tmp
    raise InputError(f"{out}: could not create a temporary file in {str(directory)!r}")


def _commit(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``out`` atomically."""
    if overwrite:
        _check_replaceable(out)  # again: it may have been protected while we worked
        os.replace(tmp, out)
        return
    # No-clobber commit: link(2) fails if ``out`` appeared meanwhile (no race window).
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise InputError(f"{out}: exists (use --overwrite)") from None
    except OSError:
        # File systems without hard links (some FUSE/SMB mounts): check, then rename.
        if os.path.lexists(out):
            raise InputError(f"{out}: exists (use --overwrite)") from None
        os.replace(tmp, out)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, overwrite: bool = False, clean_stale: bool = True
) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, rename it onto ``path`` on success.

    Parameters
    ----------
    path : str or path-like
        The final output file.
    overwrite : bool
        Replace ``path`` if it exists. Without it an existing file is never touched, not
        even when it appears while the output is being written.
    clean_stale : bool
        First remove what dead writers of ``path`` left (:func:`remove_stale_temps`; one
        listing of the directory). A writer that rewrites the same small file often (a
        batch manifest, every second) passes False.

    Yields
    ------
    pathlib.Path
        A path in the same directory as ``path`` that does **not** exist yet and ends with
        ``path``'s name (same suffixes). The caller creates and writes it.

    Raises
    ------
    InputError
        ``"{path}: exists (use --overwrite)"``, a missing, read-only or unwritable output
        directory, or a ``path`` that is a directory. Raised before the body runs.

    Notes
    -----
    On success the temp file is fsync'ed, then renamed (``os.replace``, or ``os.link``
    when overwriting is not allowed), then the directory is fsync'ed. On *any* exception,
    ``KeyboardInterrupt`` and ``SystemExit`` included, the temp file is removed and the
    exception propagates; ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_output("out.fits") as tmp:            # doctest: +SKIP
    ...     hdu.writeto(tmp)
    """
    out = check_output_path(path, overwrite=overwrite)
    if clean_stale:
        remove_stale_temps(out)  # what a killed earlier writer of this output left
    tmp = _reserve_temp_name(out)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{out}: the writer did not create the temporary file {tmp}")
        _fsync_path(tmp)
        _commit(tmp, out, overwrite=overwrite)
        _fsync_dir(out.parent)
    except BaseException as exc:
        written = _size(tmp)
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            # Not an internal error: the user's disk is full. Say where and how full.
            free = _free(out.parent)
            raise InputError(
                f"{out}: no space left on the output's device ({exc.strerror}) after writing "
                f"{_size_text(written)}; {_size_text(free)} free in {str(out.parent)!r}"
            ) from None
        raise


#: errno values that mean the output's file system is full (or the user's quota is).
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _size_text(n: int | None) -> str:
    return "?" if n is None else format_bytes(n)


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _free(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None
