"""The trainer's degradation pipeline produces what its config says, measured on its output.

Every test draws the parameters from a :class:`DegradationConfig` (degenerate ranges
``[x, x]`` where a value must be known) through :func:`sample_params`, runs the real
pipeline (:func:`degrade_linear` / :func:`degrade_display` / :func:`real_pair`) and
measures the LR output: star FWHM by a pixel-integrated Moffat fit, star second moments,
noise standard deviation, hot/cold pixel counts, JPEG error. Units: lengths in LR pixels,
image values in ADU (linear) or [0, 1] (display-referred).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import least_squares

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.sim import add_noise, area_downsample
from astrosleuth_astro.train import degradations as deg
from astrosleuth_astro.train.config import Config, DegradationConfig, from_dict

SCALE = 4
#: Star grid: one star every ``STEP`` LR pixels, so stamps of radius ``STAMP`` never overlap.
STEP = 16
STAMP = 7


def quiet_cfg(**kw) -> DegradationConfig:
    """A config with a flat 100 ADU sky, bright-star friendly low noise and nothing random.

    ``gain`` 100 e-/ADU and 1 e- read noise make the noise negligible for the moments of
    1e6 ADU stars; no hot pixels, no Moffat blur unless asked.
    """
    base = {
        "blur_prob": 0.0,
        "background": (100.0, 100.0),
        "gradient": (0.0, 0.0),
        "saturation": 1e12,
        "gain": (100.0, 100.0),
        "read_noise": (1.0, 1.0),
        "hot_pixels": (0.0, 0.0),
    }
    base.update(kw)
    return DegradationConfig(**base)


def star_field_hr(
    n: int, sigma_lr: float, flux: float, sky: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """HR ``(1, n*STEP*SCALE, ...)`` image of Gaussian stars (sigma in LR px) on a grid.

    Returns the image (ADU per HR pixel; a star's LR sum is ``flux``) and the LR star
    positions ``(k, 2)`` as (x, y), with random sub-pixel offsets.
    """
    side = n * STEP * SCALE
    img = np.full((1, side, side), float(sky))
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    pos = []
    s_hr = sigma_lr * SCALE
    for j in range(n):
        for i in range(n):
            x_lr = (i + 0.5) * STEP + rng.uniform(-0.5, 0.5)
            y_lr = (j + 0.5) * STEP + rng.uniform(-0.5, 0.5)
            cx, cy = (x_lr + 0.5) * SCALE - 0.5, (y_lr + 0.5) * SCALE - 0.5
            g = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / s_hr**2)
            img[0] += flux * SCALE**2 * g / g.sum()
            pos.append((x_lr, y_lr))
    return img, np.array(pos)


def star_moments(lr: np.ndarray, pos: np.ndarray, sky: float) -> np.ndarray:
    """Per star: flux, centroid x, y and central second moments (xx, yy, xy) in LR px."""
    out = []
    yy, xx = np.mgrid[-STAMP : STAMP + 1, -STAMP : STAMP + 1].astype(np.float64)
    for x, y in pos:
        ix, iy = int(round(x)), int(round(y))
        st = lr[0, iy - STAMP : iy + STAMP + 1, ix - STAMP : ix + STAMP + 1] - sky
        f = st.sum()
        cx, cy = (st * xx).sum() / f, (st * yy).sum() / f
        mxx = (st * (xx - cx) ** 2).sum() / f
        myy = (st * (yy - cy) ** 2).sum() / f
        mxy = (st * (xx - cx) * (yy - cy)).sum() / f
        out.append((f, ix + cx, iy + cy, mxx, myy, mxy))
    return np.array(out)


def principal(mxx: float, myy: float, mxy: float) -> tuple[float, float, float]:
    """Major and minor second moments and the major-axis angle (radians, mod pi)."""
    cov = np.array([[mxx, mxy], [mxy, myy]])
    w, v = np.linalg.eigh(cov)
    return float(w[1]), float(w[0]), float(np.arctan2(v[1, 1], v[0, 1]) % np.pi)


def angle_diff(a: float, b: float) -> float:
    """Distance of two axis angles modulo pi, radians."""
    d = (a - b) % np.pi
    return float(min(d, np.pi - d))


def measure(cfg: DegradationConfig, seed: int = 0, sigma: float = 1.0):
    """Run the linear pipeline on a 4x4 star grid; return (params, moments, flux)."""
    rng = np.random.default_rng(seed)
    p = deg.sample_params(rng, cfg)
    hr, pos = star_field_hr(4, sigma, 1e6, 100.0, np.random.default_rng(seed + 1))
    lr = deg.degrade_linear(hr, SCALE, p, rng)
    return p, star_moments(lr, pos, 100.0), pos


#: Second moment (LR px^2) of the star grid without extra blur: the Gaussian star plus the
#: area-downsampling box of ``SCALE`` HR samples, ``(SCALE**2 - 1) / (12 SCALE**2)``.
BASE_VAR = 1.0 + (SCALE**2 - 1) / (12 * SCALE**2)
#: Allowed error of a measured second moment: 3 % plus 0.03 LR px^2 (the kernels'
#: bilinear splatting and pixel integration add up to 1/4 HR px^2 = 0.016 LR px^2).
REL, ABS = 0.03, 0.03


def close(measured: float, expected: float) -> bool:
    return abs(measured - expected) <= REL * expected + ABS


# -- blur kernels ---------------------------------------------------------------------------


def moffat_pixel_model(params, shape, oversample=8):
    """Pixel-integrated Moffat (flux, x0, y0, fwhm, beta) plus a constant sky."""
    flux, x0, y0, fwhm, beta, sky = params
    h, w = shape
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    ys = (np.arange(h)[:, None] + sub[None, :]).ravel()
    xs = (np.arange(w)[:, None] + sub[None, :]).ravel()
    a = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r2 = (xs[None, :] - x0) ** 2 + (ys[:, None] - y0) ** 2
    prof = (beta - 1.0) / (np.pi * a * a) * (1.0 + r2 / (a * a)) ** (-beta)
    prof = prof.reshape(h, oversample, w, oversample).mean(axis=(1, 3))
    return flux * prof + sky


@pytest.mark.parametrize("fwhm,beta", [(1.5, 3.0), (2.5, 4.0)])
def test_moffat_seeing_fwhm_measured_on_output(fwhm, beta):
    """Point sources blurred by ``blur_fwhm`` (LR px): a Moffat fit to the LR stars gives it.

    The HR stars are single HR pixels, so the LR star is the seeing PSF integrated over
    the LR pixel; the fit integrates its model over pixels too and must find the
    configured FWHM within 4 %.
    """
    cfg = quiet_cfg(blur_prob=1.0, blur_fwhm=(fwhm, fwhm), blur_beta=(beta, beta))
    rng = np.random.default_rng(3)
    p = deg.sample_params(rng, cfg)
    assert p.blur_fwhm == pytest.approx(fwhm) and p.blur_beta == pytest.approx(beta)
    n, side = 3, 3 * 24
    hr = np.full((1, side * SCALE, side * SCALE), 100.0)
    centres = []
    for j in range(n):
        for i in range(n):
            hy, hx = (j * 24 + 12) * SCALE + 1, (i * 24 + 12) * SCALE + 2
            hr[0, hy, hx] += 1e6 * SCALE**2
            centres.append(((hx + 0.5) / SCALE - 0.5, (hy + 0.5) / SCALE - 0.5))
    lr = deg.degrade_linear(hr, SCALE, p, rng)
    fits = []
    for cx, cy in centres:
        ix, iy = int(round(cx)), int(round(cy))
        r = 9
        st = lr[0, iy - r : iy + r + 1, ix - r : ix + r + 1]
        x0 = [st.sum() - 100.0 * st.size, cx - ix + r, cy - iy + r, 2.0, 3.0, 100.0]
        res = least_squares(
            lambda q, st=st: (moffat_pixel_model(q, st.shape) - st).ravel(),
            x0,
            bounds=([0, 0, 0, 0.3, 1.2, -1e4], [np.inf, 2 * r, 2 * r, 10, 20, 1e4]),
        )
        fits.append(res.x[3])
    measured = float(np.median(fits))
    print(f"Moffat blur FWHM {fwhm} LR px (beta {beta}): measured {measured:.3f}")
    assert measured == pytest.approx(fwhm, rel=0.04)


def test_no_blur_keeps_the_star_moments():
    """Baseline: without extra blur the LR stars have the HR star plus the pixel box."""
    _, m, pos = measure(quiet_cfg())
    assert close(np.median(m[:, 3]), BASE_VAR) and close(np.median(m[:, 4]), BASE_VAR)
    np.testing.assert_allclose(m[:, 1:3], pos, atol=0.02)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)


@pytest.mark.parametrize("length", [1.0, 2.0])
def test_motion_blur_elongates_along_its_angle(length):
    """A straight path of L LR px adds L**2/12 along the drawn angle and nothing across."""
    p, m, pos = measure(quiet_cfg(motion_prob=1.0, motion_length=(length, length)))
    assert p.motion_length == pytest.approx(length) and p.motion_jitter_seed is None
    major, minor, ang = principal(*np.median(m[:, 3:6], axis=0))
    print(
        f"motion L={length}: d(major)={major - BASE_VAR:.4f} (expect {length**2 / 12:.4f}), "
        f"d(minor)={minor - BASE_VAR:.4f}, angle {np.degrees(ang):.1f} "
        f"(drawn {np.degrees(p.motion_angle):.1f}) deg"
    )
    assert close(major, BASE_VAR + length**2 / 12)
    assert close(minor, BASE_VAR)
    assert angle_diff(ang, p.motion_angle) < np.radians(3.0)
    # Centred kernel: stars keep their positions and their flux.
    np.testing.assert_allclose(m[:, 1:3], pos, atol=0.02)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)


def test_jitter_path_keeps_flux_and_position():
    """A random-walk path is a normalised, centred kernel, more compact than the line."""
    cfg = quiet_cfg(motion_prob=1.0, motion_length=(3.0, 3.0), motion_jitter_prob=1.0)
    p, m, pos = measure(cfg)
    assert p.motion_jitter_seed is not None
    k = deg.motion_kernel(3.0 * SCALE, p.motion_angle, p.motion_jitter_seed)
    assert k.sum() == pytest.approx(1.0) and k.min() >= 0
    added = np.median(m[:, 3] + m[:, 4]) - 2 * BASE_VAR
    # Something was blurred, and a curled path spreads less than the straight line.
    assert 0.02 < added < 3.0**2 / 12 + ABS
    np.testing.assert_allclose(m[:, 1:3], pos, atol=0.02)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)


@pytest.mark.parametrize("radius,obstruction", [(1.0, 0.0), (1.5, 0.35)])
def test_defocus_disk_keeps_flux_and_spreads_as_a_disk(radius, obstruction):
    """Disk of radius R (annulus with obstruction e) adds R**2 (1 + e**2) / 4 per axis."""
    cfg = quiet_cfg(
        defocus_prob=1.0,
        defocus_radius=(radius, radius),
        defocus_obstruction=(obstruction, obstruction),
    )
    k = deg.defocus_kernel(radius * SCALE, obstruction)
    assert k.sum() == pytest.approx(1.0, abs=1e-12) and k.min() >= 0
    if obstruction > 0:  # the central obstruction leaves a dark centre
        c = k.shape[0] // 2
        assert k[c, c] < 0.1 * k.max()
    p, m, pos = measure(cfg)
    expected = radius**2 * (1 + obstruction**2) / 4
    mxx, myy = np.median(m[:, 3]), np.median(m[:, 4])
    print(
        f"defocus R={radius} e={obstruction}: d(var) x {mxx - BASE_VAR:.4f}, "
        f"y {myy - BASE_VAR:.4f} (expect {expected:.4f})"
    )
    assert close(mxx, BASE_VAR + expected) and close(myy, BASE_VAR + expected)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)  # flux kept
    np.testing.assert_allclose(m[:, 1:3], pos, atol=0.02)


def test_astigmatism_is_an_elliptical_blur_at_the_drawn_angle():
    """Major/minor added moments are (fwhm/2.355)**2 and (ratio*fwhm/2.355)**2."""
    fwhm, ratio = 1.2, 0.4
    cfg = quiet_cfg(astig_prob=1.0, astig_fwhm=(fwhm, fwhm), astig_ratio=(ratio, ratio))
    p, m, _ = measure(cfg, seed=5)
    major, minor, ang = principal(*np.median(m[:, 3:6], axis=0))
    s1 = fwhm / deg.FWHM_PER_SIGMA
    print(
        f"astigmatism: d(major) {major - BASE_VAR:.4f} (expect {s1**2:.4f}), "
        f"d(minor) {minor - BASE_VAR:.4f} (expect {(ratio * s1) ** 2:.4f})"
    )
    assert close(major, BASE_VAR + s1**2) and close(minor, BASE_VAR + (ratio * s1) ** 2)
    assert angle_diff(ang, p.astig_angle) < np.radians(3.0)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)


def test_coma_adds_a_one_sided_tail_without_moving_the_star():
    """Geometric coma of tail length L: moments L**2/18 along, L**2/54 across, skewed."""
    length = 2.4
    cfg = quiet_cfg(coma_prob=1.0, coma_length=(length, length))
    rng = np.random.default_rng(0)
    p = deg.sample_params(rng, cfg)
    hr, pos = star_field_hr(4, 0.7, 1e6, 100.0, np.random.default_rng(1))
    lr = deg.degrade_linear(hr, SCALE, p, rng)
    m = star_moments(lr, pos, 100.0)
    base = 0.7**2 + (SCALE**2 - 1) / (12 * SCALE**2)
    ca, sa = np.cos(p.coma_angle), np.sin(p.coma_angle)
    along = np.median(m[:, 3] * ca**2 + m[:, 4] * sa**2 + 2 * m[:, 5] * ca * sa)
    across = np.median(m[:, 3] * sa**2 + m[:, 4] * ca**2 - 2 * m[:, 5] * ca * sa)
    print(
        f"coma L={length}: d(along) {along - base:.4f} (expect {length**2 / 18:.4f}), "
        f"d(across) {across - base:.4f} (expect {length**2 / 54:.4f})"
    )
    assert close(along, base + length**2 / 18) and close(across, base + length**2 / 54)
    # Third moment along the tail direction is positive (the tail), across it ~0.
    yy, xx = np.mgrid[-STAMP : STAMP + 1, -STAMP : STAMP + 1].astype(np.float64)
    skews = []
    for f, cx, cy, *_ in m:
        ix, iy = int(round(cx)), int(round(cy))
        st = lr[0, iy - STAMP : iy + STAMP + 1, ix - STAMP : ix + STAMP + 1] - 100.0
        u = (xx + ix - cx) * ca + (yy + iy - cy) * sa
        v = -(xx + ix - cx) * sa + (yy + iy - cy) * ca
        skews.append(((st * u**3).sum() / f, (st * v**3).sum() / f))
    s_along, s_across = np.median(skews, axis=0)
    assert s_along > 0.02 and abs(s_across) < 0.25 * s_along
    np.testing.assert_allclose(m[:, 1:3], pos, atol=0.02)
    np.testing.assert_allclose(m[:, 0], 1e6, rtol=2e-3)


def test_kernels_compose_by_kernel_convolution():
    """One combined kernel equals blurring with each kernel in turn (away from the edges)."""
    p = deg.DegradeParams(
        *([0.0] * 12),
        motion_length=1.0,
        motion_angle=0.4,
        defocus_radius=0.8,
        defocus_obstruction=0.3,
        astig_fwhm=0.6,
        astig_ratio=0.5,
        astig_angle=1.0,
    )
    k = deg.combined_kernel(SCALE, p)
    assert k.shape[0] % 2 == 1 and k.sum() == pytest.approx(1.0)
    img = np.random.default_rng(0).random((1, 96, 96))
    one = deg.blur_hr(img, SCALE, p)
    seq = img
    for kk in (
        deg.motion_kernel(4.0, 0.4),
        deg.defocus_kernel(3.2, 0.3),
        deg.astigmatism_kernel(2.4, 0.5, 1.0),
    ):
        seq = deg.convolve_reflect(seq, kk)
    c = k.shape[0]
    np.testing.assert_allclose(one[:, c:-c, c:-c], seq[:, c:-c, c:-c], atol=1e-10)
    assert deg.combined_kernel(SCALE, deg.fixed_params(DegradationConfig())) is None


# -- detector effects -------------------------------------------------------------------------


@pytest.mark.parametrize("level,gain,read", [(1000.0, 2.0, 10.0), (400.0, 0.5, 4.0)])
def test_noise_level_on_a_flat_field(level, gain, read):
    """Flat sky of B ADU, gain g e-/ADU, read noise r e-: std = sqrt(B g + r**2) / g ADU.

    256x256 LR pixels measure the std to ~0.5 %; the tolerance is 3 %. (Read noise in
    ADU, ``sqrt(B/g + r**2)``, would be 7 % off in the first case.)
    """
    cfg = quiet_cfg(gain=(gain, gain), read_noise=(read, read), blur_prob=1.0)
    rng = np.random.default_rng(11)
    p = deg.sample_params(rng, cfg)
    hr = np.full((1, 256 * SCALE, 256 * SCALE), level)
    lr = deg.degrade_linear(hr, SCALE, p, rng)
    expected = np.sqrt(level * gain + read**2) / gain
    print(f"flat {level} ADU, g={gain}, r={read} e-: std {lr.std():.3f} (expect {expected:.3f})")
    assert lr.std() == pytest.approx(expected, rel=0.03)
    assert lr.mean() == pytest.approx(level, abs=5 * expected / 256)


def test_hot_and_cold_pixel_fractions():
    """Counted hot (>= 10 % of full well) and cold (<= 20 % of the sky) positions match."""
    hot, cold = 0.01, 0.02
    cfg = quiet_cfg(
        gain=(1.0, 1.0),
        read_noise=(5.0, 5.0),
        saturation=65000.0,
        hot_pixels=(hot, hot),
        cold_pixels=(cold, cold),
    )
    rng = np.random.default_rng(2)
    p = deg.sample_params(rng, cfg)
    assert p.hot_pixels == pytest.approx(hot) and p.cold_pixels == pytest.approx(cold)
    b = 1000.0
    lr = deg.degrade_linear(np.full((3, 512, 512), b), SCALE, p, rng)
    n = lr.shape[1] * lr.shape[2]
    n_hot = int((lr[0] > 3000).sum())
    n_cold = int((lr[0] < b / 2).sum())
    print(f"hot {n_hot / n:.4f} (expect {hot}), cold {n_cold / n:.4f} (expect {cold})")
    # Binomial counts: 5 sigma (the cold positions that later turn hot are negligible).
    assert abs(n_hot - hot * n) < 5 * np.sqrt(hot * n)
    assert abs(n_cold - cold * n) < 5 * np.sqrt(cold * n)
    # A defective position is defective in every channel.
    assert ((lr < b / 2).any(axis=0) == (lr < b / 2).all(axis=0)).all()
    # Cold pixels keep 0-20 % of the signal, plus read noise.
    assert lr[0][lr[0] < b / 2].max() < 0.2 * b + 6 * 5.0


# -- JPEG --------------------------------------------------------------------------------------


def display_image(rng: np.random.Generator) -> np.ndarray:
    """An RGB display-referred HR scene in [0, 1]: a smooth gradient plus stars."""
    side = 64 * SCALE
    yy, xx = np.mgrid[0:side, 0:side] / side
    img = np.stack([0.1 + 0.2 * xx, 0.1 + 0.2 * yy, 0.15 + 0.1 * xx * yy])
    for _ in range(40):
        cx, cy = rng.uniform(8, side - 8, 2)
        g = np.exp(-0.5 * ((xx * side - cx) ** 2 + (yy * side - cy) ** 2) / 9.0)
        img = img + rng.uniform(0.2, 0.8) * g[None]
    return np.clip(img, 0.0, 1.0)


def test_jpeg_error_grows_as_quality_drops():
    """Display sources: JPEG puts values on the 8-bit grid, error falls with quality."""
    hr = display_image(np.random.default_rng(0))
    off = quiet_cfg(display_noise=(0.01, 0.01))
    p0 = deg.sample_params(np.random.default_rng(1), off)
    ref = deg.degrade_display(hr, SCALE, p0, np.random.default_rng(2))
    errs = {}
    for q in (20, 50, 90):
        cfg = dataclasses.replace(off, jpeg_prob=1.0, jpeg_quality=(q, q))
        p = deg.sample_params(np.random.default_rng(1), cfg)
        assert p.jpeg_quality == q
        lr = deg.degrade_display(hr, SCALE, p, np.random.default_rng(2))
        np.testing.assert_allclose(lr * 255, np.rint(lr * 255), atol=1e-9)
        errs[q] = float(np.sqrt(np.mean((lr - ref) ** 2)))
    print("JPEG rms change (1/255 units):", {q: round(e * 255, 2) for q, e in errs.items()})
    # Rounding to 8 bits alone gives 1/sqrt(12)/255; every quality changes more than that.
    assert errs[20] > errs[50] > errs[90] > 0.35 / 255


def test_jpeg_never_touches_linear_sources():
    """The same draw with a JPEG quality gives the identical linear LR image."""
    hr = np.full((1, 64, 64), 500.0)
    hr[0, 30:34, 30:34] += 2e4
    p = deg.sample_params(np.random.default_rng(0), quiet_cfg(jpeg_prob=1.0))
    assert p.jpeg_quality > 0
    a = deg.degrade_linear(hr, SCALE, p, np.random.default_rng(1))
    b = deg.degrade_linear(
        hr, SCALE, dataclasses.replace(p, jpeg_quality=0), np.random.default_rng(1)
    )
    np.testing.assert_array_equal(a, b)
    assert np.abs(a * 255 - np.rint(a * 255)).max() > 0.1  # not on an 8-bit grid


def test_real_pair_applies_jpeg_to_display_sources_only():
    """Through the data module: 8-bit grid for a display source, not for a linear one."""
    from astrosleuth_astro.train.data import RealSource, real_pair

    cfg = Config()
    cfg.degradations.jpeg_prob = 1.0
    cfg.degradations.jpeg_quality = (40.0, 40.0)
    cfg.degradations.display_noise = (0.0, 0.0)
    rng = np.random.default_rng(0)
    disp = display_image(rng)
    src_d = RealSource("d", disp, False, deg.ImageStats(np.zeros(3), {}), disp.shape[-1])
    lin = disp * 1e4 + rng.normal(0, 50, disp.shape)
    src_l = RealSource("l", lin, True, deg.image_stats(lin), lin.shape[-1])
    pd = real_pair(cfg, src_d, np.random.default_rng(1), (128, 128))
    pl = real_pair(cfg, src_l, np.random.default_rng(1), (128, 128))
    assert np.abs(pd.lr * 255 - np.rint(pd.lr * 255)).max() < 1e-3  # float32 of k/255
    assert np.abs(pl.lr * 255 - np.rint(pl.lr * 255)).max() > 0.1


# -- defaults and config ------------------------------------------------------------------------


def test_defaults_draw_nothing_new_and_match_the_original_chain():
    """New degradations are off by default, draw no random numbers, change no pixel."""
    cfg = DegradationConfig()
    ra, rb = np.random.default_rng(4), np.random.default_rng(4)
    pa = deg.sample_params(ra, cfg)
    other = dataclasses.replace(
        cfg, motion_length=(5.0, 6.0), defocus_radius=(2.0, 3.0), jpeg_quality=(10.0, 20.0)
    )
    deg.sample_params(rb, other)
    assert ra.random() == rb.random()  # the unused ranges were not drawn
    # ... and exactly the draws of the original parameter set were made, in order.
    ref = np.random.default_rng(4)
    ref.random()  # blur_prob
    for key in ("blur_fwhm", "blur_beta", "background", "gradient"):
        if key != "blur_fwhm" or pa.blur_fwhm > 0:
            deg.draw(ref, getattr(cfg, key), key)
    ref.uniform(0.0, 2.0 * np.pi)
    deg.draw(ref, cfg.peak, "peak")
    ref.choice(deg.PEAK_QUANTILES)
    for key in ("gain", "read_noise", "hot_pixels", "display_noise"):
        deg.draw(ref, getattr(cfg, key), key)
    ra2 = np.random.default_rng(4)
    deg.sample_params(ra2, cfg)
    assert ra2.random() == ref.random()
    assert (pa.motion_length, pa.defocus_radius, pa.astig_fwhm, pa.coma_length) == (0, 0, 0, 0)
    assert pa.cold_pixels == 0 and pa.jpeg_quality == 0 and pa.motion_jitter_seed is None
    # The chain of the first shipped models: Moffat blur, area, noise, hot pixels, clip.
    pa.blur_fwhm = 0.7
    hr = np.random.default_rng(5).uniform(500, 5000, (1, 64, 64))
    got = deg.degrade_linear(hr, SCALE, pa, np.random.default_rng(6))
    r = np.random.default_rng(6)
    x = area_downsample(deg.moffat_blur(hr, pa.blur_fwhm * SCALE, pa.blur_beta), SCALE)
    x = add_noise(x, pa.gain, pa.read_noise, r)
    x = np.clip(deg.add_hot_pixels(x, pa.hot_pixels, pa.saturation, r), 0, pa.saturation)
    np.testing.assert_array_equal(got, x)


def test_fixed_params_ignore_the_new_degradations():
    """Validation pairs stay the same whatever the optional degradations are set to."""
    on = DegradationConfig(
        motion_prob=1.0,
        defocus_prob=1.0,
        astig_prob=1.0,
        coma_prob=1.0,
        cold_pixels=(1e-3, 1e-2),
        jpeg_prob=1.0,
    )
    assert deg.fixed_params(on) == deg.fixed_params(DegradationConfig())
    assert deg.combined_kernel(SCALE, deg.fixed_params(on)) is None


def test_sample_params_draws_within_the_ranges():
    cfg = DegradationConfig(
        motion_prob=1.0,
        defocus_prob=1.0,
        astig_prob=1.0,
        coma_prob=1.0,
        cold_pixels=(1e-5, 1e-3),
        jpeg_prob=1.0,
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = deg.sample_params(rng, cfg)
        assert cfg.motion_length[0] <= p.motion_length <= cfg.motion_length[1]
        assert cfg.defocus_radius[0] <= p.defocus_radius <= cfg.defocus_radius[1]
        lo, hi = cfg.defocus_obstruction
        assert lo <= p.defocus_obstruction <= hi
        assert cfg.astig_ratio[0] <= p.astig_ratio <= cfg.astig_ratio[1]
        assert cfg.coma_length[0] <= p.coma_length <= cfg.coma_length[1]
        assert 1e-5 <= p.cold_pixels <= 1e-3
        assert 60 <= p.jpeg_quality <= 95


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("motion_prob", 1.5, "motion_prob must be in"),
        ("blur_prob", -0.1, "blur_prob must be in"),
        ("motion_length", [-1.0, 1.0], "motion_length must be >= 0"),
        ("defocus_radius", [1.0, 0.5], r"range must be \[low, high\]"),
        ("defocus_obstruction", [0.0, 1.0], r"defocus_obstruction must be in \[0, 1\)"),
        ("astig_ratio", [0.0, 0.5], r"astig_ratio must be in \(0, 1\]"),
        ("jpeg_quality", [0, 90], r"jpeg_quality must be in \[1, 100\]"),
        ("cold_pixels", [0.0, 0.01], "cold_pixels must be > 0"),
        ("cold_pixels", [0.5, 2.0], "cold_pixels is a fraction"),
        ("gain", [0.0, 0.0], "gain must be > 0"),
    ],
)
def test_degradation_config_errors(key, value, match):
    with pytest.raises(InputError, match=match):
        from_dict({"degradations": {key: value}})


def test_degradation_config_accepts_off_fractions():
    cfg = from_dict({"degradations": {"hot_pixels": [0, 0], "cold_pixels": [1e-5, 1e-4]}})
    assert cfg.degradations.hot_pixels == (0.0, 0.0)
    p = deg.sample_params(np.random.default_rng(0), cfg.degradations)
    assert p.hot_pixels == 0 and 1e-5 <= p.cold_pixels <= 1e-4


def test_starless_fields_have_no_stars_and_cost_no_draw_when_off():
    """``[sim] starless_prob``: the field has no star; off, it draws nothing."""
    from astrosleuth_astro.sim import simulate
    from astrosleuth_astro.train.config import SimConfig
    from astrosleuth_astro.train.data import sample_sim_kwargs

    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    off = sample_sim_kwargs(ra, SimConfig())
    assert off == sample_sim_kwargs(rb, SimConfig(starless_prob=0.0))
    assert ra.random() == rb.random() and off["density"] > 0
    rng = np.random.default_rng(3)
    kw = sample_sim_kwargs(rng, SimConfig(starless_prob=1.0))
    assert kw["density"] == 0.0
    res = simulate((48, 48), scale=SCALE, seed=rng, **kw)
    assert len(res.catalog) == 0
    # Without stars (and without nebulosity) the truth is the smooth sky plane: no peak
    # stands out of it by more than its gradient across the field.
    if kw["nebulosity"] == 0:
        hr = res.hr[0]
        assert np.ptp(hr) <= kw["gradient"] * kw["background"] * 2 + 1e-6


def test_training_stretch_auto_is_the_pipelines_choice():
    """``[data] stretch = "auto"`` fits what inference fits: 'none' for a star-less
    frame whose sky sits high in its range, 'mtf' for a field with bright stars."""
    from astrosleuth_astro.sim import simulate
    from astrosleuth_astro.stretch import fit_stretch
    from astrosleuth_astro.train.data import stretch_pair

    cfg = from_dict({"data": {"stretch": "auto"}, "sim": {"starless_prob": 0.5}})
    assert cfg.data.stretch == "auto" and cfg.sim.starless_prob == 0.5
    yy, xx = np.mgrid[:64, :64]
    flat = (800 + 2.0 * xx + yy + np.random.default_rng(0).normal(0, 12, (64, 64)))[None]
    field = simulate((64, 64), scale=SCALE, seed=1, n_stars=30, flux_range=(2e3, 2e5))
    for lr in (flat, field.lr):
        hr = np.repeat(np.repeat(lr, SCALE, 1), SCALE, 2)
        lr_s, hr_s, st = stretch_pair(lr, hr, "auto")
        assert st.kind == fit_stretch(lr, "auto").kind
        np.testing.assert_allclose(lr_s[0], st.forward(lr)[0], atol=1e-6)
    assert fit_stretch(flat, "auto").kind == "none"
    assert fit_stretch(field.lr, "auto").kind == "mtf"
    with pytest.raises(InputError, match="starless_prob"):
        from_dict({"sim": {"starless_prob": 1.5}})
    with pytest.raises(InputError, match="stretch must be"):
        from_dict({"data": {"stretch": "gamma"}})


def test_native_real_pairs_are_the_image_area_averaged_in_its_own_units():
    """``native_prob = 1``: LR = area average of the HR crop, nothing else, and the
    stretch is the pipeline's fit on that LR; off, the pair is in ADU with noise."""
    from astrosleuth_astro.stretch import fit_stretch
    from astrosleuth_astro.train.data import RealSource, real_pair

    rng = np.random.default_rng(2)
    lin = rng.normal(0.02, 0.003, (1, 128, 128))  # small native units, not ADU
    lin[0, 60:64, 40:44] += 0.5
    src = RealSource("l", lin, True, deg.image_stats(lin), lin.shape[-1])
    cfg = Config()
    cfg.data.stretch = "auto"
    cfg.degradations.native_prob = 1.0
    pair = real_pair(cfg, src, np.random.default_rng(1), (128, 128), origin=(0, 0))
    lr = area_downsample(lin, SCALE)
    st = fit_stretch(lr, "auto")
    np.testing.assert_allclose(pair.lr[0], st.forward(lr)[0], atol=1e-6)
    np.testing.assert_allclose(pair.hr[0], np.clip(st.forward(lin)[0], 0, 1), atol=1e-6)
    assert pair.stretch.kind == st.kind
    cfg.degradations.native_prob = 0.0
    other = real_pair(cfg, src, np.random.default_rng(1), (128, 128), origin=(0, 0))
    assert np.abs(other.lr[0] - pair.lr[0]).max() > 1e-3
    with pytest.raises(InputError, match="native_prob"):
        from_dict({"degradations": {"native_prob": 2.0}})
