"""Dask: a real LocalCluster on loopback, 2 worker processes with 1 thread each.

The local references run in this process, whose torch uses one thread (conftest), like the
workers: torch results depend on the thread count, so that is what "the same run" means.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro import batch
from astrosleuth_astro.batch import cluster as batch_cluster
from astrosleuth_astro.cli import main

from ..conftest import write_sim_fits

dd = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with dd.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # a free port: parallel test runs must not collide
        silence_logs=logging.CRITICAL,
    ) as lc:
        yield lc


@pytest.fixture
def client(cluster):
    with dd.Client(cluster.scheduler_address, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(directory) -> list[str]:
    return [p.name for p in Path(directory).rglob(".astrosleuth-*")]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    for i in range(5):
        write_sim_fits(d / f"frame{i}.fits", seed=10 + i, shape=(32, 40))
    return d


@pytest.fixture(scope="module")
def local_run(tiny_fast_model, frames, tmp_path_factory):
    """The same batch run in this process (the reference)."""
    out = tmp_path_factory.mktemp("local")
    assert main(["upscale", str(frames), "-o", str(out), "--model", str(tiny_fast_model)]) == 0
    return out


def same_outputs(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.glob("*.fits"))
    assert names == sorted(p.name for p in b.glob("*.fits"))
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


def test_cluster_batch_equals_local_run(
    capsys, client, cluster, tiny_fast_model, frames, local_run, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli(
        capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model,
        "--scheduler", cluster.scheduler_address,
    )  # fmt: skip
    assert code == 0, err
    assert same_outputs(local_run, out) == []  # bit for bit
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"] == {"done": 5, "skipped": 0, "failed": 0, "pending": 0}
    assert [Path(f["input"]).name for f in man["files"]] == [f"frame{i}.fits" for i in range(5)]
    assert all(f["error"] is None and f["seconds"] > 0 for f in man["files"])
    # The model was loaded once per worker process, not once per file.
    loads = client.run(
        lambda: __import__("astrosleuth_astro.batch.worker", fromlist=["LOADS"]).LOADS
    )
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1

    # The environment variable works as --scheduler; everything is then skipped.
    os.environ["DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
    try:
        code, _, err = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    finally:
        del os.environ["DASK_SCHEDULER_ADDRESS"]
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["skipped"] == 5


class DieOnceBeforeCommit(dd.diagnostics.plugin.WorkerPlugin):
    """Makes the first worker that is about to commit an output exit on the spot.

    The output is then fully written in its temporary file but not renamed: the worst
    moment for a crash. ``marker`` records (across processes) that it happened once.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        from astrosleuth_astro.io import atomic

        real = atomic._fsync_path
        marker = self.marker

        def fsync_or_die(path):
            if ".astrosleuth-" in str(path):
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    os._exit(1)  # no cleanup at all, like SIGKILL or a power cut
            return real(path)

        atomic._fsync_path = fsync_or_die


def test_worker_killed_mid_task(
    capsys, client, cluster, tiny_fast_model, frames, local_run, tmp_path
):
    marker = tmp_path / "died"
    client.register_plugin(DieOnceBeforeCommit(str(marker)), name="die-once")
    try:
        out = tmp_path / "out"
        out.mkdir()
        code, _, err = run_cli(
            capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model,
            "--scheduler", cluster.scheduler_address, "--quiet",
        )  # fmt: skip
    finally:
        client.unregister_worker_plugin("die-once")
    assert marker.exists(), "no worker died: the test did not test anything"
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["done"] == 5
    assert same_outputs(local_run, out) == []  # nothing lost, nothing different
    assert leftovers(out) == []  # the dead worker's temporary file was removed


@pytest.mark.parametrize("model", ["tiny_fast_model", "tiny_noise_aware_model"])
def test_banded_large_image_equals_local(capsys, client, cluster, model, tmp_path, request):
    # (client: waits until both workers are up, also after the test that kills one)
    tiny_fast_model = request.getfixturevalue(model)
    src = tmp_path / "mosaic.fits"
    data = fits.getdata(write_sim_fits(tmp_path / "m.fits", shape=(256, 88), seed=3))
    data[:12] = np.nan  # a mosaic's empty border
    fits.writeto(src, data, fits.getheader(tmp_path / "m.fits"))
    ref, out = tmp_path / "ref.fits", tmp_path / "out.fits"
    common = ("--model", tiny_fast_model, "--tile", "32", "--quiet")
    assert run_cli(capsys, "upscale", src, "-o", ref, *common)[0] == 0
    # One input on a cluster: split into one band per worker (2), written into one file.
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", out, *common, "--scheduler", cluster.scheduler_address,
        "--manifest", tmp_path / "m.json",
    )  # fmt: skip
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "m.json").read_text())["files"]
    assert entry["status"] == "done" and entry["bands"] == 2
    assert out.read_bytes() == ref.read_bytes()
    assert leftovers(tmp_path) == []


def test_unreachable_scheduler_is_a_usage_error(
    capsys, tiny_fast_model, frames, tmp_path, monkeypatch
):
    monkeypatch.setattr(batch_cluster, "CONNECT_TIMEOUT", 1)
    code, _, err = run_cli(
        capsys, "upscale", frames, "-o", tmp_path, "--model", tiny_fast_model,
        "--scheduler", "tcp://127.0.0.1:9",
    )  # fmt: skip
    assert code == 2 and "--scheduler" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "frame0_x4.fits").exists()


def test_model_mismatch_on_workers_is_refused(client, tiny_fast_model, frames, tmp_path):
    spec = batch.ModelSpec(str(tiny_fast_model), sha256="0" * 64, threads=1)
    job = batch.Job(0, frames / "frame0.fits", tmp_path / "o.fits")
    res = client.submit(batch.process_job, job, spec, batch.JobOptions(), pure=False).result()
    assert res.status == "failed" and res.exit_code == 2 and "sha256" in res.error
    assert not (tmp_path / "o.fits").exists()
