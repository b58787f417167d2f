"""The command line: exit codes, one-line errors, atomic outputs, JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro.cli import main

from ..conftest import sha256, write_sim_fits


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_upscale_json_summary(capsys, tiny_fast_model, sim_fits, tmp_path):
    out = tmp_path / "big.fits"
    code, stdout, err = run_cli(
        capsys, "upscale", sim_fits, "-o", out, "--model", tiny_fast_model, "--json", "--quiet"
    )
    assert code == 0, err
    summary = json.loads(stdout)
    (result,) = summary["results"]
    assert result["output"] == str(out) and result["scale"] == 4
    assert result["shape_out"] == list(fits.getdata(out).shape)


def test_several_inputs_into_directory(capsys, tiny_fast_model, tmp_path):
    a = write_sim_fits(tmp_path / "a.fits", seed=1, shape=(16, 16))
    b = write_sim_fits(tmp_path / "b.fits", seed=2, shape=(16, 20))
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, _, err = run_cli(
        capsys, "upscale", a, b, "-o", outdir, "--model", tiny_fast_model, "--scale", "2", "--quiet"
    )
    assert code == 0, err
    assert fits.getdata(outdir / "a_x2.fits").shape == (32, 32)
    assert fits.getdata(outdir / "b_x2.fits").shape == (32, 40)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--scale", "5"], "--scale"),
        (["--scale", "0"], "--scale"),
        (["--tile", "0"], "--tile"),
        (["--stretch", "log"], "--stretch"),
    ],
)
def test_bad_options_exit_2(capsys, tiny_fast_model, sim_fits, tmp_path, extra, needle):
    out = tmp_path / "o.fits"
    code, _, err = run_cli(
        capsys, "upscale", sim_fits, "-o", out, "--model", tiny_fast_model, *extra
    )
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_files_exit_2_and_leave_nothing(capsys, tiny_fast_model, tmp_path):
    png = tmp_path / "picture.fits"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    for bad in (png, empty, tmp_path / "missing.fits", tmp_path):
        before = sha256(bad) if bad.is_file() else None
        out = tmp_path / "never.fits"
        code, _, err = run_cli(capsys, "upscale", bad, "-o", out, "--model", tiny_fast_model)
        assert code == 2, err
        assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
        if before:
            assert sha256(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.fits", "picture.fits"]


def test_existing_output_not_replaced(capsys, tiny_fast_model, sim_fits, tmp_path):
    out = tmp_path / "o.fits"
    out.write_bytes(b"keep me")
    code, _, err = run_cli(capsys, "upscale", sim_fits, "-o", out, "--model", tiny_fast_model)
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    code, _, err = run_cli(
        capsys, "upscale", sim_fits, "-o", out, "--model", tiny_fast_model, "--overwrite", "--quiet"
    )
    assert code == 0, err
    assert fits.getheader(out)["NAXIS"] == 2


def test_output_same_as_input_refused(capsys, tiny_fast_model, sim_fits):
    before = sha256(sim_fits)
    code, _, err = run_cli(
        capsys, "upscale", sim_fits, "-o", sim_fits, "--model", tiny_fast_model, "--overwrite"
    )
    assert code == 2 and str(sim_fits) in err
    assert sha256(sim_fits) == before


def test_bad_model_file_exit_2(capsys, sim_fits, tmp_path):
    model = tmp_path / "broken.safetensors"
    model.write_bytes(b"not a model")
    out = tmp_path / "o.fits"
    code, _, err = run_cli(capsys, "upscale", sim_fits, "-o", out, "--model", model)
    assert code == 2 and str(model) in err and not out.exists()


def test_models_commands(capsys):
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and "default" in out and "AstroSleuthV1" in out
    code, out, _ = run_cli(capsys, "models", "info", "AstroSleuthFAST")
    assert code == 0 and json.loads(out)["arch"] == "fast"
    code, _, err = run_cli(capsys, "models", "info", "NoSuchModel")
    assert code == 2 and "NoSuchModel" in err


def test_simulate_command(capsys, tmp_path):
    out, truth = tmp_path / "obs.fits", tmp_path / "truth.fits"
    code, _, err = run_cli(
        capsys, "simulate", "-o", out, "--truth", truth, "--size", "32", "40", "--seed", "3"
    )
    assert code == 0, err
    assert fits.getdata(out).shape == (32, 40)
    assert fits.getdata(truth).shape == (128, 160)


def test_export_onnx_command(capsys, tiny_fast_model, tmp_path):
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(capsys, "export-onnx", tiny_fast_model, "-o", out)
    assert code == 0, err
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 9, 13), dtype=np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (1, 3, 36, 52)


def test_console_script_no_traceback(tmp_path):
    """The installed entry point: a bad input gives exit 2 and one clean line."""
    bad = tmp_path / "bad.fits"
    bad.write_text("hello")
    exe = os.path.join(os.path.dirname(sys.executable), "astrosleuth-astro")
    proc = subprocess.run(
        [exe, "upscale", str(bad), "-o", str(tmp_path / "o.fits")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.fits").exists()


def test_next_options_refused_for_other_models(capsys, tiny_fast_model, sim_fits, tmp_path):
    out = tmp_path / "o.fits"
    code, _, err = run_cli(
        capsys, "upscale", sim_fits, "-o", out, "--model", tiny_fast_model, "--star-strength", "0.5"
    )
    assert code == 2 and "NEXT" in err and not out.exists()


def test_protect_stars_shows_its_star_stages_on_the_progress_bar(capsys, tiny_fast_model, tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(48, 56), seed=4)
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "out.fits", "--model", tiny_fast_model,
        "--protect-stars",
    )  # fmt: skip
    assert code == 0, err
    # the bar's label names the stage, so a long star stage does not look like a stall
    assert "in.fits: detecting stars" in err and "in.fits: upscaling" in err
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "q.fits", "--model", tiny_fast_model,
        "--protect-stars", "--quiet",
    )  # fmt: skip
    assert code == 0 and err == ""
