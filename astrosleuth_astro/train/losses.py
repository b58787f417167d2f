"""Pixel losses in the stretched domain, with a small registry for adding more.

Add a loss with :func:`register_loss`; the trainer builds it by name from
``[train] loss``. Losses are computed in float32 even under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

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
    """PSNR in dB for signals in [0, 1] (``pred`` may be a precomputed MSE)."""
    mse = float(pred) if target is None else float(F.mse_loss(pred.double(), target.double()))
    return float("inf") if mse <= 0 else -10.0 * float(torch.log10(torch.tensor(mse)))
