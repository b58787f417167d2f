"""AstroSleuth V1 / V2: Real-ESRGAN-style RRDBNet for 4x super-resolution.

Parameter names follow upstream AstroSleuth ``modules/realesr.py`` (the Real-ESRGAN layout):
``conv_first``, ``body.<i>.rdb<1..3>.conv<1..5>``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``. The released V1/V2 files use 6 RRDB blocks, 64 features and
32 growth channels; upsampling is nearest-neighbour x2 twice.

Only the x4 variant is supported (Real-ESRGAN's x2/x1 variants pixel-unshuffle the input;
their ``conv_first`` has 12 or 48 input channels and is rejected by :func:`infer_kwargs`).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError

ARCH_NAME = "rrdb"


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs with a 0.2-scaled residual.

    Parameters
    ----------
    num_feat : int
        Channels in and out.
    num_grow_ch : int
        Channels added by each of ``conv1`` .. ``conv4``.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_feat, H, W)`` -> same shape."""
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` in a chain."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_feat, H, W)`` -> same shape."""
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """AstroSleuth V1/V2 network.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Image channels (3).
    num_feat : int
        Trunk features (64 upstream).
    num_block : int
        Number of RRDB blocks (6 upstream).
    num_grow_ch : int
        Dense growth channels (32 upstream).
    upscale : int
        Output scale; only 4 is supported.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 6,
        num_grow_ch: int = 32,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        if upscale != 4:
            raise ValueError("RRDBNet supports upscale=4 only")
        self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``(N, C, H, W)`` to ``(N, C, 4H, 4W)`` (values nominally in [0, 1])."""
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


_REQUIRED = (
    "conv_first.weight",
    "body.0.rdb1.conv1.weight",
    "conv_body.weight",
    "conv_up1.weight",
    "conv_up2.weight",
    "conv_hr.weight",
    "conv_last.weight",
)
_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")


def matches(state_dict: dict) -> bool:
    """Return True when ``state_dict`` has the plain RRDB (V1/V2) layout.

    NEXT shares every RRDB key, so a dict with NEXT's condition layers does not match.
    """
    return (
        all(k in state_dict for k in _REQUIRED)
        and "l1.weight" not in state_dict
        and "body.0.block.dwconv.weight" not in state_dict
    )


def infer_kwargs(state_dict: dict) -> dict:
    """Read the :class:`RRDBNet` constructor arguments from a state dict.

    Raises
    ------
    ModelError
        For Real-ESRGAN x2/x1 variants (pixel-unshuffled input), which are not supported.
    """
    first = state_dict["conv_first.weight"]
    last = state_dict["conv_last.weight"]
    num_in, num_out = int(first.shape[1]), int(last.shape[0])
    if num_in != num_out:
        raise ModelError(
            f"RRDB model with {num_in} input channels for {num_out} output channels looks like a "
            "Real-ESRGAN x2/x1 model; only x4 models are supported"
        )
    blocks = [int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k))]
    return {
        "num_in_ch": num_in,
        "num_out_ch": num_out,
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(state_dict["body.0.rdb1.conv1.weight"].shape[0]),
    }
