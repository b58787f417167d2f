"""``astrosleuth-astro train``: the smoke preset end to end through the real console script,
its exports (safetensors, ONNX, resolved config, registry entry) and fine-tuning."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CLI = [sys.executable, "-m", "astrosleuth_astro.cli"]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, **env}
    e.pop("ASTROSLEUTH_DATA", None)
    return subprocess.run(CLI + args, cwd=cwd, env=e, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """One smoke-preset run shared by the tests of this module."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    res = _run(["train", "--preset", "smoke", "--out", str(out)], cwd=out.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    # stdout lists the four exported files, one per line.
    printed = [Path(line) for line in res.stdout.split()]
    assert [p.name for p in printed] == [
        "smoke.safetensors",
        "smoke.onnx",
        "smoke.train.toml",
        "smoke.registry.toml",
    ]
    assert all(p.is_file() for p in printed)
    return out


@pytest.mark.slow
def test_smoke_loss_decreases_and_validates(smoke: Path) -> None:
    with open(smoke / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100, 125, 150]
    losses = [float(r["loss"]) for r in rows]
    # The first logged window is the untrained network; the last two are after training.
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses
    with open(smoke / "val.csv") as fh:
        val = list(csv.DictReader(fh))
    assert {r["image"] for r in val} == {"sim0", "sim1-rgb"}
    # Validation logs PSNR, SSIM and the star metrics columns.
    for key in ("psnr", "psnr_bicubic", "gain", "ssim", "flux_ratio_median", "split_fraction"):
        assert key in val[0]
    assert all(0.0 < float(r["ssim"]) <= 1.0 for r in val)
    # Even the tiny network beats bicubic on the held-out simulated fields.
    assert min(float(r["gain"]) for r in val if int(r["step"]) == 150) > 0.0


@pytest.mark.slow
def test_smoke_finishes_with_no_checkpoint_in_export(smoke: Path) -> None:
    assert (smoke / "last.pt").is_file()
    assert sorted(p.suffix for p in (smoke / "export").iterdir()) == [
        ".onnx",
        ".safetensors",
        ".toml",
        ".toml",
    ]


@pytest.mark.slow
def test_registry_entry_loads_and_both_backends_agree(smoke: Path, tmp_path: Path) -> None:
    import astrosleuth_astro as asa
    from astrosleuth_astro.models.download import sha256_file
    from astrosleuth_astro.models.registry import get_entry
    from astrosleuth_astro.train.config import load_config

    reg = smoke / "export" / "smoke.registry.toml"
    os.environ["ASTROSLEUTH_REGISTRY"] = str(reg)
    try:
        entry = get_entry("smoke")
        assert entry.arch == "fast"
        assert entry.sha256 == sha256_file(smoke / "export" / "smoke.safetensors")
        assert entry.onnx_sha256 == sha256_file(smoke / "export" / "smoke.onnx")
        tr = entry.training
        assert tr["steps"] == 150 and tr["parameters"] == 5399
        assert tr["config"] == "smoke.train.toml"
        assert tr["real_sources"] == [] and tr["sim_weight"] == 1.0
        assert set(tr["validation"]) == {"sim0", "sim1-rgb"}
        # The resolved config reads back as the config the run used.
        cfg = load_config(smoke / "export" / tr["config"])
        assert (cfg.model.num_feat, cfg.model.num_conv, cfg.train.steps) == (12, 3, 150)

        rng = np.random.default_rng(0)
        img = (1000 + 30 * rng.standard_normal((40, 52))).astype(np.float32)
        img[20, 20] += 5e4
        out_t = asa.upscale(img, model="smoke", backend="torch", precision="fp32")
        out_o = asa.upscale(img, model="smoke", backend="onnx")
        assert out_t.shape == (160, 208)
        np.testing.assert_allclose(out_o, out_t, rtol=0, atol=1e-4 * float(img.max()))
    finally:
        del os.environ["ASTROSLEUTH_REGISTRY"]


@pytest.mark.slow
def test_export_only_rewrites_the_same_weights(smoke: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke, run)
    from safetensors import safe_open

    def read(path: Path) -> tuple[dict, dict]:
        with safe_open(str(path), "pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()

    weights = run / "export" / "smoke.safetensors"
    before, meta = read(weights)
    weights.unlink()
    res = _run(
        ["train", "--preset", "smoke", "--out", str(run), "--export-only", "-q"], cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    after, meta_after = read(weights)
    assert meta_after == meta and meta["steps"] == "150"
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train"], "CONFIG file or --preset"),
        (["train", "nope.toml"], "nope.toml: config file not found"),
        (["train", "--preset", "smoke", "--steps", "0"], "--steps"),
        (["train", "--preset", "smoke", "--init", "default", "--steps", "1"], "do not fit"),
        (["train", "--preset", "smoke", "--data", "no_such_dir"], "no_such_dir"),
    ],
)
def test_bad_train_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    res = _run(args + ["--out", str(tmp_path / "o"), "-q"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "export").exists()


def test_init_loads_the_default_weights_for_fine_tuning() -> None:
    from astrosleuth_astro.models import load
    from astrosleuth_astro.train.command import preset_path
    from astrosleuth_astro.train.config import load_config
    from astrosleuth_astro.train.loop import build_model

    cfg = load_config(preset_path("default"))
    cfg.model.init = "default"
    model = build_model(cfg)
    ref = load("default").state_dict()
    got = model.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k].float(), ref[k].float()), k
    # Without init the same config starts from a random initialisation.
    cfg.model.init = ""
    fresh = build_model(cfg).state_dict()
    assert any(not torch.equal(fresh[k].float(), ref[k].float()) for k in ref)


@pytest.mark.parametrize(
    ("arch", "model"),
    [
        ("fast", {"num_feat": 8, "num_conv": 2, "num_up_feat": 4}),
        ("rrdb", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}),
        ("next", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}),
    ],
)
def test_each_architecture_trains_and_exports(tmp_path: Path, arch: str, model: dict) -> None:
    """V1/V2 (rrdb), FAST and NEXT, width-reduced: train, export, reload by detection."""
    import astrosleuth_astro as asa
    from astrosleuth_astro.archs import detect_arch
    from astrosleuth_astro.models import load_state_dict
    from astrosleuth_astro.train.command import preset_path
    from astrosleuth_astro.train.config import load_config
    from astrosleuth_astro.train.loop import train

    cfg = load_config(preset_path("smoke"))
    cfg.model.arch = arch
    for k, v in model.items():
        setattr(cfg.model, k, v)
    cfg.train.steps, cfg.val.every, cfg.val.star_metrics = 3, 3, False
    cfg.output.out_dir = str(tmp_path / "run")
    res = train(cfg, log=lambda m: None)
    assert res["finished"] and np.isfinite(res["history"]).all()
    # export_run itself refuses an ONNX file that differs from torch by more than 1e-4.
    assert float(res["exports"]["onnx_max_abs_diff"]) <= 1e-4
    found, kwargs = detect_arch(load_state_dict(res["exports"]["safetensors"]))
    assert found == arch
    assert all(kwargs[k] == v for k, v in model.items() if k in kwargs)
    img = np.random.default_rng(1).random((20, 24)).astype(np.float32) + 1.0
    out_t = asa.upscale(img, model=res["exports"]["safetensors"], backend="torch", precision="fp32")
    out_o = asa.upscale(img, model=res["exports"]["onnx"], backend="onnx")
    np.testing.assert_allclose(out_o, out_t, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_checkpoints_and_resume_is_exact(smoke: Path, tmp_path: Path, sig, code):
    """Ctrl-C or SIGTERM mid-run saves the finished step; --resume then ends exactly where
    the uninterrupted smoke run ended (same loss at every step)."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "ASTROSLEUTH_DATA"}
    args = CLI + ["train", "--preset", "smoke", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "train_log.csv").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert "continue with --resume" in err
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert 25 <= ck["step"] < 150 and len(ck["history"]) == ck["step"]
    assert not (out / "export").exists()

    res = _run(["train", "--preset", "smoke", "--out", str(out), "--resume"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from {out / 'last.pt'} at step {ck['step']}" in res.stderr
    resumed = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    reference = torch.load(smoke / "last.pt", map_location="cpu", weights_only=False)
    assert resumed["step"] == reference["step"] == 150
    assert resumed["history"] == reference["history"]
    for k, v in reference["ema"].items():
        assert torch.equal(resumed["ema"][k], v), k


def test_a_fine_tune_records_the_weights_it_started_from(tmp_path: Path) -> None:
    """The exported registry entry names ``[model] init`` and the sha256 of those weights."""
    import tomllib

    from astrosleuth_astro.models import get_entry
    from astrosleuth_astro.train.command import preset_path
    from astrosleuth_astro.train.config import load_config
    from astrosleuth_astro.train.loop import train

    cfg = load_config(preset_path("smoke"))
    kw = get_entry("default").training["arch_kwargs"]
    for k in ("num_feat", "num_conv", "num_up_feat"):  # the default model's architecture
        setattr(cfg.model, k, kw[k])
    cfg.model.num_cond_ch = kw["num_in_ch"] - kw["num_out_ch"]  # noise-aware: 2
    cfg.model.init = "default"
    cfg.train.steps, cfg.val.every, cfg.val.star_metrics = 2, 2, False
    cfg.output.out_dir = str(tmp_path / "run")
    res = train(cfg, log=lambda m: None)
    reg = tomllib.loads((tmp_path / "run" / "export" / "smoke.registry.toml").read_text())
    training = reg["models"]["smoke"]["training"]
    assert res["finished"]
    assert training["init"] == "default"
    assert training["init_sha256"] == get_entry("default").sha256
    # a run from scratch records no init
    cfg.model.init = ""
    cfg.output.out_dir = str(tmp_path / "scratch")
    train(cfg, log=lambda m: None)
    reg = tomllib.loads((tmp_path / "scratch" / "export" / "smoke.registry.toml").read_text())
    assert "init" not in reg["models"]["smoke"]["training"]
