"""SIGINT/SIGTERM sent to a running ``astrosleuth-astro upscale`` (issue 8, section 2).

Each test runs the installed console script as a real subprocess on a simulated image large
enough that the upscale takes seconds (``--tile 64`` makes many small tiles), waits until it
is really working (a progress bar on stderr, or the temporary output file), signals it and
checks that

* it exits with 130 (SIGINT) or 143 (SIGTERM), without a traceback;
* no output and no temporary file (``.astrosleuth-*``) is left in the output directory;
* the input is unchanged (sha256).

The batch case then checks that the manifest marks the unfinished files ``pending`` and
that a rerun redoes only those.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astrosleuth_astro.io.atomic import TEMP_PREFIX

from .conftest import sha256

CLI = Path(sys.executable).with_name("astrosleuth-astro")
START_TIMEOUT = 120.0  # model load + first tiles on a slow CI machine
EXIT_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not CLI.exists(), reason="POSIX signals and the installed script"
)

SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]

# A tqdm line with at least one finished tile, e.g. "in.fits:   2%|▏   | 4/256 [...".
STARTED = re.compile(r"\b[1-9]\d*/\d+ \[")

# The CLI with the memory-map threshold at 0, so every FITS output goes through
# ``open_fits_output`` (the temp file exists, sparse, from the start of the upscale).
MEMMAP_CLI = """
import sys
import astrosleuth_astro.api as api
api.upscale_image.__kwdefaults__["memmap_threshold"] = 0
from astrosleuth_astro.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _simulate(path: Path, size: int) -> Path:
    subprocess.run(
        [str(CLI), "simulate", "-o", str(path), "--size", str(size), str(size)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 1024x1024 input (seconds to upscale with --tile 64) and a 64x64 one (instant)."""
    folder = tmp_path_factory.mktemp("interrupt-inputs")
    return {
        "big": _simulate(folder / "big.fits", 1024),
        "small": _simulate(folder / "small.fits", 64),
    }


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def _wait(predicate, proc: subprocess.Popen, err_path: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{err_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting for {what}:\n{err_path.read_text()}")
        time.sleep(0.02)


def _default_sigint() -> None:
    # A shell starts background jobs (``make test &``) with SIGINT ignored, and a child
    # inherits that, so Python would never raise KeyboardInterrupt: honouring it is right
    # for the CLI, but the test must start the child the way a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv: list[str], workdir: Path) -> tuple[subprocess.Popen, Path]:
    err_path = workdir / "stderr.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("ASTROSLEUTH_DEBUG", None)
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=_default_sigint,
        )
    return proc, err_path


def _stop(proc: subprocess.Popen, sig: int, err_path: Path) -> str:
    """Send ``sig``, wait for the exit and return stderr."""
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(sig)
    try:
        proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {EXIT_TIMEOUT} s after the signal:\n{err_path.read_text()}")
    err = err_path.read_text(errors="replace")
    assert "Traceback" not in err, err
    return err


def _progress_started(err_path: Path):
    return lambda: bool(STARTED.search(err_path.read_text(errors="replace")))


@pytest.mark.parametrize(("sig", "code"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_single_file_interrupt(images, tmp_path, sig, code):
    src = images["big"]
    before = sha256(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "big_x4.fits"
    argv = [str(CLI), "upscale", str(src), "-o", str(dst), "--tile", "64"]
    proc, err_path = _start(argv, tmp_path)
    _wait(_progress_started(err_path), proc, err_path, "the first tiles")
    err = _stop(proc, sig, err_path)
    assert proc.returncode == code, err
    if sig == signal.SIGINT:
        assert "interrupted" in err
    assert list(out_dir.iterdir()) == []
    assert sha256(src) == before


@pytest.mark.parametrize(("sig", "code"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_memmapped_output_interrupt(images, tmp_path, sig, code):
    """The memory-mapped FITS writer: its temp file exists while tiles are written."""
    src = images["big"]
    before = sha256(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "big_x4.fits"
    argv = [sys.executable, "-c", MEMMAP_CLI, "upscale", str(src), "-o", str(dst), "--tile", "64"]
    proc, err_path = _start(argv, tmp_path)
    # Both: the memmapped temp file is there (so this is the memmap path) and tiles are done.
    _wait(
        lambda: bool(temp_files(out_dir)) and _progress_started(err_path)(),
        proc,
        err_path,
        "the memory-mapped temp file and the first tiles",
    )
    assert not dst.exists()
    err = _stop(proc, sig, err_path)
    assert proc.returncode == code, err
    assert list(out_dir.iterdir()) == []
    assert sha256(src) == before


def _statuses(manifest: Path) -> dict[str, str]:
    data = json.loads(manifest.read_text())
    return {Path(f["input"]).name: f["status"] for f in data["files"]}


@pytest.mark.slow
def test_batch_sigterm_then_resume(images, tmp_path):
    # a: instant, b: seconds (interrupted), c: never started.
    inputs = tmp_path / "in"
    inputs.mkdir()
    a = inputs / "a.fits"
    b = inputs / "b.fits"
    c = inputs / "c.fits"
    a.write_bytes(images["small"].read_bytes())
    b.write_bytes(images["big"].read_bytes())
    c.write_bytes(images["small"].read_bytes())
    before = {p.name: sha256(p) for p in (a, b, c)}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [str(CLI), "upscale", str(a), str(b), str(c), "-o", str(out_dir), "--jobs", "1"]
    proc, err_path = _start([*argv, "--tile", "64"], tmp_path)
    a_out = out_dir / "a_x4.fits"
    _wait(
        lambda: a_out.exists() and "[1/3]" in err_path.read_text(errors="replace"),
        proc,
        err_path,
        "the first file",
    )
    time.sleep(0.5)  # well into b (seconds of work), far from its end
    err = _stop(proc, signal.SIGTERM, err_path)
    assert proc.returncode == 143, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_x4.fits", "manifest.json"]
    manifest = out_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["interrupted"] is True
    assert data["exit_code"] == 143  # what the process returned, not 0
    assert _statuses(manifest) == {"a.fits": "done", "b.fits": "pending", "c.fits": "pending"}
    a_bytes = a_out.read_bytes()

    # The rerun (default tile: faster) redoes b and c only; a's output is not rewritten.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _statuses(manifest) == {"a.fits": "skipped", "b.fits": "done", "c.fits": "done"}
    assert json.loads(manifest.read_text())["interrupted"] is False
    assert json.loads(manifest.read_text())["exit_code"] == 0
    assert a_out.read_bytes() == a_bytes
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a_x4.fits",
        "b_x4.fits",
        "c_x4.fits",
        "manifest.json",
    ]
    assert {p.name: sha256(p) for p in (a, b, c)} == before
