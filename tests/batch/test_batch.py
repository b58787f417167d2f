"""Batch mode: input expansion (.seq too), naming, resume, manifest, bad files, --jobs, bands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro import batch
from astrosleuth_astro.batch import expand_inputs, plan_jobs, read_seq
from astrosleuth_astro.batch import local as batch_local
from astrosleuth_astro.cli import main
from astrosleuth_astro.errors import InputError

from ..conftest import write_sim_fits


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest(path) -> dict:
    return json.loads(Path(path).read_text())


def statuses(man: dict) -> dict:
    return {Path(f["input"]).name: f["status"] for f in man["files"]}


def leftovers(directory) -> list[str]:
    return [p.name for p in Path(directory).rglob(".astrosleuth-*")]


def test_expand_inputs(tmp_path):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    for p in (d / "a.fits", d / "b.fit", d / "sub" / "c.fits", d / ".hidden.fits"):
        p.write_bytes(b"x")
    (d / "notes.txt").write_text("not an image")
    out = d / "out"
    out.mkdir()
    (out / "a_x4.fits").write_bytes(b"x")  # an earlier output is never an input

    names = lambda files: [f.path.relative_to(d).as_posix() for f in files]  # noqa: E731
    assert names(expand_inputs([d], exclude=out)) == ["a.fits", "b.fit"]
    files = expand_inputs([d], recursive=True, exclude=out)
    assert names(files) == ["a.fits", "b.fit", "sub/c.fits"]
    assert [f.reldir for f in files] == [".", ".", "sub"]
    # Globs, files named twice, and a missing file (kept: it fails alone, later).
    got = expand_inputs([f"{d}/*.fit*", d / "a.fits", tmp_path / "missing.fits"])
    assert [f.path.name for f in got] == ["a.fits", "b.fit", "missing.fits"]
    got = expand_inputs([f"{d}/**/*.fits"], recursive=True, exclude=out)
    assert names(got) == ["a.fits", "sub/c.fits"]
    with pytest.raises(InputError, match="matches no image"):
        expand_inputs([f"{d}/*.tiff"])
    (d / "empty").mkdir()
    with pytest.raises(InputError, match="--recursive"):
        expand_inputs([d / "empty"])


def test_read_seq(tmp_path):
    for n in (1, 2, 3):
        (tmp_path / f"light_{n:05d}.fit").write_bytes(b"x")
    seq = tmp_path / "light_.seq"
    seq.write_text(
        "#Siril sequence file. Contains list of files (images), selection, "
        "registration data and statistics\n"
        "#S 'sequence_name' start_index nb_images nb_selected fixed_len reference_image "
        "version variable_size fz_flag\n"
        "S 'light_' 1 3 2 5 -1 4 0 0 0\n"
        "L 1\n"
        "I 1 1\nI 2 0\nI 3 1\n"
        "R0 2.1 2.3 0.9 2e+04 1e-3 97 H 1 0 0 0 1 0 0 0 1\n"
    )
    assert [p.name for p in read_seq(seq)] == [f"light_{n:05d}.fit" for n in (1, 2, 3)]
    # Old unquoted format, no zero padding, .fits frames.
    (tmp_path / "r7.fits").write_bytes(b"x")
    old = tmp_path / "r.seq"
    old.write_text("S r 7 1 1 0 -1\nL 1\nI 7 1\n")
    assert [p.name for p in read_seq(old)] == ["r7.fits"]
    ser = tmp_path / "s.seq"
    ser.write_text("S 's' 0 2 2 0 -1 4 0 0 0\nTS\nL 1\nI 0 1\nI 1 1\n")
    with pytest.raises(InputError, match="SER sequence"):
        read_seq(ser)
    bad = tmp_path / "bad.seq"
    bad.write_text("S 'x' 0 3 3 0 -1\nI 0 1\n")
    with pytest.raises(InputError, match="declares 3 images"):
        read_seq(bad)
    with pytest.raises(InputError, match="not a Siril sequence"):
        (tmp_path / "junk.seq").write_text("hello\nI x\n")
        read_seq(tmp_path / "junk.seq")


def test_plan_jobs_names_and_collisions(tmp_path):
    a, b = tmp_path / "x" / "a.fits", tmp_path / "y" / "a.fits"
    files = [batch.InputFile(a, "x"), batch.InputFile(b, "y")]
    out = tmp_path / "out"
    jobs = plan_jobs(files, out, pattern="{reldir}/{stem}_x{scale}_{model}{ext}", model="m")
    assert [j.output for j in jobs] == [out / "x" / "a_x4_m.fits", out / "y" / "a_x4_m.fits"]
    assert plan_jobs(files[:1], None)[0].output == tmp_path / "x" / "a_x4.fits"
    gz = [batch.InputFile(tmp_path / "c.fits.gz")]
    assert plan_jobs(gz, out)[0].output == out / "c_x4.fits.gz"  # .fits.gz is one extension
    with pytest.raises(InputError, match="both"):
        plan_jobs(files, out, pattern="{stem}.fits")
    with pytest.raises(InputError, match="unknown field"):
        plan_jobs(files, out, pattern="{stem}_{date}.fits")
    with pytest.raises(InputError, match="leaves the output directory"):
        plan_jobs(files, out, pattern="../{stem}.fits")
    with pytest.raises(InputError, match="is one of the inputs"):
        plan_jobs([batch.InputFile(a)], tmp_path / "x", pattern="{name}")


def test_resume_redoes_only_what_is_missing(capsys, tiny_fast_model, frames, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = (
        "upscale",
        frames,
        "-o",
        out,
        "--model",
        tiny_fast_model,
        "--name",
        "{stem}_x{scale}.fits",
    )
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    man = manifest(out / "manifest.json")
    assert man["counts"] == {"done": 4, "skipped": 0, "failed": 0, "pending": 0}
    assert man["exit_code"] == 0 and not man["interrupted"] and man["finished"]
    for f in man["files"]:
        assert set(f) >= {"input", "output", "status", "seconds", "error"}
        assert Path(f["output"]).name == Path(f["input"]).stem + "_x4.fits"
        assert f["seconds"] >= 0 and f["error"] is None
    first = {p.name: p.read_bytes() for p in out.glob("*.fits")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.fits")}

    # An interrupted batch: one output cut short, one never written, a dead writer's temp.
    partial = out / "f1_x4.fits"
    partial.write_bytes(first["f1_x4.fits"][: 2880 * 3])
    (out / "f2_x4.fits").unlink()
    (out / ".astrosleuth-0123456789ab-f2_x4.fits").write_bytes(b"half")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert statuses(manifest(out / "manifest.json")) == {
        "f0.fits": "skipped",
        "f1.fits": "done",
        "f2.fits": "done",
        "f3.fits": "skipped",
    }
    for name, data in first.items():
        assert (out / name).read_bytes() == data, name
    for name in ("f0_x4.fits", "f3_x4.fits"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]  # untouched
    assert leftovers(out) == []

    # A different scale makes every output stale: all are redone.
    code, _, err = run_cli(capsys, *args[:-2], "--name", "{stem}_x4.fits", "--scale", "2")
    assert code == 0, err
    assert set(statuses(manifest(out / "manifest.json")).values()) == {"done"}
    assert fits.getheader(out / "f0_x4.fits")["ASTSLSCL"] == 2


def test_bad_file_does_not_stop_the_batch(capsys, tiny_fast_model, frames, tmp_path):
    (frames / "f1.fits").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not what it says
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli(
        capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model, "--json"
    )
    assert code == 2
    man = manifest(out / "manifest.json")
    assert json.loads(stdout)["counts"] == man["counts"]
    (bad,) = [f for f in man["files"] if f["status"] == "failed"]
    assert Path(bad["input"]).name == "f1.fits" and "f1.fits" in bad["error"]
    assert man["counts"]["done"] == 3 and man["exit_code"] == 2
    assert not (out / "f1_x4.fits").exists() and leftovers(out) == []
    assert "f1.fits" in err and "Traceback" not in err


def test_foreign_output_is_kept(capsys, tiny_fast_model, frames, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    fits.writeto(out / "f0_x4.fits", np.zeros((4, 4), np.float32))  # someone else's file
    before = (out / "f0_x4.fits").read_bytes()
    code, _, _ = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 2 and (out / "f0_x4.fits").read_bytes() == before
    (entry,) = [f for f in manifest(out / "manifest.json")["files"] if f["status"] == "failed"]
    assert "--overwrite" in entry["error"]
    code, _, _ = run_cli(
        capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model, "--overwrite"
    )
    assert code == 0 and fits.getdata(out / "f0_x4.fits").shape == (96, 112)


def test_seq_input(capsys, tiny_fast_model, tmp_path):
    d = tmp_path / "process"
    d.mkdir()
    for n in (1, 2):
        write_sim_fits(d / f"pp_light_{n:05d}.fit", seed=n, shape=(16, 20))
    (d / "pp_light_.seq").write_text("S 'pp_light_' 1 2 2 5 -1 4 0 0 0\nL 1\nI 1 1\nI 2 1\n")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli(
        capsys,
        "upscale",
        d / "pp_light_.seq",
        "-o",
        out,
        "--model",
        tiny_fast_model,
        "--scale",
        "2",
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.fit")) == [
        "pp_light_00001_x2.fit",
        "pp_light_00002_x2.fit",
    ]


def test_collision_is_a_usage_error(capsys, tiny_fast_model, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_sim_fits(tmp_path / sub / "same.fits", shape=(8, 8))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli(
        capsys, "upscale", tmp_path / "a", tmp_path / "b", "-o", out, "--model", tiny_fast_model
    )
    assert code == 2 and "same_x4.fits" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_interrupted_batch_leaves_a_manifest(
    capsys, tiny_fast_model, frames, tmp_path, monkeypatch
):
    real = batch.process_job
    seen = []

    def interrupt_on_third(job, model, options):
        seen.append(job.index)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(job, model, options)

    # run_local calls the name in batch.local: patch it where it is looked up
    monkeypatch.setattr(batch_local, "process_job", interrupt_on_third)
    out = tmp_path / "out"
    out.mkdir()
    code, _, _ = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 130
    man = manifest(out / "manifest.json")
    assert man["exit_code"] == 130  # the code the CLI returned
    assert man["interrupted"] and man["counts"] == {
        "done": 2,
        "skipped": 0,
        "failed": 0,
        "pending": 2,
    }
    assert leftovers(out) == []
    monkeypatch.setattr(batch_local, "process_job", real)
    code, _, _ = run_cli(capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model)
    assert code == 0
    assert (
        sorted(statuses(manifest(out / "manifest.json")).values()) == ["done"] * 2 + ["skipped"] * 2
    )


def test_two_jobs_equal_one(capsys, tiny_fast_model, frames, tmp_path, monkeypatch):
    # torch results depend on the intra-op thread count: pin it for both runs.
    monkeypatch.setenv(batch.THREADS_ENV, "1")
    outs = {}
    for jobs in (1, 2):
        outs[jobs] = tmp_path / f"out{jobs}"
        outs[jobs].mkdir()
        code, _, err = run_cli(
            capsys, "upscale", frames, "-o", outs[jobs], "--model", tiny_fast_model, "--jobs", jobs
        )
        assert code == 0, err
    for p in outs[1].glob("*.fits"):
        assert (outs[2] / p.name).read_bytes() == p.read_bytes(), p.name


def test_local_bands_equal_single_run(capsys, tiny_fast_model, tmp_path, monkeypatch):
    monkeypatch.setenv(batch.THREADS_ENV, "1")  # the worker processes, as this one (conftest)
    src = tmp_path / "mosaic.fits"
    data = fits.getdata(write_sim_fits(tmp_path / "m.fits", shape=(200, 72), channels=3, seed=4))
    data[:, :20] = np.nan  # a NaN border, a hot pixel (clipped residual), an inf
    data[1, 100, 30] = 1e6
    data[0, 150:, :5] = np.inf
    fits.writeto(src, data, fits.getheader(tmp_path / "m.fits"))
    # Bands in this process, then in 2 worker processes.
    for extra in (
        ("--jobs", "1"),
        ("--jobs", "2", "--scale", "3", "--luminance-only"),
        ("--jobs", "2", "--conserve-flux"),  # the source level is the whole image's
    ):
        ref, banded = tmp_path / "ref.fits", tmp_path / "banded.fits"
        for p in (ref, banded):
            p.unlink(missing_ok=True)
        common = ("--model", tiny_fast_model, "--tile", "32", "--quiet", *extra[2:])
        assert run_cli(capsys, "upscale", src, "-o", ref, *common)[0] == 0
        code, _, err = run_cli(
            capsys, "upscale", src, "-o", banded, "--bands", "3", *extra[:2], *common
        )
        assert code == 0, err
        assert banded.read_bytes() == ref.read_bytes()
        assert leftovers(tmp_path) == []


def test_noise_aware_bands_equal_single_run(capsys, tiny_noise_aware_model, tmp_path, monkeypatch):
    # The noise model is the whole image's, fitted once and shipped to every band.
    monkeypatch.setenv(batch.THREADS_ENV, "1")
    src = write_sim_fits(tmp_path / "m.fits", shape=(160, 64), seed=6)
    ref, banded = tmp_path / "ref.fits", tmp_path / "banded.fits"
    common = ("--model", tiny_noise_aware_model, "--tile", "32", "--quiet")
    assert run_cli(capsys, "upscale", src, "-o", ref, *common)[0] == 0
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", banded, "--bands", "3", "--jobs", "2", *common
    )
    assert code == 0, err
    assert banded.read_bytes() == ref.read_bytes()


def test_stale_temp_removal_only_touches_its_output(tmp_path):
    out = tmp_path / "a.fits"
    mine = [
        tmp_path / ".astrosleuth-0123456789ab-a.fits",
        tmp_path / ".astrosleuth-bands-x_1-a.fits",
    ]
    mine[0].write_bytes(b"")
    mine[1].mkdir()
    other = tmp_path / ".astrosleuth-0123456789ab-b.fits"
    other.write_bytes(b"")
    assert sorted(batch.remove_stale_temps(out)) == sorted(mine)
    assert other.exists() and not any(p.exists() for p in mine)


def test_output_state(tiny_fast_model, sim_fits, tmp_path):
    from astrosleuth_astro.api import get_backend, upscale_file

    net = get_backend(tiny_fast_model)
    out = tmp_path / "o.fits"
    upscale_file(sim_fits, out, model=net, scale=2)
    shape = (96, 112)
    state = lambda **kw: batch.output_state(out, shape, **{"sha256": net.sha256, "scale": 2, **kw})  # noqa: E731
    assert state() == "complete"
    assert state(scale=4) == "stale" and state(sha256="0" * 64) == "stale"
    assert state(stretch="asinh") == "stale" and state(stretch="mtf") == "complete"
    assert state(conserve_flux="sources") == "stale"  # a rerun asking for flux conservation
    flux_out = tmp_path / "f.fits"
    upscale_file(sim_fits, flux_out, model=net, scale=2, conserve_flux="all")

    def flux_state(mode):
        return batch.output_state(flux_out, shape, sha256=net.sha256, scale=2, conserve_flux=mode)

    assert flux_state("all") == "complete" and flux_state("off") == "stale"
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 2880])
    assert state() == "incomplete"
    out.write_bytes(b"")
    assert state() == "incomplete"
    out.unlink()
    assert state() == "missing"


def test_batch_options_checked(capsys, tiny_fast_model, frames, tmp_path):
    for extra, needle in (
        (("--jobs", "0"), "--jobs"),
        (("--bands", "0"), "--bands"),
        (("--bands", "2", "--protect-stars"), "--bands"),
        (("--name", "{nope}"), "--name"),
    ):
        out = tmp_path / "o"
        out.mkdir(exist_ok=True)
        code, _, err = run_cli(
            capsys, "upscale", frames, "-o", out, "--model", tiny_fast_model, *extra
        )
        assert code == 2 and needle in err, err
        assert list(out.iterdir()) == []
    # -o must be a directory for a directory input.
    code, _, err = run_cli(
        capsys, "upscale", frames, "-o", tmp_path / "x.fits", "--model", tiny_fast_model
    )
    assert code == 2 and "existing directory" in err
    assert not (tmp_path / "x.fits").exists()
