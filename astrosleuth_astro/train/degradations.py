"""Degradations that turn a high-resolution linear image into a realistic observation.

The chain for a linear HR image (any units) is:

1. map it into an ADU-like range (sky pedestal ``background``, bright end at ``peak``)
   and add a sky gradient: this is the HR *target* (a scene, so the sky is part of it);
2. optionally blur it with a Moffat seeing PSF (on the HR grid);
3. area-downsample by the scale;
4. add Poisson noise (``gain`` e-/ADU) and read noise, hot pixels, clip at full well.

Display-referred (8-bit) sources skip the ADU mapping and get Gaussian noise instead.
Random crops, flips and 90-degree rotations act on (LR, HR) pairs consistently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from ..sim import add_noise, area_downsample, psf_kernel
from .config import LOG_RANGES, DegradationConfig


def draw(rng: np.random.Generator, rng_range: tuple[float, float], name: str = "") -> float:
    """One value from a config range: uniform, or log-uniform for keys in ``LOG_RANGES``."""
    lo, hi = float(rng_range[0]), float(rng_range[1])
    if name in LOG_RANGES and lo > 0:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


@dataclass
class DegradeParams:
    """One draw of the degradation parameters."""

    blur_fwhm: float  # LR pixels; 0 = no extra blur
    blur_beta: float
    background: float
    gradient: float
    gradient_angle: float
    peak: float
    peak_quantile: float
    saturation: float
    gain: float
    read_noise: float
    hot_pixels: float
    display_noise: float


#: Quantiles of the image the bright end (``peak``) can be anchored to.
PEAK_QUANTILES = (99.5, 99.9, 99.97, 99.99, 100.0)


def sample_params(rng: np.random.Generator, cfg: DegradationConfig) -> DegradeParams:
    """Draw a :class:`DegradeParams` from the ranges in ``cfg``."""
    blur = draw(rng, cfg.blur_fwhm) if rng.random() < cfg.blur_prob else 0.0
    return DegradeParams(
        blur_fwhm=blur,
        blur_beta=draw(rng, cfg.blur_beta),
        background=draw(rng, cfg.background),
        gradient=draw(rng, cfg.gradient),
        gradient_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        peak=draw(rng, cfg.peak, "peak"),
        peak_quantile=float(rng.choice(PEAK_QUANTILES)),
        saturation=cfg.saturation,
        gain=draw(rng, cfg.gain, "gain"),
        read_noise=draw(rng, cfg.read_noise),
        hot_pixels=draw(rng, cfg.hot_pixels, "hot_pixels"),
        display_noise=draw(rng, cfg.display_noise),
    )


def fixed_params(cfg: DegradationConfig) -> DegradeParams:
    """Typical mid-range parameters without extra blur (for the validation set)."""
    return DegradeParams(
        blur_fwhm=0.0,
        blur_beta=3.0,
        background=1000.0,
        gradient=0.05,
        gradient_angle=0.5,
        peak=40000.0,
        peak_quantile=99.99,
        saturation=cfg.saturation,
        gain=1.0,
        read_noise=5.0,
        hot_pixels=0.0,
        display_noise=0.005,
    )


def moffat_blur(img: np.ndarray, fwhm: float, beta: float = 3.0) -> np.ndarray:
    """Convolve ``(C, H, W)`` with a normalised Moffat PSF of ``fwhm`` pixels.

    Edges are reflected so the border does not darken.
    """
    if fwhm <= 0:
        return img
    k = psf_kernel(fwhm, "moffat", beta)
    r = k.shape[0] // 2
    r_eff = min(r, img.shape[-1] - 1, img.shape[-2] - 1)
    if r_eff < r:
        k = k[r - r_eff : r + r_eff + 1, r - r_eff : r + r_eff + 1]
        k = k / k.sum()
        r = r_eff
    pad = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    return fftconvolve(pad, k[None], mode="valid", axes=(1, 2))


def sky_plane(shape: tuple[int, int], level: float, gradient: float, angle: float) -> np.ndarray:
    """A tilted sky: ``level * (1 + gradient * (unit ramp across the field))``."""
    h, w = shape
    yy = (np.arange(h) + 0.5) / h - 0.5
    xx = (np.arange(w) + 0.5) / w - 0.5
    return level * (1.0 + gradient * (np.cos(angle) * xx[None, :] + np.sin(angle) * yy[:, None]))


def add_hot_pixels(
    img: np.ndarray, fraction: float, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Set a ``fraction`` of pixel positions (all channels) to 10-100 % of ``level``."""
    c, h, w = img.shape
    n = int(rng.binomial(h * w, min(max(fraction, 0.0), 1.0))) if fraction > 0 else 0
    if n:
        idx = rng.choice(h * w, size=n, replace=False)
        img = img.copy()
        img.reshape(c, -1)[:, idx] = rng.uniform(0.1, 1.0, n)[None, :] * level
    return img


@dataclass
class ImageStats:
    """Whole-image statistics of a real source, computed once when it is loaded."""

    median: np.ndarray  # (C,)
    quantiles: dict[float, float]  # of (x - median), all channels together


def image_stats(img: np.ndarray) -> ImageStats:
    """Per-channel median and bright-end quantiles of a linear image."""
    step = max(1, int(np.sqrt(img[0].size / 1_000_000)))
    sub = img[:, ::step, ::step].reshape(img.shape[0], -1)
    med = np.median(sub, axis=1)
    rel = (sub - med[:, None]).ravel()
    q = {p: float(np.percentile(rel, p)) for p in PEAK_QUANTILES}
    q[100.0] = float((img - med[:, None, None]).max())
    return ImageStats(median=med, quantiles=q)


def to_adu(img: np.ndarray, stats: ImageStats, p: DegradeParams) -> np.ndarray:
    """Map a linear image into ADU: background -> sky plane, bright end -> ``peak``."""
    top = max(stats.quantiles[p.peak_quantile], 1e-12)
    k = (p.peak - p.background) / top
    sky = sky_plane(img.shape[-2:], p.background, p.gradient, p.gradient_angle)
    out = (img - stats.median[:, None, None]) * k + sky[None]
    return np.clip(out, 0.0, p.saturation)


def degrade_linear(
    hr: np.ndarray, scale: int, p: DegradeParams, rng: np.random.Generator
) -> np.ndarray:
    """LR observation of an HR image already in ADU (see :func:`to_adu`)."""
    x = moffat_blur(hr, p.blur_fwhm * scale, p.blur_beta) if p.blur_fwhm > 0 else hr
    lr = area_downsample(x, scale)
    lr = add_noise(lr, p.gain, p.read_noise, rng)
    lr = add_hot_pixels(lr, p.hot_pixels, p.saturation, rng)
    return np.clip(lr, 0.0, p.saturation)


def degrade_display(
    hr: np.ndarray, scale: int, p: DegradeParams, rng: np.random.Generator
) -> np.ndarray:
    """LR version of a display-referred image in [0, 1] (blur, area, Gaussian noise)."""
    x = moffat_blur(hr, p.blur_fwhm * scale, p.blur_beta) if p.blur_fwhm > 0 else hr
    lr = area_downsample(x, scale)
    if p.display_noise > 0:
        lr = lr + rng.normal(0.0, p.display_noise, lr.shape)
    return np.clip(lr, 0.0, 1.0)


# -- geometric augmentation ---------------------------------------------------------------


def random_crop(
    lr: np.ndarray, hr: np.ndarray, crop_lr: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned random crop: ``crop_lr`` LR pixels and the matching HR block."""
    _, h, w = lr.shape
    y = int(rng.integers(0, h - crop_lr + 1))
    x = int(rng.integers(0, w - crop_lr + 1))
    s = scale
    return (
        lr[:, y : y + crop_lr, x : x + crop_lr],
        hr[:, y * s : (y + crop_lr) * s, x * s : (x + crop_lr) * s],
    )


def random_dihedral(
    lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random flip / 90-degree rotation (one of 8) applied to both arrays."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    if flip:
        lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
    if k:
        lr, hr = np.rot90(lr, k, axes=(1, 2)), np.rot90(hr, k, axes=(1, 2))
    return lr, hr
