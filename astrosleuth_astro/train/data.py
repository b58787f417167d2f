"""Training and validation data: (stretched LR, stretched HR) pairs.

Pairs come from two kinds of sources, mixed by weight:

* the simulator (:func:`astrosleuth_astro.sim.simulate`) with parameters drawn from
  ``[sim]`` ranges; mono and colour fields;
* real images in a folder (FITS, TIFF, PNG, JPEG), used as HR truth and degraded by
  :mod:`.degradations`; three single-band files can be stacked into an RGB cube.

Every pair is made the way inference sees data: the stretch is fitted (kind ``mtf`` by
default) on the **LR** image of a large region (``region_lr`` LR pixels a side, never on a
training patch), and that same stretch maps both LR and HR into [0, 1].

Determinism and exact resume
----------------------------
Large stretched regions live in a *bank* of ``bank_size`` slots. Refresh number ``c``
(``c < 0`` for the initial fill) replaces slot ``c % bank_size`` with an item drawn from
``default_rng([seed, 1, c + bank_size])``; refreshes happen at a fixed rate per step and
the crops of step ``t`` come from ``default_rng([seed, 2, t])``. So the batch of step
``t`` is a pure function of ``(config, t)``: :meth:`PairBank.seek` rebuilds the bank for
any step, which is what makes resuming exact without storing data in checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..metrics import scoring_stretch, to_scoring_domain
from ..noise import condition_channels, estimate_noise
from ..sim import area_downsample, simulate
from ..stretch import Stretch
from . import degradations as deg
from . import forward as fwd
from .config import Config, SimConfig
from .starmask import star_maps

IMAGE_SUFFIXES = (
    ".fits",
    ".fit",
    ".fts",
    ".fits.gz",
    ".fits.bz2",
    ".fit.gz",
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
)


# -- loading -------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def load_image(path: Path) -> tuple[np.ndarray, bool]:
    """Read an image as float64 ``(C, H, W)``.

    Returns
    -------
    data : ndarray
        NaN/inf replaced by the channel median.
    linear : bool
        False for 8-bit (display-referred) files.
    """
    name = path.name.lower()
    if not path.is_file():
        raise InputError(f"{path}: training image not found")
    if ".fit" in name:
        from astropy.io import fits

        with fits.open(path, memmap=False) as hdul:
            hdu = next(
                (h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2), None
            )
            if hdu is None:
                raise InputError(f"{path}: no image HDU")
            data = np.asarray(hdu.data, dtype=np.float64)
        linear = True
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        raw = tifffile.imread(path)
        linear = raw.dtype != np.uint8
        data = np.asarray(raw, dtype=np.float64)
        if data.ndim == 3 and data.shape[-1] in (3, 4):
            data = np.moveaxis(data[..., :3], -1, 0)
        if raw.dtype == np.uint8:
            data /= 255.0
    else:
        from PIL import Image

        with Image.open(path) as im:
            raw = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)
        linear = raw.dtype != np.uint8
        data = raw.astype(np.float64)
        if data.ndim == 3:
            data = np.moveaxis(data, -1, 0)
        if not linear:
            data /= 255.0
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[0] not in (1, 3):
        raise InputError(
            f"{path}: expected a 2-D image or a 3-channel cube, got shape {data.shape}"
        )
    for c in range(data.shape[0]):
        bad = ~np.isfinite(data[c])
        if bad.any():
            data[c][bad] = np.median(data[c][~bad]) if (~bad).any() else 0.0
    return data, linear


@dataclass
class RealSource:
    """A real image (or RGB stack) used as HR truth."""

    name: str
    data: np.ndarray  # (C, H, W) float64
    linear: bool
    stats: deg.ImageStats
    #: Columns [0, train_cols) are for training; the rest is held out.
    train_cols: int


def load_sources(cfg: Config) -> tuple[list[RealSource], list[RealSource]]:
    """The training and validation-only real sources named by ``[data]``.

    Returns empty lists when no data directory is configured (simulator-only training).
    """
    root = cfg.resolved_data_dir()
    if root is None:
        return [], []
    if not root.is_dir():
        raise InputError(
            f"{root}: data directory not found (from [data] data_dir / ${cfg.data.data_env})"
        )
    d = cfg.data
    in_groups = {f for g in d.rgb for f in g}
    files = list(d.files) or sorted(
        p.name
        for p in root.iterdir()
        if _is_image_name(p.name) and p.name not in in_groups and p.name not in d.val_only
    )

    def make(name: str, data: np.ndarray, linear: bool, holdout: float) -> RealSource:
        stats = deg.image_stats(data) if linear else deg.ImageStats(np.zeros(data.shape[0]), {})
        w = data.shape[-1]
        return RealSource(name, data, linear, stats, int(round(w * (1.0 - holdout))))

    train: list[RealSource] = []
    for f in files:
        data, linear = load_image(root / f)
        train.append(make(f, data, linear, d.holdout))
    for group in d.rgb:
        chans = [load_image(root / f) for f in group]
        shapes = {c[0].shape for c in chans}
        if len(shapes) != 1 or chans[0][0].shape[0] != 1:
            raise InputError(
                f"{root / group[0]}: rgb group files must be mono images of one shape, got {shapes}"
            )
        cube = np.concatenate([c[0] for c in chans], axis=0)
        stems = [f.split(".")[0] for f in group]
        train.append(make("rgb(" + ",".join(stems) + ")", cube, chans[0][1], d.holdout))
    val_only = []
    for f in d.val_only:
        data, linear = load_image(root / f)
        val_only.append(make(f, data, linear, 1.0 - 1e-9))
    return train, val_only


# -- pair making ---------------------------------------------------------------------------


@dataclass
class Pair:
    """A stretched pair: ``lr`` (3, h, w) and ``hr`` (3, h*s, w*s) float32 in [0, 1].

    For a noise-aware model (``[model] num_cond_ch``) ``lr`` carries the conditioning
    channels of :mod:`astrosleuth_astro.noise` after the image: ``(3 + 2, h, w)``.
    """

    lr: np.ndarray
    hr: np.ndarray
    name: str
    mono: bool
    stretch: Stretch | None = None
    #: Star maps of the HR target, ``(2, H, W)`` float32 (see :mod:`.starmask`), made only
    #: when the star-aware loss is on.
    stars: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        """The stretched LR image channels (``lr`` without conditioning channels)."""
        return self.lr[: self.hr.shape[0]]


def with_conditioning(cfg: Config, pair: Pair, lr_linear: np.ndarray, linear: bool) -> Pair:
    """``pair`` with the noise-aware conditioning channels appended to its ``lr``.

    The noise model is estimated from the linear LR, as the pipeline does from its input,
    so the network learns what the estimate (not an oracle) says.
    """
    if not cfg.model.num_cond_ch:
        return pair
    model = estimate_noise(np.asarray(lr_linear, dtype=np.float64), linear)
    st = pair.stretch
    chans = lr_linear.shape[0]
    stretched = pair.lr[:chans][None].astype(np.float64)
    cond = condition_channels(stretched, st, model)[0]
    pair.lr = np.concatenate([pair.lr, cond], axis=0).astype(np.float32)
    return pair


#: Codes of the stretch kinds in :attr:`Batch.stretch_kind`.
STRETCH_KINDS = {"none": 0, "mtf": 1, "asinh": 2}


@dataclass
class Batch:
    """One training batch (float32 unless noted).

    Attributes
    ----------
    lr, hr : ndarray, shapes (N, 3, h, w) and (N, 3, 4h, 4w)
        Stretched LR inputs and HR targets in [0, 1].
    stars : ndarray, shape (N, 2, 4h, 4w), or None
        Star maps cropped, flipped and rotated with ``hr`` (None when not made).
    stretch : ndarray of float64, shape (N, 3, 3)
        Per sample and channel: black point, white point, stretch parameter (input units
        of the sample's linear data); inverts ``hr`` to linear.
    stretch_kind : ndarray of int64, shape (N,)
        :data:`STRETCH_KINDS` code of each sample's stretch.
    """

    lr: np.ndarray
    hr: np.ndarray
    stars: np.ndarray | None
    stretch: np.ndarray
    stretch_kind: np.ndarray


def stretch_vector(st: Stretch | None) -> tuple[np.ndarray, int]:
    """``(3, 3)`` rows black, white, param (mono replicated) and the kind code of a stretch."""
    if st is None:
        return np.array([[0.0] * 3, [1.0] * 3, [0.0] * 3]), STRETCH_KINDS["none"]
    rows = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (st.black, st.white, st.param)]
    vec = np.stack([np.broadcast_to(r, (3,)) if r.size == 1 else r for r in rows])
    return vec, STRETCH_KINDS[st.kind]


def _to3(x: np.ndarray) -> np.ndarray:
    return np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x


def stretch_pair(
    lr: np.ndarray, hr: np.ndarray, kind: str, linear: bool = True
) -> tuple[np.ndarray, np.ndarray, Stretch]:
    """Fit the stretch on the LR image and apply it to both (as inference does).

    Returns float32 ``(3, ...)`` arrays in [0, 1] (mono replicated) and the stretch: the
    scoring stretch of :mod:`astrosleuth_astro.metrics`, so validation scores are in the
    domain the benchmarks score in.
    """
    st = scoring_stretch(lr, kind if linear else "none")
    lr_s = st.forward(lr)
    hr_s = to_scoring_domain(st, hr)
    return _to3(lr_s).astype(np.float32), _to3(hr_s).astype(np.float32), st


def sample_sim_kwargs(rng: np.random.Generator, sc: SimConfig) -> dict:
    """Keyword arguments of :func:`astrosleuth_astro.sim.simulate` drawn from ``[sim]``."""
    d = deg.draw
    flux_lo = d(rng, sc.flux_min)
    kw = {
        "channels": 3 if rng.random() < sc.colour_fraction else 1,
        "psf": "gaussian" if rng.random() < sc.gaussian_fraction else "moffat",
        "fwhm": d(rng, sc.fwhm),
        "beta": d(rng, sc.beta),
        "density": d(rng, sc.density, "density"),
        "flux_index": d(rng, sc.flux_index),
        "flux_range": (flux_lo, max(d(rng, sc.flux_max, "flux_max"), 10 * flux_lo)),
        "background": d(rng, sc.background),
        "gradient": d(rng, sc.gradient),
        "nebulosity": d(rng, sc.nebulosity, "nebulosity")
        if rng.random() < sc.nebulosity_prob
        else 0.0,
        "read_noise": d(rng, sc.read_noise),
        "gain": d(rng, sc.gain, "gain"),
        "saturation": d(rng, sc.saturation),
        "hot_pixels": d(rng, sc.hot_pixels, "hot_pixels"),
        "wcs": False,
    }
    if deg.happens(rng, sc.starless_prob):
        kw["density"] = 0.0
    return kw


def sim_pair(
    cfg: Config, rng: np.random.Generator, shape: tuple[int, int], channels: int | None = None
) -> Pair:
    """A stretched pair from one simulated field of LR ``shape``."""
    if cfg.data.forward == "physical":
        return _physical_sim_pair(cfg, rng, shape, channels)
    kw = sample_sim_kwargs(rng, cfg.sim)
    if channels is not None:
        kw["channels"] = channels
    res = simulate(shape, scale=cfg.data.scale, seed=rng, **kw)
    lr, hr, st = stretch_pair(res.lr, res.hr, cfg.data.stretch)
    pair = Pair(lr, hr, f"sim(c={kw['channels']})", kw["channels"] == 1, st)
    return with_conditioning(cfg, pair, res.lr, True)


def _physical_sim_pair(
    cfg: Config, rng: np.random.Generator, shape: tuple[int, int], channels: int | None
) -> Pair:
    """A simulated pair from the physical forward model (:mod:`.forward`)."""
    s, fc = cfg.data.scale, cfg.forward
    kw = sample_sim_kwargs(rng, cfg.sim)
    if channels is not None:
        kw["channels"] = channels
    lr, hr = fwd.sim_scene(cfg, rng, shape, kw)
    lr, hr = fwd.finish_pair(lr, hr, s, fc, rng)
    name = f"sim(c={kw['channels']})"
    if deg.happens(rng, fc.display_prob):
        st_lin = scoring_stretch(lr, cfg.data.stretch)
        lr, hr = fwd.to_display(lr, hr, st_lin, fc, s, rng)
        lr_s, hr_s, st = stretch_pair(lr, hr, cfg.data.stretch, linear=False)
        pair = Pair(lr_s, hr_s, name + "-8bit", kw["channels"] == 1, st)
        return with_conditioning(cfg, pair, lr, False)
    lr_s, hr_s, st = stretch_pair(lr, hr, cfg.data.stretch)
    return with_conditioning(cfg, Pair(lr_s, hr_s, name, kw["channels"] == 1, st), lr, True)


def real_pair(
    cfg: Config,
    src: RealSource,
    rng: np.random.Generator,
    region_hr: tuple[int, int],
    origin: tuple[int, int] | None = None,
    params: deg.DegradeParams | None = None,
) -> Pair:
    """A stretched pair from a region of a real image.

    ``origin`` (HR row, column) defaults to a random position inside the training part.
    """
    s = cfg.data.scale
    _, h, w_all = src.data.shape
    rh, rw = region_hr
    if origin is None:
        y = int(rng.integers(0, h - rh + 1))
        x = int(rng.integers(0, src.train_cols - rw + 1))
    else:
        y, x = origin
    hr = src.data[:, y : y + rh, x : x + rw]
    if cfg.data.forward == "physical":
        if src.linear and origin is None:  # validation regions stay as they are
            lr, hr = fwd.real_observation(hr, s, cfg.forward, rng)
            lr, hr = fwd.finish_pair(lr, hr, s, cfg.forward, rng)
        else:
            lr = area_downsample(hr, s)
        lr_s, hr_s, st = stretch_pair(lr, hr, cfg.data.stretch, src.linear)
        pair = Pair(lr_s, hr_s, src.name, src.data.shape[0] == 1, st)
        return with_conditioning(cfg, pair, lr, src.linear)
    p = params or deg.sample_params(rng, cfg.degradations)
    if src.linear and p.native:
        lr = area_downsample(hr, s)
    elif src.linear:
        hr = deg.to_adu(hr, src.stats, p)
        lr = deg.degrade_linear(hr, s, p, rng)
    else:
        lr = deg.degrade_display(hr, s, p, rng)
    lr_s, hr_s, st = stretch_pair(lr, hr, cfg.data.stretch, src.linear)
    pair = Pair(lr_s, hr_s, src.name, src.data.shape[0] == 1, st)
    return with_conditioning(cfg, pair, lr, src.linear)


def _region_hr(cfg: Config, src: RealSource) -> tuple[int, int]:
    """Training region size for a source: ``region_lr * scale`` or what fits, whole blocks."""
    s = cfg.data.scale
    want = cfg.data.region_lr * s
    rh = min(want, src.data.shape[1]) // s * s
    rw = min(want, src.train_cols) // s * s
    return rh, rw


class PairBank:
    """A deterministic, refreshable bank of large stretched regions; see module notes."""

    def __init__(self, cfg: Config, sources: list[RealSource]) -> None:
        self.cfg = cfg
        d = cfg.data
        crop_lr = d.hr_crop // d.scale
        self.sources = []
        for src in sources:
            rh, rw = _region_hr(cfg, src)
            if rh // d.scale < crop_lr or rw // d.scale < crop_lr:
                raise InputError(
                    f"{src.name}: training part ({src.data.shape[1]}x{src.train_cols}) is smaller than one crop"
                )
            self.sources.append(src)
        w_real = d.real_weight if self.sources else 0.0
        self.p_sim = d.sim_weight / (d.sim_weight + w_real) if d.sim_weight + w_real > 0 else 1.0
        self.size = d.bank_size
        self.items: list[Pair | None] = [None] * self.size
        self.item_ids = [None] * self.size
        self.done = 0  # refreshes applied (non-negative refresh numbers)
        #: Make star maps of every item (for the star-aware loss); detection draws no
        #: random numbers, so the batches are the same with or without it.
        self.want_stars = cfg.losses.star > 0

    # refresh number c -> item
    def make_item(self, c: int) -> Pair:
        item = self._make_item(c)
        if self.want_stars:
            item.stars = star_maps(
                item.image, item.hr, self.cfg.data.scale, self.cfg.losses.star_nsigma
            )
        return item

    def _make_item(self, c: int) -> Pair:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.train.seed, 1, c + self.size])
        # One uniform draw picks the source: [0, p_sim) the simulator, the rest split
        # evenly between the real sources.
        u = rng.random()
        if not self.sources or u < self.p_sim:
            r = cfg.data.region_lr
            return sim_pair(cfg, rng, (r, r))
        k = int((u - self.p_sim) / (1.0 - self.p_sim) * len(self.sources))
        src = self.sources[min(k, len(self.sources) - 1)]
        return real_pair(cfg, src, rng, _region_hr(cfg, src))

    def refreshes_before(self, step: int) -> int:
        """Refreshes applied before the batch of ``step`` is drawn (at step 0: none)."""
        return math.floor(step * self.cfg.data.refresh_per_step + 1e-9)

    def seek(self, step: int) -> None:
        """Rebuild the bank as it is when drawing the batch of ``step``."""
        total = self.refreshes_before(step)
        for k in range(self.size):
            # Latest refresh number c < total with c = k (mod size); the fill is c in [-size, 0).
            c = total - 1 - ((total - 1 - k) % self.size)
            if self.item_ids[k] != c:
                self.items[k] = self.make_item(c)
                self.item_ids[k] = c
        self.done = total

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(lr, hr)`` float32 batches of ``step``: ``(N, 3, h, w)``, ``(N, 3, 4h, 4w)``."""
        b = self.full_batch(step)
        return b.lr, b.hr

    def full_batch(self, step: int) -> Batch:
        """The :class:`Batch` of ``step`` (same ``lr``, ``hr`` as :meth:`batch`)."""
        self.seek(step)
        rng = np.random.default_rng([self.cfg.train.seed, 2, step])
        return self.sample(rng, self.cfg.train.batch_size)

    def sample(self, rng: np.random.Generator, n: int) -> Batch:
        """``n`` random crops of the current bank items, drawn with ``rng``.

        Star maps follow their pair exactly: the crop and the dihedral transform of the
        pair are replayed on them from a copy of the generator's state.
        """
        d = self.cfg.data
        crop = d.hr_crop // d.scale
        lrs, hrs, stars, vecs, kinds = [], [], [], [], []
        for _ in range(n):
            item = self.items[int(rng.integers(self.size))]
            state = rng.bit_generator.state if item.stars is not None else None
            lr, hr = deg.random_crop(item.lr, item.hr, crop, d.scale, rng)
            lr, hr = deg.random_dihedral(lr, hr, rng)
            lrs.append(lr)
            hrs.append(hr)
            if state is not None:
                replay = np.random.Generator(type(rng.bit_generator)())
                replay.bit_generator.state = state
                lr2, sm = deg.random_crop(item.lr, item.stars, crop, d.scale, replay)
                _, sm = deg.random_dihedral(lr2, sm, replay)
                stars.append(sm)
            vec, kind = stretch_vector(item.stretch)
            vecs.append(vec)
            kinds.append(kind)
        return Batch(
            lr=np.ascontiguousarray(np.stack(lrs)),
            hr=np.ascontiguousarray(np.stack(hrs)),
            stars=np.ascontiguousarray(np.stack(stars)) if len(stars) == n else None,
            stretch=np.stack(vecs),
            stretch_kind=np.asarray(kinds, dtype=np.int64),
        )


def validation_set(
    cfg: Config, train_sources: list[RealSource], val_sources: list[RealSource]
) -> list[Pair]:
    """The fixed held-out set: simulated fields with fixed seeds, then real held-out parts.

    Real images contribute a centre crop (at most ``real_max_lr`` LR pixels a side) of
    their held-out columns (the whole image for ``val_only`` files), degraded with fixed
    mid-range parameters and a fixed noise seed.
    """
    v, s = cfg.val, cfg.data.scale
    pairs: list[Pair] = []
    for i in range(v.sim_fields):
        rng = np.random.default_rng([v.sim_seed, i])
        channels = 3 if i >= v.sim_fields - v.sim_colour else 1
        p = sim_pair(cfg, rng, tuple(v.sim_shape), channels=channels)
        p.name = f"sim{i}{'-rgb' if channels == 3 else ''}"
        pairs.append(p)
    if not v.real:
        return pairs
    fixed = deg.fixed_params(cfg.degradations)
    for src in list(train_sources) + list(val_sources):
        _, h, w = src.data.shape
        x0 = src.train_cols
        avail_w = w - x0
        rh = min(h, v.real_max_lr * s) // s * s
        rw = min(avail_w, v.real_max_lr * s) // s * s
        if rh < 8 * s or rw < 8 * s:
            continue
        y = (h - rh) // 2
        x = x0 + (avail_w - rw) // 2
        rng = np.random.default_rng([v.seed, len(pairs)])
        p = real_pair(cfg, src, rng, (rh, rw), origin=(y, x), params=fixed)
        p.name = src.name
        pairs.append(p)
    return pairs
