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
        Input and output channels (3 for AstroSleuth). A noise-aware network takes
        conditioning channels after the image ones (``num_in_ch = num_out_ch + 2``:
        :mod:`astrosleuth_astro.noise`); its bilinear copy is of the image channels.
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
        self.num_out_ch = num_out_ch
        num_up_feat = num_up_feat or num_feat // 2
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        self.body = nn.ModuleList(layers)
        self.conv_up1 = nn.Conv2d(num_feat, num_up_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_up_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.features(x)) + self.base(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: LR features of ``x``."""
        out = x
        for layer in self.body:
            out = layer(out)
        return out

    def upsample(self, feat: torch.Tensor) -> torch.Tensor:
        """The two bilinear x2 stages with their convs: the predicted 4x detail."""
        up = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
        out = self.lrelu(self.conv_up1(up))
        up = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv_up2(up)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """The bilinear 4x copy of the input's image channels that the detail is added to."""
        if x.shape[1] > self.num_out_ch:  # conditioning channels follow the image
            x = x[:, : self.num_out_ch]
        return F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)


def _fold_bilinear_conv(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """LR weights of "bilinear x ``factor``, then the 3x3 conv ``weight``".

    Away from the borders, ``conv2d(interpolate(x, factor), weight, padding=1)`` equals
    ``pixel_shuffle(conv2d(x, folded, padding=1), factor)``: every output phase is a fixed
    linear map of a 3x3 LR neighbourhood (for ``align_corners=False`` bilinear and a 3x3
    kernel). The map is read off by running the original operations on unit impulses in
    float64, so it is exact up to float rounding.

    Parameters
    ----------
    weight : Tensor, shape (Cout, Cin, 3, 3)
        Conv weights at the upsampled resolution.
    factor : int
        Upsampling factor (2 here).

    Returns
    -------
    Tensor, shape (Cout * factor**2, Cin, 3, 3)
        Channel ``o * factor**2 + ry * factor + rx`` gives output channel ``o`` at
        sub-pixel phase ``(ry, rx)``, the order :func:`torch.nn.functional.pixel_shuffle`
        expects.
    """
    cout, cin = weight.shape[:2]
    n = 7  # impulse in the middle of a 7x7 LR field: far from the borders
    c = n // 2
    impulses = torch.zeros(cin, cin, n, n, dtype=torch.float64)
    impulses[torch.arange(cin), torch.arange(cin), c, c] = 1.0
    up = F.interpolate(impulses, scale_factor=factor, mode="bilinear", align_corners=False)
    resp = F.conv2d(up, weight.detach().to(torch.float64), padding=1)  # (Cin, Cout, nf, nf)
    resp = resp.permute(1, 0, 2, 3)
    f = factor
    folded = torch.zeros(cout * f * f, cin, 3, 3, dtype=torch.float64)
    covered = torch.zeros_like(resp, dtype=torch.bool)
    for ry in range(f):
        for rx in range(f):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    # Output phase (ry, rx) of LR pixel i reads the impulse at i + d, so
                    # its response sits at LR pixel c - d.
                    yy, xx = f * (c - dy) + ry, f * (c - dx) + rx
                    folded[ry * f + rx :: f * f, :, dy + 1, dx + 1] = resp[:, :, yy, xx]
                    covered[:, :, yy, xx] = True
    if resp[~covered].abs().max() > 0:  # pragma: no cover - a 3x3 conv never reaches further
        raise ValueError("bilinear + conv reaches beyond a 3x3 LR neighbourhood")
    return folded.to(weight.dtype)


class FoldedCompactSR(nn.Module):
    """Inference form of :class:`CompactSR` with the bilinear upsamplings folded away.

    Each "bilinear x2, then 3x3 conv" stage becomes one 3x3 conv at the lower resolution
    with 4x the output channels, followed by a pixel shuffle (:func:`_fold_bilinear_conv`):
    the same multiply-adds, without the two interpolated feature maps (measured: the two
    bilinear x2 of the default model took about 35 % of its CPU time). The body and the
    bilinear copy of the input are shared with the source network.

    It equals the source network (to float32 rounding) wherever the borders are not
    reached: the two differ only in the outermost 6 output pixels (1.5 LR pixels) of each
    side, where the source clamps its interpolation and zero-pads at the high resolution
    while the folded convs zero-pad at the low one. That ring lies inside the context that
    the tile engine crops (:mod:`astrosleuth_astro.engine.tiles` pads every tile by at least
    the receptive field).
    """

    def __init__(self, src: CompactSR) -> None:
        super().__init__()
        self.upscale = src.upscale
        self.num_out_ch = src.num_out_ch
        self.body = src.body
        self.lrelu = src.lrelu
        w1, w2 = src.conv_up1.weight, src.conv_up2.weight
        self.conv_up1 = nn.Conv2d(w1.shape[1], 4 * w1.shape[0], 3, 1, 1)
        self.conv_up2 = nn.Conv2d(w2.shape[1], 4 * w2.shape[0], 3, 1, 1)
        with torch.no_grad():
            self.conv_up1.weight.copy_(_fold_bilinear_conv(w1, 2))
            self.conv_up1.bias.copy_(src.conv_up1.bias.repeat_interleave(4))
            self.conv_up2.weight.copy_(_fold_bilinear_conv(w2, 2))
            self.conv_up2.bias.copy_(src.conv_up2.bias.repeat_interleave(4))
        self.to(device=w1.device)

    features = CompactSR.features
    forward = CompactSR.forward

    # The last pixel shuffle and the bilinear copy of the input run on contiguous (NCHW)
    # tensors: on a CPU, pixel_shuffle of a channels-last map is slow. Measured on one
    # 290^2 tile of the default model (fp32, 2 threads, median of 12 interleaved runs):
    # 177 ms against 197 ms with both in channels-last. Same arithmetic either way.
    def base(self, x: torch.Tensor) -> torch.Tensor:
        return CompactSR.base(self, x.contiguous())

    def upsample(self, feat: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(F.pixel_shuffle(self.conv_up1(feat), 2))
        return F.pixel_shuffle(self.conv_up2(out).contiguous(), 2)


class MonoCompactSR(nn.Module):
    """One-channel form of a FAST network (plain or folded) for grey images.

    A grey image runs through a 3-channel network as three equal channels, and the mean
    of the three outputs is kept. Both steps are linear where they touch the network: the
    first conv sees three equal inputs, so its weights can be summed over input channels,
    and the mean of the outputs is the mean of the last conv's output channels (the
    bilinear copy of three equal channels is the copy of one). This module does exactly
    that, to float rounding: the same result without the repeated input, two thirds of the
    last conv, and the three-channel output and its mean (measured on one 284^2 tile of
    the default model, fp32, 2 threads: 166 ms against 204 ms, best of 10). The body and
    ``conv_up1`` are shared with the source network.

    Parameters
    ----------
    src : CompactSR or FoldedCompactSR
        Its image channels (3 for AstroSleuth) are summed into one; conditioning channels
        after them are kept as they are.
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        first, last = src.body[0], src.conv_up2
        n_ch = src.num_out_ch
        n_cond = first.in_channels - n_ch
        if last.out_channels % n_ch or n_cond < 0:
            raise ValueError("MonoCompactSR needs the image channels first, as many as output")
        phases = last.out_channels // n_ch  # 4 sub-pixel phases when folded, else 1
        self.upscale = src.upscale
        self.num_out_ch = 1
        self._upsample, self._base = type(src).upsample, type(src).base
        conv0 = nn.Conv2d(1 + n_cond, first.out_channels, 3, 1, 1)
        conv2 = nn.Conv2d(last.in_channels, phases, 3, 1, 1)
        with torch.no_grad():
            w = first.weight.detach().double()
            w0 = torch.cat([w[:, :n_ch].sum(dim=1, keepdim=True), w[:, n_ch:]], dim=1)
            conv0.weight.copy_(w0.to(first.weight.dtype))
            conv0.bias.copy_(first.bias)
            # Output channel o * phases + k holds phase k of image channel o.
            w2 = last.weight.detach().double().view(n_ch, phases, *last.weight.shape[1:])
            conv2.weight.copy_(w2.mean(dim=0).to(last.weight.dtype))
            conv2.bias.copy_(last.bias.detach().double().view(n_ch, phases).mean(dim=0))
        self.body = nn.ModuleList([conv0, *list(src.body)[1:]])
        self.conv_up1 = src.conv_up1
        self.conv_up2 = conv2
        self.lrelu = src.lrelu
        self.to(device=first.weight.device)

    features = CompactSR.features
    forward = CompactSR.forward

    def upsample(self, feat: torch.Tensor) -> torch.Tensor:
        return self._upsample(self, feat)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        return self._base(self, x)


def mono_variant(model: nn.Module) -> nn.Module | None:
    """The :class:`MonoCompactSR` form of a FAST network (plain or folded), else None."""
    if isinstance(model, (CompactSR, FoldedCompactSR)):
        if model.body[0].in_channels < model.num_out_ch:  # a 1-in, 3-out net: nothing to sum
            return None
        return MonoCompactSR(model)
    return None


#: Output pixels at each image border where :class:`FoldedCompactSR` may differ from the
#: plain network (1.5 LR pixels at 4x; inside every tile's cropped context).
FOLD_RING = 6


def fold_upsampling(model: nn.Module) -> nn.Module:
    """The :class:`FoldedCompactSR` form of a :class:`CompactSR`; other modules unchanged."""
    return FoldedCompactSR(model) if isinstance(model, CompactSR) else model


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
