"""Flux conservation per input pixel (``conserve_flux``): exact, local, and streamed alike."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro.api import get_backend, upscale, upscale_file
from astrosleuth_astro.conserve import (
    block_mean,
    conserve_flux,
    keep_sky_level,
    resolve_mode,
    source_gain,
    source_levels,
    source_mask,
)
from astrosleuth_astro.errors import InputError
from astrosleuth_astro.metrics import compute_metrics
from astrosleuth_astro.pipeline import upscale_array
from astrosleuth_astro.sim import simulate
from astrosleuth_astro.stretch import fit_stretch

from .cli.test_cli import run_cli
from .conftest import write_sim_fits


@pytest.fixture(scope="module")
def field():
    return simulate((40, 48), seed=11).lr[0].astype(np.float32)


@pytest.fixture(scope="module")
def net(tiny_fast_model):
    return get_backend(tiny_fast_model)


def exact(binned: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Where ``binned`` equals ``lr`` to float32 rounding (a few ulp of the value)."""
    return np.abs(binned - lr) <= 4 * np.finfo(np.float32).eps * np.maximum(np.abs(lr), 1.0)


@pytest.mark.parametrize("kind", ["mtf", "asinh", "none"])
def test_stretch_slope_is_the_derivative_of_forward(kind):
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 100.0, (2, 32, 32)) + 1000.0
    st = fit_stretch(x, kind)
    b, w = st.black[:, None, None], st.white[:, None, None]
    inside = (x > b + 1) & (x < w - 1)
    h = 1e-3
    numeric = (st.forward(x + h, np.float64) - st.forward(x - h, np.float64)) / (2 * h)
    slope = st.slope(x)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(slope[inside], numeric[inside], rtol=1e-6)
    assert np.all(np.isfinite(slope)) and np.all(slope > 0)  # clipped pixels included


def test_conserve_flux_is_exact_inside_the_mask_and_touches_nothing_else():
    rng = np.random.default_rng(1)
    lr = rng.uniform(100.0, 5000.0, (2, 6, 7))
    native = (rng.uniform(100.0, 5000.0, (2, 24, 28))).astype(np.float32)
    mask = rng.random(lr.shape) < 0.5
    st = fit_stretch(lr, "mtf")
    before = native.copy()
    conserve_flux(native, lr, st, mask)
    binned = block_mean(native, 4)
    assert exact(binned[mask], lr[mask]).all()
    untouched = np.repeat(np.repeat(~mask, 4, axis=1), 4, axis=2)
    assert np.array_equal(native[untouched], before[untouched])
    assert not np.allclose(binned[~mask], lr[~mask])  # the test data needed correcting


def test_the_share_is_the_smallest_change_in_the_stretched_picture():
    # One 4x4 footprint: a bright core pixel among sky pixels, 300 ADU missing on average.
    lr = np.array([[[1500.0]]])
    native = np.full((1, 4, 4), 1000.0, dtype=np.float32)
    native[0, 1, 2] = 20000.0
    lr[0, 0, 0] = block_mean(native, 4)[0, 0, 0] + 300.0
    st = fit_stretch(np.concatenate([np.full(999, 1000.0), [20000.0]]).reshape(1, 10, 100), "mtf")
    ours = conserve_flux(native.copy(), lr, st)
    flat = native + np.float32(300.0)  # the same linear flux, spread evenly
    np.testing.assert_allclose(block_mean(ours, 4), lr, rtol=1e-6)

    def screen_change(x):
        return float(np.sum((st.forward(x, np.float64) - st.forward(native, np.float64)) ** 2))

    assert screen_change(ours) < 0.01 * screen_change(flat)
    assert ours[0, 1, 2] - native[0, 1, 2] > 0.9 * 16 * 300.0  # the core took the flux


def test_bounds_are_never_crossed_and_the_flux_still_fits():
    st = fit_stretch(np.concatenate([np.full(999, 1000.0), [60000.0]]).reshape(1, 10, 100), "mtf")
    lo, hi = np.array([900.0]), np.array([60000.0])
    native = np.full((1, 4, 8), 1000.0, dtype=np.float32)
    native[0, 1, 1] = 50000.0  # a core that would take all the missing flux, past 60000
    native[0, :, 4:] = 59000.0  # a saturated star: every pixel must end at the ceiling
    lr = np.array([[[20000.0, 60000.0]]])
    out = conserve_flux(native.copy(), lr, st, bounds=(lo, hi))
    assert out.max() <= hi[0] and out.min() >= lo[0]
    np.testing.assert_allclose(block_mean(out, 4), lr, rtol=1e-6)
    assert out[0, 1, 1] == hi[0]  # the core filled up first, then the rest took the remainder
    assert np.all(out[0, :, 4:] == hi[0])
    unbounded = conserve_flux(native.copy(), lr, st)
    assert unbounded.max() > hi[0]  # the bound mattered here


def test_a_partial_gain_moves_that_share_of_the_way_even_at_a_bound():
    st = fit_stretch(np.concatenate([np.full(999, 1000.0), [60000.0]]).reshape(1, 10, 100), "mtf")
    native = np.full((1, 4, 8), 1000.0, dtype=np.float32)
    native[0, 1, 1] = 59000.0  # its share would cross the ceiling
    lr = np.array([[[30000.0, 800.0]]])
    start = block_mean(native, 4)
    gain = np.array([[[0.5, 0.25]]])
    out = conserve_flux(native.copy(), lr, st, gain, bounds=(np.array([900.0]), np.array([6e4])))
    np.testing.assert_allclose(block_mean(out, 4), start + gain * (lr - start), rtol=1e-6)
    assert out.max() <= 6e4 and out.min() >= 900.0


def test_keep_sky_level_moves_the_sky_mean_without_its_noise():
    rng = np.random.default_rng(4)
    lr = 1000.0 + 50.0 * rng.standard_normal((1, 30, 40))
    native = np.full((1, 120, 160), 1000.0 - 3.0, dtype=np.float32)  # smooth, 3 ADU low
    sky = np.ones(lr.shape, dtype=bool)
    sky[0, :5] = False  # e.g. sources: left alone
    offsets = keep_sky_level(native, lr, sky)
    assert offsets[0] == pytest.approx(3.0 + (lr[0, 5:].mean() - 1000.0), abs=0.5)
    assert np.all(native[0, 20:] == native[0, 20, 0])  # still smooth: no noise came back
    assert np.all(native[0, :20] == np.float32(997.0))


def test_resolve_mode():
    assert resolve_mode(False) == resolve_mode("off") == "off"
    assert resolve_mode(None) == resolve_mode("consistent") == "consistent"  # the default
    assert resolve_mode(True) == "sources" and resolve_mode("all") == "all"
    with pytest.raises(InputError, match="conserve_flux='stars'"):
        resolve_mode("stars")


def test_source_mask_and_gain(field):
    bg, sigma, thr = source_levels(field)
    assert thr[0] == pytest.approx(bg[0] + 5 * sigma[0]) and 0 < sigma[0] < bg[0]
    grown = source_mask(field[None], thr, grow=1)[0]
    bare = source_mask(field[None], thr, grow=0)[0]
    assert 0 < bare.sum() < grown.sum() < 0.5 * field.size
    assert np.array_equal(bare, field > thr[0])
    # Decided on a (denoised) level, not on the noisy input: here a smoothed copy.
    from scipy.ndimage import uniform_filter

    level = uniform_filter(field.astype(np.float64), 3)
    dim = tuple(np.argwhere(grown & (level < thr[0]))[0])
    level[dim] = bg[0] - 10.0  # a wing pixel the network put below the background
    gain = source_gain(level[None], bg, sigma, thr, grown[None])[0]
    assert gain[dim] == 0.0
    core = level > thr[0]
    assert np.all(gain[core] == 1.0) and np.all(gain[~grown & ~core] == 0.0)
    wing = grown & ~core
    s = level[wing] - bg[0]
    expected = np.where(s > 0, s**2 / (s**2 + sigma[0] ** 2), 0.0)
    np.testing.assert_allclose(gain[wing], expected, rtol=1e-6)
    assert ((gain[wing] > 0) & (gain[wing] < 1)).any()


@pytest.mark.parametrize("mode", ["sources", "all"])
def test_pipeline_output_bins_back_to_the_input(field, net, mode):
    plain = upscale_array(field, net, tile=32, conserve_flux="off").data
    kept = upscale_array(field, net, tile=32, conserve_flux=mode).data
    binned, before = block_mean(kept[None], 4)[0], block_mean(plain[None], 4)[0]
    if mode == "all":
        assert exact(binned, field).all()
        assert not exact(before, field).all()
        return
    bg, sigma, thr = source_levels(field)
    support = source_mask(field[None], thr)
    gain = source_gain(before[None], bg, sigma, thr, support)[0]
    gain[field > thr[0]] = 1.0  # a source whichever of the input and the network says so
    core = gain == 1.0
    assert exact(binned[core], field[core]).all() and not exact(before[core], field[core]).all()
    # The sky's footprints all move by one constant, far below its noise.
    sky = gain == 0
    shift = (binned[sky] - before[sky]).ravel()
    np.testing.assert_allclose(shift, shift[0], atol=2e-3)
    part = (gain > 0) & (gain < 1)  # wings: moved the share their S/N allows
    expected = before[part] + gain[part] * (field[part] - before[part])
    np.testing.assert_allclose(binned[part], expected + (1 - gain[part]) * shift[0], rtol=1e-5)
    assert 0 < abs(shift[0]) < 0.2 * sigma[0]


def test_scale_2_and_1_keep_the_flux_too(field, net):
    for scale in (2, 1):
        out = upscale_array(field, net, tile=32, scale=scale, conserve_flux="all").data
        binned = block_mean(out[None], scale)[0] if scale > 1 else out
        assert exact(binned, field).all(), scale


@pytest.mark.parametrize("name", ["legacy_default", "default"])
def test_star_flux_ratio_of_the_default_model_is_kept(name):
    # Undersampled stars (FWHM 1.2 px), where the legacy model loses ~10 % of the flux.
    lr = simulate((96, 96), seed=5, fwhm=1.2).lr[0].astype(np.float32)
    net = get_backend(name)
    ratio = {}
    for mode in ("off", "consistent", "sources", "all"):
        m = compute_metrics(lr, upscale_array(lr, net, conserve_flux=mode).data, scale=4)
        assert m["n_stars"] >= 5
        ratio[mode] = m["flux_ratio_median"]
    if name == "legacy_default":
        assert abs(ratio["off"] - 1.0) > 0.05  # the loss this option is for
    # "sources": the sky next to the stars keeps the network's (slightly low) level, which
    # the apertures' local background sees; "all": only the circular apertures' edges.
    assert abs(ratio["sources"] - 1.0) < 0.02
    assert abs(ratio["consistent"] - 1.0) < 0.03  # issue 23's target
    assert abs(ratio["all"] - 1.0) < 0.01


def test_non_finite_pixels_and_colour(net):
    cube = simulate((32, 36), channels=3, seed=2).lr.astype(np.float32)
    cube[1, 5, 7] = np.nan
    cube[:, 20:, :3] = np.nan
    out = upscale_array(cube, net, tile=32, conserve_flux="all").data
    bad = ~np.isfinite(cube)
    assert np.isnan(out[np.repeat(np.repeat(bad, 4, axis=1), 4, axis=2)]).all()
    good = ~bad
    binned = block_mean(np.nan_to_num(out), 4)
    assert exact(binned[good], cube[good]).all()


def test_streamed_output_equals_in_memory(tmp_path, tiny_fast_model):
    src = write_sim_fits(tmp_path / "f.fits", shape=(40, 44), seed=6)
    net = get_backend(tiny_fast_model)
    a, b = tmp_path / "mem.fits", tmp_path / "map.fits"
    upscale_file(src, a, model=net, conserve_flux=True, tile=32)
    from astrosleuth_astro.api import upscale_image
    from astrosleuth_astro.io import read_image

    upscale_image(read_image(src), b, net, conserve_flux=True, tile=32, memmap_threshold=0)
    assert np.array_equal(fits.getdata(a), fits.getdata(b))
    assert fits.getheader(a)["ASTSLFLX"] == "sources"
    plain = tmp_path / "plain.fits"
    upscale_file(src, plain, model=net, tile=32, conserve_flux="off")
    data = fits.getdata(src)
    core = block_mean(fits.getdata(plain)[None], 4)[0] > source_levels(data)[2][0]
    assert core.any() and exact(block_mean(fits.getdata(a)[None], 4)[0], data)[core].all()


def test_ccddata_and_header_provenance(tiny_fast_model):
    from astropy.nddata import CCDData

    res = simulate((32, 32), seed=3)
    ccd = CCDData(res.lr[0].astype(np.float32), unit="adu", meta={"ASTSLFLX": "all"})
    net = get_backend(tiny_fast_model)
    out = upscale(ccd, model=net, tile=32, conserve_flux="all")
    assert out.meta["ASTSLFLX"] == "all"
    assert exact(block_mean(np.asarray(out.data)[None], 4)[0], ccd.data).all()
    again = upscale(ccd, model=net, tile=32, conserve_flux="off")  # a stale ASTSLFLX goes
    assert "ASTSLFLX" not in again.meta
    default = upscale(ccd, model=net, tile=32)
    assert default.meta["ASTSLFLX"] == "consistent"


def test_cli_flag(capsys, tmp_path, tiny_fast_model):
    src = write_sim_fits(tmp_path / "f.fits", shape=(32, 40), seed=7)
    out = tmp_path / "o.fits"
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", out, "--model", tiny_fast_model, "--quiet",
        "--conserve-flux", "all",
    )  # fmt: skip
    assert code == 0, err
    assert fits.getheader(out)["ASTSLFLX"] == "all"
    assert exact(block_mean(fits.getdata(out)[None], 4)[0], fits.getdata(src)).all()
    bad = tmp_path / "bad.fits"
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", bad, "--model", tiny_fast_model, "--conserve-flux", "x"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--conserve-flux" in err
    assert not bad.exists()
