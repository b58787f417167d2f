"""One batch per output directory at a time: an advisory lock file.

:class:`BatchLock` holds ``<output dir>/.astrosleuth.lock`` with ``flock(2)`` for
the whole batch and writes its owner (pid, host, start time) into it. The kernel releases
the lock when the owner exits, however it exits (kill -9 included), so a lock is never
left stale by a dead process: the next batch simply takes it. A second batch on the same
directory is refused with one line naming the owner, or waits for it (``wait=True``,
``--wait-lock``).

Across hosts: Linux NFS clients implement ``flock`` with NFS byte-range locks (NFSv4, or
NFSv3 with the lock daemon), so batches on two machines sharing the directory exclude each
other there too. File systems without locks (some SMB and FUSE mounts) answer ``ENOLCK``
or ``EOPNOTSUPP``: the batch then runs without the lock and says so in one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; batches there are not locked
    fcntl = None  # type: ignore[assignment]

from ..errors import InputError

__all__ = ["LOCK_NAME", "BatchLock"]

#: The lock file's name in the output directory.
LOCK_NAME = ".astrosleuth.lock"
#: errno values of a file system that has no locks.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class BatchLock:
    """Hold the batch lock of ``directory`` (a context manager).

    Parameters
    ----------
    directory : path-like
        The batch's output directory.
    wait : bool
        Wait for another batch to finish instead of refusing.
    log : callable, optional
        Receives one line when the batch waits, or runs without a lock.

    Raises
    ------
    InputError
        Another batch holds the lock (and ``wait`` is false), or the lock file cannot be
        created (the directory is read-only: the batch could not write there anyway).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        wait: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.wait = wait
        self.log = log or (lambda m: None)
        self._fd: int | None = None

    def __enter__(self) -> BatchLock:
        if fcntl is None:
            return self
        said_waiting = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InputError(
                    f"{self.path}: cannot create the batch lock ({exc.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _NO_LOCKS:
                    os.close(fd)
                    self.log(f"batch: {self.path.parent} has no file locks; running unlocked")
                    return self
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise InputError(f"{self.path}: cannot lock ({exc.strerror})") from None
                owner = _owner_text(fd)
                if not self.wait:
                    os.close(fd)
                    raise InputError(
                        f"{self.path.parent}: another batch is running there ({owner}); "
                        "wait for it, or use --wait-lock"
                    ) from None
                if not said_waiting:
                    self.log(f"batch: waiting for the batch in {self.path.parent} ({owner})")
                    said_waiting = True
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the owner is done
            # The owner removes the file before it unlocks: a lock taken on a removed file
            # is no lock (another batch may have created a new one); try again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it (see __enter__)
        os.close(self._fd)  # releases the lock
        self._fd = None


def _owner_text(fd: int) -> str:
    """``pid 123 on host, since ...`` from the lock file, as far as it says."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "owner unknown"
    return f"pid {info.get('pid')} on {info.get('host', '?')}, since {info.get('started', '?')}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
