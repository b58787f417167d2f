"""Degradations that turn a high-resolution linear image into a realistic observation.

Every sample draws its own parameters (:func:`sample_params`) from the ranges of the
``[degradations]`` config section (:class:`~.config.DegradationConfig`). The chain for a
linear HR image (any units) is:

1. map it into an ADU-like range (sky pedestal ``background``, bright end at ``peak``)
   and add a sky gradient: this is the HR *target* (a scene, so the sky is part of it);
2. blur it on the HR grid with one kernel (:func:`combined_kernel`) that is the
   convolution of the kernels drawn for this sample, each normalised to sum 1 so flux is
   kept and recentred so stars do not move:

   * Moffat seeing (``blur_*``, FWHM in LR pixels);
   * tracking or wind blur (``motion_*``): a straight line of ``motion_length`` LR pixels
     at a random angle, or (``motion_jitter_prob``) a random-walk path of that length;
   * defocus (``defocus_*``): a uniform disk of ``defocus_radius`` LR pixels, an annulus
     when a central obstruction (fraction of the radius) is drawn;
   * mild astigmatism (``astig_*``): an elliptical Gaussian at a random angle;
   * mild coma (``coma_*``): the geometric coma flare (a one-sided tail) at a random
     angle;

3. area-downsample by the scale;
4. cold (dead) pixels: a fraction of the pixel positions keep only 0-20 % of their signal;
5. add Poisson noise (``gain`` e-/ADU) and read noise (``read_noise`` e-), hot pixels,
   clip at full well. With probability ``clean_prob`` a pair skips steps 4 and 5: it
   stands for a deep stack, whose LR noise is the HR image's own noise averaged down.
   With probability ``native_prob`` a linear pair skips every step but 3, in the image's
   own units: the LR is the delivered image averaged down, as the real-image benchmark
   makes it, and the stretch (``auto``) sees the image's own range.

Display-referred (8-bit) sources skip the ADU mapping and the detector effects; after the
same kernel blur and area downsampling they get Gaussian noise (``display_noise``) and,
with probability ``jpeg_prob``, JPEG compression of the 8-bit LR image (quality drawn from
``jpeg_quality``). Linear sources never get JPEG.

A degradation whose probability is 0 (the default of every one added after the first
shipped models) draws no random numbers, so configs that leave them off give bit-identical
pairs to earlier versions. Random crops, flips and 90-degree rotations act on (LR, HR)
pairs consistently.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from ..sim import add_noise, area_downsample, psf_kernel
from .config import LOG_RANGES, DegradationConfig

#: FWHM of a Gaussian over its standard deviation.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Turn of a jitter path per step (64 steps), radians rms.
JITTER_TURN = 0.4


def draw(rng: np.random.Generator, rng_range: tuple[float, float], name: str = "") -> float:
    """One value from a config range: uniform, or log-uniform for keys in ``LOG_RANGES``."""
    lo, hi = float(rng_range[0]), float(rng_range[1])
    if name in LOG_RANGES and lo > 0:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def happens(rng: np.random.Generator, prob: float) -> bool:
    """Bernoulli draw that consumes no random number when ``prob <= 0`` (feature off)."""
    return prob > 0 and bool(rng.random() < prob)


@dataclass
class DegradeParams:
    """One draw of the degradation parameters.

    Lengths are in LR pixels; 0 (or ``None``) switches a degradation off. The fields after
    ``display_noise`` have "off" defaults so older code that builds this class keeps working.
    """

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
    #: Tracking/wind blur path length, LR pixels (0 = none), and its angle, radians.
    motion_length: float = 0.0
    motion_angle: float = 0.0
    #: Seed of a random-walk (jitter) path; None = a straight line.
    motion_jitter_seed: int | None = None
    #: Defocus disk radius, LR pixels (0 = none), and central obstruction (fraction of it).
    defocus_radius: float = 0.0
    defocus_obstruction: float = 0.0
    #: Astigmatism: major-axis FWHM of an elliptical Gaussian, LR pixels (0 = none),
    #: minor/major axis ratio and the major axis angle, radians.
    astig_fwhm: float = 0.0
    astig_ratio: float = 1.0
    astig_angle: float = 0.0
    #: Coma: tail length, LR pixels (0 = none), and the tail direction, radians.
    coma_length: float = 0.0
    coma_angle: float = 0.0
    #: Fraction of pixel positions that are cold (dead).
    cold_pixels: float = 0.0
    #: JPEG quality (1-100) for display-referred sources; 0 = no JPEG.
    jpeg_quality: int = 0
    #: A "deep stack" pair: no detector noise, hot or cold pixels are added, so the only
    #: noise in the LR is the HR image's own, area-averaged (linear sources only).
    clean: bool = False
    #: A linear real pair in the image's own units: no ADU mapping, no extra blur, no
    #: added noise; the LR is the HR area-averaged (the real-image benchmark's pair).
    native: bool = False


#: Quantiles of the image the bright end (``peak``) can be anchored to.
PEAK_QUANTILES = (99.5, 99.9, 99.97, 99.99, 100.0)


def sample_params(rng: np.random.Generator, cfg: DegradationConfig) -> DegradeParams:
    """Draw a :class:`DegradeParams` from the ranges in ``cfg``.

    The draws of the original degradations come first and in a fixed order; the others
    only draw when their probability (or fraction range) is non-zero.
    """
    blur = draw(rng, cfg.blur_fwhm) if rng.random() < cfg.blur_prob else 0.0
    p = DegradeParams(
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
    if happens(rng, cfg.motion_prob):
        p.motion_length = draw(rng, cfg.motion_length)
        p.motion_angle = float(rng.uniform(0.0, np.pi))
        if happens(rng, cfg.motion_jitter_prob):
            p.motion_jitter_seed = int(rng.integers(0, 2**31))
    if happens(rng, cfg.defocus_prob):
        p.defocus_radius = draw(rng, cfg.defocus_radius)
        p.defocus_obstruction = draw(rng, cfg.defocus_obstruction)
    if happens(rng, cfg.astig_prob):
        p.astig_fwhm = draw(rng, cfg.astig_fwhm)
        p.astig_ratio = draw(rng, cfg.astig_ratio)
        p.astig_angle = float(rng.uniform(0.0, np.pi))
    if happens(rng, cfg.coma_prob):
        p.coma_length = draw(rng, cfg.coma_length)
        p.coma_angle = float(rng.uniform(0.0, 2.0 * np.pi))
    if cfg.cold_pixels[1] > 0:
        p.cold_pixels = draw(rng, cfg.cold_pixels, "cold_pixels")
    if happens(rng, cfg.jpeg_prob):
        lo, hi = cfg.jpeg_quality
        p.jpeg_quality = int(rng.integers(int(round(lo)), int(round(hi)) + 1))
    p.clean = happens(rng, cfg.clean_prob)
    p.native = happens(rng, cfg.native_prob)
    return p


def fixed_params(cfg: DegradationConfig) -> DegradeParams:
    """Typical mid-range parameters without extra blur (for the validation set).

    None of the optional degradations (motion, defocus, aberrations, cold pixels, JPEG)
    is applied.
    """
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


# -- blur kernels (HR pixels) -------------------------------------------------------------


def splat_kernel(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """A kernel from point positions: bilinear splatting onto a centred odd grid.

    Parameters
    ----------
    x, y : ndarray
        Point offsets from the kernel centre, pixels (``x`` along columns).
    weights : ndarray, optional
        Point weights (default equal).

    Returns
    -------
    ndarray
        Square kernel of odd side, normalised to sum 1. Bilinear splatting keeps the
        weighted centroid of the points exactly.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    r = int(np.ceil(max(np.abs(x).max(), np.abs(y).max(), 0.0))) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1))
    gx, gy = x + r, y + r
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    fx, fy = gx - x0, gy - y0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            np.add.at(k, (y0 + dy, x0 + dx), w * wy * wx)
    return k / k.sum()


def motion_kernel(length: float, angle: float, jitter_seed: int | None = None) -> np.ndarray:
    """Tracking or wind blur: the light spread evenly along a path of ``length`` pixels.

    Parameters
    ----------
    length : float
        Path length, pixels of the grid the kernel is used on.
    angle : float
        Direction of the straight path (or the mean start direction of a jitter path),
        radians from the +x (column) axis towards +y (row).
    jitter_seed : int, optional
        None: a straight line centred on the origin (second moment ``length**2 / 12``
        along ``angle``). Otherwise a random walk (guiding jitter or wind shake) whose
        direction turns by a Gaussian angle (``JITTER_TURN`` rms) at each of 64 equal steps,
        shifted so its centroid is at the origin.

    Returns
    -------
    ndarray
        Odd-sided kernel, sum 1, centroid at the centre.
    """
    n = max(16, int(np.ceil(8 * length)))
    if jitter_seed is None:
        t = (np.arange(n) + 0.5) / n - 0.5
        return splat_kernel(t * length * np.cos(angle), t * length * np.sin(angle))
    rng = np.random.default_rng(jitter_seed)
    steps = 64
    phi = angle + np.cumsum(rng.normal(0.0, JITTER_TURN, steps))
    dx = np.concatenate([[0.0], np.cumsum(np.cos(phi))]) * length / steps
    dy = np.concatenate([[0.0], np.cumsum(np.sin(phi))]) * length / steps
    # Dense, evenly spaced samples along the path (so the light is spread by path length).
    s = np.linspace(0.0, steps, steps * max(4, n // steps + 1) + 1)
    px = np.interp(s, np.arange(steps + 1), dx)
    py = np.interp(s, np.arange(steps + 1), dy)
    return splat_kernel(px - px.mean(), py - py.mean())


def defocus_kernel(radius: float, obstruction: float = 0.0, oversample: int = 8) -> np.ndarray:
    """Defocus: a uniform disk of ``radius`` pixels, an annulus with a central obstruction.

    Parameters
    ----------
    radius : float
        Outer radius of the out-of-focus pupil image, pixels.
    obstruction : float
        Inner radius as a fraction of ``radius`` (0 = a filled disk; Newtonian and SCT
        telescopes have 0.2-0.4).
    oversample : int
        Sub-pixels per pixel side used to integrate the disk area.

    Returns
    -------
    ndarray
        Odd-sided kernel, sum 1. Its second moment per axis is
        ``radius**2 * (1 + obstruction**2) / 4`` (plus a small pixelisation term).
    """
    r = int(np.ceil(radius)) + 1
    sub = (np.arange((2 * r + 1) * oversample) + 0.5) / oversample - (r + 0.5)
    rr2 = sub[:, None] ** 2 + sub[None, :] ** 2
    inside = (rr2 <= radius * radius) & (rr2 >= (obstruction * radius) ** 2)
    k = inside.reshape(2 * r + 1, oversample, 2 * r + 1, oversample).mean(axis=(1, 3))
    if k.sum() <= 0:  # a disk smaller than a sub-pixel: no blur
        k = np.zeros((1, 1)) + 1.0
    return k / k.sum()


def astigmatism_kernel(fwhm: float, ratio: float, angle: float) -> np.ndarray:
    """Mild astigmatism: an elliptical Gaussian.

    Parameters
    ----------
    fwhm : float
        FWHM along the major axis, pixels.
    ratio : float
        Minor over major axis FWHM, in (0, 1].
    angle : float
        Major axis direction, radians from +x towards +y.

    Returns
    -------
    ndarray
        Odd-sided kernel, sum 1, sampled at pixel centres.
    """
    s1 = max(fwhm, 1e-3) / FWHM_PER_SIGMA
    s2 = max(s1 * ratio, 1e-3)
    r = max(1, int(np.ceil(3.5 * s1)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    k = np.exp(-0.5 * (u * u / (s1 * s1) + v * v / (s2 * s2)))
    return k / k.sum()


def coma_kernel(length: float, angle: float, n_rho: int = 48, n_theta: int = 96) -> np.ndarray:
    """Mild coma: the geometric coma flare of a uniformly lit circular pupil.

    A pupil zone of normalised radius ``rho`` images to a circle of radius ``c * rho**2``
    centred ``2 * c * rho**2`` from the chief ray, so the flare is a 60-degree fan with a
    bright tip and a tail ``length = 3 c`` long pointing along ``angle``. The kernel is
    shifted so its centroid is at the origin (stars keep their positions).

    Parameters
    ----------
    length : float
        Tail length ``3 c``, pixels.
    angle : float
        Tail direction, radians from +x towards +y.
    n_rho, n_theta : int
        Pupil sampling (equal-area zones times azimuths).

    Returns
    -------
    ndarray
        Odd-sided kernel, sum 1. Second moments: ``length**2 / 18`` along ``angle`` and
        ``length**2 / 54`` across it.
    """
    c = length / 3.0
    rho2 = (np.arange(n_rho) + 0.5) / n_rho  # equal-area zones: rho**2 uniform
    th = 2.0 * np.pi * (np.arange(n_theta) + 0.5) / n_theta
    a = (c * rho2[:, None] * (2.0 + np.cos(2.0 * th[None, :]))).ravel()
    b = (c * rho2[:, None] * np.sin(2.0 * th[None, :])).ravel()
    a -= a.mean()
    b -= b.mean()
    ca, sa = np.cos(angle), np.sin(angle)
    return splat_kernel(a * ca - b * sa, a * sa + b * ca)


def combined_kernel(scale: int, p: DegradeParams) -> np.ndarray | None:
    """All blur kernels drawn in ``p``, in HR pixels, convolved into one.

    Parameters
    ----------
    scale : int
        HR pixels per LR pixel (the lengths in ``p`` are in LR pixels).
    p : DegradeParams

    Returns
    -------
    ndarray or None
        Odd-sided kernel normalised to sum 1, or None when no blur was drawn. With only
        the Moffat seeing blur it is exactly ``psf_kernel(blur_fwhm * scale, "moffat",
        blur_beta)``.
    """
    s = float(scale)
    ks = []
    if p.blur_fwhm > 0:
        ks.append(psf_kernel(p.blur_fwhm * s, "moffat", p.blur_beta))
    if p.motion_length > 0:
        ks.append(motion_kernel(p.motion_length * s, p.motion_angle, p.motion_jitter_seed))
    if p.defocus_radius > 0:
        ks.append(defocus_kernel(p.defocus_radius * s, p.defocus_obstruction))
    if p.astig_fwhm > 0:
        ks.append(astigmatism_kernel(p.astig_fwhm * s, p.astig_ratio, p.astig_angle))
    if p.coma_length > 0:
        ks.append(coma_kernel(p.coma_length * s, p.coma_angle))
    return chain_kernels(ks)


def chain_kernels(ks: list[np.ndarray]) -> np.ndarray | None:
    """The kernels ``ks`` convolved into one (sum 1), or None for an empty list."""
    if not ks:
        return None
    k = ks[0]
    for other in ks[1:]:
        k = np.clip(fftconvolve(k, other, mode="full"), 0.0, None)
    return k / k.sum()


def convolve_reflect(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Convolve ``(C, H, W)`` with an odd-sided kernel; edges are reflected.

    A kernel larger than the image is cropped to fit and renormalised.
    """
    r = k.shape[0] // 2
    r_eff = min(r, img.shape[-1] - 1, img.shape[-2] - 1)
    if r_eff < r:
        k = k[r - r_eff : r + r_eff + 1, r - r_eff : r + r_eff + 1]
        k = k / k.sum()
        r = r_eff
    pad = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    return fftconvolve(pad, k[None], mode="valid", axes=(1, 2))


def moffat_blur(img: np.ndarray, fwhm: float, beta: float = 3.0) -> np.ndarray:
    """Convolve ``(C, H, W)`` with a normalised Moffat PSF of ``fwhm`` pixels.

    Edges are reflected so the border does not darken.
    """
    if fwhm <= 0:
        return img
    return convolve_reflect(img, psf_kernel(fwhm, "moffat", beta))


def blur_hr(hr: np.ndarray, scale: int, p: DegradeParams) -> np.ndarray:
    """``hr`` convolved with :func:`combined_kernel` (unchanged when nothing was drawn)."""
    k = combined_kernel(scale, p)
    return hr if k is None else convolve_reflect(hr, k)


# -- sky and detector ---------------------------------------------------------------------


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


#: Cold (dead) pixels keep this range of fractions of their signal.
COLD_RESPONSE = (0.0, 0.2)


def add_cold_pixels(img: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Scale a ``fraction`` of pixel positions (all channels) by 0-20 % (dead pixels).

    Applied to the noise-free LR signal, so a dead pixel still shows read noise.
    Draws no random numbers when ``fraction`` is 0.
    """
    c, h, w = img.shape
    n = int(rng.binomial(h * w, min(max(fraction, 0.0), 1.0))) if fraction > 0 else 0
    if n:
        idx = rng.choice(h * w, size=n, replace=False)
        img = img.copy()
        img.reshape(c, -1)[:, idx] *= rng.uniform(*COLD_RESPONSE, n)[None, :]
    return img


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of a display-referred ``(C, H, W)`` image in [0, 1], through 8 bits.

    Parameters
    ----------
    img : ndarray
        One (grey) or three (RGB, 4:2:0 chroma subsampling as cameras and PIL write it)
        channels, values in [0, 1].
    quality : int
        JPEG quality, 1-100.

    Returns
    -------
    ndarray
        float64 ``(C, H, W)`` on the 1/255 grid.
    """
    from PIL import Image

    u8 = np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8[0]) if u8.shape[0] == 1 else Image.fromarray(np.moveaxis(u8, 0, -1))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im, dtype=np.float64) / 255.0
    return out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)


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
    """LR observation of an HR image already in ADU (see :func:`to_adu`).

    Blur kernels on the HR grid, area downsampling, cold pixels, Poisson and read noise,
    hot pixels, clipping to ``[0, saturation]``. ``p.jpeg_quality`` is ignored (linear
    data are never JPEG-compressed).
    """
    lr = area_downsample(blur_hr(hr, scale, p), scale)
    if p.clean:
        # The HR's own noise, averaged down, is all the noise a deep stack shows.
        return np.clip(lr, 0.0, p.saturation)
    lr = add_cold_pixels(lr, p.cold_pixels, rng)
    lr = add_noise(lr, p.gain, p.read_noise, rng)
    lr = add_hot_pixels(lr, p.hot_pixels, p.saturation, rng)
    return np.clip(lr, 0.0, p.saturation)


def degrade_display(
    hr: np.ndarray, scale: int, p: DegradeParams, rng: np.random.Generator
) -> np.ndarray:
    """LR version of a display-referred image in [0, 1].

    Blur kernels, area downsampling, Gaussian noise (``display_noise``), then JPEG
    compression when ``p.jpeg_quality > 0``.
    """
    lr = area_downsample(blur_hr(hr, scale, p), scale)
    if p.display_noise > 0:
        lr = lr + rng.normal(0.0, p.display_noise, lr.shape)
    lr = np.clip(lr, 0.0, 1.0)
    if p.jpeg_quality > 0:
        lr = jpeg_compress(lr, p.jpeg_quality)
    return lr


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
