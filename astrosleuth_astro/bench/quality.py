"""bf16 against fp32: the PSNR of both outputs against the noise-free truth of simulated
fields (:func:`astrosleuth_astro.metrics.psnr`)."""

from __future__ import annotations

import copy

import numpy as np

from ..metrics import psnr
from .inputs import PSNR_SEEDS


def bf16_psnr(module, size: int, protect_stars: bool) -> dict[str, float]:
    """PSNR against the truth of fp32 and bf16 outputs of the same simulated field."""
    from ..engine.backends import TorchBackend
    from ..pipeline import upscale_array
    from ..sim import simulate

    nets = {p: TorchBackend(copy.deepcopy(module), "cpu", p) for p in ("fp32", "bf16")}
    fields = []
    for seed in PSNR_SEEDS:
        sim = simulate((size, size), scale=4, channels=1, wcs=False, seed=seed)
        truth = sim.hr[0]
        peak = float(truth.max() - truth.min())
        outs = {}
        for prec, net in nets.items():
            plan = net.tiling
            outs[prec] = upscale_array(
                sim.lr,
                net,
                tile=plan.tile,
                pad=plan.pad,
                batch_size=plan.batch_size,
                protect_stars=protect_stars,
            ).data[0]
        p32, p16 = psnr(outs["fp32"], truth, peak), psnr(outs["bf16"], truth, peak)
        fields.append((p32, p16, psnr(outs["bf16"], outs["fp32"], peak)))
    p32 = float(np.mean([f[0] for f in fields]))
    p16 = float(np.mean([f[1] for f in fields]))
    return {
        "psnr_fp32_db": round(p32, 4),
        "psnr_bf16_db": round(p16, 4),
        "delta_db": round(p16 - p32, 4),
        "max_abs_field_delta_db": round(max(abs(f[1] - f[0]) for f in fields), 4),
        "psnr_bf16_vs_fp32_db": round(min(f[2] for f in fields), 2),
        "field_lr_px": size,
        "fields": len(fields),
    }
