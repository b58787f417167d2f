"""Generalisation of the upscaler to data it was never trained on (issue 26 item 4, part).

Every case is upscaled through the public pipeline, ``astrosleuth_astro.upscale(lr,
model=net, scale=s)`` with its default options (``conserve_flux="consistent"``, linear
in and out), and by bicubic (:func:`astrosleuth_astro.metrics.image.bicubic`, ``clip=False``),
at scales 4 and 2, and both outputs are scored against the truth and the input.

Leave-one-out over the real training images (issue 26 item 4, first bullet): with
``--loo NAME=MODEL`` (repeatable) the case ``loo_NAME`` (:data:`LOO`) is the centre of that
training image, scored by ``MODEL``, a model trained **without** it (one training per fold,
``train/configs/noise_aware.toml`` with the image removed from ``[data]``; the README's
"Training" section says how the folds differ from the shipped run). The other cases use
``--model`` (a registry name or a weights file, through
:func:`astrosleuth_astro.get_backend`).

The cases
---------
``sim2_undersampled`` and ``sim2_moffat`` are a **second simulator configuration**, made
with photutils (``photutils.datasets.make_random_models_table`` and ``make_model_image``,
not with ``astrosleuth_astro.sim``). It was made when the trainer drew circular Gaussian
or Moffat stars of FWHM 1.0-3.5 LR px, beta 2.2-4.5, with white noise (the legacy
default's ``train/configs/legacy_default.toml``), so its PSF family, noise model and sky
texture were all unseen. **The noise-aware default's training overlaps it in part**
(``train/configs/default.toml``: FWHM from 0.8 px, beta from 1.5, elongated PSFs,
correlated noise from resampled mosaics); what stays unseen is the renderer, the
photutils elliptical-Gaussian and Moffat models drawn per star, the nebula texture and
the noise model (Gaussian of variance ``lr / gain + read**2`` plus a filtered part).
Parameters (:data:`SIM2`):

* Geometry: an LR field of ``size`` x ``size`` px (512), rendered noise-free on a fine grid
  8 times finer (4096 x 4096, photutils ``discretize_method="center"``); the truth at
  scale ``s`` is that fine image area-averaged by ``8 / s`` (``size * s`` px); the
  noise-free LR is it area-averaged by 8. The LR is therefore the same at both scales.
* Stars: positions uniform over the field; fluxes (sum over LR pixels, ADU) from a power
  law ``dN/dF ~ F**-1.8`` between ``flux_min`` and ``flux_max`` (inverse-CDF sampling).
  ``sim2_undersampled``: 3500 stars (0.0134 per LR px, i.e. 3500 per 512^2: crowded),
  slope 1.8,
  **elliptical Gaussian** PSF (photutils ``GaussianPSF``), geometric-mean FWHM uniform in
  0.8-1.5 LR px (undersampled), axis ratio uniform in 0.6-0.9, position angle uniform in
  0-180 deg, fluxes 30-30 000 ADU. ``sim2_moffat``: 800 stars (0.0031 per px), circular
  **Moffat with beta 1.5-1.8** (heavy wings; photutils ``MoffatPSF``, drawn per star),
  FWHM uniform in 1.5-3.0 LR px, fluxes 300-300 000 ADU, slope 1.6 (a Moffat of beta
  1.5 has a third of a Gaussian's peak at the same FWHM and flux).
* Sky (ADU per LR px): 300, plus a linear gradient of +30 from the (0, 0) corner to the
  opposite one, plus a nebula: white noise on a 64 x 64 grid, Gaussian-filtered with
  sigma 3 cells (24 LR px), scaled to [0, 1], ``amp * max(v - 0.45, 0)**1.5 / 0.55**1.5``
  (amp 40 ADU for ``sim2_undersampled``, 150 for ``sim2_moffat``), cubic-spline zoomed to
  the fine grid.
* Noise on the LR (consistent with a coarser detector seeing that HR): Gaussian with
  variance ``max(lr_clean, 0) / gain + read_noise**2`` (gain 1 e-/ADU, read noise 5 ADU;
  the Poisson-like part), then a **correlated** part: white noise Gaussian-filtered with
  sigma 1.0 LR px, rescaled to a standard deviation of 6 ADU.
* Seeds (used by no other bench and not by the trainer): catalogue, noise and sky
  streams ``SEED + 0``, ``+ 1``, ``+ 2`` with ``SEED`` 26_001 (``sim2_undersampled``) and
  26_011 (``sim2_moffat``).

``loo_horsehead``, ``loo_spitzer``, ``loo_sdss``: the centre 512 x 512 (512 x 512 of
the 513-row Spitzer frame) of ``HorseHead.fits``, ``spitzer_example_image.fits`` and
``reprojected_sdss_r.fits.bz2`` (the r band of the SDSS cube the trainer stacks) from
``--data``, made like ``real_m67``.

``real_m67``: the centre 512 x 512 of ``M6707HH.fits`` (a DSS plate of M67, val_only in
the training data, never trained on) from ``--data`` as truth, area-averaged by the scale
(``astrosleuth_astro.sim.area_downsample``) as the input; skipped with a note on stderr
when the file is missing. ``hdf_8bit``: the same with the centre 512 x 512 of
``skimage.data.hubble_deep_field()``, grey = the mean of R, G, B, 0-255 units. Both are
made by ``bench/fidelity.py``'s ``real_m67`` and ``jpeg_8bit``. No other file of the
astropy-data repository is used.

The measures
------------
Each is defined in its function's docstring (:data:`MEASURES`). sigma is the input's
background noise (:func:`reference`); positions are in input pixels; an output position
``(x, y)`` is the input position ``((x - (s - 1) / 2) / s, ...)``. PSNR, flux ratio and
centroid shift are those of ``bench/fidelity.py`` (imported). ``*_vs_bicubic`` columns
are the model's value over bicubic's on the same case and scale; ``gain_*_db`` the model's
PSNR minus bicubic's.

Usage::

    python bench/generalisation.py [--scales 4,2]
        [--cases sim2_undersampled,sim2_moffat,real_m67,hdf_8bit]
        [--data ../shared/data] [--model default] [--json OUT.json] [--markdown]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_FD_PATH = Path(__file__).resolve().parent / "fidelity.py"
if "bench_fidelity" in sys.modules:
    fd = sys.modules["bench_fidelity"]
else:
    _spec = importlib.util.spec_from_file_location("bench_fidelity", _FD_PATH)
    fd = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = fd  # its dataclasses look their module up
    _spec.loader.exec_module(fd)

#: The fine grid of the second simulator configuration, in fine px per LR px.
FINE = 8
CASES = ("sim2_undersampled", "sim2_moffat", "real_m67", "hdf_8bit")
METHODS = ("model", "bicubic")
#: Detection threshold, in sigma of the input's background noise, on input and output.
THRESHOLD_SIGMA = 5.0
#: Match radius of a detection to its counterpart, in input px.
MATCH_PX = 1.0
#: Pixels (input px) at each border left out of the pattern measure.
BORDER = 4
#: At most this many isolated bright stars have their FWHM fitted.
MAX_FIT = 150
#: Leave-one-out cases: the training image each one holds out.
LOO = {
    "loo_horsehead": "HorseHead.fits",
    "loo_spitzer": "spitzer_example_image.fits",
    "loo_sdss": "reprojected_sdss_r.fits.bz2",
}
LOO_NOTE = (
    "leave-one-out: each loo_* case is scored by the fold model given with --loo, trained "
    "without that image; the other cases by --model."
)

SIM2 = {
    "sim2_undersampled": {
        "seed": 26_001,
        "n_stars": 3500,
        "psf": "elliptical_gaussian",
        "fwhm": (0.8, 1.5),
        "axis_ratio": (0.6, 0.9),
        "flux_min": 30.0,
        "flux_max": 30_000.0,
        "nebula_amp": 40.0,
    },
    "sim2_moffat": {
        "seed": 26_011,
        "n_stars": 800,
        "psf": "moffat",
        "fwhm": (1.5, 3.0),
        "beta": (1.5, 1.8),
        "flux_min": 300.0,
        "flux_max": 300_000.0,
        "flux_slope": 1.6,
        "nebula_amp": 150.0,
    },
}
SIM2_COMMON = {
    "size": 512,
    "sky": 300.0,
    "gradient": 30.0,
    "nebula_grid": 64,
    "nebula_smooth_cells": 3.0,
    "flux_slope": 1.8,
    "gain": 1.0,
    "read_noise": 5.0,
    "corr_sigma_px": 1.0,
    "corr_std": 6.0,
}
MEASURES = (
    "psnr_stretched",
    "gain_stretched_db",
    "psnr_linear",
    "gain_linear_db",
    "stars_in",
    "stars_kept",
    "kept_vs_bicubic",
    "invented",
    "invented_vs_bicubic",
    "fwhm_ratio",
    "sharpness",
    "sharpness_vs_bicubic",
    "pattern_rms_sigma",
    "texture_sigma",
    "texture_vs_bicubic",
    "texture_coherence",
    "coherence_vs_bicubic",
    "flux_ratio_median",
    "centroid_shift_px",
    "seconds",
)


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    lr: np.ndarray
    truth: np.ndarray  # at scale s: (s h, s w)
    fwhm: float  # a first guess, in input px (the measured one is in the reference)
    catalogue: np.ndarray | None = None  # true star positions (x, y), input px
    note: str = ""


def _power_law(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """``n`` samples of ``dN/dF ~ F**-slope`` on ``[lo, hi]`` (slope != 1)."""
    a = 1.0 - slope
    u = rng.uniform(0.0, 1.0, n)
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def sim2_clean(name: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The noise-free fine image (``size * FINE`` square, ADU per LR px), the true star
    positions ``(n, 2)`` in LR px and the parameters used (:data:`SIM2`)."""
    from astropy.table import QTable
    from photutils.datasets import make_model_image, make_random_models_table
    from photutils.psf import GaussianPSF, MoffatPSF

    p = {**SIM2_COMMON, **SIM2[name]}
    if size is not None:
        p["size"] = size
        p["n_stars"] = max(1, round(p["n_stars"] * (size / 512) ** 2))
    n, size, seed = p["n_stars"], p["size"], p["seed"]
    rng = np.random.default_rng(seed)
    nf = size * FINE
    ranges = {"x": (0.0, float(size)), "y": (0.0, float(size)), "fwhm": p["fwhm"]}
    if p["psf"] == "elliptical_gaussian":
        ranges.update(theta=(0.0, 180.0), q=p["axis_ratio"])
    else:
        ranges.update(beta=p["beta"])
    cat = make_random_models_table(n, ranges, seed=seed)
    flux = _power_law(rng, n, p["flux_min"], p["flux_max"], p["flux_slope"])
    tab = QTable()
    # LR px -> fine px: pixel centres at integers in both grids
    tab["x_0"] = (np.asarray(cat["x"]) + 0.5) * FINE - 0.5
    tab["y_0"] = (np.asarray(cat["y"]) + 0.5) * FINE - 0.5
    tab["flux"] = flux * FINE**2  # the fine grid keeps ADU per LR px after averaging
    fwhm = np.asarray(cat["fwhm"]) * FINE
    if p["psf"] == "elliptical_gaussian":
        q = np.asarray(cat["q"])
        tab["x_fwhm"] = fwhm / np.sqrt(q)
        tab["y_fwhm"] = fwhm * np.sqrt(q)
        tab["theta"] = np.asarray(cat["theta"])
        model, box = GaussianPSF(), int(8 * fwhm.max()) | 1
    else:
        beta = np.asarray(cat["beta"])
        tab["beta"] = beta
        tab["alpha"] = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        model, box = MoffatPSF(), int(20 * fwhm.max()) | 1
    stars = make_model_image((nf, nf), model, tab, model_shape=(box, box))

    sky_rng = np.random.default_rng(seed + 2)
    g = p["nebula_grid"]
    neb = ndimage.gaussian_filter(sky_rng.normal(size=(g, g)), p["nebula_smooth_cells"])
    neb = (neb - neb.min()) / (neb.max() - neb.min())
    neb = p["nebula_amp"] * np.maximum(neb - 0.45, 0.0) ** 1.5 / 0.55**1.5
    neb = ndimage.zoom(neb, nf / g, order=3, mode="nearest")[:nf, :nf]
    t = (np.arange(nf) + 0.5) / nf
    grad = p["gradient"] * (t[:, None] + t[None, :]) / 2.0
    fine = stars + p["sky"] + grad + neb
    xy = np.c_[np.asarray(cat["x"]), np.asarray(cat["y"])]
    return fine, xy, p


def sim2(name: str, scale: int, size: int | None = None) -> Case:
    """A case of the second simulator configuration at ``scale`` (see the module doc)."""
    from astrosleuth_astro.sim import area_downsample

    if FINE % scale:
        raise ValueError(f"scale {scale}: must divide {FINE}")
    fine, xy, p = sim2_clean(name, size)
    clean = area_downsample(fine, FINE)
    truth = area_downsample(fine, FINE // scale)
    rng = np.random.default_rng(p["seed"] + 1)
    var = np.maximum(clean, 0.0) / p["gain"] + p["read_noise"] ** 2
    lr = clean + rng.normal(size=clean.shape) * np.sqrt(var)
    corr = ndimage.gaussian_filter(rng.normal(size=clean.shape), p["corr_sigma_px"])
    lr += corr * (p["corr_std"] / corr.std())
    shape = "elliptical Gaussian" if p["psf"] == "elliptical_gaussian" else "Moffat"
    note = (
        f"photutils, seed {p['seed']}, {p['n_stars']} stars on {p['size']}^2, {shape} "
        f"FWHM {p['fwhm'][0]}-{p['fwhm'][1]} px"
        + (f", beta {p['beta'][0]}-{p['beta'][1]}" if "beta" in p else "")
        + f", nebula {p['nebula_amp']:g} ADU, correlated noise"
    )
    return Case(name, lr, truth, float(np.mean(p["fwhm"])), catalogue=xy, note=note)


def make_case(name: str, scale: int, data_dir: Path, size: int | None = None) -> Case | None:
    """The case ``name`` at ``scale`` (None when its data is missing)."""
    if name in SIM2:
        return sim2(name, scale, size)
    if name in LOO:
        return loo_case(name, scale, data_dir)
    if name == "real_m67":
        c = fd.real_m67(data_dir, scale)
    elif name == "hdf_8bit":
        c = fd.jpeg_8bit(scale)
    else:
        raise ValueError(f"unknown case {name!r} (choose from {', '.join(CASES)})")
    if c is None:
        return None
    return Case(name, c.lr, c.truth, c.fwhm, note=c.note)


def loo_case(name: str, scale: int, data_dir: Path) -> Case | None:
    """A leave-one-out case: the centre of a training image, area-averaged by ``scale``."""
    from astrosleuth_astro.sim import area_downsample

    path = Path(data_dir) / LOO[name]
    if not path.is_file():
        return None
    data = fd.first_image(path)
    data = np.nan_to_num(data, nan=float(np.nanmedian(data)))
    crop = min(fd.CROP, data.shape[0] // 8 * 8, data.shape[1] // 8 * 8)
    truth = fd._centre_crop(data, crop)
    note = f"{path.name} centre {crop}x{crop} as truth (left out of its fold's training)"
    return Case(name, area_downsample(truth, scale), truth, 2.0, note=note)


# --------------------------------------------------------------------------- the input


@dataclass
class Reference:
    """The input with what the measures need of it (see :func:`reference`)."""

    lr: np.ndarray
    fwhm: float
    background: np.ndarray
    sigma: float
    sky: np.ndarray
    stars: np.ndarray  # (n, 2) (x, y), input detections at THRESHOLD_SIGMA
    fid: object = field(repr=False)  # bench/fidelity.py's Reference
    counterparts: np.ndarray | None = None  # (m, 2): stars, plus the truth's sources


def local_background(lr: np.ndarray) -> tuple[np.ndarray, float]:
    """The input's background map and noise.

    photutils ``Background2D`` (box 32 px, or a quarter of the smaller side when that is
    less, at least 8; 3 x 3 median filter of the boxes; 3-sigma clipping; the default
    SExtractor-like estimator and standard-deviation RMS): the map, and sigma = the median
    of its RMS map. A nebula or gradient does not raise sigma as a global estimate would.
    Where it fails (too few usable boxes, or sigma 0: an 8-bit sky), the global
    :func:`_global_background`.
    """
    from photutils.background import Background2D

    lr = np.asarray(lr, dtype=np.float64)
    box = max(8, min(32, min(lr.shape) // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bkg = Background2D(lr, box, filter_size=3)
        except ValueError:  # e.g. an 8-bit sky of one value in every box
            return _global_background(lr)
    sigma = float(bkg.background_rms_median)
    if not sigma > 0:
        return _global_background(lr)
    return np.asarray(bkg.background, dtype=np.float64), sigma


def _global_background(lr: np.ndarray) -> tuple[np.ndarray, float]:
    """A constant map: ``astrosleuth_astro.stretch.background_stats`` (sigma-clipped
    median, 1.4826 MAD), for an image :func:`local_background` cannot measure."""
    from astrosleuth_astro.stretch import background_stats

    med, sig = background_stats(lr)
    return np.full(np.shape(lr), float(med[0])), float(sig[0])


def detect(
    img: np.ndarray, background: np.ndarray, threshold: float, fwhm: float, scale: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """DAOStarFinder detections: positions ``(n, 2)`` in input px and their sharpness.

    photutils ``DAOStarFinder(fwhm=fwhm * scale, exclude_border=True)`` with its default
    shape limits (sharpness 0.2-1, roundness -1 to 1) on ``img - background``, where
    ``background`` (input grid) is brought to ``img``'s grid by bicubic when ``scale >
    1``; non-finite pixels set to 0. ``threshold`` is per input pixel (e.g. 5 sigma of the
    input's noise): DAOFIND turns it into a threshold on the fitted Gaussian amplitude
    by multiplying it by its kernel's relative error (``kernel.rel_err``), which shrinks
    with the number of pixels in the kernel. The same star has the same amplitude in
    every grid, so on an output (``scale > 1``) the amplitude threshold of the *input's*
    kernel (FWHM ``fwhm``) is applied as given (``scale_threshold=False``): the input's
    threshold, not one ``scale`` times lower.
    """
    from photutils.detection import DAOStarFinder

    from astrosleuth_astro.metrics.image import bicubic

    bg = np.asarray(background, dtype=np.float64)
    finder = DAOStarFinder(threshold=threshold, fwhm=fwhm, exclude_border=True)
    if scale > 1:
        bg = bicubic(bg, scale, clip=False).astype(np.float64)
        amplitude = threshold * finder.kernel.rel_err
        finder = DAOStarFinder(
            threshold=amplitude, fwhm=fwhm * scale, exclude_border=True, scale_threshold=False
        )
    data = np.nan_to_num(np.asarray(img, dtype=np.float64) - bg, nan=0.0, posinf=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = finder(data)
    if tab is None or len(tab) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    xy = np.c_[np.asarray(tab["x_centroid"], float), np.asarray(tab["y_centroid"], float)]
    return to_input(xy, scale), np.asarray(tab["sharpness"], dtype=np.float64)


def to_input(xy: np.ndarray, scale: int) -> np.ndarray:
    """Output-pixel positions in input pixels: ``(x - (s - 1) / 2) / s``."""
    return (np.asarray(xy, dtype=np.float64) - (scale - 1) / 2.0) / scale


def fitted_fwhm(img: np.ndarray, background: np.ndarray, xy: np.ndarray, fwhm: float, scale=1):
    """photutils ``fit_fwhm`` (a circular Gaussian PRF fitted per star) of ``img -
    background`` at the input positions ``xy``, in input px (``(n,)``; NaN where a fit
    fails). Fit box: ``2 ceil(1.5 fwhm s) + 1`` px of ``img``; first guess ``fwhm s``."""
    from photutils.psf import fit_fwhm

    from astrosleuth_astro.metrics.image import bicubic

    if len(xy) == 0:
        return np.zeros(0)
    bg = np.asarray(background, dtype=np.float64)
    if scale > 1:
        bg = bicubic(bg, scale, clip=False).astype(np.float64)
    data = np.nan_to_num(np.asarray(img, dtype=np.float64) - bg)
    box = 2 * math.ceil(1.5 * fwhm * scale) + 1
    pos = fd.to_output(xy, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            f = fit_fwhm(data, xypos=pos, fwhm=fwhm * scale, fit_shape=box)
        except Exception:  # noqa: BLE001 - a failed fit is reported as NaN
            return np.full(len(xy), np.nan)
    return np.asarray(f, dtype=np.float64) / scale


def reference(
    lr: np.ndarray,
    fwhm: float,
    truth: np.ndarray | None = None,
    catalogue: np.ndarray | None = None,
) -> Reference:
    """The input ``lr`` with its background, noise, sky, stars and their counterparts.

    ``background``, ``sigma``: :func:`local_background`. ``fwhm``: the median
    :func:`fitted_fwhm` of the input's isolated bright stars (bench/fidelity.py's
    ``isolated_stars``, 20 sigma, found with the guess ``fwhm``), clipped to 0.8-5 px;
    the guess when there are fewer than 5. ``stars``: :func:`detect` on the input at
    :data:`THRESHOLD_SIGMA` sigma and that FWHM. ``sky``: bench/fidelity.py's
    ``sky_mask`` (not within 2 px of a pixel above background + 3 sigma).
    ``counterparts``: the input's stars plus the truth's sources: the ``catalogue`` when
    given (every true star of a simulated field), else :func:`detect` on the ``truth``
    (at the scale it has) at :data:`THRESHOLD_SIGMA` times the truth's own background
    noise (:func:`local_background` of the truth).
    """
    lr = np.asarray(lr, dtype=np.float64)
    bg, sigma = local_background(lr)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError("lr: no background noise to measure in (sigma is 0 or NaN)")
    fid = fd.reference(lr, fwhm)
    bright = fid.stars[:MAX_FIT]
    if len(bright) >= 5:
        f = np.nanmedian(fitted_fwhm(lr, bg, bright, fwhm))
        if np.isfinite(f):
            fwhm = float(np.clip(f, 0.8, 5.0))
    stars, _ = detect(lr, bg, THRESHOLD_SIGMA * sigma, fwhm)
    ref = Reference(lr, fwhm, bg, sigma, fd.sky_mask(lr, bg, sigma), stars, fid)
    parts = [stars]
    if catalogue is not None:
        parts.append(np.asarray(catalogue, dtype=np.float64).reshape(-1, 2))
    elif truth is not None:
        s = np.shape(truth)[0] // lr.shape[0]
        tbg, tsig = local_background(truth)
        xy_truth, _ = detect(truth, tbg, THRESHOLD_SIGMA * tsig, fwhm * s)  # truth px
        parts.append(to_input(xy_truth, s))
    ref.counterparts = np.concatenate(parts)
    return ref


# --------------------------------------------------------------------------- the measures


def _scale(ref: Reference, out: np.ndarray) -> int:
    return fd._scale(ref.fid, out)  # the output's integer scale, checked


def _matched(a: np.ndarray, b: np.ndarray, radius: float = MATCH_PX) -> np.ndarray:
    """For each position of ``a``, whether ``b`` has one within ``radius``."""
    if len(a) == 0:
        return np.zeros(0, bool)
    if len(b) == 0:
        return np.zeros(len(a), bool)
    d, _ = cKDTree(b).query(a, k=1, distance_upper_bound=radius)
    return np.isfinite(d)


def detections(ref: Reference, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect` on the output at the input's threshold (:data:`THRESHOLD_SIGMA`
    times the input's sigma, the same units per pixel) with the input's FWHM times the
    scale: positions in input px and sharpness."""
    s = _scale(ref, out)
    return detect(out, ref.background, THRESHOLD_SIGMA * ref.sigma, ref.fwhm, s)


def stars_kept(ref: Reference, out: np.ndarray, found=None) -> int:
    """Stars kept at the input's threshold: the number of the input's detections
    (``ref.stars``) with an output detection (:func:`detections`) within
    :data:`MATCH_PX` input px. A count; ``kept_vs_bicubic`` is it over bicubic's."""
    xy, _ = detections(ref, out) if found is None else found
    return int(np.count_nonzero(_matched(ref.stars, xy)))


def invented(ref: Reference, out: np.ndarray, found=None) -> int:
    """Invented sources: the number of output detections (:func:`detections`) with no
    counterpart (``ref.counterparts``: an input detection or a source of the truth)
    within :data:`MATCH_PX` input px. A count; ``invented_vs_bicubic`` is it over
    bicubic's."""
    xy, _ = detections(ref, out) if found is None else found
    return int(np.count_nonzero(~_matched(xy, ref.counterparts)))


def sharpness(ref: Reference, out: np.ndarray, found=None) -> float | None:
    """Median DAOStarFinder sharpness (dimensionless; photutils' definition, the
    peak over the kernel-filtered amplitude) of the output detections that match an input
    star within :data:`MATCH_PX`; None without any. ``sharpness_vs_bicubic`` is it over
    bicubic's (the target is 0.8-1.2)."""
    xy, sh = detections(ref, out) if found is None else found
    ok = _matched(xy, ref.stars)
    return float(np.median(sh[ok])) if ok.any() else None


def fwhm_ratio(ref: Reference, out: np.ndarray) -> float | None:
    """Median over the isolated bright stars of the input (bench/fidelity.py's
    ``isolated_stars``, at most :data:`MAX_FIT`) of the output's fitted FWHM over the
    input's (:func:`fitted_fwhm`, both in input px): 1 when the output keeps the data's
    PSF (the target is 0.9-1.1). None without stars or fits."""
    s = _scale(ref, out)
    xy = ref.fid.stars[:MAX_FIT]
    if len(xy) == 0:
        return None
    f_in = fitted_fwhm(ref.lr, ref.background, xy, ref.fwhm)
    f_out = fitted_fwhm(out, ref.background, xy, ref.fwhm, s)
    r = f_out / f_in
    r = r[np.isfinite(r)]
    return float(np.median(r)) if len(r) else None


def pattern_rms_sigma(ref: Reference, out: np.ndarray) -> float:
    """Fixed pattern at the input-pixel period, in sigma.

    ``d = out - G(out)``, ``G`` a Gaussian of sigma 1 input px (``s`` output px,
    ``scipy.ndimage.gaussian_filter``, edges replicated; it passes a pattern of period
    ``s`` less than 1e-8); on the sky (the input's sky mask upsampled by nearest
    neighbour, without :data:`BORDER` input px at each edge) the mean of ``d`` at each of
    the ``s x s`` positions modulo the scale; those means less their average (a constant
    is no pattern), then the root mean square over the ``s x s`` phases, divided by the
    input's sigma. About 0 for bicubic on a smooth sky; the target is <= 0.01.
    """
    s = _scale(ref, out)
    out = np.asarray(out, dtype=np.float64)
    d = out - ndimage.gaussian_filter(out, sigma=float(s), mode="nearest")
    ok = fd.upsample_nearest(ref.sky, s) & np.isfinite(d)
    b = BORDER * s
    ok[:b], ok[-b:], ok[:, :b], ok[:, -b:] = False, False, False, False
    h, w = d.shape
    py, px = np.meshgrid(np.arange(h) % s, np.arange(w) % s, indexing="ij")
    phase = (py * s + px)[ok]
    means = np.bincount(phase, d[ok], s * s) / np.maximum(np.bincount(phase, None, s * s), 1)
    return float(np.sqrt(np.mean((means - means.mean()) ** 2)) / ref.sigma)


def _sky_residual(ref: Reference, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``out - G(out)`` (``G`` as in :func:`pattern_rms_sigma`), the sky mask at the output
    scale without :data:`BORDER` input px at each edge, and the scale."""
    s = _scale(ref, out)
    out = np.asarray(out, dtype=np.float64)
    d = out - ndimage.gaussian_filter(out, sigma=float(s), mode="nearest")
    ok = fd.upsample_nearest(ref.sky, s) & np.isfinite(d)
    b = BORDER * s
    ok[:b], ok[-b:], ok[:, :b], ok[:, -b:] = False, False, False, False
    return d, ok, s


def texture_sigma(ref: Reference, out: np.ndarray) -> float | None:
    """Structure of the sky below the input's pixel scale, in sigma.

    The standard deviation over the sky (as in :func:`pattern_rms_sigma`) of ``out -
    G(out)``, ``G`` a Gaussian of sigma 1 input px: what the output puts on the sky at
    scales finer than an input pixel, noise or invented texture alike. An output that
    makes no sub-pixel structure scores 0; ``texture_vs_bicubic`` is this over bicubic's
    (a smooth interpolation of the same data). None without sky.
    """
    d, ok, _ = _sky_residual(ref, out)
    if ok.sum() < 100:
        return None
    return float(np.std(d[ok]) / ref.sigma)


def texture_coherence(ref: Reference, out: np.ndarray) -> float | None:
    """How elongated ("worm-like") the sky's fine structure is, 0 to 1.

    The structure tensor (``skimage.feature.structure_tensor``, Gaussian window of sigma
    1 input px) of ``out - G(out)`` (:func:`texture_sigma`), its eigenvalues ``l1 >= l2``
    at each sky pixel, and the coherence ``((l1 - l2) / (l1 + l2))**2`` averaged over
    the sky weighted by ``l1 + l2`` (where there is structure). Isotropic noise, or a
    smooth interpolation of it, gives a low value; strands and worms give a high one.
    Read beside bicubic's (``coherence_vs_bicubic``). None without sky.
    """
    from skimage.feature import structure_tensor

    d, ok, s = _sky_residual(ref, out)
    if ok.sum() < 100:
        return None
    arr, arc, acc = structure_tensor(d, sigma=float(s), order="rc")
    tr = arr + acc
    det = arr * acc - arc * arc
    disc = np.sqrt(np.maximum(tr * tr / 4.0 - det, 0.0))
    l1, l2 = tr / 2.0 + disc, tr / 2.0 - disc
    with np.errstate(invalid="ignore", divide="ignore"):
        coh = np.where(tr > 0, ((l1 - l2) / (l1 + l2)) ** 2, 0.0)
    w = tr[ok]
    return float(np.sum(coh[ok] * w) / np.sum(w)) if np.sum(w) > 0 else None


def measure(ref: Reference, out: np.ndarray, truth: np.ndarray) -> dict:
    """Every per-output measure of ``out`` (not the ``*_vs_bicubic`` and ``gain_*``)."""
    found = detections(ref, out)
    return {
        "psnr_stretched": fd.psnr_stretched(ref.fid, out, truth),
        "psnr_linear": fd.psnr_linear(out, truth),
        "stars_in": len(ref.stars),
        "stars_kept": stars_kept(ref, out, found),
        "invented": invented(ref, out, found),
        "fwhm_ratio": fwhm_ratio(ref, out),
        "sharpness": sharpness(ref, out, found),
        "pattern_rms_sigma": pattern_rms_sigma(ref, out),
        "texture_sigma": texture_sigma(ref, out),
        "texture_coherence": texture_coherence(ref, out),
        "flux_ratio_median": fd.flux_ratio_median(ref.fid, out),
        "centroid_shift_px": fd.centroid_shift_px(ref.fid, out),
    }


def _ratio(a, b):
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def compare(rows: dict) -> None:
    """Add the model's ``*_vs_bicubic`` and ``gain_*_db`` (in place)."""
    m, b = rows.get("model"), rows.get("bicubic")
    if not m or not b:
        return
    m["gain_stretched_db"] = m["psnr_stretched"] - b["psnr_stretched"]
    m["gain_linear_db"] = m["psnr_linear"] - b["psnr_linear"]
    m["kept_vs_bicubic"] = _ratio(m["stars_kept"], b["stars_kept"])
    m["invented_vs_bicubic"] = _ratio(m["invented"], b["invented"])
    m["sharpness_vs_bicubic"] = _ratio(m["sharpness"], b["sharpness"])
    m["texture_vs_bicubic"] = _ratio(m.get("texture_sigma"), b.get("texture_sigma"))
    m["coherence_vs_bicubic"] = _ratio(m.get("texture_coherence"), b.get("texture_coherence"))


# --------------------------------------------------------------------------- the run


def run_method(method: str, lr: np.ndarray, scale: int, net) -> tuple[np.ndarray, float]:
    """Upscale ``lr`` by ``scale``: ``model`` through the pipeline with default options,
    or ``bicubic`` (linear, unclipped). The output and its wall time (s)."""
    import astrosleuth_astro as asa
    from astrosleuth_astro.metrics.image import bicubic

    start = time.perf_counter()
    if method == "bicubic":
        out = bicubic(np.asarray(lr, dtype=np.float64), scale, clip=False)
    else:
        out = asa.upscale(lr, model=net, scale=scale)
    return np.asarray(out, dtype=np.float64), time.perf_counter() - start


def run_case(case: Case, scale: int, net, methods=METHODS) -> dict:
    ref = reference(case.lr, case.fwhm, case.truth, case.catalogue)
    rows = {}
    for method in methods:
        out, seconds = run_method(method, case.lr, scale, net)
        rows[method] = {**measure(ref, out, case.truth), "seconds": round(seconds, 3)}
    compare(rows)
    return {
        "case": case.name,
        "scale": scale,
        "shape_in": list(np.shape(case.lr)),
        "fwhm_px": ref.fwhm,
        "sigma": ref.sigma,
        "stars_in": len(ref.stars),
        "fwhm_stars": len(ref.fid.stars[:MAX_FIT]),
        "note": case.note,
        "methods": rows,
    }


def markdown(result: dict) -> str:
    """A markdown table of one case and scale: a row per method, a column per measure."""
    title = (
        f"{result['case']} x{result['scale']} (input {result['shape_in'][0]}x"
        f"{result['shape_in'][1]}, sigma {fd._fmt(result['sigma'])}, FWHM "
        f"{result['fwhm_px']:.2f} px, {result['stars_in']} stars at "
        f"{THRESHOLD_SIGMA:g} sigma, {result['fwhm_stars']} fitted; {result['note']})"
    )
    return "\n".join(fd.table(title, result["methods"], MEASURES, skip="stars_in"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="4,2", help="comma-separated (default 4,2)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--data", default="../shared/data", help="folder of M6707HH.fits")
    parser.add_argument("--model", default="default", help="registry name or weights file")
    parser.add_argument(
        "--loo",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help=f"a fold model for case loo_NAME ({', '.join(k[4:] for k in LOO)}); repeatable",
    )
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--json", metavar="OUT.json", help="write every result there")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    scales = [int(s) for s in fd._csv(args.scales)]
    cases = fd._csv(args.cases)
    folds = {}
    for item in args.loo:
        name, sep, path = item.partition("=")
        if not sep or f"loo_{name}" not in LOO:
            parser.error(
                f"--loo: {item!r} (NAME=MODEL with NAME in {', '.join(k[4:] for k in LOO)})"
            )
        folds[f"loo_{name}"] = path
    cases += [c for c in folds if c not in cases]
    for c in cases:
        if c not in CASES and c not in LOO:
            parser.error(f"--cases: unknown case {c!r} (choose from {', '.join(CASES)})")
        if c in LOO and c not in folds:
            parser.error(f"--cases: {c} needs its fold model (--loo {c[4:]}=MODEL)")
    for s in scales:
        if s not in (2, 4):
            parser.error(f"--scales: {s} (choose from 2, 4)")

    import astrosleuth_astro as asa

    print(LOO_NOTE, flush=True)
    net = asa.get_backend(args.model)
    asa.upscale(np.full((32, 32), 100.0) + np.eye(32), model=net)  # load and warm it
    fold_nets = {c: asa.get_backend(p) for c, p in folds.items()}
    results, skipped = [], []
    for name in cases:
        for s in scales:
            case = make_case(name, s, Path(args.data), args.size)
            if case is None:
                missing = LOO.get(name, "M6707HH.fits")
                note = f"{name}: skipped, {Path(args.data) / missing} not found"
                if note not in skipped:
                    print(note, file=sys.stderr)
                    skipped.append(note)
                continue
            start = time.perf_counter()
            res = run_case(case, s, fold_nets.get(name, net))
            if name in folds:
                res["model"] = folds[name]
            results.append(res)
            print(f"{name} x{s}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            if args.markdown:
                print(markdown(res) + "\n", flush=True)
            else:
                for method, row in res["methods"].items():
                    body = ", ".join(f"{k} {fd._fmt(row.get(k))}" for k in MEASURES if k in row)
                    print(f"{name} x{s} {method}: {body}", flush=True)
    if args.json:
        doc = {
            "model": args.model,
            "sim2": {k: {**SIM2_COMMON, **v} for k, v in SIM2.items()},
            "threshold_sigma": THRESHOLD_SIGMA,
            "match_px": MATCH_PX,
            "leave_one_out": {"note": LOO_NOTE, "folds": folds},
            "results": results,
            "skipped": skipped,
        }
        Path(args.json).write_text(json.dumps(fd._jsonable(doc), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
