"""Pixel losses in the stretched domain, with a small registry for adding more.

Add a loss with :func:`register_loss`; the trainer builds it by name from
``[train] loss``. Losses are computed in float32 even under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from ..metrics import psnr as _psnr_np
from ..metrics import psnr_from_mse
from .starloss import forward_stretch, inverse_stretch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES: dict[str, Callable[..., LossFn]] = {}


def register_loss(name: str) -> Callable[[Callable[..., LossFn]], Callable[..., LossFn]]:
    """Decorator: register a factory ``(**options) -> loss(pred, target)`` under ``name``."""

    def deco(factory: Callable[..., LossFn]) -> Callable[..., LossFn]:
        _LOSSES[name] = factory
        return factory

    return deco


@register_loss("l1")
def _l1(**_: float) -> LossFn:
    return lambda pred, target: F.l1_loss(pred.float(), target.float())


@register_loss("mse")
def _mse(**_: float) -> LossFn:
    return lambda pred, target: F.mse_loss(pred.float(), target.float())


@register_loss("huber")
def _huber(huber_delta: float = 0.01, **_: float) -> LossFn:
    # Scaled by 1/delta so that the linear part has the slope of L1.
    return lambda pred, target: (
        F.huber_loss(pred.float(), target.float(), delta=huber_delta) / huber_delta
    )


@register_loss("charbonnier")
def _charbonnier(eps: float = 1e-3, **_: float) -> LossFn:
    return lambda pred, target: torch.sqrt((pred.float() - target.float()) ** 2 + eps * eps).mean()


def build_loss(name: str, **options: float) -> LossFn:
    """The loss registered as ``name``, built with ``options``."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(sorted(_LOSSES))})")
    return _LOSSES[name](**options)


def psnr(pred: torch.Tensor | float, target: torch.Tensor | None = None) -> float:
    """PSNR in dB for signals in [0, 1] (``pred`` may be a precomputed MSE).

    :func:`astrosleuth_astro.metrics.psnr` (or :func:`~astrosleuth_astro.metrics.psnr_from_mse`)
    on the tensors' values, in float64.
    """
    if target is None:
        return psnr_from_mse(float(pred))
    return _psnr_np(pred.detach().double().cpu().numpy(), target.detach().double().cpu().numpy())


def block_mean_term(
    pred: torch.Tensor,
    target: torch.Tensor,
    vec: torch.Tensor,
    kind: torch.Tensor,
    block: int,
) -> torch.Tensor:
    """L1 distance of ``pred`` and ``target`` averaged over blocks in the linear domain.

    A loss in the stretched domain is blind to the bias that the inverse stretch turns a
    symmetric error into, and an L1 loss pulls a skewed sky to its median: both move the
    linear sky level that the pipeline returns. This term averages output and target over
    ``block`` x ``block`` pixels in linear units (where the pipeline's output lives) and
    compares the block means after stretching them again, so its scale and gradients are
    those of the pixel loss (a linear difference measured in the bright stars' units would
    swamp every other term).

    Parameters
    ----------
    pred, target : Tensor, shape (N, C, H, W)
        Stretched domain.
    vec, kind
        Stretch of each sample (see :func:`.starloss.inverse_stretch`).
    block : int
        Block side in HR pixels; rows and columns beyond a whole block are left out.

    Returns
    -------
    Tensor
        Scalar, stretched-domain units per block and channel.
    """
    mean_p = F.avg_pool2d(inverse_stretch(pred, vec, kind), block)
    with torch.no_grad():
        mean_t = F.avg_pool2d(inverse_stretch(target, vec, kind), block)
        ref = forward_stretch(mean_t, vec, kind)
    return (forward_stretch(mean_p, vec, kind) - ref).abs().mean()
