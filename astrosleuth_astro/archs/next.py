"""AstroSleuth NEXT: a conditionable RRDBNet with a ConvNeXt-V2 block in every RRDB.

Layout and parameter names follow upstream AstroSleuth ``modules/next.py``:

* the trunk is the RRDB layout of :mod:`.rrdb` (``conv_first``, ``body.<i>.rdb<1..3>``,
  ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``);
* every ``body.<i>`` also holds ``block`` (7x7 depthwise conv ``dwconv``, LayerNorm ``norm``,
  ``pwconv1`` Linear 64->256, GELU, GRN ``grn``, ``pwconv2`` Linear 256->64) and ``l1``
  (Linear 64->64 for the condition);
* the top level holds ``l1`` (Linear 512->64), the condition embedding;
* upsampling is bilinear (``align_corners=False``), x2 twice.

The 512-d condition is ``average + star*stars + detail*detail + spikes*spikes`` built from
fixed vectors (:func:`.next_options.condition_vectors`, registered as non-persistent buffers so
they are not part of the state dict); it is embedded by ``l1`` + LeakyReLU and, inside each
RRDB, projected by ``body.<i>.l1``, added to the features, passed through ``block`` and added
(times ``0.1 * cond_strength``) to the input of each of the three dense blocks.

The vectors are not shipped (``astrosleuth-astro models download AstroSleuthNEXT`` fetches
them). Without them the buffers hold zeros and :attr:`NextSR.cond_vectors_available` is False:
the network runs unconditioned (upstream's default, which never reads the vectors) and
refuses conditioning with :class:`~astrosleuth_astro.errors.ModelError`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError
from .next_options import (
    COND_DIM,
    VECTOR_NAMES,
    NextOptions,
    condition_vectors,
    conditioning_requested,
    next_options,
)
from .rrdb import ResidualDenseBlock
from .rrdb import infer_kwargs as _rrdb_infer_kwargs

ARCH_NAME = "next"


class LayerNorm(nn.Module):
    """LayerNorm over the last axis written with elementary ops.

    Upstream avoids ``F.layer_norm`` so the graph converts to runtimes without a LayerNorm
    operator; the same ops keep our ONNX export portable.

    Parameters
    ----------
    dim : int
        Size of the last axis.
    eps : float
        Added to the variance.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` -> same shape."""
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=False, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight + self.bias


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) on channels-last ``(N, H, W, C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` -> same shape."""
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-V2 block without its residual (NEXT adds the result itself).

    Parameters
    ----------
    dim : int
        Channels in and out; the MLP is ``4 * dim`` wide.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, dim, H, W)`` -> same shape."""
        x = self.dwconv(x).permute(0, 2, 3, 1)  # to channels-last for the Linear layers
        x = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(x)))))
        return x.permute(0, 3, 1, 2)


class ConditionedRRDB(nn.Module):
    """RRDB whose three dense blocks all receive the same condition features.

    Parameters
    ----------
    num_feat, num_grow_ch : int
        As for :class:`.rrdb.RRDB`.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.block = ConvNeXtBlock(num_feat)
        self.l1 = nn.Linear(num_feat, num_feat)
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        strength: torch.Tensor | float,
    ) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, num_feat, H, W)`` features.
        cond : torch.Tensor or None
            ``(num_feat,)`` embedded condition; None skips conditioning (upstream
            ``use_cond=False``: the features are added as exact zeros, so they are left out).
        strength : float or torch.Tensor
            ``cond_strength`` (a ``(1,)`` tensor in the ONNX graph).
        """
        if cond is None:
            out = self.rdb3(self.rdb2(self.rdb1(x)))
        else:
            condition = self.l1(cond).view(-1, self.num_feat, 1, 1)
            features = self.block(x + condition) * 0.1 * strength
            out = self.rdb1(x + features)
            out = self.rdb2(out + features)
            out = self.rdb3(out + features)
        return out * 0.2 + x


def rgb_to_ycbcr(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``(N, 3, H, W)`` RGB into Y, Cb, Cr, each ``(N, H, W)`` (upstream coefficients)."""
    r, g, b = image[:, 0], image[:, 1], image[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) * 0.564 + 0.5
    cr = (r - y) * 0.713 + 0.5
    return y, cb, cr


def ycbcr_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`; returns ``(N, 3, H, W)`` clipped to [0, 1]."""
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    return torch.clamp(torch.stack([r, g, b], dim=1), 0, 1)


def match_chroma(src: torch.Tensor, out: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Keep the luminance of ``out`` and take its chroma from ``src`` upsampled bilinearly.

    Parameters
    ----------
    src : torch.Tensor
        Network input, ``(N, 3, H, W)``.
    out : torch.Tensor
        Network output, ``(N, 3, scale*H, scale*W)``.

    Returns
    -------
    torch.Tensor
        ``(N, 3, scale*H, scale*W)`` in [0, 1].
    """
    _, src_cb, src_cr = rgb_to_ycbcr(src)
    out_y, _, _ = rgb_to_ycbcr(out)
    chroma = torch.stack([src_cb, src_cr], dim=1)
    chroma = F.interpolate(chroma, scale_factor=scale, mode="bilinear", align_corners=False)
    return ycbcr_to_rgb(out_y, chroma[:, 0], chroma[:, 1])


class NextSR(nn.Module):
    """AstroSleuth NEXT network.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Image channels (3).
    num_feat : int
        Trunk features (64 upstream).
    num_block : int
        Number of conditioned RRDB blocks (6 upstream).
    num_grow_ch : int
        Dense growth channels (32 upstream).
    cond_dim : int
        Width of the raw condition vector (512, the width of the conditioning vectors).
    upscale : int
        Output scale; only 4 is supported.

    Attributes
    ----------
    cond_vectors_available : bool
        Whether the conditioning-vector buffers hold the real vectors (False: zeros, and
        conditioning is refused).

    Notes
    -----
    ``forward(x)`` applies the options set with :meth:`set_options` (default: no
    conditioning, no chroma matching, which is upstream's default). :meth:`forward_graph`
    takes the options as tensors and is what the ONNX export traces.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 6,
        num_grow_ch: int = 32,
        cond_dim: int = 512,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        if upscale != 4:
            raise ValueError("NextSR supports upscale=4 only")
        if cond_dim != COND_DIM:
            raise ValueError(f"NextSR needs cond_dim={COND_DIM}")
        self.upscale = upscale
        self.num_feat = num_feat
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.ModuleList(ConditionedRRDB(num_feat, num_grow_ch) for _ in range(num_block))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.l1 = nn.Linear(cond_dim, num_feat)
        # Not in upstream's state dict: keep them out of ours so strict loading works.
        # Zeros until the vectors are found (see load_condition_vectors).
        self.register_buffer("cond_average", torch.zeros(cond_dim), persistent=False)
        self.register_buffer(
            "cond_directions", torch.zeros(len(VECTOR_NAMES) - 1, cond_dim), persistent=False
        )
        self.cond_vectors_available = False
        try:
            self.load_condition_vectors(required=False)
        except ModelError:
            pass  # an unreadable vectors file is reported when conditioning is asked for
        self.options = NextOptions()

    @torch.no_grad()
    def load_condition_vectors(self, required: bool = True) -> bool:
        """Copy the conditioning vectors into the buffers when they are available.

        Called at construction (not required) and again when conditioning is asked for, so
        vectors downloaded after the network was built are picked up. Does nothing once the
        vectors are loaded.

        Parameters
        ----------
        required : bool
            Raise when the vectors are not available.

        Returns
        -------
        bool
            :attr:`cond_vectors_available`.

        Raises
        ------
        ModelError
            ``required`` and no vectors, or an invalid vectors file (see
            :func:`.next_options.condition_vectors`).
        """
        if self.cond_vectors_available:
            return True
        vectors = condition_vectors(required=required)
        if vectors is None:
            return False
        t = torch.from_numpy(vectors.copy())
        self.cond_average.copy_(t[0])
        self.cond_directions.copy_(t[1:])
        self.cond_vectors_available = True
        return True

    def _check_conditioning(self, options: NextOptions) -> None:
        if conditioning_requested(options):
            self.load_condition_vectors(required=True)  # raises when they are not available

    def set_options(self, **options: object) -> NextSR:
        """Update the NEXT options (see :mod:`.next_options`); returns ``self``.

        Raises
        ------
        InputError
            Invalid options.
        ModelError
            Conditioning asked for but the conditioning vectors are not available.
        """
        new = next_options(self.options, **options)
        self._check_conditioning(new)
        self.options = new
        return self

    def embed_condition(self, strengths: torch.Tensor) -> torch.Tensor:
        """Embed the style strengths.

        Parameters
        ----------
        strengths : torch.Tensor
            float32 ``(3,)``: star, detail, spikes.

        Returns
        -------
        torch.Tensor
            ``(num_feat,)`` condition after ``l1`` and LeakyReLU.
        """
        d = self.cond_directions
        # Same summation order as upstream: average + stars*s + detail*d + spikes*p.
        c = self.cond_average + d[0] * strengths[0] + d[1] * strengths[1] + d[2] * strengths[2]
        return self.lrelu(self.l1(c))

    def _trunk(
        self, x: torch.Tensor, cond: torch.Tensor | None, strength: torch.Tensor | float
    ) -> torch.Tensor:
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body, cond, strength)
        feat = feat + self.conv_body(body)
        up = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
        feat = self.lrelu(self.conv_up1(up))
        up = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
        feat = self.lrelu(self.conv_up2(up))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``(N, 3, H, W)`` to ``(N, 3, 4H, 4W)`` with the current options."""
        opts = self.options
        self._check_conditioning(opts)
        cond = None
        if opts.cond_strength != 0.0:
            strengths = torch.tensor(opts.strengths, dtype=x.dtype, device=x.device)
            cond = self.embed_condition(strengths)
        out = self._trunk(x, cond, opts.cond_strength)
        if opts.color_matching:
            out = match_chroma(x, out, self.upscale)
        return out

    def forward_graph(
        self,
        x: torch.Tensor,
        strengths: torch.Tensor,
        cond_strength: torch.Tensor,
        color_match: torch.Tensor,
    ) -> torch.Tensor:
        """Branch-free forward with the options as tensors (traced by the ONNX export).

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 3, H, W)`` input.
        strengths : torch.Tensor
            float32 ``(3,)``: star, detail, spikes.
        cond_strength : torch.Tensor
            float32 ``(1,)``; 0 gives exactly the unconditioned result (features times 0),
            also when the vector buffers hold zeros (vectors not available).
        color_match : torch.Tensor
            float32 ``(1,)``; > 0.5 selects the chroma-matched output.

        Notes
        -----
        No check that the vectors are available: the caller (the ONNX export, the runtime
        via the file's metadata) does that.
        """
        out = self._trunk(x, self.embed_condition(strengths), cond_strength)
        return torch.where(color_match > 0.5, match_chroma(x, out, self.upscale), out)


def matches(state_dict: dict) -> bool:
    """Return True when ``state_dict`` has the NEXT layout."""
    return (
        "conv_first.weight" in state_dict
        and "l1.weight" in state_dict
        and "body.0.block.dwconv.weight" in state_dict
        and "body.0.l1.weight" in state_dict
    )


def infer_kwargs(state_dict: dict) -> dict:
    """Read the :class:`NextSR` constructor arguments from a state dict."""
    kwargs = _rrdb_infer_kwargs(state_dict)
    kwargs["cond_dim"] = int(state_dict["l1.weight"].shape[1])
    return kwargs
