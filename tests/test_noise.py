"""The noise model a noise-aware network is told (astrosleuth_astro.noise)."""

from __future__ import annotations

import numpy as np
import pytest

from astrosleuth_astro.noise import (
    COND_CHANNELS,
    NOISE_GAIN,
    NoiseModel,
    condition_channels,
    estimate_noise,
)
from astrosleuth_astro.sim import simulate
from astrosleuth_astro.stretch import display_stretch, fit_stretch


@pytest.mark.parametrize("gain", [0.5, 1.0, 3.0])
def test_sky_noise_and_poisson_term_of_a_simulated_frame(gain):
    # A frame with bright nebulosity: the Poisson term is measurable on smooth signal.
    res = simulate(
        (512, 512), scale=1, gain=gain, read_noise=5.0, background=500.0, nebulosity=1.0,
        seed=1, hot_pixels=0.0, wcs=False,
    )  # fmt: skip
    model = estimate_noise(res.lr)
    sigma_true = np.sqrt(25.0 / gain**2 + 500.0 / gain)
    assert model.sigma[0] == pytest.approx(sigma_true, rel=0.05)
    # var = sigma^2 + poisson * signal: 1 / gain for data in ADU.
    assert 0.7 / gain <= model.poisson[0] <= 1.5 / gain
    assert model.linear


def test_pure_white_noise_has_no_poisson_term():
    noise = np.random.default_rng(3).normal(100.0, 7.0, (400, 400))
    model = estimate_noise(noise)
    assert model.sigma[0] == pytest.approx(7.0, rel=0.03)
    assert model.poisson[0] * 50.0 < 0.05 * 49.0  # < 5 % of the variance 7 sigma up


def test_too_small_an_image_falls_back_to_the_clipped_mad():
    noise = np.random.default_rng(4).normal(0.0, 2.0, (20, 20))
    model = estimate_noise(noise)
    assert model.poisson[0] == 0.0
    assert model.sigma[0] == pytest.approx(2.0, rel=0.3)


def _frame():
    res = simulate((96, 80), scale=1, seed=5, hot_pixels=0.0, wcs=False, channels=3)
    return res.lr.astype(np.float64)


def test_condition_channels_are_pointwise_so_tiles_agree_with_the_whole():
    img = _frame()
    st = fit_stretch(img, "mtf")
    model = estimate_noise(img)
    s = st.forward(img)[None]
    whole = condition_channels(s, st, model)
    tile = condition_channels(np.ascontiguousarray(s[:, :, 10:40, 20:70]), st, model)
    assert whole.shape == (1, COND_CHANNELS, 96, 80) and whole.dtype == np.float32
    np.testing.assert_array_equal(tile, whole[:, :, 10:40, 20:70])
    np.testing.assert_array_equal(whole[:, 1], 1.0)  # linear flag


def test_noise_map_is_the_stretched_noise_of_each_pixel():
    img = _frame()
    st = fit_stretch(img, "mtf")
    sky = np.median(img, axis=(1, 2))
    model = NoiseModel(sky, np.full(3, 5.0), np.full(3, 1.0))
    # Levels inside every channel's [black, white], where the stretch does not clip.
    lo, hi = np.max(st.black), np.min(st.white)
    levels = lo + (hi - lo) * np.array([0.01, 0.1, 0.5, 0.9])
    x = np.broadcast_to(levels, (1, 3, 1, 4)).astype(np.float64)
    got = condition_channels(st.forward(x[0])[None], st, model)[0, 0, 0]
    var = 25.0 + np.maximum(x[0] - sky[:, None, None], 0.0)
    want = NOISE_GAIN * np.mean(st.slope(x[0]) * np.sqrt(var), axis=0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # Without the Poisson term the map is the sky noise through the stretch only: smaller.
    flat = NoiseModel(sky, np.full(3, 5.0), np.zeros(3))
    assert np.all(condition_channels(st.forward(x[0])[None], st, flat)[0, 0, 0] < got)


def test_display_pictures_get_flag_zero():
    res = simulate((96, 96), scale=1, seed=8, hot_pixels=0.0, wcs=False)
    st_lin = fit_stretch(res.lr, "mtf")
    pic = np.round(st_lin.forward(res.lr, dtype=np.float64) * 255.0)  # an 8-bit picture
    st = display_stretch(1, 255.0)
    model = estimate_noise(pic, linear=False)
    cond = condition_channels(st.forward(pic)[None], st, model)
    np.testing.assert_array_equal(cond[0, 1], 0.0)
    assert np.all(np.isfinite(cond)) and np.all(cond[0, 0] > 0)
    assert not model.linear


def test_noise_model_round_trips_through_a_dict():
    m = NoiseModel(np.array([1.0, 2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.0]), False)
    back = NoiseModel.from_dict(m.to_dict())
    for a, b in zip((m.sky, m.sigma, m.poisson), (back.sky, back.sigma, back.poisson), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.linear is False
