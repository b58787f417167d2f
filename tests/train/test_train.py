"""Tests of the bundled trainer: a tiny simulator-only run, exact resume, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from astrosleuth_astro.errors import InputError  # noqa: E402
from astrosleuth_astro.train.config import Config, from_dict, load_config  # noqa: E402

TINY = """
[model]
num_feat = 8
num_conv = 2

[data]
data_dir = ""
data_env = "ASTROSLEUTH_TEST_NO_SUCH_VAR"
hr_crop = 64
region_lr = 32
bank_size = 4
refresh_per_step = 0.5

[train]
seed = 3
steps = 6
batch_size = 2
warmup = 2
threads = 1

[val]
every = 4
sim_fields = 2
sim_colour = 1
sim_shape = [32, 32]
real = false

[output]
checkpoint_every = 3
log_every = 2
export_name = "tiny"
"""


def _cfg(tmp_path: Path, name: str, extra: str = "") -> Config:
    path = tmp_path / f"{name}.toml"
    out = (tmp_path / name).as_posix()
    path.write_text(TINY + extra)
    cfg = load_config(path)
    cfg.output.out_dir = out
    return cfg


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from astrosleuth_astro.train.loop import train

    tmp = tmp_path_factory.mktemp("full")
    cfg = _cfg(tmp, "full")
    return cfg, train(cfg, log=_quiet)


def test_tiny_run_trains_and_writes_outputs(full_run):
    cfg, res = full_run
    out = Path(res["out_dir"])
    assert res["finished"] and res["step"] == 6
    assert len(res["history"]) == 6 and all(np.isfinite(res["history"]))
    assert (out / "last.pt").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "step_0000003.pt",
        "step_0000006.pt",
    ]
    assert (out / "train_log.csv").read_text().count("\n") == 4  # header + steps 2, 4, 6
    val = (out / "val.csv").read_text().splitlines()
    assert val[0].startswith("step,image,psnr,psnr_bicubic,gain")
    assert [r["image"] for r in res["val"]] == ["sim0", "sim1-rgb"]
    assert json.loads((out / "config.json").read_text())["model"]["num_feat"] == 8


def test_resume_continues_exactly(full_run, tmp_path):
    from astrosleuth_astro.train.loop import train

    _, ref = full_run
    cfg = _cfg(tmp_path, "split")
    first = train(cfg, stop_after=3, log=_quiet)
    assert not first["finished"] and first["step"] == 3 and not first["exports"]
    second = train(cfg, resume=True, log=_quiet, export=False)
    assert second["step"] == 6
    assert second["history"] == ref["history"]  # bit-identical losses
    ema_a = torch.load(Path(ref["out_dir"]) / "last.pt", weights_only=False)["ema"]
    ema_b = torch.load(Path(second["out_dir"]) / "last.pt", weights_only=False)["ema"]
    for k in ema_a:
        assert torch.equal(ema_a[k], ema_b[k]), k


def test_export_safetensors_and_onnx(full_run):
    import onnxruntime as ort
    from safetensors.torch import load_file

    from astrosleuth_astro.archs.compact import CompactSR, fold_upsampling

    cfg, res = full_run
    st = Path(res["exports"]["safetensors"])
    ox = Path(res["exports"]["onnx"])
    assert st.name == "tiny.safetensors" and ox.name == "tiny.onnx"
    model = CompactSR(**cfg.model.kwargs())
    model.load_state_dict(load_file(str(st)), strict=True)
    model.eval()
    sess = ort.InferenceSession(str(ox), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input" and sess.get_outputs()[0].name == "output"
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 16, 16), (2, 3, 21, 35)]:
        x = rng.random(shape, dtype=np.float32)
        (y,) = sess.run(["output"], {"input": x})
        assert y.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
            folded = fold_upsampling(model).eval()(torch.from_numpy(x)).numpy()
        # The file holds FAST's folded inference form: equal to it everywhere, and to the
        # trained network away from the outermost 6 output pixels.
        np.testing.assert_allclose(y, folded, atol=1e-4)
        np.testing.assert_allclose(y[..., 6:-6, 6:-6], ref[..., 6:-6, 6:-6], atol=1e-4)


def test_batches_are_a_function_of_the_step(tmp_path):
    from astrosleuth_astro.train.data import PairBank

    cfg = _cfg(tmp_path, "bank")
    a, b = PairBank(cfg, []), PairBank(cfg, [])
    for step in (0, 1, 2, 5):
        a.batch(step)
    lr_a, hr_a = a.batch(9)
    lr_b, hr_b = b.batch(9)  # seeks directly
    np.testing.assert_array_equal(lr_a, lr_b)
    np.testing.assert_array_equal(hr_a, hr_b)
    assert lr_a.shape == (2, 3, 16, 16) and hr_a.shape == (2, 3, 64, 64)
    assert lr_a.dtype == np.float32 and 0 <= lr_a.min() and lr_a.max() <= 1
    assert 0 <= hr_a.min() and hr_a.max() <= 1


def test_real_sources_and_degradations(tmp_path):
    from astropy.io import fits

    from astrosleuth_astro.sim import simulate
    from astrosleuth_astro.train.data import PairBank, load_sources, validation_set

    d = tmp_path / "data"
    d.mkdir()
    for i, name in enumerate(["a.fits", "b.fits", "c.fits", "v.fits"]):
        r = simulate((128, 128), scale=1, seed=i, n_stars=100)
        fits.PrimaryHDU(r.lr[0]).writeto(d / name)
    raw = load_config_text(
        tmp_path,
        f'data_dir = "{d.as_posix()}"\nrgb = [["a.fits", "b.fits", "c.fits"]]\nfiles = ["a.fits"]\nval_only = ["v.fits"]\nsim_weight = 0.0\n',
    )
    train_src, val_src = load_sources(raw)
    assert [s.data.shape[0] for s in train_src] == [1, 3]
    assert train_src[0].train_cols == 96 and val_src[0].train_cols == 0
    lr, hr = PairBank(raw, train_src).batch(0)
    assert lr.shape == (2, 3, 16, 16) and hr.shape == (2, 3, 64, 64)
    names = [p.name for p in validation_set(raw, train_src, val_src)]
    assert names[-1] == "v.fits" and "a.fits" in names


def load_config_text(tmp_path: Path, data_lines: str) -> Config:
    text = TINY.replace('data_dir = ""\n', data_lines).replace("real = false", "real = true")
    path = tmp_path / "real.toml"
    path.write_text(text)
    cfg = load_config(path)
    cfg.output.out_dir = (tmp_path / "real").as_posix()
    return cfg


def test_config_errors(tmp_path):
    with pytest.raises(InputError, match="unknown key 'lrr'"):
        from_dict({"train": {"lrr": 1}})
    with pytest.raises(InputError, match="unknown section"):
        from_dict({"trian": {}})
    with pytest.raises(InputError, match="must be an integer"):
        from_dict({"train": {"steps": "many"}})
    with pytest.raises(InputError, match=r"range must be \[low, high\]"):
        from_dict({"sim": {"fwhm": [3.0, 1.0]}})
    with pytest.raises(InputError, match="scale must be 4"):
        from_dict({"data": {"scale": 2}})
    with pytest.raises(InputError, match="num_cond_ch must be 0 or 2"):
        from_dict({"model": {"num_cond_ch": 1}})
    with pytest.raises(InputError, match="noise-aware: 'fast' only"):
        from_dict({"model": {"arch": "rrdb", "num_cond_ch": 2}})
    with pytest.raises(InputError, match="forward must be 'legacy' or 'physical'"):
        from_dict({"data": {"forward": "magic"}})
    with pytest.raises(InputError, match="target_noise must be"):
        from_dict({"forward": {"target_noise": "clean"}})
    with pytest.raises(InputError, match="device must be 'cpu' or 'cuda'"):
        from_dict({"train": {"device": "gpu"}})
    with pytest.raises(InputError, match="supports the pixel loss only"):
        from_dict({"train": {"device": "cuda"}, "losses": {"perceptual": 0.1}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_default_config_is_valid(monkeypatch):
    monkeypatch.delenv("ASTROSLEUTH_DATA", raising=False)
    path = Path(__file__).parents[2] / "astrosleuth_astro" / "train" / "configs" / "default.toml"
    cfg = load_config(path)
    assert cfg.resolved_data_dir() is None  # simulator only unless ASTROSLEUTH_DATA is set
    monkeypatch.setenv("ASTROSLEUTH_DATA", "/some/where")
    assert cfg.resolved_data_dir() == Path("/some/where")


def test_cuda_training_without_a_gpu_is_a_clear_error(tmp_path):
    from astrosleuth_astro.train.command import preset_path
    from astrosleuth_astro.train.loop import train

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cfg = load_config(preset_path("smoke"))
    cfg.train.device = "cuda"
    cfg.output.out_dir = str(tmp_path / "run")
    with pytest.raises(InputError, match="sees no CUDA device"):
        train(cfg, log=lambda m: None)
