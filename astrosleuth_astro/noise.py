"""The noise model a noise-aware network is told: background noise plus a Poisson term.

A noise-aware network (issue 26, as in SRMD / FFDNet) takes, beside the stretched image,
two *conditioning channels*:

1. the per-pixel noise level in the network's own (stretched) domain,
   ``NOISE_GAIN * slope(x) * sqrt(sigma**2 + poisson * max(x - sky, 0))``, averaged over
   the image channels, where ``x`` is the linear value of the pixel, ``slope`` the
   derivative of the stretch (:meth:`~astrosleuth_astro.stretch.Stretch.slope`), ``sky``
   and ``sigma`` the background level and noise, and ``poisson`` the variance added per
   unit of signal above the sky (1 / gain for data in ADU);
2. a constant flag: 1 for linear data, 0 for display-referred pictures.

The map is a pointwise function of the stretched pixel value and four numbers per image,
so a tile's map is the whole image's map cropped: tiling, banding and Dask give the same
result. Training (:mod:`astrosleuth_astro.train`) computes it with the same code from the
LR input, so the network learns what the estimate, not an oracle, says.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .stretch import Stretch, background_stats

__all__ = ["COND_CHANNELS", "NOISE_GAIN", "NoiseModel", "condition_channels", "estimate_noise"]

#: Conditioning channels a noise-aware network takes after the image channels.
COND_CHANNELS = 2
#: Factor on the stretched-domain noise level: the sky noise of an auto-stretched frame is
#: about 0.05-0.1 in [0, 1] (its black point sits 2.8 sigma below the sky), so the map
#: lies in the 0.2-0.4 range of the image channels.
NOISE_GAIN = 4.0
#: Side of the cells of :func:`estimate_noise`'s noise-level fit, in pixels.
CELL = 8
#: Quantile of the cell variances kept per level bin: the low ones, where structure adds
#: least.
ENVELOPE_QUANTILE = 0.1
#: Level bins of the fit, and the fewest cells per bin.
N_BINS = 12
MIN_CELLS = 20


@dataclass(frozen=True)
class NoiseModel:
    """Per-channel noise of a linear image: ``var(x) = sigma**2 + poisson * max(x - sky, 0)``.

    Attributes
    ----------
    sky, sigma : ndarray, shape (C,)
        Background level and noise, in the image's units.
    poisson : ndarray, shape (C,)
        Variance per unit of signal above the sky, in the image's units (0 when the data
        do not show a Poisson term).
    linear : bool
        Whether the data are linear (False for display-referred pictures).
    """

    sky: np.ndarray
    sigma: np.ndarray
    poisson: np.ndarray
    linear: bool = True

    def to_dict(self) -> dict:
        """JSON-friendly form (for shipping to Dask workers)."""
        return {
            "sky": [float(v) for v in self.sky],
            "sigma": [float(v) for v in self.sigma],
            "poisson": [float(v) for v in self.poisson],
            "linear": bool(self.linear),
        }

    @classmethod
    def from_dict(cls, d: dict) -> NoiseModel:
        return cls(
            np.asarray(d["sky"], dtype=np.float64),
            np.asarray(d["sigma"], dtype=np.float64),
            np.asarray(d["poisson"], dtype=np.float64),
            bool(d["linear"]),
        )


def _cell_stats(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median level and a robust white-noise variance of every ``CELL x CELL`` cell.

    The variance comes from the diagonal second difference ``(a - b - c + d) / 2`` of each
    2x2 group, which removes any local gradient and has the pixels' variance for white
    noise; its median over the cell's 16 groups ignores a star core or two.
    """
    h, w = (channel.shape[0] // CELL) * CELL, (channel.shape[1] // CELL) * CELL
    x = np.asarray(channel[:h, :w], dtype=np.float64)
    d = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0
    half = CELL // 2
    d = d.reshape(h // CELL, half, w // CELL, half).transpose(0, 2, 1, 3)
    var = np.median((d * d).reshape(h // CELL, w // CELL, -1), axis=2)
    cells = x.reshape(h // CELL, CELL, w // CELL, CELL).transpose(0, 2, 1, 3)
    mean = np.median(cells.reshape(h // CELL, w // CELL, -1), axis=2)
    return mean.ravel(), var.ravel()


@lru_cache(maxsize=1)
def _envelope_unbias() -> float:
    """The ``ENVELOPE_QUANTILE`` of :func:`_cell_stats`' variance for unit white noise.

    Measured once on 20000 cells of seeded Gaussian noise (a fixed number: the same seed
    on every machine), so that the envelope is unbiased for pure noise.
    """
    noise = np.random.default_rng(0).normal(size=(CELL * 100, CELL * 200))
    return float(np.quantile(_cell_stats(noise)[1], ENVELOPE_QUANTILE))


def _noise_fit(channel: np.ndarray, sky: float) -> tuple[float, float]:
    """White-noise variance at the sky and its Poisson slope, from the cells' lower envelope.

    Cells are binned by their mean level (quantile bins, so each bin holds as many cells);
    in each bin the ``ENVELOPE_QUANTILE`` of the cell variances is where structure (stars,
    nebula edges) adds least, as in noise-level-function estimates (Liu et al. 2006), and
    :func:`_envelope_unbias` makes it unbiased for pure noise. A line ``var = a + k * max(level - sky, 0)`` with ``a, k >= 0``
    fitted to those points gives the sky's white noise ``sqrt(a)`` and the term ``k``.
    """
    mean, var = _cell_stats(channel)
    ok = np.isfinite(mean) & np.isfinite(var)
    mean, var = mean[ok], var[ok]
    n_bins = min(N_BINS, mean.size // MIN_CELLS)
    if n_bins < 1:
        return float("nan"), 0.0
    unbias = _envelope_unbias()
    edges = np.unique(np.quantile(mean, np.linspace(0.0, 1.0, n_bins + 1)))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (mean >= lo) & (mean <= hi)
        if sel.sum() < MIN_CELLS // 2:  # too few cells for a low quantile
            continue
        xs.append(max(float(np.median(mean[sel])) - sky, 0.0))
        ys.append(float(np.quantile(var[sel], ENVELOPE_QUANTILE)) / unbias)
    x, y = np.asarray(xs), np.asarray(ys)
    if not x.size:
        return float("nan"), 0.0
    # Least squares with a, k >= 0: the free fit, else the best fit with one of them 0.
    fits = []
    if x.size >= 2 and np.ptp(x) > 0:
        k, a = np.polyfit(x, y, 1)
        if a >= 0 and k >= 0:
            fits.append((a, k))
    fits.append((float(np.mean(y)), 0.0))
    if np.sum(x * x) > 0:
        fits.append((0.0, max(float(np.sum(x * y) / np.sum(x * x)), 0.0)))
    a, k = min(fits, key=lambda f: float(np.sum((f[0] + f[1] * x - y) ** 2)))
    return float(np.sqrt(max(a, 0.0))), float(k)


def estimate_noise(
    work: np.ndarray,
    linear: bool = True,
    background: tuple[np.ndarray, np.ndarray] | None = None,
) -> NoiseModel:
    """Fit the noise model of an image.

    Parameters
    ----------
    work : ndarray, shape (C, H, W) or (H, W)
        The image as the network is given it (finite values, defects repaired), in its own
        units.
    linear : bool
        Whether the data are linear (the stretch is not ``"none"``).
    background : (ndarray, ndarray), optional
        :func:`~astrosleuth_astro.stretch.background_stats` of the image, when already
        measured.

    Returns
    -------
    NoiseModel
    """
    chw = work[None] if work.ndim == 2 else work
    sky, sigma = background if background is not None else background_stats(chw)
    sky = np.nan_to_num(np.asarray(sky, dtype=np.float64))
    sigma = np.nan_to_num(np.asarray(sigma, dtype=np.float64))
    # The fit reads a strided sample of at most ~4 MP: the cells stay local, and a huge
    # mosaic costs no more than a frame.
    step = max(1, int(np.sqrt(chw[0].size / 4e6)))
    fits = [_noise_fit(chw[c, ::step, ::step], sky[c]) for c in range(chw.shape[0])]
    white = np.array([f[0] for f in fits])
    # The cells' white noise where it could be measured (the clipped MAD of the pixels
    # also counts smooth sky structure), else the MAD.
    sigma = np.where(np.isfinite(white) & (white > 0), white, sigma)
    poisson = np.array([f[1] for f in fits])
    return NoiseModel(sky, sigma, poisson, bool(linear))


def condition_channels(stretched: np.ndarray, stretch: Stretch, model: NoiseModel) -> np.ndarray:
    """The conditioning channels of a batch of stretched tiles.

    Parameters
    ----------
    stretched : ndarray, shape (N, C, h, w)
        Tiles of the stretched image (what the network sees), in [0, 1].
    stretch : Stretch
        The stretch that made them (C channels).
    model : NoiseModel
        The image's noise model (C channels).

    Returns
    -------
    ndarray, shape (N, COND_CHANNELS, h, w), float32
        The noise-level map (times :data:`NOISE_GAIN`) and the linear flag.
    """
    n, c, h, w = stretched.shape
    out = np.empty((n, COND_CHANNELS, h, w), dtype=np.float32)
    col = (1, c, 1, 1)
    sky = model.sky.reshape(col)
    var0 = (model.sigma**2).reshape(col)
    poisson = model.poisson.reshape(col)
    for i in range(n):
        x = stretch.inverse(stretched[i], dtype=np.float64)[None]
        var = var0 + poisson * np.maximum(x - sky, 0.0)
        level = stretch.slope(x[0])[None] * np.sqrt(var)
        out[i, 0] = NOISE_GAIN * level[0].mean(axis=0)
    out[:, 1] = 1.0 if model.linear else 0.0
    return out
