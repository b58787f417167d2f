"""Fidelity of the upscaled output to its input (issue 23 item 4).

For each flux-conservation mode of the pipeline (``off``, ``sources``, ``consistent``,
``all``, each through the public :func:`astrosleuth_astro.upscale`) and for bicubic
upsampling (:func:`astrosleuth_astro.metrics.image.bicubic`, linear units, unclipped), at
scales 4 and 2, on held-out data only:

* ``crowded_sim``: a crowded simulated field in a second simulator configuration
  (Gaussian PSF, FWHM 1.8 px, 3000 stars on 256 x 256, no hot pixels); no truth.
* ``raw_frame``: a simulated raw uint16 camera frame (bias pedestal, dead and hot pixels,
  one bad column, clipped at 65535); no truth.
* ``real_m67``: the centre 512 x 512 of ``M6707HH.fits`` (a DSS plate of M67) as truth,
  area-averaged by the scale as input; skipped when the file is missing.
* ``jpeg_8bit``: the centre 512 x 512 of scikit-image's Hubble Deep Field (8-bit RGB,
  grey = mean of the channels, 0-255 units) as truth, area-averaged by the scale as input.

The measures (:data:`MEASURES`, each defined in the docstring of its function) compare
the output with the input it was made from: what binning the output back to the input's
grid leaves, the star fluxes and centroids, the visibility of the input's pixel grid,
the sky noise, new negative pixels; and, for the two cases with a truth, the PSNR against
it. Units: sigma is the input's background noise
(:func:`astrosleuth_astro.stretch.background_stats`), positions are in input pixels.

Usage::

    python bench/fidelity.py [--scales 4,2] [--cases crowded_sim,raw_frame,real_m67,jpeg_8bit]
        [--modes off,sources,consistent,all,bicubic] [--data ../shared/data]
        [--model default] [--json OUT.json] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

#: Seeds of the simulated cases: not 0-9 (which the trainer's streams may use) and
#: different from every other benchmark's.
SEED_CROWDED = 23_401
SEED_RAW = 23_402
#: The truth crop of the real and 8-bit cases, in truth pixels.
CROP = 512
CASES = ("crowded_sim", "raw_frame", "real_m67", "jpeg_8bit")
MODES = ("off", "sources", "consistent", "all", "bicubic")
MEASURES = (
    "sky_offset_sigma",
    "binned_median_abs_sigma",
    "binned_rms8_sigma",
    "flux_ratio_median",
    "n_stars",
    "centroid_shift_px",
    "boundary_ratio_linear",
    "boundary_ratio_stretched",
    "sky_noise_sigma",
    "sky_noise_vs_bicubic",
    "negative_pixels",
    "psnr_linear",
    "psnr_stretched",
    "seconds",
)


# --------------------------------------------------------------------------- the input


@dataclass
class Reference:
    """What the measures need of the input, computed once per input (see :func:`reference`)."""

    lr: np.ndarray
    fwhm: float
    background: float
    sigma: float
    sky: np.ndarray
    stars: np.ndarray
    stretch: object = field(repr=False)
    defects: np.ndarray | None = None


def reference(lr: np.ndarray, fwhm: float, defects: np.ndarray | None = None) -> Reference:
    """The input ``lr`` (2-D, linear, any units) with its background, noise, sky and stars.

    Parameters
    ----------
    lr : ndarray, shape (h, w)
    fwhm : float
        Stellar FWHM in input pixels (for the star detection and apertures).
    defects : ndarray of bool, shape (h, w), optional
        The pixels the case made defective (known by construction, not detected): the
        boundary measures leave out their neighbourhood.

    Returns
    -------
    Reference
        ``background``, ``sigma``: :func:`astrosleuth_astro.stretch.background_stats`
        (sigma-clipped median, 1.4826 MAD); ``sky``: :func:`sky_mask`; ``stars``:
        :func:`isolated_stars`, ``(n, 2)`` as ``(x, y)``; ``stretch``: an ``mtf`` stretch
        fitted on the input (:func:`astrosleuth_astro.stretch.fit_stretch`, which is also
        :func:`astrosleuth_astro.metrics.image.scoring_stretch`).
    """
    from astrosleuth_astro.stretch import background_stats, fit_stretch

    lr = np.asarray(lr, dtype=np.float64)
    if lr.ndim != 2:
        raise ValueError(f"lr: expected a 2-D image, got shape {lr.shape}")
    med, sig = background_stats(lr)
    bg, sigma = float(med[0]), float(sig[0])
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError("lr: no background noise to measure in (sigma is 0 or NaN)")
    return Reference(
        lr=lr,
        fwhm=float(fwhm),
        background=bg,
        sigma=sigma,
        sky=sky_mask(lr, bg, sigma),
        stars=isolated_stars(lr, bg, sigma, fwhm),
        stretch=fit_stretch(lr, "mtf"),
        defects=None if defects is None else np.asarray(defects, dtype=bool),
    )


def sky_mask(lr: np.ndarray, background: float, sigma: float) -> np.ndarray:
    """Sky pixels of the input.

    Sky = the finite input pixels that are not within 2 px (two 8-connected dilations, a
    3 x 3 structuring element) of a pixel above ``background + 3 sigma``.
    """
    lr = np.asarray(lr, dtype=np.float64)
    high = np.nan_to_num(lr, nan=-np.inf) > background + 3.0 * sigma
    near = ndimage.binary_dilation(high, structure=np.ones((3, 3), bool), iterations=2)
    return ~near & np.isfinite(lr)


def isolated_stars(lr: np.ndarray, background: float, sigma: float, fwhm: float) -> np.ndarray:
    """Isolated bright stars of the input, ``(n, 2)`` positions ``(x, y)`` in input px.

    ``photutils.detection.DAOStarFinder`` (threshold ``20 sigma``, the given ``fwhm``,
    ``exclude_border=True``, its default shape limits) on ``lr - background`` (non-finite
    pixels set to 0); kept: the detections with no other detection within ``4 fwhm`` and
    at least 8 px from every border (``8 < x < w - 9``, same for y), whose aperture flux
    (:func:`aperture_flux`) in the input is positive.
    """
    from photutils.detection import DAOStarFinder

    lr = np.asarray(lr, dtype=np.float64)
    h, w = lr.shape
    data = np.nan_to_num(lr - background, nan=0.0, posinf=0.0, neginf=0.0)
    finder = DAOStarFinder(threshold=20.0 * sigma, fwhm=fwhm, exclude_border=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = finder(data)
    if tab is None or len(tab) == 0:
        return np.zeros((0, 2))
    xy = np.c_[np.asarray(tab["x_centroid"], float), np.asarray(tab["y_centroid"], float)]
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    keep = d.min(axis=1) > 4.0 * fwhm
    keep &= (xy[:, 0] > 8) & (xy[:, 0] < w - 9) & (xy[:, 1] > 8) & (xy[:, 1] < h - 9)
    xy = xy[keep]
    if len(xy):
        xy = xy[aperture_flux(lr, xy, 1.5 * fwhm) > 0]
    return xy


# --------------------------------------------------------------------------- helpers


def _scale(ref: Reference, out: np.ndarray) -> int:
    h, w = ref.lr.shape
    oh, ow = np.shape(out)
    s = oh // h
    if s < 1 or oh != s * h or ow != s * w:
        raise ValueError(f"out: shape {np.shape(out)} is not an integer scale of {ref.lr.shape}")
    return s


def binned_residual(ref: Reference, out: np.ndarray) -> np.ndarray:
    """``out`` averaged over each ``scale x scale`` block, minus the input (input units)."""
    from astrosleuth_astro.sim import area_downsample

    s = _scale(ref, out)
    return area_downsample(np.asarray(out, dtype=np.float64), s) - ref.lr


def upsample_nearest(mask: np.ndarray, scale: int) -> np.ndarray:
    """Each input pixel repeated ``scale x scale`` times."""
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def to_output(xy: np.ndarray, scale: int) -> np.ndarray:
    """Input-pixel positions in output pixels: ``s x + (s - 1) / 2`` (pixel centres at
    integers in both grids)."""
    return np.asarray(xy, dtype=np.float64) * scale + (scale - 1) / 2.0


def aperture_flux(img: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """Background-subtracted aperture sums at ``xy`` (``(n, 2)``, ``(x, y)``).

    ``photutils`` ``CircularAperture`` of ``radius`` (exact overlap), minus its area times
    the median (no clipping) of a ``CircularAnnulus`` from ``2 radius`` to ``3 radius``.
    """
    from photutils.aperture import (
        ApertureStats,
        CircularAnnulus,
        CircularAperture,
        aperture_photometry,
    )

    img = np.asarray(img, dtype=np.float64)
    ap = CircularAperture(xy, radius)
    ann = CircularAnnulus(xy, 2.0 * radius, 3.0 * radius)
    bkg = np.atleast_1d(ApertureStats(img, ann, sigma_clip=None).median)
    total = np.asarray(aperture_photometry(img, ap)["aperture_sum"], dtype=np.float64)
    return total - bkg * ap.area


def _centroids(img: np.ndarray, xy: np.ndarray, box: int, scale: int = 1) -> np.ndarray:
    """Centres of mass (photutils ``centroid_com``) of ``img`` in boxes aligned on the input.

    The box of each star covers input pixels ``round(v) - box // 2`` to ``round(v) + box //
    2`` on each axis (``xy`` in input px); in an image at ``scale`` it is the same piece of
    sky, the ``scale * box`` output pixels of those input pixels. Returned in ``img``'s
    pixels.
    """
    from photutils.centroids import centroid_com

    out = np.full((len(xy), 2), np.nan)
    h, w = np.shape(img)
    for k, (x, y) in enumerate(np.asarray(xy, dtype=np.float64)):
        x0, y0 = (int(round(v)) - box // 2 for v in (x, y))
        r0, c0 = scale * y0, scale * x0
        r1, c1 = r0 + scale * box, c0 + scale * box
        if r0 < 0 or c0 < 0 or r1 > h or c1 > w:
            continue
        cut = np.asarray(img[r0:r1, c0:c1], dtype=np.float64)
        if not np.all(np.isfinite(cut)):
            continue
        cx, cy = centroid_com(cut)
        out[k] = (c0 + cx, r0 + cy)
    return out


def _boundary_ratio(img: np.ndarray, scale: int, exclude: np.ndarray | None = None) -> float:
    img = np.asarray(img, dtype=np.float64)
    dx = np.abs(np.diff(img, axis=1))  # pair (j, j + 1) along x
    dy = np.abs(np.diff(img, axis=0))
    if exclude is not None:  # a pair with either pixel in an excluded block
        ex = upsample_nearest(exclude, scale)
        dx[ex[:, 1:] | ex[:, :-1]] = np.nan
        dy[ex[1:] | ex[:-1]] = np.nan
    bx = np.arange(dx.shape[1]) % scale == scale - 1  # j + 1 starts a new block
    by = np.arange(dy.shape[0]) % scale == scale - 1
    across = np.concatenate([dx[:, bx].ravel(), dy[by].ravel()])
    inside = np.concatenate([dx[:, ~bx].ravel(), dy[~by].ravel()])
    a, b = np.nanmean(across), np.nanmean(inside)
    if b == 0:
        return math.inf if a > 0 else math.nan
    return float(a / b)


def _defect_zone(ref: Reference) -> np.ndarray | None:
    """The known defects grown by one input pixel (8-connected), or None."""
    if ref.defects is None or not ref.defects.any():
        return None
    return ndimage.binary_dilation(ref.defects, structure=np.ones((3, 3), bool))


# --------------------------------------------------------------------------- the measures


def sky_offset_sigma(ref: Reference, out: np.ndarray) -> float:
    """Mean binned residual on the sky, in sigma.

    The output is averaged over each ``scale x scale`` block (one block per input pixel)
    and the input subtracted; the 3-sigma-clipped mean (astropy ``sigma_clipped_stats``,
    5 iterations) of that residual over the sky pixels (:func:`sky_mask`) with a finite
    residual, divided by sigma. 0 when the output keeps the sky level of the input.
    """
    r = binned_residual(ref, out)
    ok = ref.sky & np.isfinite(r)
    return float(sigma_clipped_stats(r[ok], sigma=3.0)[0] / ref.sigma)


def binned_median_abs_sigma(ref: Reference, out: np.ndarray) -> float:
    """Median over all input pixels with a finite binned residual (:func:`binned_residual`)
    of its absolute value, in sigma. 0 when binning the output gives the input back."""
    r = binned_residual(ref, out)
    return float(np.median(np.abs(r[np.isfinite(r)])) / ref.sigma)


def binned_rms8_sigma(ref: Reference, out: np.ndarray) -> float:
    """Large-scale binned residual, in sigma.

    The binned residual (:func:`binned_residual`) averaged (NaN-ignoring) over each 8 x 8
    block of input pixels (the input cropped to a multiple of 8), then the root mean
    square over the blocks with a finite mean, divided by sigma. Noise averages down by 8
    in such a block; a residual that survives is a local flux or level change.
    """
    r = binned_residual(ref, out)
    h, w = r.shape[0] // 8 * 8, r.shape[1] // 8 * 8
    blocks = r[:h, :w].reshape(h // 8, 8, w // 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r8 = np.nanmean(blocks, axis=(1, 3))
    r8 = r8[np.isfinite(r8)]
    return float(np.sqrt(np.mean(r8**2)) / ref.sigma)


def flux_ratio_median(ref: Reference, out: np.ndarray) -> float | None:
    """Median output/input aperture flux of the isolated bright stars (:func:`isolated_stars`).

    For each star at input ``(x, y)``: the input flux is :func:`aperture_flux` of the
    input at ``(x, y)``, radius ``1.5 fwhm``; the output flux is :func:`aperture_flux` of
    the output at :func:`to_output` ``(x, y)``, radius ``1.5 fwhm * scale``, divided by
    ``scale**2`` (the output keeps the input's units per pixel). None without stars.
    """
    s = _scale(ref, out)
    if len(ref.stars) == 0:
        return None
    r = 1.5 * ref.fwhm
    f_in = aperture_flux(ref.lr, ref.stars, r)
    f_out = aperture_flux(out, to_output(ref.stars, s), r * s) / s**2
    return float(np.nanmedian(f_out / f_in))


def centroid_shift_px(ref: Reference, out: np.ndarray) -> float | None:
    """Median centroid shift of the isolated bright stars, in input pixels.

    Centre of mass (``photutils.centroids.centroid_com``) of ``image - background`` over
    the same piece of sky in both images (:func:`_centroids`): a box of ``2 int(2 fwhm) +
    1`` input pixels around each star of the input, and those pixels' ``scale x scale``
    footprints in the output. The output's centroid is mapped back to input px by
    ``(c - (s - 1) / 2) / s``. The median over the stars of the distance between the two.
    An output whose every footprint keeps its input value and is symmetric inside scores
    0. None without stars.
    """
    s = _scale(ref, out)
    if len(ref.stars) == 0:
        return None
    box = 2 * int(2 * ref.fwhm) + 1
    c_in = _centroids(ref.lr - ref.background, ref.stars, box)
    out = np.asarray(out, dtype=np.float64)
    c_out = _centroids(out - ref.background, ref.stars, box, scale=s)
    c_out = (c_out - (s - 1) / 2.0) / s
    return float(np.nanmedian(np.hypot(*(c_out - c_in).T)))


def boundary_ratio_linear(ref: Reference, out: np.ndarray) -> float:
    """Visibility of the input's pixel grid in the output, in linear units.

    Over both axes, the mean absolute difference of adjacent output pixels that lie in
    two different input-pixel blocks (``scale x scale``), over the mean absolute
    difference of adjacent pairs inside one block (non-finite pairs ignored). About 1 for
    a smooth output; large (inf for a nearest-neighbour upsampling, whose blocks are flat)
    when the output changes mostly at the block edges. Pairs with a pixel in the block of
    a known defect of the case (``ref.defects``) or of one of its 8 neighbours are left
    out, for every method alike: a defect's own block is flat at its input value by
    design (issue 23 item 2), and a few such steps of thousands of ADU would outweigh the
    whole sky.
    """
    return _boundary_ratio(out, _scale(ref, out), _defect_zone(ref))


def boundary_ratio_stretched(ref: Reference, out: np.ndarray) -> float:
    """:func:`boundary_ratio_linear` of the output after the input's ``mtf`` stretch
    (``ref.stretch.forward``, clipped to [0, 1]): the grid as a viewer sees it."""
    s = _scale(ref, out)
    stretched = np.clip(ref.stretch.forward(np.asarray(out), dtype=np.float64), 0.0, 1.0)
    return _boundary_ratio(stretched, s, _defect_zone(ref))


def sky_noise_sigma(ref: Reference, out: np.ndarray) -> float:
    """Pixel noise of the output on the sky, in sigma.

    The 3-sigma-clipped standard deviation (astropy ``sigma_clipped_stats``, 5
    iterations) of the finite output pixels on the sky (:func:`sky_mask` upsampled by
    nearest neighbour), divided by sigma. About 1 for an output that copies each input
    pixel; below 1 for a smoothing interpolation. ``sky_noise_vs_bicubic`` is this over
    bicubic's on the same input.
    """
    s = _scale(ref, out)
    out = np.asarray(out, dtype=np.float64)
    ok = upsample_nearest(ref.sky, s) & np.isfinite(out)
    return float(sigma_clipped_stats(out[ok], sigma=3.0)[2] / ref.sigma)


def negative_pixels(ref: Reference, out: np.ndarray) -> int:
    """Number of output pixels below 0 whose input pixel has a 3 x 3 neighbourhood minimum
    (edges replicated) of at least 0: negative values the input did not have nearby."""
    s = _scale(ref, out)
    lr = np.nan_to_num(ref.lr, nan=-np.inf)
    nonneg = ndimage.minimum_filter(lr, size=3, mode="nearest") >= 0
    return int(np.count_nonzero((np.asarray(out) < 0) & upsample_nearest(nonneg, s)))


def psnr_linear(out: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB, :func:`astrosleuth_astro.metrics.image.psnr`, finite pixels) of the output
    against the truth in linear units, peak = the truth's finite maximum - minimum."""
    from astrosleuth_astro.metrics.image import psnr

    t = np.asarray(truth, dtype=np.float64)
    fin = t[np.isfinite(t)]
    return psnr(np.asarray(out, dtype=np.float64), t, peak=float(fin.max() - fin.min()))


def psnr_stretched(ref: Reference, out: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB, peak 1) of the output against the truth in the scoring domain: the input's
    ``mtf`` stretch (:func:`~astrosleuth_astro.metrics.image.scoring_stretch`) applied to
    both by :func:`~astrosleuth_astro.metrics.image.to_scoring_domain` ([0, 1])."""
    from astrosleuth_astro.metrics.image import psnr, scoring_stretch, to_scoring_domain

    st = scoring_stretch(ref.lr, "mtf")
    a = to_scoring_domain(st, np.asarray(out, dtype=np.float64))
    b = to_scoring_domain(st, np.asarray(truth, dtype=np.float64))
    return psnr(a, b, peak=1.0)


def measure(ref: Reference, out: np.ndarray, truth: np.ndarray | None = None) -> dict:
    """Every measure of ``out`` (all but ``sky_noise_vs_bicubic`` and ``seconds``)."""
    m = {
        "sky_offset_sigma": sky_offset_sigma(ref, out),
        "binned_median_abs_sigma": binned_median_abs_sigma(ref, out),
        "binned_rms8_sigma": binned_rms8_sigma(ref, out),
        "flux_ratio_median": flux_ratio_median(ref, out),
        "n_stars": len(ref.stars),
        "centroid_shift_px": centroid_shift_px(ref, out),
        "boundary_ratio_linear": boundary_ratio_linear(ref, out),
        "boundary_ratio_stretched": boundary_ratio_stretched(ref, out),
        "sky_noise_sigma": sky_noise_sigma(ref, out),
        "negative_pixels": negative_pixels(ref, out),
    }
    if truth is not None:
        m["psnr_linear"] = psnr_linear(out, truth)
        m["psnr_stretched"] = psnr_stretched(ref, out, truth)
    return m


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    lr: np.ndarray  # what is upscaled (its own dtype: uint16 for the raw frame)
    fwhm: float
    truth: np.ndarray | None = None
    note: str = ""
    defects: np.ndarray | None = None  # known by construction


def crowded_sim() -> Case:
    from astrosleuth_astro.sim import simulate

    res = simulate(
        (256, 256), seed=SEED_CROWDED, fwhm=1.8, psf="gaussian", n_stars=3000, hot_pixels=0
    )
    note = f"simulate seed {SEED_CROWDED}, Gaussian PSF, FWHM 1.8, 3000 stars"
    return Case("crowded_sim", np.squeeze(res.lr).astype(np.float64), 1.8, note=note)


def raw_frame() -> Case:
    from astrosleuth_astro.sim import simulate

    # The simulator's own hot pixels off: every defect of the case is known (the
    # boundary measures leave their blocks out).
    res = simulate((256, 256), seed=SEED_RAW, fwhm=2.5, background=300, read_noise=8, hot_pixels=0)
    img = np.squeeze(res.lr).astype(np.float64) + 1000.0  # bias pedestal
    rng = np.random.default_rng([SEED_RAW, 1])
    h, w = img.shape
    dead = rng.integers(0, [h, w], size=(12, 2))
    hot = rng.integers(0, [h, w], size=(12, 2))
    col = int(rng.integers(16, w - 16))
    img[dead[:, 0], dead[:, 1]] = 0.0
    img[hot[:, 0], hot[:, 1]] += 5000.0
    img[:, col] += 200.0
    lr = np.rint(np.clip(img, 0, 65535)).astype(np.uint16)
    defects = np.zeros((h, w), bool)
    defects[dead[:, 0], dead[:, 1]] = True
    defects[hot[:, 0], hot[:, 1]] = True
    defects[:, col] = True
    note = (
        f"simulate seed {SEED_RAW}, bias 1000 ADU, 12 dead, 12 hot (+5000), "
        f"column {col} +200, uint16"
    )
    return Case("raw_frame", lr, 2.5, note=note, defects=defects)


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    if h < size or w < size:
        raise ValueError(f"image {img.shape} is smaller than the {size} x {size} crop")
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[y : y + size, x : x + size], dtype=np.float64)


def first_image(path: Path) -> np.ndarray:
    """The first 2-D image HDU of a FITS file, float64 ``(H, W)``."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2)
        data = np.asarray(hdu.data, dtype=np.float64)
    return data.reshape(data.shape[-2:])


def real_m67(data_dir: Path, scale: int) -> Case | None:
    from astrosleuth_astro.sim import area_downsample

    path = Path(data_dir) / "M6707HH.fits"
    if not path.is_file():
        return None
    truth = _centre_crop(first_image(path), CROP)
    note = f"{path.name} centre {CROP}x{CROP} as truth, area-averaged by {scale}"
    return Case("real_m67", area_downsample(truth, scale), 2.0, truth=truth, note=note)


def jpeg_8bit(scale: int) -> Case:
    from skimage import data

    from astrosleuth_astro.sim import area_downsample

    rgb = np.asarray(data.hubble_deep_field(), dtype=np.float64)
    truth = _centre_crop(rgb.mean(axis=-1), CROP)
    note = f"skimage hubble_deep_field grey, centre {CROP}x{CROP}, area-averaged by {scale}"
    return Case("jpeg_8bit", area_downsample(truth, scale), 2.0, truth=truth, note=note)


def make_case(name: str, scale: int, data_dir: Path) -> Case | None:
    """The case ``name`` at ``scale`` (None when its data is missing)."""
    if name == "crowded_sim":
        return crowded_sim()
    if name == "raw_frame":
        return raw_frame()
    if name == "real_m67":
        return real_m67(data_dir, scale)
    if name == "jpeg_8bit":
        return jpeg_8bit(scale)
    raise ValueError(f"unknown case {name!r} (choose from {', '.join(CASES)})")


# --------------------------------------------------------------------------- the run


def run_method(method: str, lr: np.ndarray, scale: int, net) -> tuple[np.ndarray, float]:
    """Upscale ``lr`` by ``scale`` with ``method``: the output and its wall time (s)."""
    import astrosleuth_astro as asa
    from astrosleuth_astro.metrics.image import bicubic

    start = time.perf_counter()
    if method == "bicubic":
        out = bicubic(np.asarray(lr, dtype=np.float64), scale, clip=False)
    else:
        out = asa.upscale(lr, model=net, scale=scale, conserve_flux=method)
    return np.asarray(out), time.perf_counter() - start


def run_case(case: Case, scale: int, methods: list[str], net) -> dict:
    """Every method's measures on one case at one scale (``{"missing": why}`` for a mode
    the pipeline does not have)."""
    from astrosleuth_astro.errors import OptionError

    ref = reference(case.lr, case.fwhm, case.defects)
    rows: dict[str, dict] = {}
    for method in methods:
        try:
            out, seconds = run_method(method, case.lr, scale, net)
        except OptionError as exc:
            rows[method] = {"missing": str(exc)}
            continue
        rows[method] = {**measure(ref, out, case.truth), "seconds": round(seconds, 3)}
    if "bicubic" in rows:
        bic_noise = rows["bicubic"]["sky_noise_sigma"]
    else:
        bic_noise = sky_noise_sigma(ref, run_method("bicubic", case.lr, scale, net)[0])
    for row in rows.values():
        if "sky_noise_sigma" in row:
            row["sky_noise_vs_bicubic"] = row["sky_noise_sigma"] / bic_noise
    return {
        "case": case.name,
        "scale": scale,
        "fwhm_px": case.fwhm,
        "shape_in": list(np.shape(case.lr)),
        "dtype_in": str(np.asarray(case.lr).dtype),
        "sigma": ref.sigma,
        "background": ref.background,
        "n_stars": len(ref.stars),
        "note": case.note,
        "methods": rows,
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def table(title: str, methods: dict, measures: tuple[str, ...], skip: str = "") -> list[str]:
    """Markdown lines: ``### title``, then a row per method and a column per measure
    (those present in some row, ``skip`` left out); a method whose row is ``{"missing":
    why}`` says so."""
    rows = methods.values()
    cols = [k for k in measures if k != skip and any(k in row for row in rows)]
    lines = [
        f"### {title}",
        "",
        "| method | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for method, row in methods.items():
        if "missing" in row:
            lines.append(f"| {method} | missing: {row['missing']} |" + " |" * (len(cols) - 1))
        else:
            lines.append(f"| {method} | " + " | ".join(_fmt(row.get(k)) for k in cols) + " |")
    return lines


def markdown(result: dict) -> str:
    """A markdown table of one case and scale: a row per method, a column per measure."""
    title = (
        f"{result['case']} x{result['scale']} "
        f"(input {result['shape_in'][0]}x{result['shape_in'][1]} {result['dtype_in']}, "
        f"sigma {_fmt(result['sigma'])}, {result['n_stars']} stars; {result['note']})"
    )
    lines = table(title, result["methods"], MEASURES, skip="n_stars")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="4,2", help="comma-separated (default 4,2)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated methods")
    parser.add_argument("--data", default="../shared/data", help="folder of M6707HH.fits")
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", metavar="OUT.json", help="write every result there")
    parser.add_argument("--markdown", action="store_true", help="print a table per case/scale")
    args = parser.parse_args(argv)
    scales = [int(s) for s in _csv(args.scales)]
    cases, methods = _csv(args.cases), _csv(args.modes)
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases: unknown case {c!r} (choose from {', '.join(CASES)})")
    for m in methods:
        if m not in MODES:
            parser.error(f"--modes: unknown method {m!r} (choose from {', '.join(MODES)})")

    import astrosleuth_astro as asa

    net = asa.get_backend(args.model) if any(m != "bicubic" for m in methods) else None
    if net is not None:  # load and warm the network outside the timings
        asa.upscale(np.full((32, 32), 100.0) + np.eye(32), model=net, conserve_flux="off")
    results, skipped = [], []
    for name in cases:
        for s in scales:
            case = make_case(name, s, Path(args.data))
            if case is None:
                note = f"{name}: skipped, {Path(args.data) / 'M6707HH.fits'} not found"
                if note not in skipped:
                    print(note, file=sys.stderr)
                    skipped.append(note)
                continue
            start = time.perf_counter()
            res = run_case(case, s, methods, net)
            results.append(res)
            print(f"{name} x{s}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            if args.markdown:
                print(markdown(res) + "\n", flush=True)
    if not args.markdown:
        for res in results:
            for method, row in res["methods"].items():
                body = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items())
                print(f"{res['case']} x{res['scale']} {method}: {body}")
    if args.json:
        doc = {
            "seeds": {"crowded_sim": SEED_CROWDED, "raw_frame": SEED_RAW},
            "model": args.model,
            "results": results,
            "skipped": skipped,
        }
        Path(args.json).write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
