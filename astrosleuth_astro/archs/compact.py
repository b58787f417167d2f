"""AstroSleuth FAST: a compact VGG-style 4x super-resolution network.

The layout (and so the state-dict names) follows upstream AstroSleuth's ``SRVGGModified``:
``body`` is a flat ``ModuleList`` of conv/PReLU pairs (``body.0`` is the first conv,
``body.1`` its PReLU, ...), followed by ``conv_up1`` and ``conv_up2``. Upsampling is
bilinear with ``align_corners=False``, and a bilinear x4 copy of the input is added.

Width- and depth-reduced variants (``num_feat``, ``num_conv``) share the same naming, so
the trainer can make small models that load through the same detection rule.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

ARCH_NAME = "fast"


class CompactSR(nn.Module):
    """FAST / SRVGG-style network.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Input and output channels (3 for AstroSleuth).
    num_feat : int
        Features of the body convs (64 upstream).
    num_conv : int
        Body conv/PReLU pairs after the first one (32 upstream).
    num_up_feat : int, optional
        Features after the first upsampling (32 upstream; ``num_feat // 2`` by default).
    upscale : int
        Output scale; only 4 is supported (two bilinear x2 stages).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 32,
        num_up_feat: int | None = None,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        if upscale != 4:
            raise ValueError("CompactSR supports upscale=4 only")
        self.upscale = upscale
        num_up_feat = num_up_feat or num_feat // 2
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        self.body = nn.ModuleList(layers)
        self.conv_up1 = nn.Conv2d(num_feat, num_up_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_up_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        up = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        out = self.lrelu(self.conv_up1(up))
        up = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        out = self.conv_up2(up)
        base = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return out + base


_BODY_CONV = re.compile(r"^body\.(\d+)\.weight$")


def matches(state_dict: dict) -> bool:
    """Return True when ``state_dict`` has the FAST layout."""
    return (
        "body.0.weight" in state_dict
        and "body.1.weight" in state_dict
        and "conv_up1.weight" in state_dict
        and "conv_up2.weight" in state_dict
        and "conv_first.weight" not in state_dict
    )


def infer_kwargs(state_dict: dict) -> dict:
    """Read the constructor arguments back from a FAST state dict."""
    first = state_dict["body.0.weight"]
    conv_ids = sorted(
        int(m.group(1))
        for k in state_dict
        if (m := _BODY_CONV.match(k)) and state_dict[k].ndim == 4
    )
    up1 = state_dict["conv_up1.weight"]
    up2 = state_dict["conv_up2.weight"]
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(up2.shape[0]),
        "num_feat": int(first.shape[0]),
        "num_conv": len(conv_ids) - 1,
        "num_up_feat": int(up1.shape[0]),
    }
