"""Training configuration: dataclasses loaded from TOML, validated with clear errors.

A config file has the sections ``[model]``, ``[data]``, ``[sim]``, ``[degradations]``,
``[train]``, ``[losses]``, ``[val]`` and ``[output]``; every key is optional and defaults
to the values below. Unknown sections or keys are errors (a typo must not silently fall back to a
default). Ranges are written as two-element arrays ``[low, high]`` and each sample draws
uniformly from them (log-uniformly for the keys listed in ``LOG_RANGES``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..errors import InputError
from ..noise import COND_CHANNELS

Range = tuple[float, float]

#: Range keys drawn log-uniformly (they span decades).
LOG_RANGES = {"cold_pixels", "density", "flux_max", "gain", "hot_pixels", "nebulosity", "peak"}
#: ``[degradations]`` fraction ranges that may be ``[0, 0]`` (off) despite being log ranges.
OFF_RANGES = {"cold_pixels", "hot_pixels"}


@dataclass
class ModelConfig:
    """The generator: a FAST-family :class:`~astrosleuth_astro.archs.compact.CompactSR`
    (``arch = "fast"``), or a V1-architecture :class:`~astrosleuth_astro.archs.rrdb.RRDBNet`
    (``arch = "rrdb"``: ``num_feat``, ``num_block``, ``num_grow_ch``; V1 and V2 share it), or
    a NEXT :class:`~astrosleuth_astro.archs.next.NextSR` (``arch = "next"``, same keys; the
    conditioning embedding is trained with NEXT's neutral (unconditioned) input)."""

    arch: str = "fast"
    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 32
    num_conv: int = 12
    num_up_feat: int | None = None
    #: Conditioning channels after the image (0, or 2 for a noise-aware FAST:
    #: :mod:`astrosleuth_astro.noise`).
    num_cond_ch: int = 0
    num_block: int = 6
    num_grow_ch: int = 32
    #: Fine-tuning: start from these weights (``.safetensors``/``.pth``/``.onnx`` path, or a
    #: registry name such as ``"default"``) instead of a random initialisation; "" = none.
    #: Relative paths are relative to the working directory, like ``[output] out_dir``.
    init: str = ""

    def kwargs(self) -> dict[str, int]:
        """Constructor arguments of the architecture (``num_up_feat`` resolved)."""
        if self.arch in ("rrdb", "next"):
            return {
                "num_in_ch": self.num_in_ch,
                "num_out_ch": self.num_out_ch,
                "num_feat": self.num_feat,
                "num_block": self.num_block,
                "num_grow_ch": self.num_grow_ch,
            }
        return {
            "num_in_ch": self.num_in_ch + self.num_cond_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_conv": self.num_conv,
            "num_up_feat": self.num_up_feat or self.num_feat // 2,
        }


@dataclass
class DataConfig:
    """Where training pairs come from and how they are cut.

    ``data_dir`` empty means: use the directory in the environment variable named by
    ``data_env``; when that is unset too, training uses the simulator only. Relative
    directories are resolved against the config file's folder.
    """

    data_dir: str = ""
    data_env: str = "ASTROSLEUTH_DATA"
    #: Mono (or already-RGB) image files used for training; empty = every supported image
    #: in ``data_dir`` that is not listed in ``rgb`` or ``val_only``.
    files: list[str] = field(default_factory=list)
    #: Groups of three single-band files stacked into one RGB cube (R, G, B order).
    rgb: list[list[str]] = field(default_factory=list)
    #: Files used only for validation (never for training).
    val_only: list[str] = field(default_factory=list)
    sim_weight: float = 0.5
    real_weight: float = 0.5
    #: Rightmost fraction of the columns of every training image kept for validation.
    holdout: float = 0.25
    scale: int = 4
    hr_crop: int = 128
    #: LR side of a bank item: the stretch is fitted on the whole item (never on a crop).
    region_lr: int = 96
    bank_size: int = 64
    refresh_per_step: float = 0.5
    stretch: str = "mtf"
    #: How LR inputs are made: "legacy" (the LR is re-observed with extra noise and blur,
    #: ``[degradations]``) or "physical" (LR = the area-binned noisy HR, ``[forward]``).
    forward: str = "legacy"


@dataclass
class SimConfig:
    """Parameter ranges of simulated fields (see :func:`astrosleuth_astro.sim.simulate`)."""

    colour_fraction: float = 0.3
    gaussian_fraction: float = 0.2
    fwhm: Range = (1.0, 3.5)
    beta: Range = (2.2, 4.5)
    density: Range = (0.002, 0.03)
    flux_index: Range = (1.5, 2.2)
    flux_min: Range = (20.0, 200.0)
    flux_max: Range = (1.0e5, 8.0e6)
    background: Range = (300.0, 3000.0)
    gradient: Range = (0.0, 0.3)
    nebulosity_prob: float = 0.6
    nebulosity: Range = (0.05, 3.0)
    read_noise: Range = (2.0, 12.0)
    gain: Range = (0.3, 4.0)
    saturation: Range = (30000.0, 65000.0)
    hot_pixels: Range = (1e-6, 3e-4)
    #: Probability that a field has no stars at all: a nebula or background-only crop,
    #: which the ``auto`` stretch maps like a display-referred picture (see
    #: :func:`astrosleuth_astro.stretch.looks_stretched`). 0 = off (draws nothing).
    starless_prob: float = 0.0


@dataclass
class DegradationConfig:
    """How an HR real image becomes an LR observation (see :mod:`.degradations`).

    Lengths are in LR pixels and every blur kernel is applied on the HR grid before area
    downsampling. The motion, defocus, aberration, cold-pixel and JPEG degradations are
    off by default (probability 0, fraction ``[0, 0]``); when off they draw no random
    numbers, so existing configs make the same pairs as before they were added.
    """

    blur_prob: float = 0.5
    #: Extra seeing blur FWHM in LR pixels (applied on the HR grid before downsampling).
    blur_fwhm: Range = (0.3, 1.2)
    blur_beta: Range = (2.5, 5.0)
    #: Sky pedestal and relative gradient, ADU.
    background: Range = (300.0, 3000.0)
    gradient: Range = (0.0, 0.3)
    #: ADU level the image's bright end (a high percentile) is mapped to.
    peak: Range = (1.0e4, 6.0e4)
    saturation: float = 65000.0
    gain: Range = (0.3, 4.0)
    read_noise: Range = (2.0, 12.0)
    hot_pixels: Range = (1e-6, 3e-4)
    #: Gaussian noise sigma for display-referred (8-bit) sources, in [0, 1] units.
    display_noise: Range = (0.0, 0.02)
    #: Tracking / wind blur: probability, path length (LR pixels, random angle), and the
    #: probability that the path is a random walk (jitter) instead of a straight line.
    motion_prob: float = 0.0
    motion_length: Range = (0.3, 1.5)
    motion_jitter_prob: float = 0.0
    #: Defocus: probability, disk radius (LR pixels), central obstruction (fraction of the
    #: radius; 0 = filled disk, Newtonian/SCT about 0.2-0.4).
    defocus_prob: float = 0.0
    defocus_radius: Range = (0.2, 0.8)
    defocus_obstruction: Range = (0.0, 0.4)
    #: Mild astigmatism: probability, major-axis FWHM (LR pixels) of an elliptical
    #: Gaussian, minor/major axis ratio (random angle).
    astig_prob: float = 0.0
    astig_fwhm: Range = (0.2, 0.8)
    astig_ratio: Range = (0.3, 0.8)
    #: Mild coma: probability and flare tail length (LR pixels, random direction).
    coma_prob: float = 0.0
    coma_length: Range = (0.2, 0.8)
    #: Fraction of cold (dead) pixel positions, log-uniform; [0, 0] = none.
    cold_pixels: Range = (0.0, 0.0)
    #: JPEG compression of display-referred (8-bit) sources only: probability, quality.
    jpeg_prob: float = 0.0
    jpeg_quality: Range = (60.0, 95.0)
    #: Probability that a linear real pair gets no added detector noise (nor hot or cold
    #: pixels): a deep stack, whose only LR noise is the HR image's own, averaged down.
    clean_prob: float = 0.0
    #: Probability that a linear real pair stays in the image's own units, with no blur
    #: and no added noise: the LR is the HR image area-averaged, nothing else.
    native_prob: float = 0.0


@dataclass
class ForwardConfig:
    """``[forward]``: the physical forward model's acquisition effects (``[data] forward =
    "physical"``; see :mod:`.forward`). Probabilities per pair; lengths in LR pixels."""

    #: The simulated pairs' target: "observed" (the fine detector's noisy frame, so
    #: binning it gives the LR exactly) or "smooth" (the clean scene plus the LR's own
    #: noise bilinearly upsampled: no sub-pixel noise structure to predict).
    target_noise: str = "observed"
    galaxy_prob: float = 0.3
    elongation_prob: float = 0.15
    elongation_fwhm: Range = (0.3, 1.2)
    elongation_ratio: Range = (0.3, 0.8)
    coma_prob: float = 0.1
    coma_length: Range = (0.3, 1.2)
    spike_prob: float = 0.1
    spike_length: Range = (4.0, 20.0)
    spike_strength: Range = (0.005, 0.03)
    pedestal_prob: float = 0.2
    pedestal: Range = (100.0, 2000.0)
    defect_prob: float = 0.25
    dead_pixels: Range = (1e-5, 1e-3)
    hot_pixels: Range = (1e-5, 1e-3)
    bad_column_prob: float = 0.3
    #: Cosmic rays per 10^4 LR pixels (Poisson mean), when a frame has defects.
    cosmic_rays: float = 1.0
    resample_prob: float = 0.15
    border_prob: float = 0.1
    #: Share of simulated pairs made into 8-bit pictures (display-referred).
    display_prob: float = 0.15
    #: Brightening of the stretched picture before 8-bit clipping (1 = none).
    display_gain: Range = (1.0, 1.6)
    jpeg_prob: float = 0.7
    jpeg_quality: Range = (60.0, 95.0)


@dataclass
class TrainConfig:
    """Optimisation."""

    seed: int = 0
    steps: int = 20000
    batch_size: int = 12
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup: int = 200
    weight_decay: float = 1e-4
    betas: Range = (0.9, 0.99)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss: str = "l1"
    huber_delta: float = 0.01
    #: "bf16" (CPU autocast) or "none" (fp32).
    amp: str = "none"
    #: torch intra-op threads; 0 leaves torch's default.
    threads: int = 0
    #: Where the generator trains: "cpu" or "cuda" (validation and export run on a CPU
    #: copy of the EMA weights, so the files are the same kind either way).
    device: str = "cpu"
    #: Stop (checkpoint and export) after this many minutes of wall time; 0 = no limit.
    max_minutes: float = 0.0


@dataclass
class LossConfig:
    """Weights of the loss terms and their options (all terms are in the stretched domain
    unless noted; a weight of 0 switches a term off and costs nothing).

    The pixel loss kind stays ``[train] loss``. See ``docs/training-losses.md``.
    """

    #: Weight of the pixel loss (``[train] loss``).
    pixel: float = 1.0
    #: Weight of the star-aware loss (rings + flux around stars found in the HR target).
    star: float = 0.0
    #: Weight of the perceptual loss (L1 between features of a net trained on the data).
    perceptual: float = 0.0
    #: Weight of the generator's adversarial loss (patch discriminator).
    adversarial: float = 0.0
    #: Weight of the linear block-mean term: output and target averaged over blocks of
    #: ``block_mean_size`` LR pixels in the *linear* domain (keeps the sky level and the
    #: flux per block where a stretched-domain loss lets them drift).
    block_mean: float = 0.0
    #: Side of those blocks, LR pixels.
    block_mean_size: int = 2
    #: Star detection threshold, in LR background sigmas (per LR pixel).
    star_nsigma: float = 3.0
    #: Width of the ring zone outside each star footprint, LR pixels.
    star_ring: float = 3.0
    #: Flux region: footprint grown by this many LR pixels.
    star_flux_radius: float = 2.0
    #: Weight of the ring (one-sided "darker than the target") term inside the star loss.
    star_ring_weight: float = 1.0
    #: Weight of the relative linear-flux term inside the star loss.
    star_flux_weight: float = 0.1
    #: Channels of the three stages of the perceptual feature net.
    perceptual_widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    #: Stages (1-based) whose features are compared.
    perceptual_layers: list[int] = field(default_factory=lambda: [1, 2, 3])
    #: Self-supervised pretraining steps of the feature net at the start of training.
    perceptual_pretrain_steps: int = 300
    perceptual_lr: float = 1e-3
    #: A saved feature net (``.safetensors``) to use instead of pretraining one; relative
    #: paths are resolved against the config file's folder.
    perceptual_net: str = ""
    #: Discriminator loss: ``"hinge"`` or ``"bce"`` (non-saturating).
    gan_loss: str = "hinge"
    #: First step with the adversarial loss (and discriminator updates).
    gan_start: int = 0
    #: Channels of the first patch-discriminator layer.
    disc_width: int = 32
    disc_lr: float = 1e-4
    disc_spectral_norm: bool = True


@dataclass
class ValConfig:
    """The fixed held-out validation set."""

    every: int = 1000
    sim_fields: int = 6
    sim_colour: int = 2
    sim_shape: tuple[int, int] = (64, 64)
    sim_seed: int = 100_000
    real: bool = True
    #: Largest LR side of a real validation image (centre crop of the held-out part).
    real_max_lr: int = 128
    #: Also log the star metrics (flux ratio, shadow depth, splits, hallucinations).
    star_metrics: bool = True
    seed: int = 7


@dataclass
class OutputConfig:
    """Where logs, checkpoints and exports go (relative to the working directory)."""

    out_dir: str = "runs/default"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    export_name: str = "model"
    onnx_opset: int = 17


@dataclass
class Config:
    """A whole training configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    degradations: DegradationConfig = field(default_factory=DegradationConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    val: ValConfig = field(default_factory=ValConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    #: The file this config was read from (None when built in code).
    source: str | None = None

    def resolved_data_dir(self) -> Path | None:
        """The real-data directory, or None for simulator-only training."""
        d = self.data.data_dir or os.environ.get(self.data.data_env, "")
        if not d:
            return None
        p = Path(os.path.expanduser(d))
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (stored in checkpoints)."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        if self.model.arch == "fast":  # FAST checkpoints predate the RRDB-only keys
            d["model"].pop("num_block", None)
            d["model"].pop("num_grow_ch", None)
        if not self.model.init:  # checkpoints from before fine-tuning existed
            d["model"].pop("init", None)
        if not self.model.num_cond_ch:  # nor noise-aware networks
            d["model"].pop("num_cond_ch", None)
        if self.train.device == "cpu":  # checkpoints from before GPU training existed
            d["train"].pop("device", None)
        if self.data.forward == "legacy":
            d["data"].pop("forward", None)
            d.pop("forward", None)
        return d

    def resolved_init(self) -> str:
        """``[model] init`` as a registry name or an absolute path ("" = none)."""
        init = self.model.init
        if not init:
            return ""
        p = Path(os.path.expanduser(init))
        if p.suffix.lower() in (".safetensors", ".pth", ".pt", ".onnx"):
            return str(p.resolve())
        return init


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "sim": SimConfig,
    "degradations": DegradationConfig,
    "forward": ForwardConfig,
    "train": TrainConfig,
    "losses": LossConfig,
    "val": ValConfig,
    "output": OutputConfig,
}


def _err(where: str, msg: str) -> InputError:
    return InputError(f"{where}: {msg}")


def _coerce(where: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the default and convert lists to tuples."""
    name = f"{key}"
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or len(value) != len(default):
            raise _err(where, f"{name} must be an array of {len(default)} numbers, got {value!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise _err(where, f"{name} must hold numbers, got {value!r}")
        kind = type(default[0])
        return tuple(kind(v) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _err(where, f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err(where, f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(where, f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise _err(where, f"{name} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise _err(where, f"{name} must be an array, got {value!r}")
        return value
    if default is None:  # optional int (num_up_feat)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _err(where, f"{name} must be an integer, got {value!r}")
        return value
    return value


def _validate(cfg: Config, where: str) -> None:
    def check(cond: bool, msg: str) -> None:
        if not cond:
            raise _err(where, msg)

    m, d, t, v, o = cfg.model, cfg.data, cfg.train, cfg.val, cfg.output
    check(
        m.arch in ("fast", "rrdb", "next"),
        f"[model] arch {m.arch!r} is not supported ('fast', 'rrdb' or 'next')",
    )
    check(m.num_block > 0 and m.num_grow_ch > 0, "[model] num_block and num_grow_ch must be > 0")
    check(m.num_feat > 0 and m.num_conv >= 0, "[model] num_feat must be > 0, num_conv >= 0")
    check(m.num_in_ch == 3 and m.num_out_ch == 3, "[model] the networks take and give 3 channels")
    check(
        m.num_cond_ch in (0, COND_CHANNELS) and (m.num_cond_ch == 0 or m.arch == "fast"),
        f"[model] num_cond_ch must be 0 or {COND_CHANNELS} (noise-aware: 'fast' only)",
    )
    check(t.device in ("cpu", "cuda"), f"[train] device must be 'cpu' or 'cuda', got {t.device!r}")
    check(
        t.device == "cpu"
        or (cfg.losses.perceptual == 0 and cfg.losses.adversarial == 0 and cfg.losses.star == 0),
        "[train] device 'cuda' supports the pixel loss only",
    )
    check(
        cfg.forward.target_noise in ("observed", "smooth"),
        "[forward] target_noise must be 'observed' or 'smooth'",
    )
    check(d.forward in ("legacy", "physical"), "[data] forward must be 'legacy' or 'physical'")
    check(d.scale == 4, f"[data] scale must be 4 for the 'fast' arch, got {d.scale}")
    check(
        d.hr_crop % d.scale == 0 and d.hr_crop >= 4 * d.scale,
        "[data] hr_crop must be a multiple of scale (>= 4*scale)",
    )
    check(d.region_lr * d.scale >= d.hr_crop, "[data] region_lr * scale must be >= hr_crop")
    check(d.region_lr >= 32, "[data] region_lr must be >= 32 (the stretch needs a large area)")
    check(
        d.sim_weight >= 0 and d.real_weight >= 0 and d.sim_weight + d.real_weight > 0,
        "[data] sim_weight and real_weight must be >= 0, not both 0",
    )
    check(0.0 <= d.holdout < 1.0, "[data] holdout must be in [0, 1)")
    check(d.bank_size >= 1, "[data] bank_size must be >= 1")
    check(d.refresh_per_step >= 0, "[data] refresh_per_step must be >= 0")
    check(
        d.stretch in ("mtf", "asinh", "auto"),
        "[data] stretch must be 'mtf', 'asinh' or 'auto' (as the pipeline picks)",
    )
    check(0.0 <= cfg.sim.starless_prob <= 1.0, "[sim] starless_prob must be in [0, 1]")
    for g in d.rgb:
        check(
            isinstance(g, list) and len(g) == 3 and all(isinstance(s, str) for s in g),
            f"[data] rgb groups must be 3 file names, got {g!r}",
        )
    for key in ("files", "val_only"):
        check(all(isinstance(s, str) for s in getattr(d, key)), f"[data] {key} must be file names")
    for sec in (cfg.sim, cfg.degradations):
        for f in dataclasses.fields(sec):
            val = getattr(sec, f.name)
            if isinstance(val, tuple):
                check(
                    val[0] <= val[1],
                    f"[{_name_of(sec)}] {f.name} range must be [low, high], got {list(val)}",
                )
                off = sec is cfg.degradations and f.name in OFF_RANGES and val[1] == 0
                if f.name in LOG_RANGES and not off:
                    check(
                        val[0] > 0,
                        f"[{_name_of(sec)}] {f.name} must be > 0 (log range)"
                        + (", or [0, 0] for none" if f.name in OFF_RANGES else ""),
                    )
    _validate_degradations(cfg.degradations, check)
    check(t.steps >= 1 and t.batch_size >= 1, "[train] steps and batch_size must be >= 1")
    check(t.lr > 0 and 0 <= t.min_lr <= t.lr, "[train] need lr > 0 and 0 <= min_lr <= lr")
    check(0.0 <= t.ema_decay < 1.0, "[train] ema_decay must be in [0, 1)")
    check(t.amp in ("none", "bf16"), f"[train] amp must be 'none' or 'bf16', got {t.amp!r}")
    check(t.loss in ("l1", "huber", "charbonnier", "mse"), f"[train] unknown loss {t.loss!r}")
    _validate_losses(cfg.losses, check)
    check(
        v.every >= 1 and v.sim_fields >= 0 and 0 <= v.sim_colour <= v.sim_fields,
        "[val] every >= 1, 0 <= sim_colour <= sim_fields",
    )
    check(
        o.checkpoint_every >= 1 and o.log_every >= 1,
        "[output] checkpoint_every and log_every must be >= 1",
    )


def _validate_losses(lo: LossConfig, check: Callable[[bool, str], None]) -> None:
    for key in ("pixel", "star", "perceptual", "adversarial", "block_mean"):
        check(getattr(lo, key) >= 0, f"[losses] {key} must be >= 0")
    check(lo.block_mean_size >= 1, "[losses] block_mean_size must be >= 1")
    check(
        lo.pixel + lo.star + lo.perceptual + lo.adversarial + lo.block_mean > 0,
        "[losses] at least one weight must be > 0",
    )
    check(lo.star_nsigma > 0, "[losses] star_nsigma must be > 0")
    check(
        lo.star_ring > 0 and lo.star_flux_radius >= 0,
        "[losses] star_ring must be > 0 and star_flux_radius >= 0",
    )
    check(
        lo.star_ring_weight >= 0 and lo.star_flux_weight >= 0,
        "[losses] star_ring_weight and star_flux_weight must be >= 0",
    )
    w = lo.perceptual_widths
    check(
        len(w) == 3 and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in w),
        f"[losses] perceptual_widths must be 3 positive integers, got {w!r}",
    )
    layers = lo.perceptual_layers
    check(
        len(layers) >= 1 and all(c in (1, 2, 3) and not isinstance(c, bool) for c in layers),
        f"[losses] perceptual_layers must be a non-empty list of 1, 2, 3; got {layers!r}",
    )
    check(lo.perceptual_pretrain_steps >= 0, "[losses] perceptual_pretrain_steps must be >= 0")
    check(lo.perceptual_lr > 0 and lo.disc_lr > 0, "[losses] perceptual_lr, disc_lr must be > 0")
    check(
        lo.gan_loss in ("hinge", "bce"),
        f"[losses] gan_loss must be 'hinge' or 'bce', got {lo.gan_loss!r}",
    )
    check(lo.gan_start >= 0 and lo.disc_width >= 1, "[losses] gan_start >= 0, disc_width >= 1")


def _validate_degradations(g: DegradationConfig, check: Callable[[bool, str], None]) -> None:
    """Probabilities in [0, 1] and physically meaningful ranges in ``[degradations]``."""
    for key in (
        "blur_prob",
        "motion_prob",
        "motion_jitter_prob",
        "defocus_prob",
        "astig_prob",
        "coma_prob",
        "jpeg_prob",
        "clean_prob",
        "native_prob",
    ):
        val = getattr(g, key)
        check(0.0 <= val <= 1.0, f"[degradations] {key} must be in [0, 1], got {val}")
    for key in ("blur_fwhm", "motion_length", "defocus_radius", "astig_fwhm", "coma_length"):
        val = getattr(g, key)
        check(val[0] >= 0, f"[degradations] {key} must be >= 0 LR pixels, got {list(val)}")
    check(
        0.0 <= g.defocus_obstruction[0] and g.defocus_obstruction[1] < 1.0,
        f"[degradations] defocus_obstruction must be in [0, 1), got {list(g.defocus_obstruction)}",
    )
    check(
        0.0 < g.astig_ratio[0] and g.astig_ratio[1] <= 1.0,
        f"[degradations] astig_ratio must be in (0, 1], got {list(g.astig_ratio)}",
    )
    check(
        1.0 <= g.jpeg_quality[0] and g.jpeg_quality[1] <= 100.0,
        f"[degradations] jpeg_quality must be in [1, 100], got {list(g.jpeg_quality)}",
    )
    for key in ("hot_pixels", "cold_pixels"):
        val = getattr(g, key)
        check(val[1] <= 1.0, f"[degradations] {key} is a fraction (<= 1), got {list(val)}")


def _name_of(section: object) -> str:
    for name, cls in _SECTIONS.items():
        if isinstance(section, cls):
            return name
    return "?"


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a :class:`Config` from parsed TOML."""
    cfg = Config()
    for sec_name, values in raw.items():
        if sec_name not in _SECTIONS:
            raise _err(where, f"unknown section [{sec_name}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise _err(where, f"[{sec_name}] must be a table")
        section = getattr(cfg, sec_name)
        known = {f.name: f for f in dataclasses.fields(section)}
        for key, value in values.items():
            if key not in known:
                raise _err(
                    where, f"unknown key {key!r} in [{sec_name}] (known: {', '.join(known)})"
                )
            default = getattr(section, key)
            setattr(section, key, _coerce(where, f"[{sec_name}] {key}", value, default))
    _validate(cfg, where)
    return cfg


def load_config(path: str | os.PathLike) -> Config:
    """Read a TOML training config.

    Raises
    ------
    InputError
        The file is missing, not TOML, or has unknown/invalid keys.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from None
    cfg = from_dict(raw, where=str(p))
    cfg.source = str(p.resolve())
    return cfg
