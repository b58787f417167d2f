"""Correctness of the fast paths (issue 6): precision, tiling plan, streaming (the bench:
tests/bench/test_bench.py).

These tests check results, never timings.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro import api
from astrosleuth_astro.cli import main
from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io import read_image
from tests.conftest import write_sim_fits

torch = pytest.importorskip("torch")

from astrosleuth_astro.archs import build_arch  # noqa: E402
from astrosleuth_astro.engine import backends, precision  # noqa: E402
from astrosleuth_astro.engine import plan as engine_plan  # noqa: E402
from astrosleuth_astro.engine.backends import TorchBackend, make_backend  # noqa: E402
from astrosleuth_astro.engine.plan import plan_tiling  # noqa: E402
from astrosleuth_astro.engine.precision import cpu_supports_bf16, resolve_precision  # noqa: E402
from astrosleuth_astro.engine.tiles import upscale_tiled, upscale_whole  # noqa: E402

needs_bf16 = pytest.mark.skipif(
    not cpu_supports_bf16(), reason="this CPU has neither AVX512-BF16 nor AMX"
)

#: A plain 3-channel FAST for the engine tests that feed the network raw arrays (the
#: noise-aware default takes conditioning channels too: tests/pipeline/test_noise_aware.py).
PLAIN = "legacy_default"


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(peak**2 / mse)


# --------------------------------------------------------------------------- precision


def test_precision_errors():
    with pytest.raises(InputError, match="unknown"):
        resolve_precision("fp8", "torch", "cpu", "fast")
    with pytest.raises(InputError, match="only on CUDA"):
        resolve_precision("fp16", "torch", "cpu", "fast")
    with pytest.raises(InputError, match="onnxruntime"):
        resolve_precision("bf16", "onnx", "cpu", "fast")
    with pytest.raises(InputError, match="mps"):
        resolve_precision("fp16", "torch", "mps", "fast")
    assert resolve_precision("auto", "onnx", "cpu", "fast") == "fp32"
    assert resolve_precision("auto", "torch", "cpu", "rrdb") == "fp32"  # not validated
    assert resolve_precision("fp32", "torch", "cpu", "rrdb") == "fp32"
    with pytest.raises(InputError, match="precision"):
        make_backend("default", backend="onnx", precision="bf16")


def test_precision_without_cpu_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_BF16_SUPPORT", False)
    assert resolve_precision("auto", "torch", "cpu", "fast") == "fp32"
    with pytest.raises(InputError, match="AVX512-BF16"):
        resolve_precision("bf16", "torch", "cpu", "fast")


def test_precision_auto_with_cpu_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_BF16_SUPPORT", True)
    assert resolve_precision("auto", "torch", "cpu", "fast") == "bf16"
    assert resolve_precision("auto", "torch", "cpu", "next") == "fp32"


@pytest.mark.parametrize(
    ("argv_extra", "message"),
    [(["--precision", "fp16"], "only on CUDA"), (["--precision", "half"], "--precision")],
)
def test_cli_precision_errors(tmp_path, capsys, argv_extra, message):
    src = write_sim_fits(tmp_path / "in.fits", shape=(16, 16))
    code = main(["upscale", str(src), "-o", str(tmp_path / "o.fits"), "--quiet", *argv_extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o.fits").exists()


def test_cli_onnx_bf16_is_refused(tmp_path, capsys):
    src = write_sim_fits(tmp_path / "in.fits", shape=(16, 16))
    argv = ["upscale", str(src), "-o", str(tmp_path / "o.fits"), "--backend", "onnx"]
    code = main([*argv, "--precision", "bf16", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "onnxruntime" in err[0], err


def test_cli_precision_fp32_runs(tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(20, 24))
    dst = tmp_path / "o.fits"
    assert main(["upscale", str(src), "-o", str(dst), "--precision", "fp32", "--quiet"]) == 0
    assert fits.getdata(dst).shape == (80, 96)


def _check_bf16_bound() -> None:
    from astrosleuth_astro.pipeline import upscale_array
    from astrosleuth_astro.sim import simulate

    # PSNR against the truth moves by tenths of a dB for any tiny change when it is very
    # high (> 50 dB, fields that are nearly all flat sky), so a field of typical PSNR
    # (~43 dB here) is used, and the direct bf16-vs-fp32 distance is checked as well.
    sim = simulate((96, 96), scale=4, channels=1, wcs=False, seed=1)
    truth = sim.hr[0]
    peak = float(np.ptp(truth))
    outs = {}
    for prec in ("fp32", "bf16"):
        net = make_backend("default", backend="torch", precision=prec)
        assert net.precision == prec
        outs[prec] = upscale_array(sim.lr, net).data[0]
    delta = _psnr(outs["bf16"], truth, peak) - _psnr(outs["fp32"], truth, peak)
    assert abs(delta) <= 0.05, delta
    assert _psnr(outs["bf16"], outs["fp32"], peak) >= 70.0
    assert not np.array_equal(outs["bf16"], outs["fp32"])  # bf16 really ran


@needs_bf16
def test_bf16_within_bound_of_fp32():
    _check_bf16_bound()


def test_bf16_rounding_within_bound_of_fp32_on_any_cpu(monkeypatch):
    """The same bound through oneDNN's bf16 emulation, so that CPUs without bf16 (where
    ``auto`` never picks it) still check what bf16 rounding does to the shipped weights:
    the operands are rounded to bf16 exactly as on AVX512-BF16/AMX hardware; only the
    speed and the accumulation order differ."""
    # resolve_precision looks the name up in engine.precision: patch it there
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    _check_bf16_bound()


@needs_bf16
def test_auto_is_bf16_for_the_default_model_on_this_cpu():
    assert make_backend("default", backend="torch").precision == "bf16"
    assert make_backend("default", backend="onnx").precision == "fp32"


# --------------------------------------------------------------------------- tiling


def test_plan_pad_from_receptive_field():
    net = make_backend("default", backend="torch", precision="fp32")
    # 1 + 12 body + 2 up convs: 15 px; pad covers it plus the feather band.
    assert net.receptive_field == 15
    plan = net.tiling
    assert plan.pad == 17 and plan.pad - plan.pad // 8 >= net.receptive_field
    assert make_backend("default", backend="onnx").receptive_field == 15
    # Deep nets are capped at the measured DEFAULT_PAD; unknown receptive fields get it.
    assert plan_tiling("fast", 35, "cpu").pad == 32
    assert plan_tiling("rrdb", None, "cpu", 192) == engine_plan.Tiling(192, 32, 4)
    # Tile cores per backend on a CPU: onnxruntime runs larger tiles faster than torch.
    assert net.tiling.tile == engine_plan.CPU_FAST_TILE == 256
    onnx_plan = make_backend("default", backend="onnx").tiling
    assert onnx_plan == engine_plan.Tiling(engine_plan.CPU_FAST_TILE_ONNX, 17, 1)
    assert onnx_plan.tile == 512


def test_planned_pad_tiles_equal_whole_image():
    net = make_backend(PLAIN, backend="torch", precision="fp32")
    rng = np.random.default_rng(2)
    img = np.clip(0.2 + 0.05 * rng.standard_normal((3, 70, 90)), 0, 1).astype(np.float32)
    img[:, 30:33, 40:43] = 0.9  # a star on a tile boundary
    pad = net.tiling.pad
    whole = upscale_whole(img, net, pad=pad)
    tiled = upscale_tiled(img, net, tile=32, pad=pad, batch_size=1)
    assert np.abs(tiled - whole).max() <= 1e-3


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
def test_batched_tiles_equal_single_tiles(precision):
    net = make_backend(PLAIN, backend="torch", precision=precision)
    img = np.random.default_rng(4).random((3, 50, 61), dtype=np.float32)
    one = upscale_tiled(img, net, tile=24, pad=17, batch_size=1)
    many = upscale_tiled(img, net, tile=24, pad=17, batch_size=5)
    tol = 1e-5 if precision == "fp32" else 2e-2  # bf16 kernels may differ per batch shape
    np.testing.assert_allclose(many, one, atol=tol, rtol=0)


def test_channels_last_folded_backend_equals_plain_module():
    """The backend (channels-last, upsampling folded) equals the plain NCHW module away
    from the outermost 1.5 LR px, which the folding changes and the tile engine crops."""
    net = make_backend(PLAIN, backend="torch", precision="fp32")
    x = np.random.default_rng(5).random((2, 3, 20, 18), dtype=np.float32)
    module = copy.deepcopy(net.model).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    got = net(x)
    assert got.shape == ref.shape == (2, 3, 80, 72)
    np.testing.assert_allclose(got[..., 6:-6, 6:-6], ref[..., 6:-6, 6:-6], atol=1e-5, rtol=0)
    # The border ring does differ: the comparison above is restricted for a reason.
    assert np.abs(got - ref).max() > 1e-3


@pytest.mark.parametrize("tile", [24, 64])
def test_tiled_folded_backend_equals_whole_image_plain_module(tile):
    """What users get: the tiled engine on the folded backend reproduces the unfolded
    network run on the whole reflect-padded image (the engine's reference result)."""
    net = make_backend(PLAIN, backend="torch", precision="fp32")
    module = copy.deepcopy(net.model).to(memory_format=torch.contiguous_format)

    def plain(batch):
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    img = np.random.default_rng(8).random((3, 50, 41), dtype=np.float32)
    pad = net.tiling.pad
    whole = upscale_whole(img, plain, pad=pad)
    tiled = upscale_tiled(img, net, tile=tile, pad=pad, batch_size=1)
    np.testing.assert_allclose(tiled, whole, atol=2e-6, rtol=0)


@pytest.mark.parametrize("folded", [True, False])
def test_mono_variant_equals_mean_of_three_channels(folded):
    """The grey form of FAST equals the mean of the 3-channel network's outputs on three
    copies of the input, everywhere (borders included), for the plain and folded forms."""
    from astrosleuth_astro.archs.compact import MonoCompactSR, fold_upsampling, mono_variant

    torch.manual_seed(3)
    module = build_arch("fast", num_feat=8, num_conv=3).eval()
    with torch.no_grad():  # biases start at zero: make them matter
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    src = fold_upsampling(module) if folded else module
    mono = mono_variant(src)
    assert isinstance(mono, MonoCompactSR)
    x = torch.rand(2, 1, 13, 17)
    with torch.inference_mode():
        ref = src(x.repeat(1, 3, 1, 1)).mean(dim=1, keepdim=True)
        got = mono(x)
    assert got.shape == ref.shape == (2, 1, 52, 68)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)
    # The colour channels really differ, so the mean is not trivially any one of them.
    with torch.inference_mode():
        three = src(x.repeat(1, 3, 1, 1))
    assert (three[:, 0] - three[:, 1]).abs().max() > 1e-3
    assert mono_variant(build_arch("rrdb", num_block=1)) is None


def test_backend_mono_equals_repeat_mean():
    """The torch backend's grey network (what the pipeline runs on mono images) equals
    the generic three-copies-and-mean wrapper; the ONNX backend uses that wrapper."""
    net = make_backend(PLAIN, backend="torch", precision="fp32")
    x = np.random.default_rng(6).random((2, 1, 21, 30), dtype=np.float32)
    got = net.mono()(x)
    ref = backends.repeat_mean(net)(x)
    assert got.shape == ref.shape == (2, 1, 84, 120)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)
    with pytest.raises(InputError, match=r"\(N, 1, h, w\)"):
        net.mono()(np.zeros((1, 3, 8, 8), np.float32))
    onnx_net = make_backend(PLAIN, backend="onnx")
    np.testing.assert_allclose(onnx_net.mono()(x), got, atol=1e-5, rtol=0)


def test_mono_pipeline_equals_three_channel_network(tmp_path):
    """End to end on a grey FITS image: the pipeline with the backend (its grey form)
    equals the pipeline with a plain 3-channel callable of the same network."""
    from astrosleuth_astro.pipeline import upscale_array

    net = make_backend(PLAIN, backend="torch", precision="fp32")
    data = read_image(write_sim_fits(tmp_path / "in.fits", shape=(60, 52))).data

    def three_channel(batch):  # no mono(): the pipeline averages three copies itself
        return net(batch)

    a = upscale_array(data, net, tile=32, pad=17, batch_size=1).data
    b = upscale_array(data, three_channel, tile=32, pad=17, batch_size=1).data
    assert a.shape[-2:] == (240, 208) and a.size == 240 * 208  # grey: one plane
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6 * float(np.abs(b).max()))


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("scale", [4, 2])
def test_streamed_output_equals_in_memory(tmp_path, scale):
    src = write_sim_fits(tmp_path / "in.fits", shape=(70, 64))
    net = api.get_backend("default", precision="fp32")
    image = read_image(src)
    a, b = tmp_path / "mem.fits", tmp_path / "map.fits"
    api.upscale_image(image, a, net, scale=scale, memmap_threshold=1 << 40, tile=32)
    api.upscale_image(image, b, net, scale=scale, memmap_threshold=0, tile=32)
    np.testing.assert_array_equal(fits.getdata(a), fits.getdata(b))
    assert fits.getheader(a) == fits.getheader(b)


def test_timings_cover_the_stages(tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(40, 40))
    timings: dict[str, float] = {}
    net = api.get_backend("default", precision="fp32")
    api.upscale_image(
        read_image(src), tmp_path / "o.fits", net, protect_stars=True, timings=timings
    )
    for stage in ("stretch", "stars", "network", "tiling", "inverse", "write"):
        assert stage in timings and timings[stage] >= 0, (stage, timings)
    assert timings["network"] > 0


def test_bf16_tiled_backend_is_deterministic_in_shape():
    # TorchBackend keeps float32 output whatever the precision.
    net = TorchBackend(make_backend(PLAIN, backend="torch", precision="fp32").model)
    y = net(np.zeros((1, 3, 8, 8), np.float32))
    assert y.dtype == np.float32 and y.shape == (1, 3, 32, 32)
