"""Invertible display stretches for linear astronomical data.

The AstroSleuth networks were trained on stretched, display-referred pictures. Linear data
(a stack straight out of Siril, a calibrated plate) is therefore mapped into [0, 1] with a
stretch that has an *exact* inverse; the network runs in that stretched domain and its
output is mapped back, so the result is linear again and in the input's units.

Three stretches are offered, each fitted per channel:

``mtf``
    Siril/PixInsight-style midtones transfer function. The shadows (black point) sit at
    ``median - 2.8 * sigma`` (sigma from the MAD), the white point at the channel maximum,
    and the midtone balance is chosen so that the background lands at 0.25, as Siril's
    autostretch does.
``asinh``
    ``asinh((x - black) / a) / asinh((white - black) / a)`` with the softening ``a`` tied
    to the background noise (``a = 3 sigma``), so faint signal stays linear and bright
    stars are compressed.
``none``
    A linear map of ``[black, white]`` onto [0, 1], for display-referred data. Data already
    in [0, 1] is passed through unchanged.

``auto`` picks ``mtf`` for linear data (background close to the bottom of the range) and
``none`` for data that already looks stretched.

Values outside ``[black, white]`` are clipped by :meth:`Stretch.forward`; the pipeline
recovers them with :meth:`Stretch.clip_residual` (see :mod:`astrosleuth_astro.pipeline`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import sigma_clipped_stats

from .errors import InputError, OptionError

STRETCHES = ("auto", "mtf", "asinh", "none")

#: Where Siril's autostretch puts the background (target background, 0..1).
TARGET_BACKGROUND = 0.25
#: Shadows clipping point in units of the normalised MAD, as in Siril's autostretch.
SHADOWS_CLIP = -2.8
#: asinh softening in units of the background sigma.
ASINH_SOFTENING_SIGMA = 3.0
#: Normalised background level above which data is taken to be display-referred already.
STRETCHED_BACKGROUND = 0.08
#: Linear-first ``"auto"`` (:func:`linear_auto`) reads data in [0, 1] as display-referred
#: only when its background is above this fraction of full scale (Siril's autostretch puts
#: it at 0.25; a linear frame's sky is rarely this bright).
DISPLAY_BACKGROUND = 0.15
#: Data in [0, 1] whose brightest pixel stays below this is linear, however its histogram
#: looks: a faint uint16 frame that Siril made float (``set32bits``) peaks near 0.01, and
#: read as a picture the network saw it at 1 % of its range (median 0.75 of the input).
FAINT_UNIT_WHITE = 0.5
#: Float data in [0, 1] whose values (those strictly inside) sit on the ``k / 65535`` grid
#: in at least this fraction of a sample is a 16-bit integer frame divided by 65535 (Siril's
#: ``set32bits``, many capture programs): raw data, linear however bright its sky. A
#: stretch of any kind takes values off that grid; a value at random is on it (within the
#: float32 rounding of :data:`GRID_TOLERANCE`) 2 % of the time.
INTEGER_GRID_FRACTION = 0.95
#: Distance from ``k / 65535``, in units of ``1 / 65535``, that still counts as on the grid.
GRID_TOLERANCE = 0.01
#: Most pixels used for statistics: a deterministic subsample keeps large images fast (the
#: median of 250 000 sky pixels is within 0.003 sigma of the whole image's; a sigma-clipped
#: pass over 1 MP took 0.19 s on 2 cores, and the pipeline needs two).
MAX_STAT_PIXELS = 250_000
#: Pixels per block when the channel range is computed block by block.
RANGE_BLOCK_PIXELS = 1 << 20


def _as_chw(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim == 2:
        return data[np.newaxis]
    if data.ndim != 3:
        raise InputError(f"stretch: expected a (H, W) or (C, H, W) array, got shape {data.shape}")
    return data


def _subsample(channel: np.ndarray) -> np.ndarray:
    """A strided subsample with at most ``MAX_STAT_PIXELS`` pixels, NaNs removed.

    The stride is odd, so that a 2x2 colour-filter (Bayer) mosaic is sampled in all four
    of its colours.
    """
    step = max(1, int(np.ceil(np.sqrt(channel.size / MAX_STAT_PIXELS))))
    step += step > 1 and step % 2 == 0
    sample = np.asarray(channel[::step, ::step], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def background_stats(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sigma-clipped background level and noise.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        Linear image in any units. NaN and inf are ignored.

    Returns
    -------
    median, sigma : ndarray, shape (C,)
        Background median and noise (1.4826 MAD of the sigma-clipped pixels), in the units
        of ``data``. Channels with no finite pixel give NaN.
    """
    chw = _as_chw(data)
    med = np.full(chw.shape[0], np.nan)
    sig = np.full(chw.shape[0], np.nan)
    for c in range(chw.shape[0]):
        sample = _subsample(chw[c])
        if sample.size == 0:
            continue
        _, median, std = sigma_clipped_stats(sample, sigma=3.0, maxiters=5, stdfunc="mad_std")
        med[c], sig[c] = median, std
    return med, sig


def mtf(x: np.ndarray, m: np.ndarray | float, out: np.ndarray | None = None) -> np.ndarray:
    """Midtones transfer function ``(m - 1) x / ((2m - 1) x - m)``.

    Maps 0 to 0, 1 to 1 and ``m`` to 0.5. Its inverse is ``mtf(y, 1 - m)``. With ``out``
    (which may be ``x`` itself) the result is written there with one temporary; the
    operations are the same, so the values are bit-identical.
    """
    if out is None:
        return (m - 1.0) * x / ((2.0 * m - 1.0) * x - m)
    den = x * (2.0 * m - 1.0)
    den -= m
    np.multiply(x, m - 1.0, out=out)
    out /= den
    return out


@dataclass(frozen=True)
class Stretch:
    """A fitted, invertible per-channel stretch.

    Attributes
    ----------
    kind : {"mtf", "asinh", "none"}
    black, white : ndarray, shape (C,)
        Black and white points in input units; ``[black, white]`` maps onto [0, 1].
    param : ndarray, shape (C,)
        Midtone balance (``mtf``), softening in normalised units (``asinh``), unused
        (``none``).
    """

    kind: str
    black: np.ndarray
    white: np.ndarray
    param: np.ndarray = field(default_factory=lambda: np.zeros(1))
    #: Why ``"auto"`` chose this kind, when the choice needs saying (empty otherwise).
    reason: str = field(default="", compare=False)

    # -- helpers -----------------------------------------------------------------------
    def _col(self, values: np.ndarray, ndim: int) -> np.ndarray:
        # (C,) -> (C, 1, 1) so it broadcasts over a (C, H, W) image or tile.
        return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))

    def _norm(self, x: np.ndarray) -> np.ndarray:
        b = self._col(self.black, x.ndim)
        w = self._col(self.white, x.ndim)
        return (x - b) / (w - b)

    def _denorm_(self, u: np.ndarray) -> np.ndarray:
        """``u * (white - black) + black``, in place."""
        b = self._col(self.black, u.ndim)
        w = self._col(self.white, u.ndim)
        u *= w - b
        u += b
        return u

    # -- public ------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return int(np.asarray(self.black).size)

    def forward(self, x: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
        """Stretch linear data ``(C, H, W)`` (or ``(H, W)`` for one channel) into [0, 1].

        Values outside ``[black, white]`` are clipped; NaNs stay NaN. The computation is
        done in float64; ``dtype`` is that of the result (float32 is what networks take).
        """
        u = np.clip(self._norm(np.asarray(x, dtype=np.float64)), 0.0, 1.0)
        if self.kind == "mtf":
            y = mtf(u, self._col(self.param, u.ndim))
        elif self.kind == "asinh":
            a = self._col(self.param, u.ndim)
            y = np.arcsinh(u / a) / np.arcsinh(1.0 / a)
        else:
            y = u
        return y.astype(dtype, copy=False)

    def inverse(self, y: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
        """Exact inverse of :meth:`forward` on [0, 1]; values outside are clipped first."""
        # np.clip returns a new float64 array that we own, so the rest runs in place: the
        # inverse runs on every output pixel, and each temporary is a full band. Same
        # operations as the out-of-place formulas, so the result is bit-identical (tested).
        v = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
        if self.kind == "mtf":
            mtf(v, 1.0 - self._col(self.param, v.ndim), out=v)
        elif self.kind == "asinh":
            a = self._col(self.param, v.ndim)
            v *= np.arcsinh(1.0 / a)
            np.sinh(v, out=v)
            v *= a
        return self._denorm_(v).astype(dtype, copy=False)

    def slope(self, x: np.ndarray) -> np.ndarray:
        """Derivative of :meth:`forward` with respect to ``x``, per pixel, in float64.

        Where :meth:`forward` clips (outside ``[black, white]``) this is the slope at the
        nearest end of the range, so it is always positive and finite: it says how much a
        small linear change at a pixel moves that pixel on the screen.
        """
        x64 = np.asarray(x, dtype=np.float64)
        span = self._col(self.white, x64.ndim) - self._col(self.black, x64.ndim)
        u = np.clip(self._norm(x64), 0.0, 1.0)
        if self.kind == "mtf":
            m = self._col(self.param, u.ndim)
            # d/du of (m - 1) u / ((2m - 1) u - m)
            du = m * (1.0 - m) / ((2.0 * m - 1.0) * u - m) ** 2
        elif self.kind == "asinh":
            a = self._col(self.param, u.ndim)
            du = 1.0 / (np.sqrt(a * a + u * u) * np.arcsinh(1.0 / a))
        else:
            du = np.ones_like(u)
        return du / span

    def clip_residual(self, x: np.ndarray) -> np.ndarray:
        """What :meth:`forward` loses by clipping: ``x - inverse(forward(x))``.

        Zero wherever ``x`` lies inside ``[black, white]``.
        """
        x64 = np.asarray(x, dtype=np.float64)
        b = self._col(self.black, x64.ndim)
        w = self._col(self.white, x64.ndim)
        return (x64 - np.clip(x64, b, w)).astype(np.float32)

    def to_dict(self) -> dict:
        """A JSON-friendly description (for FITS provenance and for shipping to workers)."""
        return {
            "kind": self.kind,
            "black": [float(v) for v in np.atleast_1d(self.black)],
            "white": [float(v) for v in np.atleast_1d(self.white)],
            "param": [float(v) for v in np.atleast_1d(self.param)],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Stretch:
        return cls(
            kind=d["kind"],
            black=np.asarray(d["black"], dtype=np.float64),
            white=np.asarray(d["white"], dtype=np.float64),
            param=np.asarray(d["param"], dtype=np.float64),
        )

    def select(self, channels: list[int] | slice) -> Stretch:
        """The stretch restricted to some channels."""
        return Stretch(
            self.kind,
            np.atleast_1d(self.black)[channels],
            np.atleast_1d(self.white)[channels],
            np.atleast_1d(self.param)[channels],
        )


def _range(chw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of the finite pixels (NaN for none).

    Computed over blocks of about :data:`RANGE_BLOCK_PIXELS` pixels, so the memory needed
    does not grow with the image (min and max are exact in any order).
    """
    lo = np.full(chw.shape[0], np.nan)
    hi = np.full(chw.shape[0], np.nan)
    h, w = chw.shape[-2:]
    rows = max(1, RANGE_BLOCK_PIXELS // max(1, w))
    for c in range(chw.shape[0]):
        for r0 in range(0, h, rows):
            block = np.asarray(chw[c, r0 : r0 + rows])
            finite = block[np.isfinite(block)]
            if finite.size:
                b_lo, b_hi = float(finite.min()), float(finite.max())
                lo[c] = b_lo if np.isnan(lo[c]) else min(lo[c], b_lo)
                hi[c] = b_hi if np.isnan(hi[c]) else max(hi[c], b_hi)
    return lo, hi


def looks_stretched(data: np.ndarray) -> bool:
    """Guess whether ``data`` is display-referred already.

    Linear astro data has its background a few percent above the bottom of its range;
    a stretched picture has it well above (Siril's autostretch puts it at 0.25).
    """
    chw = _as_chw(data)
    return _looks_stretched(background_stats(chw)[0], *_range(chw))


def _looks_stretched(med: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """:func:`looks_stretched` from the background medians and the channel ranges."""
    if np.nanmin(lo) >= 0.0 and np.nanmax(hi) < FAINT_UNIT_WHITE:
        # Linear data normalised to [0, 1] (Siril's float convention) that stays in the
        # bottom of it: a faint frame, not a picture (a picture uses its range).
        return False
    span = np.where(hi > lo, hi - lo, 1.0)
    level = (med - lo) / span
    with warnings.catch_warnings():  # an all-NaN image has no level: not stretched
        warnings.simplefilter("ignore", RuntimeWarning)
        return bool(np.nanmedian(level) > STRETCHED_BACKGROUND)


def display_stretch(channels: int, full_scale: float) -> Stretch:
    """The linear stretch of display-referred samples: ``[0, full_scale]`` onto [0, 1].

    Parameters
    ----------
    channels : int
        Number of channels.
    full_scale : float
        The samples' full scale in their own units (255 for 8-bit, 65535 for 16-bit):
        a picture keeps its units, and the network sees ``value / full_scale``.

    Returns
    -------
    Stretch
        ``kind="none"``, the same for every image of that bit depth.
    """
    black = np.zeros(channels)
    return Stretch("none", black, np.full(channels, float(full_scale)), black.copy())


def linear_auto(data: np.ndarray) -> tuple[str, str]:
    """What ``"auto"`` picks for data that is linear unless the evidence is strong.

    FITS files and arrays (raw frames with a bias pedestal, dead pixels at 0, stacks) are
    linear: ``"mtf"``. Only data inside [0, 1] (or 8-bit integers) whose background sits
    above :data:`DISPLAY_BACKGROUND` of full scale is read as a stretched picture
    (``"none"``), and the reason says so; unless it is a 16-bit frame divided by 65535
    (:func:`on_16bit_grid`), which is raw data with a bright sky.

    Returns
    -------
    kind : {"mtf", "none"}
    reason : str
        Empty for ``"mtf"``; one sentence naming the evidence and the flag that
        overrides it for ``"none"``.
    """
    chw = _as_chw(data)
    lo, hi = _range(chw)
    full = 255.0 if chw.dtype == np.uint8 else 1.0
    if not (np.nanmin(lo) >= 0.0 and np.nanmax(hi) <= full):
        return "mtf", ""
    med, _ = background_stats(chw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = float(np.nanmedian(med)) / full
    if not level > DISPLAY_BACKGROUND:
        return "mtf", ""
    if full == 1.0 and on_16bit_grid(chw):
        return "mtf", ""
    span = "[0, 255]" if full == 255.0 else "[0, 1]"
    return "none", (
        f"values in {span} with the background at {level:.2f} of full scale: read as "
        "display-referred (already stretched); --stretch mtf reads them as linear"
    )


def on_16bit_grid(chw: np.ndarray) -> bool:
    """Whether float data in [0, 1] is a 16-bit integer frame divided by 65535.

    At least :data:`INTEGER_GRID_FRACTION` of the statistics sample (:func:`_subsample`)
    of the values strictly inside (0, 1) lie within :data:`GRID_TOLERANCE` of
    ``k / 65535``; at least 1000 such values are needed to say so (a black picture of
    zeros is not evidence).
    """
    if np.issubdtype(chw.dtype, np.integer):
        return False
    v = np.concatenate([_subsample(channel) for channel in chw])
    v = v[(v > 0.0) & (v < 1.0)] * 65535.0
    if v.size < 1000:
        return False
    return bool(np.mean(np.abs(v - np.rint(v)) <= GRID_TOLERANCE) >= INTEGER_GRID_FRACTION)


def fit_stretch(data: np.ndarray, kind: str = "auto", linear_first: bool = False) -> Stretch:
    """Fit a stretch to an image.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W)
        The image, linear or display-referred, in any units. NaN/inf pixels are ignored.
    kind : {"auto", "mtf", "asinh", "none"}
    linear_first : bool
        ``"auto"`` reads the data as linear unless the evidence is strong
        (:func:`linear_auto`, for FITS files and arrays); otherwise by the background's
        place in the data range (:func:`looks_stretched`).

    Returns
    -------
    Stretch
        Per-channel parameters. A channel with no spread (constant or empty) gets a unit
        range centred on its value, so it maps to 0.5 and back exactly.
    """
    if kind not in STRETCHES:
        raise OptionError("stretch", kind, f"unknown stretch (choose from {', '.join(STRETCHES)})")
    chw = _as_chw(data)
    lo, hi = _range(chw)
    stats = None
    reason = ""
    if kind == "auto" and linear_first:
        kind, reason = linear_auto(chw)
    if kind == "auto":
        # The background statistics are the costly part (a sigma-clipped sample): one
        # computation serves both the choice and the fit.
        stats = background_stats(chw)
        kind = "none" if _looks_stretched(stats[0], lo, hi) else "mtf"

    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 1.0)

    if kind == "none":
        # Display-referred data already in [0, 1] is passed through untouched.
        black = np.where(lo >= 0.0, 0.0, lo)
        white = np.where(hi <= 1.0, 1.0, hi)
        if chw.dtype == np.uint8:
            white = np.full_like(black, 255.0)
        return Stretch("none", black, white, np.zeros_like(black), reason=reason)

    med, sigma = background_stats(chw) if stats is None else stats
    med = np.where(np.isfinite(med), med, lo)
    sigma = np.where(np.isfinite(sigma), sigma, 0.0)
    black = np.maximum(lo, med + SHADOWS_CLIP * sigma)
    white = hi.copy()

    # Degenerate channels (constant, or a single value above the shadows): a unit range
    # around the value keeps the map invertible.
    tiny = 1e-12 * np.maximum(1.0, np.abs(hi))
    flat = (white - black) <= tiny
    black = np.where(flat, lo - 0.5 * np.maximum(1.0, np.abs(lo)), black)
    white = np.where(flat, lo + 0.5 * np.maximum(1.0, np.abs(lo)), white)

    span = white - black
    bkg = np.clip((med - black) / span, 1e-6, 1.0 - 1e-6)
    noise = np.clip(sigma / span, 1e-7, None)
    if kind == "mtf":
        # Midtone balance that sends the background to TARGET_BACKGROUND.
        param = np.where(flat, 0.5, mtf(bkg, TARGET_BACKGROUND))
        param = np.clip(param, 1e-6, 1.0 - 1e-6)
    else:  # asinh
        param = np.where(flat, 1.0, ASINH_SOFTENING_SIGMA * noise)
    return Stretch(kind, black, white, param)
