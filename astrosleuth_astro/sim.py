"""Synthetic star fields with known truth.

:func:`simulate` renders a noise-free high-resolution (HR) *truth* and a noisy
low-resolution (LR) *observation* of the same field. The observation is exactly what an
area (block-mean) downsampling of the truth by ``scale`` gives, plus detector effects
(Poisson noise, read noise, hot pixels, clipping at full well), so super-resolution
output can be scored against a real ground truth. It serves the test-suite and the
bundled trainer (:mod:`astrosleuth_astro.train`).

Conventions
-----------
* Arrays are float32 ``(C, H, W)`` with ``C`` in {1, 3}; ``SimResult.hr2d`` /
  ``SimResult.lr2d`` give the 2-D view of a mono field.
* Units are ADU per pixel (a surface brightness), so area downsampling keeps the
  background level and the total flux of a star in the LR image equals the HR sum
  divided by ``scale**2``.
* Positions: LR 0-based pixel ``x`` maps to HR ``(x + 0.5) * scale - 0.5`` (pixel
  centres), the same rule the upscaler uses. The catalogue is in LR 0-based coordinates.
* The HR header's WCS is the exact rescale of the LR one:
  ``CRPIX' = (CRPIX - 0.5) * scale + 0.5`` and ``CD' = CD / scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

__all__ = [
    "SimResult",
    "area_downsample",
    "make_pair",
    "moffat_alpha",
    "nebula_field",
    "psf_kernel",
    "simulate",
    "simulate_field",
    "to_hdu",
]

#: Default star density, in stars per LR pixel.
STAR_DENSITY = 0.01
#: Lowest and highest total star flux (ADU summed over the LR image) of the power law.
FLUX_RANGE = (50.0, 3.0e6)
#: Stamps are cut where the profile falls below this many ADU (keeps rendering fast).
STAMP_FLOOR_ADU = 0.05
#: Largest stamp half-size in HR pixels.
MAX_STAMP_RADIUS = 256


@dataclass
class SimResult:
    """A simulated field.

    Attributes
    ----------
    hr : ndarray, float32, shape (C, H*scale, W*scale)
        Noise-free truth (clipped at ``saturation``), ADU.
    lr : ndarray, float32, shape (C, H, W)
        Observation: area-downsampled truth plus noise, hot pixels, clipped to
        ``[0, saturation]``, ADU.
    lr_clean : ndarray, float32, shape (C, H, W)
        The area-downsampled truth before noise and clipping (what ``lr`` scatters
        around).
    catalog : astropy.table.Table
        One row per star: ``x``, ``y`` (LR 0-based pixel coordinates), ``flux`` (total ADU
        in the LR image, mean over channels), ``color`` (per-channel flux factors, shape
        (C,), mean 1), ``peak`` (noise-free LR peak value including the sky) and
        ``saturated`` (the noise-free LR peak reaches ``saturation``).
    header_lr, header_hr : astropy.io.fits.Header
        Headers with units, detector keywords and (optionally) a TAN WCS.
    scale : int
    params : dict
        The parameters the field was drawn with.
    """

    hr: np.ndarray
    lr: np.ndarray
    lr_clean: np.ndarray
    catalog: Table
    header_lr: fits.Header
    header_hr: fits.Header
    scale: int
    params: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.lr.shape[0])

    @property
    def hr2d(self) -> np.ndarray:
        """The HR truth as a 2-D array (mono fields only)."""
        return _squeeze(self.hr)

    @property
    def lr2d(self) -> np.ndarray:
        """The LR observation as a 2-D array (mono fields only)."""
        return _squeeze(self.lr)


def _squeeze(a: np.ndarray) -> np.ndarray:
    if a.shape[0] != 1:
        raise ValueError(f"field has {a.shape[0]} channels; use the (C, H, W) array")
    return a[0]


# -- building blocks ---------------------------------------------------------------------


def area_downsample(x: np.ndarray, scale: int) -> np.ndarray:
    """Block-mean (area) downsampling of the last two axes by an integer ``scale``.

    Rows/columns that do not fill a whole block are dropped.
    """
    if scale == 1:
        return np.asarray(x)
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    x = np.asarray(x)[..., : h * scale, : w * scale]
    return x.reshape(*x.shape[:-2], h, scale, w, scale).mean(axis=(-3, -1))


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width ``alpha`` for a given FWHM and ``beta``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _profile(r2: np.ndarray, fwhm: float, psf: str, beta: float) -> np.ndarray:
    """Unit-integral radial profile (per pixel of size 1) at squared radius ``r2``."""
    if psf == "moffat":
        a = moffat_alpha(fwhm, beta)
        return (beta - 1.0) / (np.pi * a * a) * (1.0 + r2 / (a * a)) ** (-beta)
    if psf == "gaussian":
        s = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return np.exp(-0.5 * r2 / (s * s)) / (2.0 * np.pi * s * s)
    raise ValueError(f"psf: unknown PSF {psf!r} (choose 'moffat' or 'gaussian')")


def psf_kernel(
    fwhm: float, psf: str = "moffat", beta: float = 3.0, radius: int | None = None
) -> np.ndarray:
    """A normalised (sum 1) square PSF kernel, e.g. for a seeing blur.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in pixels of the grid the kernel is used on.
    psf : {"moffat", "gaussian"}
    beta : float
        Moffat power index.
    radius : int, optional
        Half-size; by default large enough to hold all but ~0.5 % of the light.
    """
    if radius is None:
        radius = int(np.ceil(2.5 * fwhm)) if psf == "gaussian" else int(np.ceil(4.0 * fwhm))
        radius = max(radius, 1)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    k = _profile(xx * xx + yy * yy, max(fwhm, 1e-3), psf, beta)
    return k / k.sum()


def nebula_field(
    shape: tuple[int, int], rng: np.random.Generator, smooth: float = 0.08
) -> np.ndarray:
    """Smooth random structure in [0, 1]: power-law filtered noise, thresholded.

    ``smooth`` is the typical feature size as a fraction of the image size; the result
    has filaments and clouds with empty sky between them.
    """
    h, w = shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    k = np.sqrt(kx * kx + ky * ky)
    k0 = 1.0 / (smooth * max(h, w))
    # A k^-3 power spectrum (amplitude k^-1.5), rolled off above k0 for smooth clouds.
    amp = (k + 0.2 * k0) ** -1.5 * np.exp(-((k / (4.0 * k0)) ** 2))
    amp[0, 0] = 0.0
    noise = rng.standard_normal((h, w))
    f = np.fft.irfft2(np.fft.rfft2(noise) * amp, s=(h, w))
    f = (f - f.mean()) / (f.std() + 1e-12)
    # Thresholding gives clouds with clear sky between them rather than uniform mottling.
    neb = np.clip(f - 0.3, 0.0, None) ** 1.5
    peak = neb.max()
    return neb / peak if peak > 0 else neb


def _star_colors(n: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Per-star channel factors with mean 1: a crude temperature from blue to red."""
    if channels == 1:
        return np.ones((n, 1))
    t = np.clip(rng.normal(0.0, 0.35, n), -0.8, 0.8)
    # Channel order is R, G, B (as in an RGB FITS cube): cool stars are red.
    col = np.stack([1.0 + t, np.ones(n), 1.0 - t], axis=1)
    return col / col.mean(axis=1, keepdims=True)


def _draw_fluxes(n: int, index: float, lo: float, hi: float, rng: np.random.Generator):
    """Fluxes from ``dN/dF ~ F**-index`` on ``[lo, hi]`` by inverse transform sampling."""
    u = rng.random(n)
    if abs(index - 1.0) < 1e-9:
        return lo * (hi / lo) ** u
    a = 1.0 - index
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _render_stars(
    img: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    fluxes: np.ndarray,
    fwhm: float,
    psf: str,
    beta: float,
) -> None:
    """Add stars (positions/fwhm in the pixels of ``img``; ``fluxes`` (N, C) = sums) in place."""
    _, h, w = img.shape
    peak_unit = _profile(np.zeros(1), fwhm, psf, beta)[0]
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        peak = float(f.max()) * peak_unit
        # Stamp radius where the profile falls to STAMP_FLOOR_ADU.
        if psf == "moffat":
            a = moffat_alpha(fwhm, beta)
            r = a * np.sqrt(max((peak / STAMP_FLOOR_ADU) ** (1.0 / beta) - 1.0, 0.0))
        else:
            s = fwhm / 2.3548
            r = s * np.sqrt(2.0 * np.log(max(peak / STAMP_FLOOR_ADU, 1.0)))
        r = int(np.clip(np.ceil(r), 2, MAX_STAMP_RADIUS))
        x0, x1 = max(int(np.floor(x)) - r, 0), min(int(np.floor(x)) + r + 2, w)
        y0, y1 = max(int(np.floor(y)) - r, 0), min(int(np.floor(y)) + r + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1) - x
        dy = np.arange(y0, y1) - y
        prof = _profile(dy[:, None] ** 2 + dx[None, :] ** 2, fwhm, psf, beta)
        img[:, y0:y1, x0:x1] += f[:, None, None] * prof[None]


def _tan_header(
    shape: tuple[int, int], pixel_scale: float, rng: np.random.Generator
) -> fits.Header:
    """A TAN WCS header for an LR image of ``shape`` centred on a random sky position."""
    h, w = shape
    ra = float(rng.uniform(0.0, 360.0))
    dec = float(np.degrees(np.arcsin(rng.uniform(-0.85, 0.85))))
    theta = float(rng.uniform(-np.pi, np.pi))
    s = pixel_scale / 3600.0
    hdr = fits.Header()
    hdr["WCSAXES"] = 2
    hdr["CTYPE1"] = "RA---TAN"
    hdr["CTYPE2"] = "DEC--TAN"
    hdr["CUNIT1"] = "deg"
    hdr["CUNIT2"] = "deg"
    hdr["CRPIX1"] = (w + 1) / 2.0
    hdr["CRPIX2"] = (h + 1) / 2.0
    hdr["CRVAL1"] = ra
    hdr["CRVAL2"] = dec
    hdr["CD1_1"] = -s * np.cos(theta)
    hdr["CD1_2"] = s * np.sin(theta)
    hdr["CD2_1"] = s * np.sin(theta)
    hdr["CD2_2"] = s * np.cos(theta)
    hdr["RADESYS"] = "ICRS"
    hdr["EQUINOX"] = 2000.0
    return hdr


def _rescale_wcs(hdr: fits.Header, scale: int) -> fits.Header:
    """The exact WCS of the image upscaled by ``scale`` (pixel centres preserved)."""
    out = hdr.copy()
    for ax in (1, 2):
        if f"CRPIX{ax}" in out:
            out[f"CRPIX{ax}"] = (out[f"CRPIX{ax}"] - 0.5) * scale + 0.5
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        if key in out:
            out[key] = out[key] / scale
    return out


def add_noise(
    clean: np.ndarray,
    gain: float,
    read_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Poisson (in electrons) plus Gaussian read noise (``read_noise`` in e-), in ADU."""
    electrons = rng.poisson(np.clip(clean, 0.0, None) * gain).astype(np.float64)
    if read_noise > 0:
        electrons += rng.normal(0.0, read_noise, clean.shape)
    return electrons / gain


# -- the simulator -----------------------------------------------------------------------


def simulate(
    shape: tuple[int, int] = (128, 128),
    *,
    scale: int = 4,
    channels: int = 1,
    fwhm: float = 2.5,
    psf: str = "moffat",
    beta: float = 3.0,
    n_stars: int | None = None,
    density: float = STAR_DENSITY,
    flux_index: float = 1.8,
    flux_range: tuple[float, float] = FLUX_RANGE,
    background: float = 1000.0,
    gradient: float = 0.1,
    nebulosity: float = 0.5,
    read_noise: float = 5.0,
    gain: float = 1.0,
    saturation: float = 60000.0,
    hot_pixels: float = 1e-4,
    hr_noise: bool = False,
    wcs: bool = True,
    pixel_scale: float = 1.5,
    seed: int | np.random.Generator | None = 0,
) -> SimResult:
    """Simulate a star field: a noise-free HR truth and a noisy LR observation.

    Parameters
    ----------
    shape : (int, int)
        LR image shape ``(H, W)``; the truth is ``(H * scale, W * scale)``.
    scale : int
        Integer resolution factor between truth and observation.
    channels : {1, 3}
        Mono, or RGB with coloured stars, sky and nebula.
    fwhm : float
        Seeing FWHM in LR pixels (the truth has the same PSF, ``fwhm * scale`` HR pixels
        wide: it is better *sampled*, not sharper).
    psf : {"moffat", "gaussian"}
    beta : float
        Moffat power index.
    n_stars : int, optional
        Number of stars; by default ``density * H * W``.
    density : float
        Stars per LR pixel when ``n_stars`` is None.
    flux_index : float
        Power-law index of the differential flux distribution ``dN/dF ~ F**-flux_index``.
    flux_range : (float, float)
        Smallest and largest total star flux in ADU (summed over the LR image).
    background : float
        Sky level in ADU at the image centre.
    gradient : float
        Sky gradient: the relative change of the sky across the field, in a random
        direction.
    nebulosity : float
        Peak nebula brightness in units of ``background`` (0 for none).
    read_noise : float
        Read noise in electrons (RMS).
    gain : float
        Gain in e-/ADU (Poisson noise is drawn on ``ADU * gain`` electrons).
    saturation : float
        Full-well level in ADU; truth and observation are clipped there.
    hot_pixels : float
        Fraction of LR pixels that are hot (set to 10-100 % of ``saturation``).
    hr_noise : bool
        Also add Poisson and read noise to the truth (it is noise-free by default).
    wcs : bool
        Put a TAN WCS (random pointing, ``pixel_scale`` arcsec per LR pixel) in the
        headers.
    pixel_scale : float
        LR pixel scale in arcsec.
    seed : int or numpy.random.Generator or None
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same field.

    Returns
    -------
    SimResult
    """
    if channels not in (1, 3):
        raise ValueError(f"channels: must be 1 or 3, got {channels}")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale: must be a positive integer, got {scale}")
    if gain <= 0:
        raise ValueError(f"gain: must be positive, got {gain}")
    scale = int(scale)
    rng = np.random.default_rng(seed)
    h, w = int(shape[0]), int(shape[1])
    hh, ww = h * scale, w * scale

    # Sky: a tilted plane (relative change `gradient` across the field).
    ang = rng.uniform(0.0, 2.0 * np.pi)
    yy = (np.arange(hh) + 0.5) / hh - 0.5
    xx = (np.arange(ww) + 0.5) / ww - 0.5
    plane = 1.0 + gradient * (np.cos(ang) * xx[None, :] + np.sin(ang) * yy[:, None])
    sky_col = np.ones(channels)
    if channels == 3:
        # Light pollution is a bit warm; the channel balance varies between fields.
        sky_col = np.array([1.1, 1.0, 0.85]) * rng.uniform(0.9, 1.1, 3)
    hr = background * sky_col[:, None, None] * plane[None]

    if nebulosity > 0:
        neb = nebula_field((hh, ww), rng, smooth=float(rng.uniform(0.05, 0.15)))
        neb_col = np.ones(channels)
        if channels == 3:
            # Mostly H-alpha red with some reflection-nebula blue.
            neb_col = np.array([1.0, 0.35, 0.45]) + rng.uniform(0.0, 0.5, 3)
            neb_col /= neb_col.max()
        hr = hr + nebulosity * background * neb_col[:, None, None] * neb[None]

    n = int(round(density * h * w)) if n_stars is None else int(n_stars)
    x_lr = rng.uniform(-0.5, w - 0.5, n)
    y_lr = rng.uniform(-0.5, h - 0.5, n)
    flux = _draw_fluxes(n, flux_index, flux_range[0], flux_range[1], rng)
    color = _star_colors(n, channels, rng)
    # HR holds surface brightness: a star's HR sum is scale**2 times its LR flux.
    x_hr = (x_lr + 0.5) * scale - 0.5
    y_hr = (y_lr + 0.5) * scale - 0.5
    stars = np.zeros((channels, hh, ww))
    _render_stars(stars, x_hr, y_hr, flux[:, None] * color * scale**2, fwhm * scale, psf, beta)
    hr = hr + stars

    lr_clean = area_downsample(hr, scale)

    # Noise-free LR peak of every star: brightest channel, 3x3 max around it, sky included.
    peak = np.zeros(n)
    if n:
        ix = np.clip(np.round(x_lr).astype(int), 0, w - 1)
        iy = np.clip(np.round(y_lr).astype(int), 0, h - 1)
        pad = np.pad(lr_clean.max(axis=0), 1, mode="edge")
        peak = np.stack([pad[iy + dy, ix + dx] for dy in range(3) for dx in range(3)]).max(0)
    saturated = peak >= saturation

    lr = add_noise(lr_clean, gain, read_noise, rng)
    n_hot = int(rng.binomial(h * w, min(max(hot_pixels, 0.0), 1.0))) if hot_pixels > 0 else 0
    if n_hot:
        idx = rng.choice(h * w, size=n_hot, replace=False)
        level = rng.uniform(0.1, 1.0, n_hot) * saturation
        lr.reshape(channels, -1)[:, idx] = level[None, :]
    lr = np.clip(lr, 0.0, saturation)

    if hr_noise:
        hr = add_noise(hr, gain, read_noise, rng)
    hr = np.clip(hr, 0.0, saturation)

    params = {
        "shape": (h, w),
        "scale": scale,
        "channels": channels,
        "fwhm": fwhm,
        "psf": psf,
        "beta": beta,
        "n_stars": n,
        "flux_index": flux_index,
        "flux_range": tuple(flux_range),
        "background": background,
        "gradient": gradient,
        "nebulosity": nebulosity,
        "read_noise": read_noise,
        "gain": gain,
        "saturation": saturation,
        "hot_pixels": hot_pixels,
        "hr_noise": hr_noise,
    }

    catalog = Table(
        {
            "x": x_lr,
            "y": y_lr,
            "flux": flux,
            "color": color,
            "peak": peak,
            "saturated": saturated,
        }
    )
    catalog.meta["coords"] = "LR 0-based pixel centres"

    hdr = _tan_header((h, w), pixel_scale, rng) if wcs else fits.Header()
    hdr["BUNIT"] = "ADU"
    hdr["GAIN"] = (gain, "e-/ADU")
    hdr["RDNOISE"] = (read_noise, "read noise, e-")
    hdr["SATURATE"] = (saturation, "full well, ADU")
    hdr["SKYLEVEL"] = (background, "sky at the field centre, ADU")
    hdr["FWHM"] = (fwhm, "seeing FWHM, pixels")
    hdr["SIMSCALE"] = (scale, "HR/LR resolution factor")
    hdr["OBJECT"] = "astrosleuth_astro.sim"
    header_hr = _rescale_wcs(hdr, scale) if wcs else hdr.copy()
    header_hr["FWHM"] = (fwhm * scale, "seeing FWHM, pixels")
    header_hr["COMMENT"] = "noise-free truth" if not hr_noise else "truth with noise"

    return SimResult(
        hr=hr.astype(np.float32),
        lr=lr.astype(np.float32),
        lr_clean=lr_clean.astype(np.float32),
        catalog=catalog,
        header_lr=hdr,
        header_hr=header_hr,
        scale=scale,
        params=params,
    )


#: Name used in the design notes.
simulate_field = simulate


def make_pair(
    shape: tuple[int, int] = (128, 128), *, scale: int = 4, seed: int = 0, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Shortcut: ``(hr, lr)`` float32 ``(C, H, W)`` arrays of :func:`simulate`."""
    res = simulate(shape, scale=scale, seed=seed, **kwargs)
    return res.hr, res.lr


def to_hdu(result: SimResult, which: str = "lr") -> fits.PrimaryHDU:
    """A FITS primary HDU of the observation (``"lr"``) or the truth (``"hr"``).

    Mono fields are written as 2-D images, RGB fields as ``(3, H, W)`` cubes.
    """
    if which not in ("lr", "hr"):
        raise ValueError(f"which: must be 'lr' or 'hr', got {which!r}")
    data = result.lr if which == "lr" else result.hr
    header = (result.header_lr if which == "lr" else result.header_hr).copy()
    if data.shape[0] == 1:
        data = data[0]
    return fits.PrimaryHDU(data=np.ascontiguousarray(data), header=header)
