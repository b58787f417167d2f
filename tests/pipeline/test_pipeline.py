"""The linear-data pipeline: units kept, NaNs kept in place, clipped values recovered.

These tests drive the pipeline with simple numpy "networks" whose behaviour is known, so
every property of the pipeline itself is checked exactly; the real networks are covered in
test_api/test_cli.
"""

import numpy as np
import pytest

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.pipeline import upscale_array
from astrosleuth_astro.resample import upsample_bilinear
from astrosleuth_astro.stretch import fit_stretch


def bilinear_net(batch):
    """A stand-in network: plain bilinear x4 (what FAST does with its body switched off)."""
    return upsample_bilinear(batch, 4)


def sharpening_net(batch):
    """A stand-in that changes pixels: bilinear plus an unsharp-mask-like boost."""
    up = upsample_bilinear(batch, 4)
    blur = (np.roll(up, 1, -1) + np.roll(up, -1, -1) + np.roll(up, 1, -2) + np.roll(up, -1, -2)) / 4
    return up + 0.5 * (up - blur)


def smooth_field(rng, shape=(1, 64, 80), bkg=1500.0, noise=20.0):
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    gradient = bkg + 3.0 * xx + 1.5 * yy
    return (gradient + rng.normal(0, noise, shape)).astype(np.float32)


def test_flat_background_stays_flat():
    img = np.full((50, 70), 1234.5, dtype=np.float32)
    out = upscale_array(img, sharpening_net, scale=4).data
    assert out.shape == (200, 280)
    np.testing.assert_array_equal(out, 1234.5)


@pytest.mark.parametrize("stretch", ["mtf", "asinh"])
def test_block_means_match_input_within_noise(stretch):
    rng = np.random.default_rng(0)
    noise = 20.0
    img = smooth_field(rng, noise=noise)
    out = upscale_array(img, bilinear_net, scale=4, stretch=stretch).data
    lr_blocks = img[0].reshape(8, 8, 10, 8).mean(axis=(1, 3))
    sr_blocks = out[0].reshape(8, 32, 10, 32).mean(axis=(1, 3))
    # The noise of an 8x8 block mean is noise / 8; the pipeline must stay well inside it.
    assert np.max(np.abs(sr_blocks - lr_blocks)) < noise / 8


def test_nan_pixels_stay_nan_and_do_not_spread():
    rng = np.random.default_rng(1)
    img = smooth_field(rng, shape=(1, 40, 48))
    img[0, :, :5] = np.nan  # a stacking border
    img[0, 20, 30] = np.nan  # a single dead pixel
    out = upscale_array(img, sharpening_net, scale=4).data
    bad = ~np.isfinite(out[0])
    expected = np.zeros((160, 192), bool)
    expected[:, :20] = True
    expected[80:84, 120:124] = True
    np.testing.assert_array_equal(bad, expected)


def test_inf_is_kept_in_place():
    img = np.full((1, 12, 12), 100.0, dtype=np.float32)
    img[0, 3, 3] = np.inf
    out = upscale_array(img, bilinear_net, scale=2).data
    assert np.all(np.isposinf(out[0, 6:8, 6:8]))
    assert np.isfinite(out).sum() == out.size - 4


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_scales_shapes_and_footprint_means(scale):
    rng = np.random.default_rng(2)
    img = smooth_field(rng, shape=(3, 24, 36))
    out = upscale_array(img, bilinear_net, scale=scale).data
    assert out.shape == (3, 24 * scale, 36 * scale)
    assert out.dtype == np.float32
    means = out.reshape(3, 24, scale, 36, scale).mean(axis=(2, 4))
    assert np.median(np.abs(means - img)) < 20.0  # within the per-pixel noise


def test_clipped_values_are_carried_through():
    rng = np.random.default_rng(3)
    img = smooth_field(rng, shape=(1, 32, 32))
    img[0, 10, 10] = -8000.0  # a cold pixel far below the black point
    st = fit_stretch(img, "mtf")
    assert img[0, 10, 10] < st.black[0]
    out = upscale_array(img, bilinear_net, scale=4, stretch=st).data
    # The flux lost to clipping reappears around the pixel: the local sum matches.
    lr_sum = img[0, 7:14, 7:14].sum()
    sr_sum = out[0, 28:56, 28:56].sum() / 16
    assert abs(sr_sum - lr_sum) < 0.01 * abs(lr_sum)


def test_mono_runs_network_on_three_channels_and_averages():
    seen = {}

    def net(batch):
        seen["channels"] = batch.shape[1]
        out = upsample_bilinear(batch, 4)
        out[:, 0] += 0.03  # channels disagree; mono output must be their mean
        out[:, 1] -= 0.03
        return out

    img = np.random.default_rng(4).random((16, 16), dtype=np.float32)
    st = fit_stretch(img, "none")
    got = upscale_array(img, net, scale=4, stretch=st).data
    ref = upscale_array(img, bilinear_net, scale=4, stretch=st).data
    assert seen["channels"] == 3
    assert got.shape == (64, 64)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_luminance_only_keeps_input_chroma():
    rng = np.random.default_rng(5)
    img = rng.random((3, 16, 20), dtype=np.float32) * 0.5 + 0.25

    def colour_shifting_net(batch):
        out = upsample_bilinear(batch, 4)
        return out[:, ::-1].copy()  # swaps R and B: a chroma error

    st = fit_stretch(img, "none")
    # The network's own output (the consistency step, per channel, would move the chroma
    # of every footprint to the input's own).
    out = upscale_array(
        img, colour_shifting_net, stretch=st, luminance_only=True, conserve_flux="off"
    ).data
    up = upsample_bilinear(img, 4)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def chroma(x):
        return x - np.tensordot(luma, x, axes=1)[None]

    np.testing.assert_allclose(chroma(out), chroma(up), atol=1e-5)
    # ... while luminance comes from the network (compared away from the border, where
    # the tiles' reflect padding makes the network's bilinear differ from edge clamping)
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(
        np.tensordot(luma, out, axes=1)[inner],
        np.tensordot(luma, up[::-1], axes=1)[inner],
        atol=1e-5,
    )


def test_constant_image_gives_constant_image():
    for value in (0.0, -3.0, 42.0):
        out = upscale_array(np.full((7, 9), value, np.float32), sharpening_net, scale=3).data
        np.testing.assert_array_equal(out, value)


def test_tiny_images():
    for shape in [(1, 1), (1, 5), (2, 3)]:
        img = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 10
        out = upscale_array(img, bilinear_net, scale=4).data
        assert out.shape == (4 * shape[0], 4 * shape[1])
        assert np.all(np.isfinite(out))


def test_bad_inputs():
    with pytest.raises(InputError, match="1 or 3 planes"):
        upscale_array(np.zeros((2, 8, 8)), bilinear_net)
    with pytest.raises(InputError, match="1-D"):
        upscale_array(np.zeros(8), bilinear_net)
    with pytest.raises(InputError, match="scale"):
        upscale_array(np.zeros((8, 8)), bilinear_net, scale=5)
    with pytest.raises(InputError, match="tile"):
        upscale_array(np.zeros((8, 8)), bilinear_net, tile=0)


def test_out_array_is_filled_in_place(tmp_path):
    img = smooth_field(np.random.default_rng(6), shape=(1, 20, 24))
    ref = upscale_array(img, sharpening_net, scale=4).data
    mm = np.memmap(tmp_path / "out.dat", dtype=">f4", mode="w+", shape=(1, 80, 96))
    res = upscale_array(img, sharpening_net, scale=4, out=mm)
    assert res.data is mm
    np.testing.assert_allclose(np.asarray(mm), ref, rtol=1e-6)
