"""Batches under faults (issue 27): a lock per output directory, a manifest that stays
truthful when it cannot be written, workers that die with their batch, and single-file runs
that clean up after a killed writer. Real processes, real signals, a real tmpfs."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from astrosleuth_astro.batch import manifest as manifest_module
from astrosleuth_astro.batch.lock import LOCK_NAME, BatchLock
from astrosleuth_astro.io.atomic import TEMP_PREFIX, atomic_output

from ..cli.test_cli import run_cli
from ..conftest import sha256, write_sim_fits
from ..test_interrupt import CLI, MEMMAP_CLI, _simulate, _start, _wait


def _manifest(path):
    return json.loads(path.read_text())


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


# ----------------------------------------------------------------------- the lock


def test_second_batch_on_a_directory_is_refused(capsys, tiny_fast_model, frames, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with BatchLock(out):  # another batch (here: this process) holds the directory
        code, _, err = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 2
    assert err.strip().splitlines() == [
        f"astrosleuth-astro: error: {out}: another batch is running there (pid {os.getpid()} "
        f"on {os.uname().nodename}, since {_started(err)}); wait for it, or use --wait-lock"
    ]
    assert sorted(os.listdir(out)) == []  # nothing written, the lock file not left behind
    # once it is free the same command runs, and leaves no lock file
    code, _, err = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 0, err
    assert LOCK_NAME not in os.listdir(out) and len(list(out.glob("*_x4.fits"))) == 4


def _started(err: str) -> str:
    return err.split("since ", 1)[1].split(")", 1)[0]


def test_lock_of_a_dead_batch_is_taken_over(tmp_path):
    # A batch killed with SIGKILL leaves its lock file; the kernel released its lock.
    proc = subprocess.run(
        [
            "python3",
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"pid\": 1}'); os.kill(os.getpid(), 9)",
            str(tmp_path / LOCK_NAME),
        ],
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL and (tmp_path / LOCK_NAME).exists()
    with BatchLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.path == tmp_path / LOCK_NAME
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_batches_at_once(tiny_fast_model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    big = _simulate(tmp_path / "big.fits", 1024)
    for i in range(8):  # about 2 s each: the first batch runs long after the second starts
        (inputs / f"f{i}.fits").write_bytes(big.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    # a directory input: a batch (a single file named directly is a single-file run)
    argv = [str(CLI), "upscale", str(inputs), "-o", str(out), "--model", str(tiny_fast_model)]
    first, err_path = _start([*argv, "--tile", "64"], tmp_path)
    _wait(lambda: (out / LOCK_NAME).exists(), first, err_path, "the first batch's lock")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert (
        second.stderr.strip().splitlines() == [second.stderr.strip().splitlines()[0]]
        and f"another batch is running there (pid {first.pid} on" in second.stderr
    )
    # --wait-lock waits for the first, then finds its output done
    waiting = subprocess.run([*argv, "--wait-lock"], capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0, err_path.read_text()
    assert waiting.returncode == 0, waiting.stderr
    assert "waiting for the batch in" in waiting.stderr
    assert {e["status"] for e in _manifest(out / "manifest.json")["files"]} == {"skipped"}
    assert sorted(os.listdir(out)) == sorted(
        [f"f{i}_x4.fits" for i in range(8)] + ["manifest.json"]
    )


# ----------------------------------------------------------------------- the manifest


def _failing_writes(monkeypatch, fail):
    """Make the manifest's writes fail while ``fail(n)`` is true (n: the write's number)."""
    calls = [0]

    def writer(path, **kwargs):
        calls[0] += 1
        if fail(calls[0]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_output(path, **kwargs)

    monkeypatch.setattr(manifest_module, "atomic_output", writer)
    return calls


def test_manifest_write_failures_do_not_stop_the_batch(
    capsys, tiny_fast_model, frames, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    calls = _failing_writes(monkeypatch, lambda n: n == 1)  # the first write fails
    code, _, err = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert calls[0] >= 2
    assert code == 0, err  # the last write made the manifest whole again
    assert err.count("cannot write the manifest") == 1
    man = _manifest(out / "manifest.json")
    assert man["counts"]["done"] == 4 and man["exit_code"] == 0
    assert {e["status"] for e in man["files"]} == {"done"}


def test_manifest_that_cannot_be_written_is_reported(
    capsys, tiny_fast_model, frames, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    _failing_writes(monkeypatch, lambda n: True)
    code, _, err = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 2  # the files are done, their record is missing: an I/O problem
    assert "batch: the manifest could not be written:" in err
    assert len(list(out.glob("f*_x4.fits"))) == 4  # every file was still tried and done
    assert not (out / "manifest.json").exists() and _leftovers(out) == []


def test_full_disk_batch_records_every_file(tiny_fast_model, tmp_path):
    """A real tmpfs that fills up: each file is done or failed, none left pending."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a user and mount namespace here")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        write_sim_fits(inputs / f"f{i}.fits", seed=i, shape=(64, 64))  # 256x256 out: 257 KiB
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'mount -t tmpfs -o size=700k tmpfs "$OUT" || exit 97; '
        f'"{CLI}" upscale "$IN" -o "$OUT" --model "{tiny_fast_model}"; echo "::rc=$?"; '
        'cat "$OUT/manifest.json"; ls -A "$OUT" >&2'
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OUT=str(out), IN=str(inputs)),
    )
    assert "::rc=" in proc.stdout, proc.stderr
    _, _, manifest_text = proc.stdout.partition("::rc=")
    rc_text, _, manifest_text = manifest_text.partition("\n")
    rc = int(rc_text)
    assert rc == 2, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    man = json.loads(manifest_text)
    statuses = [e["status"] for e in man["files"]]
    assert "pending" not in statuses and statuses.count("done") >= 1
    assert statuses.count("failed") >= 1 and man["exit_code"] == 2
    for e in man["files"]:
        if e["status"] == "failed":
            assert "disk" in e["error"] or "space" in e["error"], e["error"]
    assert not any(n.startswith(TEMP_PREFIX) for n in proc.stderr.split())


# ----------------------------------------------------------------------- workers


@pytest.mark.slow
def test_kill9_of_a_jobs_2_parent_leaves_no_worker(tiny_fast_model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    big = _simulate(tmp_path / "big.fits", 768)
    for i in range(6):
        (inputs / f"f{i}.fits").write_bytes(big.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    argv = [str(CLI), "upscale", str(inputs), "-o", str(out), "--jobs", "2", "--tile", "64"]
    proc, err_path = _start([*argv, "--model", str(tiny_fast_model)], tmp_path)
    parent = psutil.Process(proc.pid)

    _wait(lambda: len(parent.children(recursive=True)) >= 3, proc, err_path, "the workers")
    time.sleep(2.0)  # they are inside their first files
    family = parent.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        p.is_running() and p.status() != "zombie" for p in family
    ):
        time.sleep(0.2)
    alive = [p.pid for p in family if p.is_running() and p.status() != "zombie"]
    assert alive == [], f"still running 10 s after the batch was killed: {alive}"
    assert _leftovers(out) == []  # the workers' writers removed their temporary files
    assert (out / LOCK_NAME).exists()  # kill -9 leaves the lock file; the kernel freed the lock
    # what they finished is whole: a resume keeps it and does the rest
    done = subprocess.run(
        [*argv, "--model", str(tiny_fast_model)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert _manifest(out / "manifest.json")["counts"]["pending"] == 0


# ----------------------------------------------------------------------- single files


def test_single_file_run_removes_a_dead_writers_temp(capsys, tiny_fast_model, tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(24, 28))
    out = tmp_path / "o.fits"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid of this host that no longer runs
    host = _host_id()
    stale = tmp_path / f"{TEMP_PREFIX}0123456789ab-{host}-{dead.pid}-o.fits"
    live = tmp_path / f"{TEMP_PREFIX}ba9876543210-{host}-{os.getpid()}-o.fits"
    foreign = tmp_path / f"{TEMP_PREFIX}00000000abcd-ffffffff-{dead.pid}-o.fits"
    other_output = tmp_path / f"{TEMP_PREFIX}0123456789ab-{host}-{dead.pid}-p.fits"
    for p in (stale, live, foreign, other_output):
        p.write_bytes(b"half")
    code, _, err = run_cli(capsys, "upscale", src, "-o", out, "--model", tiny_fast_model, "--quiet")
    assert code == 0, err
    assert not stale.exists()  # its writer is dead
    assert live.exists() and foreign.exists() and other_output.exists()


def _host_id() -> str:
    from astrosleuth_astro.io.atomic import _host_id as host_id

    return host_id()


@pytest.mark.slow
def test_killed_single_file_run_then_rerun(tiny_fast_model, tmp_path):
    big = _simulate(tmp_path / "big.fits", 1024)
    small = _simulate(tmp_path / "small.fits", 64)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.fits"
    argv = [sys.executable, "-c", MEMMAP_CLI, "upscale", str(big), "-o", str(out), "--tile", "64"]
    proc, err_path = _start([*argv, "--model", str(tiny_fast_model)], tmp_path)
    _wait(lambda: bool(_leftovers(out_dir)), proc, err_path, "the temporary output")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _leftovers(out_dir) != [] and not out.exists()  # what kill -9 leaves
    before = sha256(small)
    rerun = subprocess.run(
        [str(CLI), "upscale", str(small), "-o", str(out), "--model", str(tiny_fast_model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert _leftovers(out_dir) == [] and sorted(os.listdir(out_dir)) == ["o.fits"]
    assert sha256(small) == before
