"""Star protection: shadows and splits repaired, nothing outside the star mask touched.

Protection is tested alone (``conserve_flux="off"``): the default consistency step, which
runs after it, changes every footprint that is off its input.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.metrics import measure
from astrosleuth_astro.pipeline import upscale_array
from astrosleuth_astro.resample import upsample_bilinear
from astrosleuth_astro.stars import detect_stars, star_mask

from ..metrics.test_metrics import grid_field


def ringing_net(amount: float = 0.3, sigma: float = 10.0):
    """A stand-in "network" that leaves FAST-like dark rings: bilinear x4 plus an unsharp
    mask. The stand-ins are run with ``stretch="none", conserve_flux="off"`` so that what they do to a star is
    simple in linear units (an autostretch flattens bright cores)."""

    def net(batch: np.ndarray) -> np.ndarray:
        up = upsample_bilinear(batch, 4)
        blur = ndimage.gaussian_filter(up, (0, 0, sigma, sigma), mode="nearest")
        return np.clip(up + amount * (up - blur), 0.0, 1.0).astype(np.float32)

    return net


def doubling_net(offset: int = 6):
    """A stand-in "network" that splits every star in two: the mean of two copies of the
    bilinear upsampling shifted by +-``offset`` output pixels horizontally."""

    def net(batch: np.ndarray) -> np.ndarray:
        up = upsample_bilinear(batch, 4)
        left = np.pad(up, ((0, 0), (0, 0), (0, 0), (offset, 0)), mode="edge")[..., :-offset]
        right = np.pad(up, ((0, 0), (0, 0), (0, 0), (0, offset)), mode="edge")[..., offset:]
        return (0.5 * (left + right)).astype(np.float32)

    return net


@pytest.fixture(scope="module")
def field():
    hr, lr, *_ = grid_field(n=3, spacing=40, flux=4e4, seed=3)
    return hr, lr, detect_stars(lr)


def test_protection_removes_shadows_and_touches_nothing_else(field):
    _, lr, det = field
    net = ringing_net()
    plain = upscale_array(lr, net, scale=4, tile=48, stretch="none", conserve_flux="off").data
    prot = upscale_array(
        lr, net, scale=4, tile=48, stretch="none", conserve_flux="off", protect_stars=True
    ).data
    before = measure(lr, plain, lr_detection=det).summary
    after = measure(lr, prot, lr_detection=det).summary
    assert before["shadow_depth_sigma_median"] > 2.0  # the stand-in does make shadows
    assert after["shadow_depth_sigma_median"] < 0.5 * before["shadow_depth_sigma_median"]
    assert after["shadow_depth_sigma_median"] < 1.0
    assert abs(after["flux_ratio_median"] - 1.0) <= abs(before["flux_ratio_median"] - 1.0) + 0.005
    mask = star_mask(det, scale=4)
    assert (plain != prot).any()
    np.testing.assert_array_equal(prot[~mask], plain[~mask])  # bit-identical outside
    assert not mask.all() and mask.mean() < 0.5


def test_protection_keeps_one_peak(field):
    _, lr, det = field
    net = doubling_net()
    plain = upscale_array(lr, net, scale=4, tile=64, stretch="none", conserve_flux="off").data
    prot = upscale_array(
        lr, net, scale=4, tile=64, stretch="none", conserve_flux="off", protect_stars=True
    ).data
    before = measure(lr, plain, lr_detection=det).summary
    after = measure(lr, prot, lr_detection=det).summary
    assert before["split_fraction"] > 0.5
    assert after["split_fraction"] == 0.0
    assert after["flux_ratio_median"] == pytest.approx(1.0, abs=0.03)


def test_rgb_tiling_and_scales(field):
    _, lr, _ = field
    rgb = np.stack([lr, 0.8 * lr + 50, 1.2 * lr - 50]).astype(np.float32)
    net = ringing_net()
    whole = upscale_array(rgb, net, scale=4, tile=512, protect_stars=True, conserve_flux="off").data
    tiled = upscale_array(rgb, net, scale=4, tile=40, protect_stars=True, conserve_flux="off").data
    assert whole.shape == (3, 480, 480)
    # The stand-in is local (the tiles' context covers it), and stars are detected once on
    # the whole input, so tiling does not change the protected result.
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)
    det = detect_stars(rgb)
    for scale in (2, 3):
        plain = upscale_array(rgb, net, scale=scale, tile=64, conserve_flux="off").data
        prot = upscale_array(
            rgb, net, scale=scale, tile=64, protect_stars=True, conserve_flux="off"
        ).data
        mask = star_mask(det, scale=scale)
        assert (plain != prot).any()
        np.testing.assert_array_equal(prot[:, ~mask], plain[:, ~mask])


def test_strength_zero_is_off_and_bad_strength_is_refused(field):
    _, lr, det = field
    net = ringing_net()
    kw = dict(scale=4, tile=64, stretch="none", conserve_flux="off")
    plain = upscale_array(lr, net, **kw).data
    off = upscale_array(lr, net, protect_stars=True, protect_strength=0.0, **kw).data
    np.testing.assert_array_equal(off, plain)
    half = upscale_array(lr, net, protect_stars=True, protect_strength=0.5, **kw).data
    full = upscale_array(lr, net, protect_stars=True, **kw).data
    depth = [
        measure(lr, x, lr_detection=det).summary["shadow_depth_sigma_median"]
        for x in (plain, half, full)
    ]
    assert depth[0] > depth[1] > depth[2]
    with pytest.raises(InputError, match="protect_strength=1.5"):
        upscale_array(lr, net, scale=4, protect_stars=True, protect_strength=1.5)


def test_no_stars_means_no_change():
    rng = np.random.default_rng(0)
    sky = (1000.0 + rng.normal(0.0, 10.0, (40, 40))).astype(np.float32)
    net = ringing_net()
    plain = upscale_array(sky, net, scale=4).data
    prot = upscale_array(sky, net, scale=4, protect_stars=True).data
    np.testing.assert_array_equal(prot, plain)


def test_api_and_cli_plumbing(tiny_fast_model, tmp_path):
    from astropy.io import fits

    import astrosleuth_astro as asa
    from astrosleuth_astro.cli import main

    from ..conftest import write_sim_fits

    src = write_sim_fits(tmp_path / "in.fits", shape=(40, 40))
    data = fits.getdata(src).astype(np.float32)
    a = asa.upscale(
        data, model=str(tiny_fast_model), backend="torch", protect_stars=True, conserve_flux="off"
    )
    b = asa.upscale(data, model=str(tiny_fast_model), backend="torch", conserve_flux="off")
    mask = star_mask(data, scale=4)
    np.testing.assert_array_equal(a[~mask], b[~mask])
    out = tmp_path / "out.fits"
    rc = main(
        [
            "upscale",
            str(src),
            "-o",
            str(out),
            "--model",
            str(tiny_fast_model),
            "--backend",
            "torch",
            "--quiet",
            "--protect-stars",
            "--protect-strength",
            "0.7",
        ]
    )
    assert rc == 0 and fits.getdata(out).shape == (160, 160)
    rc = main(
        [
            "upscale",
            str(src),
            "-o",
            str(tmp_path / "x.fits"),
            "--model",
            str(tiny_fast_model),
            "--protect-stars",
            "--protect-strength",
            "2",
        ]
    )
    assert rc == 2 and not (tmp_path / "x.fits").exists()


def test_stage_callback_names_the_star_stages_in_order(field):
    _, lr, _ = field
    seen: list[str] = []
    upscale_array(
        lr, ringing_net(), scale=4, tile=48, stretch="none", conserve_flux="off", stage=seen.append
    )
    assert seen == ["upscaling"]
    seen.clear()
    upscale_array(
        lr,
        ringing_net(),
        scale=4,
        tile=48,
        stretch="none",
        conserve_flux="off",
        protect_stars=True,
        stage=seen.append,
    )
    assert seen == ["detecting stars", "upscaling", "repairing stars"]
    from astrosleuth_astro.pipeline import STAGES

    assert tuple(seen) == STAGES
