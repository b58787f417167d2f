"""The training objective of ``[losses]``: pixel, star-aware, block-mean, perceptual and
adversarial.

:class:`Objective` holds what the terms need besides the generator (the frozen
perceptual feature net, the patch discriminator and its AdamW optimiser), computes the
generator loss of a step and does the discriminator update. With the default weights
(``pixel = 1``, the rest 0) it is exactly the pixel loss of ``[train] loss``, so an
existing config trains as before.

Everything is deterministic: the extra networks are initialised from ``[train] seed``
without touching the global RNG, the feature net is pretrained on step-0 crops drawn from
their own stream, and no term draws random numbers, so a run resumed from a checkpoint
(which stores :meth:`Objective.state_dict`) has the same losses as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import perceptual as pc
from .config import Config
from .data import Batch, PairBank
from .discriminator import build_discriminator, d_loss
from .losses import LossFn, block_mean_term
from .starloss import StarLoss

#: Names of the logged terms, in CSV column order (``loss_<name>``).
TERMS = ("pixel", "star_ring", "star_flux", "block_mean", "perceptual", "adv", "d")


class Objective:
    """Loss terms of ``[losses]`` and the discriminator.

    Parameters
    ----------
    cfg : Config
    pixel_fn : callable
        The pixel loss ``(pred, target) -> scalar`` of ``[train] loss``.
    """

    def __init__(self, cfg: Config, pixel_fn: LossFn) -> None:
        self.cfg = cfg
        self.pixel_fn = pixel_fn
        lo = cfg.losses
        self.amp = cfg.train.amp == "bf16"
        self.star = None
        if lo.star > 0:
            self.star = StarLoss(
                lo.star_ring, lo.star_flux_radius, lo.star_ring_weight, lo.star_flux_weight
            )
        self.perceptual = None  # a PerceptualLoss once set up
        self.disc = self.disc_opt = None
        if lo.adversarial > 0:
            self.disc = build_discriminator(cfg)
            self.disc_opt = torch.optim.AdamW(
                self.disc.parameters(), lr=lo.disc_lr, betas=cfg.train.betas, weight_decay=0.0
            )
        self.pixel_only = (
            lo.star == 0 and lo.perceptual == 0 and lo.adversarial == 0 and lo.block_mean == 0
        )

    # -- set-up and state ------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The ``loss_<term>`` columns of ``train_log.csv`` (none for pixel-only runs)."""
        if self.pixel_only:
            return []
        lo = self.cfg.losses
        on = {
            "pixel": True,
            "star_ring": lo.star > 0,
            "star_flux": lo.star > 0,
            "block_mean": lo.block_mean > 0,
            "perceptual": lo.perceptual > 0,
            "adv": lo.adversarial > 0,
            "d": lo.adversarial > 0,
        }
        return [f"loss_{t}" for t in TERMS if on[t]]

    def setup(
        self, bank: PairBank, state: dict | None = None, log: Callable[[str], None] = print
    ) -> None:
        """Restore a checkpointed state, or make the perceptual net (load or pretrain)."""
        lo = self.cfg.losses
        state = state or {}
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
        if lo.perceptual <= 0:
            return
        if "feature_net" in state:
            net = pc.FeatureNet(state["feature_widths"])
            net.load_state_dict(state["feature_net"])
        elif lo.perceptual_net:
            path = Path(lo.perceptual_net).expanduser()
            if not path.is_absolute() and self.cfg.source:
                path = Path(self.cfg.source).parent / path
            net = pc.load_feature_net(path)
            log(f"perceptual feature net loaded from {path}")
        else:
            net, hist = pc.pretrain_feature_net(self.cfg, bank, log=log)
        self.perceptual = pc.PerceptualLoss(net, lo.perceptual_layers)

    def state_dict(self) -> dict | None:
        """What a checkpoint needs to resume exactly (None when there is nothing)."""
        st: dict = {}
        if self.disc is not None:
            st["disc"] = self.disc.state_dict()
            st["disc_opt"] = self.disc_opt.state_dict()
        if self.perceptual is not None:
            st["feature_net"] = self.perceptual.net.state_dict()
            st["feature_widths"] = list(self.perceptual.net.widths)
        return st or None

    # -- one step --------------------------------------------------------------------------
    def gan_on(self, step: int) -> bool:
        return self.disc is not None and step >= self.cfg.losses.gan_start

    def generator_loss(
        self, pred: torch.Tensor, hr: torch.Tensor, batch: Batch, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted generator loss of ``step`` and its terms (detached)."""
        lo = self.cfg.losses
        pix = self.pixel_fn(pred, hr)
        if self.pixel_only:
            return (pix if lo.pixel == 1.0 else lo.pixel * pix), {}
        total = lo.pixel * pix
        terms = {"pixel": pix.detach()}
        if self.star is not None:
            if batch.stars is None:
                raise RuntimeError("the star-aware loss needs star maps in the batch")
            s, parts = self.star(
                pred,
                hr,
                torch.from_numpy(batch.stars),
                torch.from_numpy(batch.stretch),
                torch.from_numpy(batch.stretch_kind),
            )
            total = total + lo.star * s
            terms.update(parts)
        if lo.block_mean > 0:
            m = block_mean_term(
                pred,
                hr,
                torch.from_numpy(batch.stretch),
                torch.from_numpy(batch.stretch_kind),
                lo.block_mean_size * self.cfg.data.scale,
            )
            total = total + lo.block_mean * m
            terms["block_mean"] = m.detach()
        if self.perceptual is not None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
                p = self.perceptual(pred, hr)
            total = total + lo.perceptual * p.float()
            terms["perceptual"] = p.detach().float()
        if self.gan_on(step):
            from .discriminator import g_loss

            for q in self.disc.parameters():
                q.requires_grad_(False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
                a = g_loss(self.disc(pred), lo.gan_loss)
            total = total + lo.adversarial * a
            terms["adv"] = a.detach()
        return total, terms

    def discriminator_step(
        self, pred: torch.Tensor, hr: torch.Tensor, step: int
    ) -> dict[str, torch.Tensor]:
        """One AdamW update of the discriminator on ``hr`` (real) and ``pred`` (fake)."""
        if not self.gan_on(step):
            return {}
        for q in self.disc.parameters():
            q.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
            real = self.disc(hr)
            fake = self.disc(pred.detach())
        loss = d_loss(real, fake, self.cfg.losses.gan_loss)
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.train.grad_clip
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), clip if clip > 0 else float("inf"))
        self.disc_opt.step()
        return {"d": loss.detach()}


def mean_terms(acc: dict[str, list[float]], columns: list[str]) -> dict[str, float]:
    """Per-column means of accumulated term values (NaN where a term was not computed)."""
    out = {}
    for col in columns:
        vals = acc.get(col[len("loss_") :], [])
        out[col] = float(np.mean(vals)) if vals else float("nan")
    return out
