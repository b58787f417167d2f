"""The stretch is invertible, places the background like Siril, and never loses values."""

import numpy as np
import pytest

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.stretch import (
    TARGET_BACKGROUND,
    Stretch,
    background_stats,
    fit_stretch,
    looks_stretched,
    mtf,
)


def linear_field(rng, shape=(3, 120, 140), bkg=1200.0, noise=15.0):
    img = bkg + rng.normal(0, noise, shape)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for y, x, f in [(30, 40, 20000), (80, 100, 5000), (60, 20, 50000)]:
        img += f * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return img.astype(np.float32)


def test_mtf_properties():
    x = np.linspace(0, 1, 101)
    for m in (0.01, 0.2, 0.5, 0.9):
        y = mtf(x, m)
        assert y[0] == 0 and abs(y[-1] - 1) < 1e-12
        assert abs(mtf(m, m) - 0.5) < 1e-12
        np.testing.assert_allclose(mtf(y, 1 - m), x, atol=1e-12)


@pytest.mark.parametrize("kind", ["mtf", "asinh", "none"])
def test_exact_inverse(kind):
    rng = np.random.default_rng(1)
    img = linear_field(rng)
    st = fit_stretch(img, kind)
    y = st.forward(img)
    assert y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
    # In float64 the inverse is exact to rounding.
    y64 = st.forward(img, dtype=np.float64)
    back = st.inverse(y64, dtype=np.float64) + st.clip_residual(img)
    np.testing.assert_allclose(back, img, rtol=1e-9, atol=1e-9 * np.abs(img).max())
    # Through float32 (what a network sees) the error is set by float32 resolution in the
    # stretched domain: far below the photon noise of these pixels (sqrt(40000) = 200 ADU).
    back32 = st.inverse(y) + st.clip_residual(img)
    assert np.max(np.abs(back32 - img)) < 1.0


@pytest.mark.parametrize("kind", ["mtf", "asinh", "none"])
def test_in_place_inverse_matches_the_formulas_bit_for_bit(kind):
    # inverse() works in place for speed; it must give exactly what the textbook
    # out-of-place formulas give, on every channel, and leave its input untouched.
    rng = np.random.default_rng(5)
    st = fit_stretch(linear_field(rng), kind)
    y = rng.uniform(-0.1, 1.1, (3, 64, 80)).astype(np.float32)  # includes clipped values
    y[0, 0, 0] = np.nan
    before = y.copy()
    got = st.inverse(y)
    v = np.clip(y.astype(np.float64), 0.0, 1.0)
    col = lambda a: np.asarray(a, np.float64).reshape(-1, 1, 1)  # noqa: E731
    if kind == "mtf":
        u = mtf(v, 1.0 - col(st.param))
    elif kind == "asinh":
        a = col(st.param)
        u = a * np.sinh(v * np.arcsinh(1.0 / a))
    else:
        u = v
    expected = (u * (col(st.white) - col(st.black)) + col(st.black)).astype(np.float32)
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got[0, 0, 0])
    assert np.array_equal(y, before, equal_nan=True)
    y64 = before.astype(np.float64)
    st.inverse(y64, dtype=np.float64)
    assert np.array_equal(y64, before.astype(np.float64), equal_nan=True)


def test_mtf_background_at_quarter_like_siril():
    rng = np.random.default_rng(2)
    img = linear_field(rng)
    st = fit_stretch(img, "mtf")
    med, sigma = background_stats(img)
    np.testing.assert_allclose(med, 1200, rtol=0.01)
    np.testing.assert_allclose(sigma, 15, rtol=0.1)
    np.testing.assert_allclose(st.black, med - 2.8 * sigma, rtol=1e-9)
    y = st.forward(img)
    np.testing.assert_allclose(np.median(y, axis=(1, 2)), TARGET_BACKGROUND, atol=0.01)


def test_clip_residual_only_outside_range():
    rng = np.random.default_rng(3)
    img = linear_field(rng)
    st = fit_stretch(img, "mtf")
    r = st.clip_residual(img)
    below = img < st.black[:, None, None]
    assert np.all(r[~below] == 0)
    assert np.all(r[below] < 0)


def test_auto_detects_stretched_and_linear():
    rng = np.random.default_rng(4)
    lin = linear_field(rng)
    assert not looks_stretched(lin)
    assert fit_stretch(lin, "auto").kind == "mtf"
    st = fit_stretch(lin, "mtf")
    pic = st.forward(lin)
    assert looks_stretched(pic)
    auto = fit_stretch(pic, "auto")
    assert auto.kind == "none"
    # display data in [0, 1] is passed through unchanged
    np.testing.assert_array_equal(auto.forward(pic), pic)


def test_constant_and_nan_channels_are_invertible():
    img = np.full((1, 10, 10), 7.5, dtype=np.float32)
    st = fit_stretch(img, "mtf")
    np.testing.assert_allclose(st.inverse(st.forward(img)), img, rtol=1e-6)
    img[0, :3] = np.nan
    st = fit_stretch(img, "asinh")
    assert np.all(np.isfinite(st.black)) and np.all(np.isfinite(st.white))


def test_dict_round_trip_and_select():
    rng = np.random.default_rng(5)
    st = fit_stretch(linear_field(rng), "asinh")
    st2 = Stretch.from_dict(st.to_dict())
    x = linear_field(rng)
    np.testing.assert_array_equal(st.forward(x), st2.forward(x))
    one = st.select([1])
    np.testing.assert_array_equal(one.forward(x[1:2]), st.forward(x)[1:2])


def test_unknown_stretch_is_input_error():
    with pytest.raises(InputError, match="unknown stretch"):
        fit_stretch(np.zeros((4, 4)), "log")


def test_faint_frame_normalised_to_unit_range_is_linear():
    """A faint uint16 frame that Siril made float (set32bits: value / 65535) peaks near
    0.01; read as a picture, the network saw it at 1 % of its range and the median came
    back at 0.75 of the input (issue 25, item 7). It is linear."""
    rng = np.random.default_rng(7)
    adu = 520 + rng.normal(0, 8, (64, 64))  # a star-less (or flat-looking) faint frame
    faint = (adu / 65535).astype(np.float32)
    assert faint.max() < 0.02
    assert fit_stretch(faint, "auto").kind == "mtf"
    # a picture in [0, 1] that uses its range is still display-referred
    picture = np.clip(0.25 + 0.05 * rng.normal(size=(64, 64)), 0, 1).astype(np.float32)
    picture[10, 10] = 1.0
    assert fit_stretch(picture, "auto").kind == "none"


def test_faint_unit_frame_keeps_its_level_through_the_default_model():
    import astrosleuth_astro as asa

    rng = np.random.default_rng(8)
    adu = 520 + rng.normal(0, 8, (48, 48))
    faint = (adu / 65535).astype(np.float32)
    out = asa.upscale(faint, model="default", scale=2)
    assert np.median(out) / np.median(faint) == pytest.approx(1.0, abs=0.01)
