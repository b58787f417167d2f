"""The physical forward model of the training pairs (astrosleuth_astro.train.forward)."""

from __future__ import annotations

import numpy as np
import pytest

from astrosleuth_astro.sim import area_downsample
from astrosleuth_astro.train import forward as fwd
from astrosleuth_astro.train.config import Config
from astrosleuth_astro.train.data import real_pair, sample_sim_kwargs, sim_pair

pytest.importorskip("torch")


def physical(**forward) -> Config:
    cfg = Config()
    cfg.data.forward = "physical"
    cfg.model.num_cond_ch = 2
    for k, v in forward.items():
        setattr(cfg.forward, k, v)
    return cfg


@pytest.mark.parametrize("scale", [2, 4])
def test_binned_fine_observation_is_a_coarse_observation(scale):
    # Flat sky: binning the fine detector's frame gives the coarse detector's noise.
    gain, read, sky = 1.7, 6.0, 400.0
    rng = np.random.default_rng(0)
    hr = np.full((1, 256 * scale, 256 * scale), sky)
    lr = area_downsample(fwd.observe_hr(hr, scale, gain, read, rng), scale)
    assert lr.mean() == pytest.approx(sky, rel=2e-3)
    assert lr.var() == pytest.approx(sky / gain + read**2 / gain**2, rel=0.03)


def test_every_linear_pair_bins_back_exactly():
    # Defects, resampling and empty borders all keep bin(HR) == LR.
    cfg = physical(defect_prob=1.0, resample_prob=1.0, border_prob=1.0, galaxy_prob=1.0)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        kw = sample_sim_kwargs(rng, cfg.sim)
        lr, hr = fwd.sim_scene(cfg, rng, (40, 40), kw)
        assert np.array_equal(area_downsample(hr, 4), lr)
        lr2, hr2 = fwd.finish_pair(lr, hr, 4, cfg.forward, rng)
        assert lr2.shape[-1] * 4 == hr2.shape[-1]
        np.testing.assert_allclose(area_downsample(hr2, 4), lr2, rtol=1e-12, atol=1e-9)


def test_defects_are_whole_lr_pixels():
    cfg = physical(dead_pixels=(0.01, 0.01), hot_pixels=(0.0, 0.0), bad_column_prob=0.0)
    cfg.forward.cosmic_rays = 0.0
    hr = np.full((1, 160, 160), 500.0)
    out = fwd.add_detector_defects(hr, 4, cfg.forward, 10.0, 0.0, 6e4, np.random.default_rng(1))
    lr = area_downsample(out, 4)
    dead = lr[0] == 0.0
    assert 5 <= dead.sum() <= 35  # 1 % of 1600 LR pixels
    blocks = np.repeat(np.repeat(dead, 4, 0), 4, 1)
    assert np.all(out[0][blocks] == 0.0) and np.all(out[0][~blocks] == 500.0)


def test_spike_kernel_keeps_the_flux_and_the_centre():
    k = fwd.spike_kernel(12.0, 0.3, 0.02)
    assert k.sum() == pytest.approx(1.0)
    c = k.shape[0] // 2
    assert k[c, c] == pytest.approx(0.98)
    assert np.count_nonzero(k) > 20


def test_sim_pairs_carry_the_conditioning_channels():
    cfg = physical(display_prob=0.0)
    p = sim_pair(cfg, np.random.default_rng(2), (48, 48))
    assert p.lr.shape == (5, 48, 48) and p.image.shape == (3, 48, 48)
    assert np.all(p.lr[4] == 1.0) and np.all(p.lr[3] > 0)
    assert p.hr.shape == (3, 192, 192)


def test_display_pairs_are_8_bit_pictures_flagged_as_such():
    cfg = physical(display_prob=1.0, jpeg_prob=0.0, display_gain=(1.5, 1.5))
    p = sim_pair(cfg, np.random.default_rng(3), (48, 48))
    assert p.name.endswith("-8bit") and p.stretch.kind == "none"
    assert np.all(p.lr[4] == 0.0)
    hr = p.hr * 255.0
    np.testing.assert_allclose(hr, np.round(hr), atol=1e-3)  # 8-bit levels
    assert (p.hr >= 1.0).any()  # brightened: some star cores clip


def test_real_pairs_are_binned_not_renoised(tmp_path):
    from astrosleuth_astro.train import degradations as deg
    from astrosleuth_astro.train.data import RealSource

    rng = np.random.default_rng(4)
    img = rng.normal(100.0, 3.0, (1, 256, 256))
    src = RealSource("noise", img, True, deg.image_stats(img), 256)
    cfg = physical(defect_prob=0.0, resample_prob=0.0, border_prob=0.0)
    cfg.model.num_cond_ch = 0
    p = real_pair(cfg, src, rng, (128, 128), origin=(0, 0))
    lin_lr = p.stretch.inverse(p.image[:1], dtype=np.float64)[0]
    want = area_downsample(img[:, :128, :128], 4)[0]
    inside = (p.image[0] > 0) & (p.image[0] < 1)  # where the stretch does not clip
    assert inside.mean() > 0.9
    np.testing.assert_allclose(lin_lr[inside], want[inside], rtol=1e-5)


def test_smooth_target_holds_the_lr_noise_bilinearly_interpolated():
    # A flat, empty sky: the clean scene is constant, so the "smooth" target is exactly
    # the bilinear upsampling of the noisy LR (no sub-pixel noise to predict), while the
    # "observed" target is the fine detector's frame, whose sub-pixel noise is unpredictable.
    from astrosleuth_astro.resample import upsample_bilinear

    cfg = physical(defect_prob=0.0, pedestal_prob=0.0, galaxy_prob=0.0)
    for key in ("elongation_prob", "coma_prob", "spike_prob"):
        setattr(cfg.forward, key, 0.0)
    kw = {
        "channels": 1, "psf": "moffat", "fwhm": 2.0, "beta": 3.0, "density": 0.0,
        "flux_index": 1.8, "flux_range": (10.0, 100.0), "background": 500.0,
        "gradient": 0.0, "nebulosity": 0.0, "read_noise": 5.0, "gain": 1.0,
        "saturation": 6e4, "hot_pixels": 0.0, "wcs": False,
    }  # fmt: skip
    outs = {}
    for mode in ("smooth", "observed"):
        cfg.forward.target_noise = mode
        outs[mode] = fwd.sim_scene(cfg, np.random.default_rng(5), (32, 32), kw)
    lr, target = outs["smooth"]
    np.testing.assert_allclose(target, upsample_bilinear(lr, 4), rtol=1e-6)
    lr_o, target_o = outs["observed"]
    np.testing.assert_array_equal(lr_o, lr)  # the same observation either way
    assert np.std(target_o - upsample_bilinear(lr, 4)) > 5 * np.std(
        target - upsample_bilinear(lr, 4)
    )
