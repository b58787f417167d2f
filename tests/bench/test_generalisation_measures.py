"""bench/generalisation.py: each measure on constructed inputs whose answer is known."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

_PATH = Path(__file__).resolve().parents[2] / "bench" / "generalisation.py"
_SPEC = importlib.util.spec_from_file_location("bench_generalisation", _PATH)
gen = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = gen  # dataclasses look their module up while the class is made
_SPEC.loader.exec_module(gen)

FWHM = 2.0
SIGMA = 2.0
N = 96
#: Star positions (x, y), 16 px apart, off the pixel grid, away from the borders.
STARS = [(12.3 + 16 * i + 0.13 * j, 12.6 + 16 * j - 0.17 * i) for i in range(5) for j in range(5)]


def _gauss(xy, flux, fwhm, shape=(N, N)):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    s = fwhm / (2 * np.sqrt(2 * np.log(2)))
    x, y = xy
    return flux / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))


def _truth(s: int) -> np.ndarray:
    """The noise-free field at scale ``s``: sky 100, the 25 stars (fluxes 400-4000)."""
    img = np.full((N * s, N * s), 100.0)
    for k, (x, y) in enumerate(STARS):
        xy = ((x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5)
        img += _gauss(xy, (400.0 + 150.0 * k) * s * s, FWHM * s, img.shape)
    return img


def _nearest(img, s):
    return np.repeat(np.repeat(img, s, axis=0), s, axis=1)


@pytest.fixture(scope="module")
def case():
    """Input = the 4x truth area-averaged plus white noise SIGMA; its reference."""
    from astrosleuth_astro.sim import area_downsample

    truth = _truth(4)
    lr = area_downsample(truth, 4) + np.random.default_rng(0).normal(0, SIGMA, (N, N))
    return lr, truth, gen.reference(lr, FWHM, truth=truth)


def test_reference_finds_the_noise_and_the_stars(case):
    lr, _, ref = case
    assert ref.sigma == pytest.approx(SIGMA, rel=0.15)
    assert np.allclose(ref.background, 100.0, atol=1.0)
    assert len(ref.stars) == len(STARS)
    assert gen._matched(np.array(STARS), ref.stars, 0.3).all()
    assert ref.fwhm == pytest.approx(FWHM, rel=0.2)


def test_a_copy_of_the_truth_keeps_every_star_and_invents_none(case):
    _, truth, ref = case
    found = gen.detections(ref, truth)
    assert gen.stars_kept(ref, truth, found) == len(STARS)
    assert gen.invented(ref, truth, found) == 0
    # the truth has the data's PSF
    assert gen.fwhm_ratio(ref, truth) == pytest.approx(1.0, abs=0.1)


def test_a_fake_source_is_invented_and_a_removed_star_is_lost(case):
    _, truth, ref = case
    # half-way between four stars, 8 input px from each
    fake = truth + _gauss((4 * 36.5 + 1.5, 4 * 36.4 + 1.5), 3000.0 * 16, FWHM * 4, truth.shape)
    assert gen.invented(ref, fake) == 1
    assert gen.stars_kept(ref, fake) == len(STARS)
    x, y = STARS[-1]
    k = len(STARS) - 1
    xy = ((x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5)
    erased = truth - _gauss(xy, (400.0 + 150.0 * k) * 16, FWHM * 4, truth.shape)
    assert gen.stars_kept(ref, erased) == len(STARS) - 1
    assert gen.invented(ref, erased) == 0


def test_the_output_threshold_is_the_inputs():
    """A star just above the input's threshold in amplitude is found in both grids, and
    one well below it in neither: the output grid's bigger kernel does not lower it."""
    lr = np.full((48, 48), 100.0)
    bg = np.full_like(lr, 100.0)
    thr = 5.0 * SIGMA
    for flux, seen in ((200.0, True), (15.0, False)):
        img = lr + _gauss((24.2, 23.7), flux, FWHM, lr.shape)
        up = gen.fd.upsample_nearest(np.zeros_like(lr), 4) + 100.0
        up += _gauss((24.2 * 4 + 1.5, 23.7 * 4 + 1.5), flux * 16, FWHM * 4, up.shape)
        assert (len(gen.detect(img, bg, thr, FWHM)[0]) == 1) is seen
        assert (len(gen.detect(up, bg, thr, FWHM, scale=4)[0]) == 1) is seen


def test_peakier_stars_have_a_smaller_fwhm_and_a_higher_sharpness(case):
    _, truth, ref = case
    peaky = np.full_like(truth, 100.0)
    for k, (x, y) in enumerate(STARS):
        xy = ((x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5)
        peaky += _gauss(xy, (400.0 + 150.0 * k) * 16, 0.6 * FWHM * 4, truth.shape)
    assert gen.fwhm_ratio(ref, peaky) == pytest.approx(0.6, abs=0.06)
    assert gen.sharpness(ref, peaky) > 1.25 * gen.sharpness(ref, truth)


@pytest.mark.parametrize("s", [4, 2])
def test_pattern_bicubic_of_a_smooth_sky_is_zero_and_a_tiled_pattern_is_measured(s):
    from astrosleuth_astro.metrics.image import bicubic

    yy, xx = np.mgrid[:N, :N].astype(float)
    lr = 100 + 10 * np.cos(2 * np.pi * xx / 40) * np.sin(2 * np.pi * yy / 56 + 0.3)
    lr += np.random.default_rng(1).normal(0, SIGMA, lr.shape)
    ref = gen.reference(lr, FWHM)
    smooth = bicubic(ndimage.gaussian_filter(lr, 2.0), s, clip=False).astype(float)
    assert gen.pattern_rms_sigma(ref, smooth) < 1e-3
    # a fixed zero-mean pattern on every input pixel, 0.05 sigma RMS over the s x s phases
    dome = np.random.default_rng(3).normal(size=(s, s))
    dome -= dome.mean()
    dome *= 0.05 * ref.sigma / np.sqrt(np.mean(dome**2))
    tiled = smooth + np.tile(dome, (N, N))
    assert gen.pattern_rms_sigma(ref, tiled) == pytest.approx(0.05, rel=0.05)


def test_pattern_of_a_nearest_upsampled_gradient_is_its_sawtooth():
    """Nearest neighbour of a ramp of g per input px along x: at the phase i of each
    block, x - smooth(x) = -g (i - (s - 1) / 2) / s, whose RMS over the phases is
    g sqrt((s^2 - 1) / 12) / s."""
    s, g = 4, 0.2 * SIGMA
    xx = np.mgrid[:N, :N][1].astype(float)
    lr = 100 + g * xx
    ref = gen.reference(lr + np.random.default_rng(2).normal(0, SIGMA, lr.shape), FWHM)
    want = g * np.sqrt((s * s - 1) / 12) / s / ref.sigma
    assert gen.pattern_rms_sigma(ref, _nearest(lr, s)) == pytest.approx(want, rel=0.05)


@pytest.fixture(scope="module")
def noise_sky():
    """A star-less sky of 100 with white noise SIGMA, and its reference."""
    lr = 100 + np.random.default_rng(4).normal(0, SIGMA, (N, N))
    return lr, gen.reference(lr, FWHM)


def test_texture_is_the_sub_pixel_structure_of_the_sky(noise_sky):
    """A smooth output has no structure below an input pixel; nearest neighbour (each input
    pixel's noise as a flat block, with edges at every block) has more than bicubic."""
    from astrosleuth_astro.metrics.image import bicubic

    lr, ref = noise_sky
    assert gen.texture_sigma(ref, np.full((4 * N, 4 * N), 100.0)) == pytest.approx(0.0)
    bic = gen.texture_sigma(ref, bicubic(lr, 4, clip=False))
    near = gen.texture_sigma(ref, _nearest(lr, 4))
    assert 0.1 < bic < near


def test_coherence_tells_strands_from_isotropic_noise(noise_sky):
    """Worm-like strands (noise smoothed along one direction only) are far more coherent
    than the same noise smoothed isotropically, which the bicubic of white noise is
    close to."""
    from astrosleuth_astro.metrics.image import bicubic

    lr, ref = noise_sky
    rng = np.random.default_rng(5)
    white = rng.normal(0, SIGMA, (4 * N, 4 * N))
    iso = 100 + ndimage.gaussian_filter(white, 2.0) * 4
    strands = 100 + ndimage.gaussian_filter(white, (0.7, 8.0)) * 8
    c_iso = gen.texture_coherence(ref, iso)
    c_bic = gen.texture_coherence(ref, bicubic(lr, 4, clip=False))
    c_str = gen.texture_coherence(ref, strands)
    assert c_str > 0.5 > 0.25 > max(c_iso, c_bic)


def test_compare_gives_gains_and_ratios():
    rows = {
        "model": {"psnr_stretched": 30.0, "psnr_linear": 40.0, "stars_kept": 45, "invented": 6}
        | {"sharpness": 0.85},
        "bicubic": {"psnr_stretched": 31.0, "psnr_linear": 39.5, "stars_kept": 90, "invented": 0}
        | {"sharpness": 0.5},
    }
    gen.compare(rows)
    m = rows["model"]
    assert m["gain_stretched_db"] == pytest.approx(-1.0)
    assert m["gain_linear_db"] == pytest.approx(0.5)
    assert m["kept_vs_bicubic"] == pytest.approx(0.5)
    assert m["invented_vs_bicubic"] == np.inf
    assert m["sharpness_vs_bicubic"] == pytest.approx(1.7)


def test_sim2_is_the_documented_configuration():
    """The second simulator field: as many stars as documented, noise-free truth whose
    area average is the LR's mean, noise of the documented size, same LR at 4x and 2x."""
    from astrosleuth_astro.sim import area_downsample

    c4 = gen.sim2("sim2_undersampled", 4, size=64)
    c2 = gen.sim2("sim2_undersampled", 2, size=64)
    assert c4.lr.shape == (64, 64) and c4.truth.shape == (256, 256) and c2.truth.shape == (128, 128)
    assert np.array_equal(c4.lr, c2.lr)
    assert np.allclose(area_downsample(c4.truth, 2), c2.truth)
    assert len(c4.catalogue) == round(3500 * (64 / 512) ** 2)
    noise = c4.lr - area_downsample(c4.truth, 4)
    p = gen.SIM2_COMMON
    expected = np.sqrt(p["sky"] + p["read_noise"] ** 2 + p["corr_std"] ** 2)
    assert np.std(noise) == pytest.approx(expected, rel=0.15)
    assert abs(np.mean(noise)) < 1.0


def test_the_script_runs_end_to_end(tmp_path, capsys, tiny_fast_model):
    from astropy.io import fits

    from astrosleuth_astro.sim import simulate

    # A stand-in for the held-out training image, scored by its "fold" model.
    fits.writeto(tmp_path / "HorseHead.fits", simulate((96, 104), scale=1, seed=2).lr[0])
    out = tmp_path / "g.json"
    rc = gen.main(
        ["--cases", "sim2_moffat", "--scales", "2", "--size", "64", "--json", str(out)]
        + ["--markdown", "--data", str(tmp_path), "--loo", f"horsehead={tiny_fast_model}"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "leave-one-out" in text and "loo_horsehead x2" in text
    doc = json.loads(out.read_text())
    res, loo = doc["results"]
    assert set(res["methods"]) == {"model", "bicubic"}
    assert "gain_stretched_db" in res["methods"]["model"]
    assert loo["case"] == "loo_horsehead" and loo["model"] == str(tiny_fast_model)
    assert loo["shape_in"] == [48, 48]  # the centre 96 x 96, area-averaged by 2
    assert doc["leave_one_out"]["folds"] == {"loo_horsehead": str(tiny_fast_model)}


def test_a_fold_case_needs_its_fold_model():
    with pytest.raises(SystemExit):
        gen.main(["--cases", "loo_spitzer"])
