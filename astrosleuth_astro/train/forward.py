"""Training pairs from the physical forward model of a coarser detector (issue 26).

The LR is what a detector with ``scale x scale`` times larger pixels records of the same
sky: **LR = the area-binned HR**, and the noise of the LR is the binned noise of the HR
(no extra blur, no extra noise). The target keeps its own noise, so the network is never
asked to predict detail or denoise beyond what the LR's noise allows:

- simulated scenes are rendered noise-free at HR, then observed by the fine detector
  (Poisson on ``hr * gain / scale**2`` electrons per HR pixel, read noise ``read / scale``
  electrons, so that binning gives exactly an LR observation with that gain and read
  noise);
- real images are used as they are (their noise is the HR's own).

What a real acquisition adds on top is added to **both** sides in a way that binning
preserves, so the pair stays consistent:

- PSF families (Moffat of any beta, Gaussian, elongation, coma, diffraction spikes) are
  part of the scene: the HR is convolved before it is observed;
- galaxies: elliptical exponential discs in the scene;
- raw-frame detector effects live on LR pixels, so they are drawn as ``scale x scale`` HR
  blocks: dead and hot pixels, bad columns, a bias pedestal; cosmic rays are thin HR
  streaks;
- resampled mosaics: a bilinear sub-pixel shift of the LR and the same shift of the HR by
  whole ``scale``-pixel steps (``(1 - d) x(y) + d x(y + s)`` on the HR), which correlates
  neighbouring pixels' noise; binning the shifted HR gives the shifted LR exactly;
- drizzled / stacked frames: borders filled with a constant (what the pipeline fills
  NaN borders with) on both sides;
- 8-bit pictures: the pair is stretched, scaled so that bright stars clip, quantised to
  8 bits, and the LR is JPEG-compressed (the only step that is applied to the LR alone:
  it is what the saved picture is).

Every range is a ``[forward]`` key of the training config (:class:`~.config.ForwardConfig`);
docs/training-degradations.md lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..resample import upsample_bilinear
from ..sim import area_downsample, simulate
from ..stretch import Stretch
from . import degradations as deg

if TYPE_CHECKING:
    from .config import Config, ForwardConfig


def observe_hr(
    hr: np.ndarray, scale: int, gain: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """The noisy HR: what a detector with pixels ``scale`` times finer records.

    ``hr`` holds surface brightness in ADU per LR pixel, so an HR pixel collects
    ``hr * gain / scale**2`` electrons. Its read noise is ``read_noise / scale`` electrons,
    so that the binned image has read noise ``read_noise`` in ADU / gain, like an LR frame.
    """
    s2 = scale * scale
    electrons = rng.poisson(np.clip(hr, 0.0, None) * gain / s2).astype(np.float64)
    if read_noise > 0:
        electrons += rng.normal(0.0, read_noise / scale, hr.shape)
    return electrons * s2 / gain


def spike_kernel(length: float, angle: float, strength: float, n: int = 4) -> np.ndarray:
    """Diffraction spikes: ``n`` thin rays (two crossed vanes for ``n = 4``) plus a core.

    Parameters
    ----------
    length : float
        Ray half-length, pixels (intensity falls as ``1 / (1 + r)`` along it).
    angle : float
        Direction of the first ray, radians.
    strength : float
        Fraction of the light in the rays.
    """
    r = max(1, int(np.ceil(length)))
    k = np.zeros((2 * r + 1, 2 * r + 1))
    t = np.arange(1, r + 1, dtype=np.float64)
    for i in range(n):
        a = angle + 2.0 * np.pi * i / n
        xs = np.clip(np.round(r + t * np.cos(a)).astype(int), 0, 2 * r)
        ys = np.clip(np.round(r + t * np.sin(a)).astype(int), 0, 2 * r)
        np.add.at(k, (ys, xs), 1.0 / (1.0 + t))
    total = k.sum()
    if total <= 0 or strength <= 0:
        k[:] = 0.0
    else:
        k *= strength / total
    k[r, r] += 1.0 - k.sum()
    return k


def render_galaxies(
    shape: tuple[int, int], n: int, scale: int, flux: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """``n`` elliptical exponential discs on an HR grid (surface brightness, ADU per LR px).

    Scale lengths are 0.7-6 LR pixels, axis ratios 0.2-1, total LR fluxes log-uniform in
    ``flux``.
    """
    hh, ww = shape
    out = np.zeros(shape)
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64)
    for _ in range(n):
        cy, cx = rng.uniform(0, hh), rng.uniform(0, ww)
        h_lr = rng.uniform(0.7, 6.0)
        q = rng.uniform(0.2, 1.0)
        th = rng.uniform(0, np.pi)
        f = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1])))
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        r = np.sqrt(u * u + (v / q) ** 2) / (h_lr * scale)
        prof = np.exp(-r)
        out += prof * (f * scale**2 / max(prof.sum(), 1e-12))
    return out


def _blocks(mask_lr: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(mask_lr, scale, axis=-2), scale, axis=-1)


def add_detector_defects(
    hr: np.ndarray,
    scale: int,
    fc: ForwardConfig,
    sigma: float,
    floor: float,
    top: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Dead and hot pixels and bad columns as ``scale x scale`` HR blocks; cosmic rays.

    ``sigma`` is the LR noise, ``floor`` the dead-pixel level and ``top`` the saturation
    level (the image's units).
    """
    c, hh, ww = hr.shape
    h, w = hh // scale, ww // scale
    out = hr.copy()
    for frac, value in ((fc.dead_pixels, floor), (fc.hot_pixels, None)):
        n = int(rng.binomial(h * w, deg.draw(rng, frac, "hot_pixels"))) if frac[1] > 0 else 0
        if not n:
            continue
        idx = rng.choice(h * w, size=n, replace=False)
        m = np.zeros(h * w, dtype=bool)
        m[idx] = True
        blk = _blocks(m.reshape(h, w), scale)
        level = value if value is not None else floor + rng.uniform(0.05, 1.0) * (top - floor)
        out[:, blk] = level
    if deg.happens(rng, fc.bad_column_prob):
        x = int(rng.integers(0, w))
        y0 = int(rng.integers(0, h // 2))
        off = rng.uniform(-20.0, 50.0) * sigma
        sl = (slice(None), slice(y0 * scale, hh), slice(x * scale, (x + 1) * scale))
        out[sl] = np.clip(out[sl] + off, floor, top)
    n_cr = int(rng.poisson(fc.cosmic_rays * h * w / 1e4))
    for _ in range(n_cr):
        length = rng.uniform(1.0, 20.0)
        a = rng.uniform(0, np.pi)
        y, x = rng.uniform(0, hh), rng.uniform(0, ww)
        t = np.linspace(0.0, length, int(length * 2) + 2)
        ys = np.clip((y + t * np.sin(a)).astype(int), 0, hh - 1)
        xs = np.clip((x + t * np.cos(a)).astype(int), 0, ww - 1)
        out[:, ys, xs] += rng.uniform(10.0, 200.0) * sigma * scale
    return np.clip(out, floor, top)


def shift_pair(
    lr: np.ndarray, hr: np.ndarray, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A resampled mosaic: bilinear sub-pixel shift of the LR, the same on the HR.

    On each axis ``x'(i) = (1 - d) x(i) + d x(i + 1)`` on the LR and the same with a step of
    ``scale`` HR pixels on the HR; the last LR row/column (and HR block) is dropped, so
    binning the shifted HR gives the shifted LR exactly.
    """
    dy, dx = rng.uniform(0.0, 1.0, 2)
    s = scale
    lr = (1 - dy) * lr[:, :-1] + dy * lr[:, 1:]
    lr = (1 - dx) * lr[:, :, :-1] + dx * lr[:, :, 1:]
    hr = (1 - dy) * hr[:, :-s] + dy * hr[:, s:]
    hr = (1 - dx) * hr[:, :, :-s] + dx * hr[:, :, s:]
    return lr, hr


def fill_border(
    lr: np.ndarray, hr: np.ndarray, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A drizzled frame's empty border: 1-2 sides, 2-16 LR pixels, set to the LR median."""
    lr, hr = lr.copy(), hr.copy()
    _, h, w = lr.shape
    value = np.median(lr, axis=(1, 2))[:, None, None]
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        k = int(rng.integers(2, 17))
        k = min(k, (h if side < 2 else w) // 4)
        if side == 0:
            lr[:, :k], hr[:, : k * scale] = value, value
        elif side == 1:
            lr[:, h - k :], hr[:, (h - k) * scale :] = value, value
        elif side == 2:
            lr[:, :, :k], hr[:, :, : k * scale] = value, value
        else:
            lr[:, :, w - k :], hr[:, :, (w - k) * scale :] = value, value
    return lr, hr


def scene_kernel(scale: int, fc: ForwardConfig, rng: np.random.Generator) -> np.ndarray | None:
    """The extra PSF structure of this field (HR pixels), or None: elongation, coma, spikes."""
    ks = []
    if deg.happens(rng, fc.elongation_prob):
        ks.append(
            deg.astigmatism_kernel(
                deg.draw(rng, fc.elongation_fwhm) * scale,
                deg.draw(rng, fc.elongation_ratio),
                rng.uniform(0, np.pi),
            )
        )
    if deg.happens(rng, fc.coma_prob):
        ks.append(deg.coma_kernel(deg.draw(rng, fc.coma_length) * scale, rng.uniform(0, 2 * np.pi)))
    if deg.happens(rng, fc.spike_prob):
        ks.append(
            spike_kernel(
                deg.draw(rng, fc.spike_length) * scale,
                rng.uniform(0, np.pi / 2),
                deg.draw(rng, fc.spike_strength),
            )
        )
    return deg.chain_kernels(ks)


def to_display(
    lr: np.ndarray,
    hr: np.ndarray,
    st: Stretch,
    fc: ForwardConfig,
    scale: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit picture pair: stretched, brightened so that bright stars clip, quantised;
    the LR is then JPEG-compressed. Both in [0, 1]."""
    gain = deg.draw(rng, fc.display_gain)
    hr_d = np.clip(st.forward(hr, dtype=np.float64) * gain, 0.0, 1.0)
    hr_d = np.round(hr_d * 255.0) / 255.0
    lr_d = np.round(area_downsample(hr_d, scale) * 255.0) / 255.0
    if deg.happens(rng, fc.jpeg_prob):
        lr_d = deg.jpeg_compress(lr_d, int(round(deg.draw(rng, fc.jpeg_quality))))
    return lr_d, hr_d


def sim_scene(cfg: Config, rng: np.random.Generator, shape: tuple[int, int], kw: dict):
    """A noise-free simulated HR scene, its noisy HR observation and the LR, in ADU.

    ``kw`` holds the simulator's parameters (:func:`.data.sample_sim_kwargs`); its hot
    pixels are replaced by the LR-block defects drawn here. Returns ``(lr, hr)``: the
    target ``hr`` is the noisy observation (``[forward] target_noise = "observed"``), or
    the clean scene plus the LR's noise bilinearly upsampled (``"smooth"``), whose
    binned values are then the LR's to within the bilinear kernel's blur.
    """
    fc, s = cfg.forward, cfg.data.scale
    kw = {**kw, "hot_pixels": 0.0}
    res = simulate(shape, scale=s, seed=rng, **kw)
    hr = res.hr.astype(np.float64)
    if deg.happens(rng, fc.galaxy_prob):
        n = int(rng.integers(1, 6))
        gal = render_galaxies(
            hr.shape[-2:], n, s, (kw["flux_range"][1] * 0.01, kw["flux_range"][1]), rng
        )
        hr = hr + gal[None]
    k = scene_kernel(s, fc, rng)
    if k is not None:
        hr = deg.convolve_reflect(hr, k)
    clean = np.clip(hr, 0.0, kw["saturation"])
    hr = observe_hr(clean, s, kw["gain"], kw["read_noise"], rng)
    if deg.happens(rng, fc.pedestal_prob):
        pedestal = deg.draw(rng, fc.pedestal)
        hr, clean = hr + pedestal, clean + pedestal
    top = kw["saturation"] + (hr.min() if hr.size else 0.0)
    target = hr
    if fc.target_noise == "smooth":
        # The noise the LR carries, interpolated smoothly: no structure below the LR pixel
        # that the data cannot show.
        target = clean + upsample_bilinear(area_downsample(hr - clean, s), s)
    if deg.happens(rng, fc.defect_prob):
        sigma = float(
            np.sqrt(kw["read_noise"] ** 2 / kw["gain"] ** 2 + kw["background"] / kw["gain"])
        )
        c = hr.shape[0]
        both = hr if target is hr else np.concatenate([hr, target])
        both = add_detector_defects(both, s, fc, sigma, 0.0, top, rng)  # the same on both
        hr, target = (both, both) if target is hr else (both[:c], both[c:])
    hr = np.clip(hr, 0.0, top)
    target = hr if fc.target_noise == "observed" else np.clip(target, 0.0, top)
    return area_downsample(hr, s), target


def finish_pair(
    lr: np.ndarray, hr: np.ndarray, scale: int, fc: ForwardConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The acquisition steps that act on a finished linear pair: resampling, empty borders."""
    if deg.happens(rng, fc.resample_prob):
        lr, hr = shift_pair(lr, hr, scale, rng)
    if deg.happens(rng, fc.border_prob):
        lr, hr = fill_border(lr, hr, scale, rng)
    return lr, hr


def real_observation(
    hr: np.ndarray, scale: int, fc: ForwardConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A real linear region as HR, its binned LR, with defects drawn as blocks."""
    hr = np.asarray(hr, dtype=np.float64)
    if deg.happens(rng, fc.defect_prob):
        lr0 = area_downsample(hr, scale)
        med = np.median(lr0)
        sigma = float(np.median(np.abs(lr0 - med)) * 1.4826) or 1.0
        hr = add_detector_defects(hr, scale, fc, sigma, float(hr.min()), float(hr.max()), rng)
    return area_downsample(hr, scale), hr
