"""``manifest.json``: the state of every file of a batch, rewritten atomically."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._version import __version__
from ..errors import AstroSleuthError
from ..io.atomic import atomic_output
from .jobs import DONE, FAILED, PENDING, SKIPPED, Job, JobResult

#: Seconds between two manifest writes while results come in (the last one is always written).
MANIFEST_INTERVAL = 1.0


class Manifest:
    """``manifest.json``: the state of every file of a batch, rewritten atomically.

    The file is a JSON object: ``version``, ``model``, ``sha256``, ``scale``, ``started``,
    ``updated``, ``finished`` (null until the batch ends), ``interrupted``, ``exit_code``,
    ``counts`` (per status) and ``files``: one ``{"input", "output", "status", "seconds",
    "error"}`` per input, in input order, ``status`` ``pending`` until it is finished.
    ``exit_code`` is the batch process's exit code (130/143 when interrupted).

    A write that fails (full disk, read-only remount) never stops the batch: the files go
    on, :attr:`write_error` keeps the first failure's one-line message and ``log`` is told
    once; the next write tries again, so the manifest on disk catches up when it can.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        jobs: Sequence[Job],
        meta: dict,
        log: Callable[[str], None] | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self.log = log or (lambda m: None)
        #: One-line message of the last failed write (None when the last write succeeded).
        self.write_error: str | None = None
        self.exit_code: int | None = None
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
            "exit_code": self.exit_code if self.finished else None,
            "counts": counts,
            "files": files,
        }

    def write(self) -> bool:
        """Write the manifest now; False (and :attr:`write_error` set) if it failed."""
        self._last = time.monotonic()
        if self.path is None:
            return True
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        try:
            # rewritten every second: no directory listing for leftovers each time
            with atomic_output(self.path, overwrite=True, clean_stale=False) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except (AstroSleuthError, OSError) as exc:
            message = str(exc) if isinstance(exc, AstroSleuthError) else f"{self.path}: {exc}"
            if self.write_error is None:
                self.log(f"batch: cannot write the manifest ({message}); the files go on")
            self.write_error = message
            return False
        self.write_error = None
        return True

    def finish(self, code: int, interrupted: bool = False) -> bool:
        """Record the end of the batch and its exit ``code``; write it (see :meth:`write`)."""
        self.finished = _now()
        self.interrupted = interrupted
        self.exit_code = code
        return self.write()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
