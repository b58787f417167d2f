"""A perceptual loss from a small VGG-style feature net trained on the training data.

Nothing is downloaded: the feature net (three stages of two 3x3 convolutions + ReLU,
``widths`` channels, 2x average pooling between stages) learns a self-supervised
**restoration** task on the pairs of the training bank: from the bicubic upsampling of an
LR input it predicts the residual to the HR target (a 1x1 head per stage, upsampled to
full resolution and summed; L1 loss). To do that its features must encode what upscaling
has to restore: star profiles and their cores, noise left in the sky, fine nebula
structure, at three scales. (Telling HR targets from bicubic upsamplings with a patch
classifier was tried first: in a small test its loss stayed at log 2 for 150 steps.) After ``perceptual_pretrain_steps`` steps the net is frozen,
and the loss is the mean L1 distance between its features of the output and of the
target at the chosen stages.

Pretraining is deterministic: the net is initialised from ``[train] seed`` inside
:func:`torch.random.fork_rng` (the global RNG is left untouched), and step ``k`` uses
crops of the step-0 bank drawn with ``default_rng([seed, 4, k])``. The frozen weights are
stored in training checkpoints; :func:`save_feature_net` / :func:`load_feature_net` keep
one as ``.safetensors`` for reuse (``[losses] perceptual_net``), and
``python -m astrosleuth_astro.train.perceptual CONFIG OUT.safetensors`` pretrains one
standalone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import Config, load_config
from .data import PairBank, load_sources

#: Stream id of the pretraining crops in ``default_rng([seed, STREAM, k])``.
STREAM = 4


class FeatureNet(nn.Module):
    """Three VGG-style stages and a residual-restoration head.

    Parameters
    ----------
    widths : sequence of 3 int
        Channels of the stages (full, 1/2 and 1/4 resolution).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        self.widths = [int(c) for c in widths]
        stages, c_in = [], 3
        for i, c in enumerate(self.widths):
            layers: list[nn.Module] = [nn.AvgPool2d(2)] if i else []
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(nn.Conv2d(c, 3, 1) for c in self.widths)
        for head in self.heads:  # start as the identity: the bicubic input itself
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def features(self, x: torch.Tensor, upto: int = 3) -> list[torch.Tensor]:
        """Feature maps of stages ``1..upto`` for stretched images ``x`` in [0, 1]."""
        h = x * 2.0 - 1.0
        out = []
        for stage in self.stages[:upto]:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The restored image: ``x`` plus the residual predicted from the three stages
        (``H`` and ``W`` multiples of 4)."""
        out = x
        for i, (f, head) in enumerate(zip(self.features(x), self.heads, strict=True)):
            r = head(f)
            if i:
                r = F.interpolate(r, scale_factor=2**i, mode="bilinear", align_corners=False)
            out = out + r
        return out


def new_feature_net(cfg: Config) -> FeatureNet:
    """A fresh feature net of ``[losses] perceptual_widths`` seeded from ``[train] seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + 1_000_003)
        return FeatureNet(cfg.losses.perceptual_widths)


def pretrain_feature_net(
    cfg: Config,
    bank,
    net: FeatureNet | None = None,
    steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[FeatureNet, list[float]]:
    """Train the feature net on the restoration task; return it frozen (eval mode).

    Parameters
    ----------
    cfg : Config
    bank : PairBank
        The training bank; it is sought to step 0 and its items are cropped.
    net : FeatureNet, optional
        Start from this net (default: :func:`new_feature_net`).
    steps : int, optional
        Default ``[losses] perceptual_pretrain_steps``.
    log : callable, optional

    Returns
    -------
    net : FeatureNet
    history : list of float
        The restoration loss (L1, stretched units) of every step.
    """
    net = net or new_feature_net(cfg)
    steps = cfg.losses.perceptual_pretrain_steps if steps is None else steps
    opt = torch.optim.Adam(net.parameters(), lr=cfg.losses.perceptual_lr)
    amp = cfg.train.amp == "bf16"
    bank.seek(0)
    history: list[float] = []
    net.train()
    for k in range(steps):
        b = bank.sample(np.random.default_rng([cfg.train.seed, STREAM, k]), cfg.train.batch_size)
        hr = torch.from_numpy(b.hr)
        up = F.interpolate(
            torch.from_numpy(b.lr), scale_factor=cfg.data.scale, mode="bicubic", align_corners=False
        ).clamp(0.0, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            restored = net(up).float()
        loss = F.l1_loss(restored, hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if log and ((k + 1) % 50 == 0 or k + 1 == steps):
            log(f"perceptual net pretraining {k + 1}/{steps}: loss {np.mean(history[-50:]):.4f}")
    return freeze(net), history


def freeze(net: FeatureNet) -> FeatureNet:
    """Eval mode, no gradients for the parameters (gradients still flow to the input)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class PerceptualLoss:
    """Mean over ``layers`` of the L1 distance between feature maps of output and target.

    Parameters
    ----------
    net : FeatureNet
        A frozen feature net.
    layers : sequence of int
        Stages (1-based) compared.
    """

    def __init__(self, net: FeatureNet, layers: Sequence[int] = (1, 2, 3)) -> None:
        self.net = freeze(net)
        self.layers = sorted({int(i) for i in layers})

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss (feature units); gradients flow to ``pred`` only."""
        upto = max(self.layers)
        fp = self.net.features(pred, upto)
        with torch.no_grad():
            ft = self.net.features(target, upto)
        terms = [F.l1_loss(fp[i - 1].float(), ft[i - 1].float()) for i in self.layers]
        return torch.stack(terms).mean()


def save_feature_net(net: FeatureNet, path: str | os.PathLike) -> Path:
    """Write the net as ``.safetensors`` (its widths in the metadata)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(
        state, str(p), metadata={"kind": "astrosleuth-perceptual", "widths": json.dumps(net.widths)}
    )
    return p


def load_feature_net(path: str | os.PathLike) -> FeatureNet:
    """A frozen :class:`FeatureNet` saved by :func:`save_feature_net`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("kind") != "astrosleuth-perceptual":
        raise ValueError(
            f"{path}: not a perceptual feature net (metadata kind {meta.get('kind')!r})"
        )
    net = FeatureNet(json.loads(meta["widths"]))
    net.load_state_dict(load_file(str(path)))
    return freeze(net)


def pretrain_standalone(
    cfg: Config,
    out: str | os.PathLike,
    steps: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the training bank of ``cfg``, pretrain a feature net and save it to ``out``."""
    train_src, _ = load_sources(cfg)
    net, hist = pretrain_feature_net(cfg, PairBank(cfg, train_src), steps=steps, log=log)
    path = save_feature_net(net, out)
    log(f"saved {path} (final loss {np.mean(hist[-20:]) if hist else float('nan'):.4f})")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m astrosleuth_astro.train.perceptual CONFIG OUT [--steps N]``."""
    ap = argparse.ArgumentParser(
        prog="python -m astrosleuth_astro.train.perceptual",
        description="Pretrain the perceptual feature net on a training config's data.",
    )
    ap.add_argument("config")
    ap.add_argument("out", help="output .safetensors")
    ap.add_argument("--steps", type=int, help="override [losses] perceptual_pretrain_steps")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    pretrain_standalone(cfg, args.out, args.steps)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
