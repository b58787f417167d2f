"""A noise-aware network through the pipeline: the conditioning channels of every tile."""

from __future__ import annotations

import numpy as np
import pytest

import astrosleuth_astro as aa
from astrosleuth_astro.engine.backends import make_backend, repeat_mean
from astrosleuth_astro.noise import NoiseModel, condition_channels
from astrosleuth_astro.pipeline import prepare
from astrosleuth_astro.pipeline.condition import conditioned, noise_of
from astrosleuth_astro.sim import simulate

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def frame():
    return simulate((72, 64), scale=4, seed=11, hot_pixels=0.0, wcs=False).lr[0]


@pytest.fixture(scope="module")
def onnx_file(tiny_noise_aware_model, tmp_path_factory):
    from astrosleuth_astro.models import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny_noise_aware.onnx"
    export_onnx(tiny_noise_aware_model, path)
    return path


def test_backends_report_the_conditioning_channels(tiny_noise_aware_model, onnx_file):
    for path, name in ((tiny_noise_aware_model, "torch"), (onnx_file, "onnx")):
        net = make_backend(str(path), backend=name)
        assert net.cond_channels == 2
        out = net(np.random.default_rng(0).random((1, 5, 12, 10), dtype=np.float32))
        assert out.shape == (1, 3, 48, 40)
    assert make_backend("default").cond_channels in (0, 2)


def test_tiles_see_the_whole_image_noise_model(tiny_noise_aware_model, frame):
    net = make_backend(str(tiny_noise_aware_model), backend="torch")
    whole = aa.upscale(frame, model=net, tile=512)
    tiled = aa.upscale(frame, model=net, tile=24)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_onnx_and_torch_agree(tiny_noise_aware_model, onnx_file, frame):
    rgb = np.stack([frame, 1.1 * frame, 0.9 * frame])
    prep = prepare(rgb, "mtf")
    batch = prep.stretched[None]
    x = np.concatenate([batch, condition_channels(batch, prep.stretch, noise_of(prep))], 1)
    a = make_backend(str(tiny_noise_aware_model), backend="torch")(x)
    b = make_backend(str(onnx_file), backend="onnx")(x)
    assert a.shape == (1, 3, 288, 256)
    assert float(np.abs(a - b).max()) <= 1e-4


def test_grey_network_equals_three_copies_and_the_mean(tiny_noise_aware_model, onnx_file):
    x = np.random.default_rng(1).random((2, 3, 20, 18), dtype=np.float32)
    for path, name in ((tiny_noise_aware_model, "torch"), (onnx_file, "onnx")):
        net = make_backend(str(path), backend=name)
        mono = net.mono()(x)
        ref = repeat_mean(net, 2)(x)
        assert mono.shape == (2, 1, 80, 72)
        np.testing.assert_allclose(mono, ref, atol=2e-5)
        # repeat_mean copies the image channel only: the conditioning channels stay.
        full = net(np.concatenate([np.repeat(x[:, :1], 3, 1), x[:, 1:]], 1)).mean(1, keepdims=True)
        np.testing.assert_allclose(ref, full, atol=1e-6)


def test_the_noise_map_reaches_the_network(tiny_noise_aware_model, frame):
    net = make_backend(str(tiny_noise_aware_model), backend="torch").mono()
    prep = prepare(frame[None], "mtf")
    told = noise_of(prep)
    assert noise_of(prep) is told  # fitted once per image
    louder = NoiseModel(told.sky, 3.0 * told.sigma, told.poisson, told.linear)
    tile = np.ascontiguousarray(prep.stretched[None, :, :24, :24])
    a = conditioned(net, prep.stretch, told)(tile)
    b = conditioned(net, prep.stretch, louder)(tile)
    assert float(np.abs(a - b).max()) > 1e-3
