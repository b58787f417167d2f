"""``manifest.json``: the state of every file of a batch, rewritten atomically."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from .._version import __version__
from ..io.atomic import atomic_output
from .jobs import DONE, FAILED, PENDING, SKIPPED, Job, JobResult, exit_code

#: Seconds between two manifest writes while results come in (the last one is always written).
MANIFEST_INTERVAL = 1.0


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
