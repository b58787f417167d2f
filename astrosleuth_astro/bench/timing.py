"""Timed runs: the pipeline (file to file), the bare network, the naive loop, and the
roofline's units (convolution FLOPs of a network, one fp32 matrix product)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from ..archs import cond_channels
from .inputs import NAIVE_PAD, NAIVE_TILE


class _Config:
    """One model/backend/precision combination and its measurements."""

    def __init__(
        self, model: str, backend: str, precision: str, net, input_mp: float, channels: int
    ) -> None:
        self.model, self.backend, self.precision, self.net = model, backend, precision, net
        self.input_mp = input_mp
        self.channels = channels  # of the inputs: 1 when every input is grey
        #: Conditioning channels after the image (a noise-aware network), which the
        #: bare run feeds too.
        self.n_cond = int(getattr(net, "cond_channels", 0) or 0)
        # What the pipeline runs on them (the grey form for grey inputs).
        self.run = net.mono() if channels == 1 else net
        self.pipeline_s: list[float] = []
        self.bare_s: list[float] = []
        self.splits: list[dict[str, float]] = []

    @property
    def key(self) -> str:
        return f"{self.model}/{self.backend}/{self.precision}"


def _naive_net(module):
    """The original loop's network: eager fp32 NCHW torch, default memory format."""
    import torch

    mod = copy.deepcopy(module).float().eval().to(memory_format=torch.contiguous_format)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mod(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    run.cond_channels = cond_channels(mod)  # what mono_net reads
    return run


def _mono(net):
    from ..pipeline import mono_net

    return mono_net(net)


def _time_pipeline(cfg: _Config, src: Path, dst: Path, protect_stars: bool) -> None:
    from ..api import upscale_image
    from ..io import read_image

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    t_read = time.perf_counter()
    image = read_image(src, memmap=True)  # as `upscale` reads it
    timings["read"] = time.perf_counter() - t_read
    upscale_image(
        image,
        dst,
        cfg.net,
        overwrite=True,
        protect_stars=protect_stars,
        memmap_threshold=0,
        timings=timings,
    )
    cfg.pipeline_s.append(time.perf_counter() - t0)
    cfg.splits.append(timings)


def conv_flops_per_pixel(module, size: int = 32) -> float:
    """Convolution FLOPs (2 per multiply-add) of a 3-channel network per input pixel.

    Counted with forward hooks on every ``Conv2d`` during one run on a ``size`` squared
    input; interpolation, activations and additions are not counted (they are memory-bound,
    not arithmetic). The folded and grey forms the backends run do the same or slightly
    less arithmetic, so this is the work of the network as trained, in one unit for all.
    """
    import torch

    total = [0]

    def hook(mod, _inp, out) -> None:
        k = mod.weight.shape  # (Cout, Cin / groups, kh, kw)
        total[0] += 2 * (out.numel() // out.shape[0]) * k[1] * k[2] * k[3]

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3 + cond_channels(module), size, size))
    finally:
        for h in handles:
            h.remove()
    return total[0] / size**2


def _time_gemm(n: int = 2048) -> float:
    """GFLOP/s of one fp32 ``n`` x ``n`` matrix product in torch: the machine's dense
    arithmetic ceiling for these convolutions (oneDNN runs them as GEMM-like kernels)."""
    import torch

    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b  # warm-up
    t0 = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t0) / 1e9


def _time_bare(cfg: _Config, size: int) -> None:
    # Grey inputs run through the backend's grey form in the pipeline: so does the bare run.
    x = np.random.default_rng(0).random(
        (1, cfg.channels + cfg.n_cond, size, size), dtype=np.float32
    )
    t0 = time.perf_counter()
    cfg.run(x)
    cfg.bare_s.append(time.perf_counter() - t0)


def _time_naive(naive, stretched: np.ndarray) -> float:
    from ..engine.tiles import upscale_tiled
    from ..pipeline.condition import conditioned

    net = _mono(naive)
    t0 = time.perf_counter()
    if getattr(naive, "cond_channels", 0):
        # A noise-aware network needs its channels in any loop: the noise model of the
        # stretched input (timed, as the pipeline's is).
        from ..noise import estimate_noise
        from ..stretch import display_stretch

        st = display_stretch(stretched.shape[0], 1.0)
        net = conditioned(net, st, estimate_noise(stretched))
    upscale_tiled(stretched, net, tile=NAIVE_TILE, pad=NAIVE_PAD, batch_size=1)
    return time.perf_counter() - t0
