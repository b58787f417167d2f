"""The pipeline run: :func:`upscale_array`, the core of every entry point."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.backends import repeat_mean
from ..engine.tiles import upscale_tiled
from ..resample import NATIVE_SCALE
from ..stars.protect import StarProtector
from ..stretch import Stretch
from .condition import cond_channels_of, conditioned, noise_of
from .finish import FluxKeeper, band_rows, clock, finish_bands, to_linear
from .options import UpscaleOptions
from .prepared import prepare

Net = Callable[[np.ndarray], np.ndarray]

#: Stages reported in ``timings`` by :func:`upscale_array` (seconds, wall clock).
TIMED_STAGES = ("stretch", "stars", "network", "tiling", "inverse", "write")
#: Names that ``upscale_array``'s ``stage`` callback receives, in order.
STAGES = ("detecting stars", "upscaling", "repairing stars")


def _timed_net(net: Net, timings: dict[str, float]) -> Net:
    """``net`` whose calls add their wall-clock seconds to ``timings["network"]``."""

    def run(batch: np.ndarray) -> np.ndarray:
        with clock(timings, "network"):
            return net(batch)

    return run


@dataclass
class PipelineResult:
    """Output of :func:`upscale_array`.

    Attributes
    ----------
    data : ndarray
        The upscaled linear image, float32, ``(sH, sW)`` for 2-D input or ``(C, sH, sW)``.
    stretch : Stretch
        The stretch that was fitted (or given) and inverted.
    scale : int
    """

    data: np.ndarray
    stretch: Stretch
    scale: int


def mono_net(net: Net) -> Net:
    """Run a 3-channel network on 1-channel tiles: the mean of its 3 outputs for a grey
    input. A backend's own ``mono()`` form is used when it has one (FAST on torch runs a
    one-channel network with the same result, :class:`~astrosleuth_astro.archs.compact.
    MonoCompactSR`). A noise-aware network's conditioning channels follow the image."""
    own = getattr(net, "mono", None)
    return own() if callable(own) else repeat_mean(net, cond_channels_of(net))


def upscale_array(
    data: np.ndarray,
    net: Net,
    options: UpscaleOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    out: np.ndarray | None = None,
    work: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
    **option_kwargs: Any,
) -> PipelineResult:
    """Upscale a linear (or display-referred) image with a 4x network.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (C, H, W) with C in {1, 3}
        The image in any units (ADU, e-, surface brightness, or [0, 1] for pictures).
    net : callable
        ``(N, 3, h, w)`` float32 in [0, 1] -> ``(N, 3, 4h, 4w)``, e.g. a
        :class:`~astrosleuth_astro.engine.backends.Backend`.
    options : UpscaleOptions, optional
        The options (:class:`~astrosleuth_astro.pipeline.UpscaleOptions`; its ``model``,
        ``backend``, ``device`` and ``precision`` are ``net``'s business and not read here).
        A fitted :class:`~astrosleuth_astro.stretch.Stretch` as ``stretch`` is used as is,
        which lets many bands or frames share one stretch. Tiling options left None take
        ``net``'s plan (:meth:`UpscaleOptions.tiling`).
    **option_kwargs
        Options as keywords (``scale=2, stretch="mtf"``...), instead of ``options`` or as
        changes to it.
    progress : callable, optional
        ``progress(done, total)`` after each batch of tiles.
    stage : callable, optional
        ``stage(name)`` when a long stage begins, with a name from :data:`STAGES`:
        ``"detecting stars"`` and ``"repairing stars"`` (only with ``protect_stars``,
        which can take longer than the network) and ``"upscaling"`` (the tiles, whose
        progress ``progress`` reports).
    out : ndarray, optional
        Destination ``(C, sH, sW)`` (may be a ``np.memmap``); written band by band.
    work : ndarray, optional
        Scratch ``(C, 4H, 4W)`` float32 for the network's stretched output (may be a
        ``np.memmap`` for huge images). For scale 4 it may be ``out`` itself.
    timings : dict, optional
        When given, wall-clock seconds per stage are added to it (keys
        :data:`TIMED_STAGES`: ``stretch`` = masking, fitting and applying the stretch;
        ``stars`` = star detection and protection; ``network`` = the network calls;
        ``tiling`` = the rest of the tiled engine (gathering tiles, blending);
        ``inverse`` = inverse stretch, clipped residual, flux conservation, resampling;
        ``write`` = copying
        finished rows into ``out``).

    Returns
    -------
    PipelineResult
    """
    if options is None:
        options = UpscaleOptions(**option_kwargs)
    elif option_kwargs:
        options = options.replace(**option_kwargs)
    scale, luminance_only = options.scale, options.luminance_only
    tile, pad, batch_size = options.tiling(net)
    stage = stage or (lambda _name: None)
    with clock(timings, "stretch"):
        # Star protection needs the whole linear input; otherwise nothing whole-image is
        # built: the stretch (and residual, mask) is applied band by band as rows are read.
        prep = prepare(data, options.stretch, lazy=not options.protect_stars)
    n_ch, h, w = prep.chw.shape

    protector = None
    if options.protect_stars:
        # Detected once on the whole linear input, before tiling: tiles and bands agree.
        stage("detecting stars")
        with clock(timings, "stars"):
            protector = StarProtector(
                prep.work, strength=options.protect_strength, scale=NATIVE_SCALE
            )

    net_c = mono_net(net) if n_ch == 1 else net
    if cond_channels_of(net):
        with clock(timings, "stretch"):
            net_c = conditioned(net_c, prep.stretch, noise_of(prep))
    if timings is not None:
        net_c = _timed_net(net_c, timings)
        t_tiled = time.perf_counter()
        net_before = timings.get("network", 0.0)
    full_shape = (n_ch, NATIVE_SCALE * h, NATIVE_SCALE * w)
    out_shape = (n_ch, scale * h, scale * w)
    if out is None and work is None and scale == NATIVE_SCALE:
        # The network writes into the output, whose bands are then finished in place.
        out = np.empty(out_shape, dtype=np.float32)
    if work is None:
        work = out if (out is not None and scale == NATIVE_SCALE) else None
    if work is not None and tuple(work.shape) != full_shape:
        raise ValueError(f"work array has shape {work.shape}, expected {full_shape}")
    stage("upscaling")
    net_out = upscale_tiled(
        prep.stretched,
        net_c,
        scale=NATIVE_SCALE,
        tile=tile,
        pad=pad,
        batch_size=batch_size,
        progress=progress,
        out=work,
    )
    if timings is not None:
        tiled = time.perf_counter() - t_tiled - (timings.get("network", 0.0) - net_before)
        timings["tiling"] = timings.get("tiling", 0.0) + tiled

    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out array has shape {out.shape}, expected {out_shape}")

    if protector is not None and protector.active:

        def native_block(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            n = NATIVE_SCALE
            blk = net_out[:, n * r0 : n * r1, n * c0 : n * c1]
            return to_linear(prep, blk, (r0, r1), (c0, c1), luminance_only)

        stage("repairing stars")
        with clock(timings, "stars"):
            protector.prepare(native_block)

    flux = FluxKeeper(prep, options.conserve_flux) if options.conserve_flux != "off" else None
    step = band_rows(w)
    n = NATIVE_SCALE
    # Read ahead of the rows written: with scale 4, ``out`` is ``net_out`` itself, and a
    # band's rows are written only after the context after them has been read.
    bands = (
        (a, min(h, a + step), net_out[:, n * a : n * min(h, a + step), :])
        for a in range(0, h, step)
    )
    for a, b, rows in finish_bands(
        prep,
        bands,
        scale,
        luminance_only=luminance_only,
        protector=protector,
        flux=flux,
        timings=timings,
    ):
        with clock(timings, "write"):
            out[:, scale * a : scale * b, :] = rows

    result = out[0] if prep.was_2d else out
    return PipelineResult(data=result, stretch=prep.stretch, scale=scale)
