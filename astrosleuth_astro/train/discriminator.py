"""A patch discriminator (PatchGAN-style) and the adversarial losses.

Four 4x4 convolutions (stride 2, 2, 1, 1; widths ``w, 2w, 4w, 1``) with LeakyReLU(0.2)
and no normalisation layers; each output logit judges a patch of about 34 HR pixels of
a stretched image. Spectral normalisation of the convolutions is on by default (its
power-iteration vectors are buffers, so they are checkpointed with the weights).

Losses (``[losses] gan_loss``): ``hinge`` (D: ``relu(1 - D(real)) + relu(1 + D(fake))``,
G: ``-D(fake)``) or ``bce`` (the non-saturating GAN loss: D: ``softplus(-D(real)) +
softplus(D(fake))``, G: ``softplus(-D(fake))``), all averaged over patches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import Config


class PatchDiscriminator(nn.Module):
    """Patch logits ``(N, 1, H/4 - 2, W/4 - 2)`` for stretched images ``(N, 3, H, W)``.

    Parameters
    ----------
    width : int
        Channels of the first layer.
    spectral_norm : bool
        Spectrally normalise every convolution.
    """

    def __init__(self, width: int = 32, spectral_norm: bool = True) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        w = int(width)
        self.body = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(2 * w, 4 * w, 4, 1, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(4 * w, 1, 4, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2.0 - 1.0)


def build_discriminator(cfg: Config) -> PatchDiscriminator:
    """The discriminator of ``[losses]``, initialised from ``[train] seed`` (global RNG
    untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + 2_000_003)
        return PatchDiscriminator(cfg.losses.disc_width, cfg.losses.disc_spectral_norm)


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Discriminator loss from the logits of real and generated images."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Generator (adversarial) loss from the logits of generated images."""
    fake = fake.float()
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()
