"""The upscale options, in one object: :class:`UpscaleOptions`.

Every entry point (the Python API, the CLI, Siril, the local and Dask batch runners)
builds one :class:`UpscaleOptions` and hands it on; the pipeline, the backend factory and
the output header read their settings from it. It validates itself once, when it is
built, and its errors (:class:`~astrosleuth_astro.errors.OptionError`) name the Python
keyword; the CLI renders them with its flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..conserve import DEFAULT_MODE, resolve_mode
from ..engine.backends import BACKENDS
from ..engine.precision import PRECISIONS
from ..engine.tiles import DEFAULT_BATCH_SIZE
from ..errors import OptionError
from ..resample import SCALES
from ..stretch import STRETCHES, Stretch

__all__ = ["BACKENDS", "UpscaleOptions"]

#: Tile size of a backend without a tiling plan (input pixels).
DEFAULT_TILE = 256


def _integer(keyword: str, value: Any, low: int) -> int:
    """``value`` as an int of at least ``low``: ints, and integral floats or strings (Siril
    script arguments arrive as text)."""
    bad = OptionError(keyword, value, f"must be an integer of at least {low}")
    if isinstance(value, bool):
        raise bad
    try:
        number = float(value) if isinstance(value, str) else value
        n = int(number)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not isinstance(number, int | np.integer | float | np.floating) or n != number or n < low:
        raise bad
    return n


@dataclass(frozen=True)
class UpscaleOptions:
    """How to upscale: the model and every processing option, checked once.

    Parameters
    ----------
    model : str, path or Backend
        Registry name (``"default"``), a weights file (``.pth``, ``.safetensors``,
        ``.onnx``), or a ready backend (:func:`astrosleuth_astro.get_backend`).
    scale : {1, 2, 3, 4}
        Output scale. 4 is the networks' native scale; 2 and 3 are area-resampled from 4x;
        1 bins 4x4.
    stretch : {"auto", "mtf", "asinh", "none"} or Stretch
        How the data are mapped into the network's [0, 1] domain
        (:mod:`astrosleuth_astro.stretch`); a fitted :class:`Stretch` is used as is.
    backend : {"auto", "torch", "onnx"}
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"`` (the backend checks it is available).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Network precision (:func:`~astrosleuth_astro.engine.precision.resolve_precision`).
    tile, pad, batch_size : int, optional
        Tiling: tile size and context padding in input pixels, tiles per network call.
        None: the backend's plan for its architecture and device (:meth:`tiling`).
    luminance_only : bool
        Colour only: network luminance, chroma upsampled from the input.
    protect_stars : bool
        Repair dark rings, flux and split cores inside star footprints
        (:mod:`astrosleuth_astro.stars.protect`).
    protect_strength : float
        0 to 1, the strength of the star protection.
    conserve_flux : {"off", "sources", "all"}
        Flux conservation (:mod:`astrosleuth_astro.conserve`); ``True`` and ``False`` are
        read as ``"sources"`` and ``"off"``.
    model_options : mapping or tuple of (str, value)
        Options for the model itself (NEXT's conditioning strengths); the backend refuses
        them for a model that has none. Stored as sorted ``(name, value)`` pairs.

    Raises
    ------
    OptionError
        A value out of range or of the wrong kind; the message names the keyword.
    """

    model: Any = "default"
    scale: int = 4
    stretch: str | Stretch = "auto"
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "auto"
    tile: int | None = None
    pad: int | None = None
    batch_size: int | None = None
    luminance_only: bool = False
    protect_stars: bool = False
    protect_strength: float = 1.0
    conserve_flux: str = DEFAULT_MODE
    model_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:  # frozen: normalised values set once here
            object.__setattr__(self, name, value)

        scale = _integer("scale", self.scale, 1)
        if scale not in SCALES:
            raise OptionError("scale", self.scale, "not supported (choose from 1, 2, 3, 4)")
        put("scale", scale)
        if not isinstance(self.stretch, Stretch) and self.stretch not in STRETCHES:
            raise OptionError(
                "stretch", self.stretch, f"unknown stretch (choose from {', '.join(STRETCHES)})"
            )
        for name, choices in (("backend", BACKENDS), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise OptionError(
                    name, getattr(self, name), f"unknown {name} (choose from {', '.join(choices)})"
                )
        if not isinstance(self.device, str) or not self.device:
            raise OptionError("device", self.device, "must be a device name such as cpu or cuda")
        for name, low in (("tile", 1), ("pad", 0), ("batch_size", 1)):
            if getattr(self, name) is not None:
                put(name, _integer(name, getattr(self, name), low))
        try:
            strength = float(self.protect_strength)
        except (TypeError, ValueError):
            strength = math.nan
        if not 0.0 <= strength <= 1.0:  # also refuses NaN
            raise OptionError("protect_strength", self.protect_strength, "must be between 0 and 1")
        put("protect_strength", strength)
        put("conserve_flux", resolve_mode(self.conserve_flux))
        put("luminance_only", bool(self.luminance_only))
        put("protect_stars", bool(self.protect_stars))
        opts = self.model_options
        items = opts.items() if isinstance(opts, Mapping) else opts
        put("model_options", tuple(sorted((str(k), v) for k, v in items)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option keywords, in order (``model_options`` last)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> UpscaleOptions:
        """Build from keyword arguments as the API takes them: every keyword that is not an
        option (:meth:`names`) is a model option (``star_strength=0.5``...)."""
        known = set(cls.names()) - {"model_options"}
        model_options = {k: kwargs.pop(k) for k in list(kwargs) if k not in known}
        return cls(**kwargs, model_options=model_options)

    def replace(self, **changes: Any) -> UpscaleOptions:
        """A copy with some options changed (validated again)."""
        return replace(self, **changes)

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~astrosleuth_astro.engine.backends.make_backend`
        (besides the model)."""
        return dict(
            backend=self.backend,
            device=self.device,
            precision=self.precision,
            **dict(self.model_options),
        )

    def tiling(self, net: Any) -> tuple[int, int | None, int]:
        """``(tile, pad, batch_size)`` for ``net``: the options' values, else the backend's
        plan (:attr:`Backend.tiling`), else the defaults (pad None: the engine's default)."""
        plan = getattr(net, "tiling", None)
        tile = self.tile or (plan.tile if plan else getattr(net, "tile", DEFAULT_TILE))
        pad = self.pad if self.pad is not None else (plan.pad if plan else None)
        batch_size = self.batch_size or (plan.batch_size if plan else DEFAULT_BATCH_SIZE)
        return int(tile), pad, int(batch_size)
