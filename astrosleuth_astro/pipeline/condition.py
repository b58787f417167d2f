"""The conditioning channels of a noise-aware network, appended to every tile.

A noise-aware network (``Backend.cond_channels == 2``) takes, after the image channels,
the noise-level map and the linear flag of :mod:`astrosleuth_astro.noise`. They are a
pointwise function of the stretched tile and the image's noise model, so the model is
fitted once on the whole input (:func:`noise_of`) and each tile's channels are computed
from the tile itself: tiles, bands and Dask workers see the same values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ModelError
from ..noise import COND_CHANNELS, NoiseModel, condition_channels, estimate_noise
from ..stretch import Stretch
from .prepared import Prepared

Net = Callable[[np.ndarray], np.ndarray]


def cond_channels_of(net: object) -> int:
    """Conditioning channels ``net`` takes (its ``cond_channels``; 0 for plain callables).

    Raises
    ------
    ModelError
        A network asking for a number of conditioning channels this version does not make.
    """
    n = int(getattr(net, "cond_channels", 0) or 0)
    if n not in (0, COND_CHANNELS):
        raise ModelError(
            f"the network takes {n} conditioning channels; astrosleuth-astro makes "
            f"{COND_CHANNELS} (noise map, linear flag)"
        )
    return n


def noise_of(prep: Prepared) -> NoiseModel:
    """The noise model of a prepared input (fitted once, then kept on ``prep``)."""
    if prep.noise is None:
        linear = prep.stretch.kind != "none"
        prep.noise = estimate_noise(prep.work, linear, prep.background)
    return prep.noise


def conditioned(net: Net, stretch: Stretch, noise: NoiseModel) -> Net:
    """``net`` fed ``(N, C, h, w)`` stretched tiles with the conditioning channels added."""

    def run(batch: np.ndarray) -> np.ndarray:
        cond = condition_channels(batch, stretch, noise)
        return net(np.concatenate([batch, cond], axis=1))

    return run
