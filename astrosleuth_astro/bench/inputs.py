"""What the bench runs on: its sizes and seeds, synthetic FITS fields, the models (registry
name, weights file or the random-weight upstream-size FAST) and their ONNX twins."""

from __future__ import annotations

import copy
import math
import statistics
import sys
from pathlib import Path

#: Side in LR pixels of the one tensor the bare network is timed on.
BARE_SIZE = 1024
#: Pseudo model name: the upstream-size FAST (64 features, 32 body convs), random weights.
UPSTREAM_FAST = "fast-upstream"
#: The original tool's loop: tile core and context, LR pixels.
NAIVE_TILE, NAIVE_PAD = 256, 16
#: Side in LR pixels of the simulated fields used for the bf16-vs-fp32 PSNR, and their seeds
#: (the mean over fields is reported: one field's PSNR against the truth can move by
#: tenths of a dB for a tiny change when it is very high).
PSNR_SIZE = 192
PSNR_SEEDS = (0, 1, 2, 3)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def megapixels(shape: tuple[int, ...]) -> float:
    """Input megapixels of an image shape ``(..., H, W)``."""
    return shape[-2] * shape[-1] / 1e6


def side_length(mp: float) -> tuple[int, int]:
    """``(H, W)`` of a square-ish image of ``mp`` megapixels (multiples of 8)."""
    side = max(16, int(round(math.sqrt(mp * 1e6) / 8)) * 8)
    return side, side


def synthetic_fits(path: Path, mp: float, seed: int = 0) -> Path:
    """Write a mono simulated star field of about ``mp`` megapixels to ``path``."""
    from ..io.fits_write import write_fits
    from ..sim import simulate

    sim = simulate(side_length(mp), scale=1, channels=1, wcs=False, seed=seed)
    write_fits(path, sim.lr[0], sim.header_lr, overwrite=True)
    return path


def _load_module(model: str):
    """A torch module for ``model`` (registry name, weights file or :data:`UPSTREAM_FAST`)."""
    import torch

    if model == UPSTREAM_FAST:
        from ..archs.compact import CompactSR

        torch.manual_seed(0)
        net = CompactSR(num_feat=64, num_conv=32).eval()
        return net  # random weights: timings only (no PSNR is reported for it)
    from ..models import load

    return load(model)


def _onnx_for(model: str, module, workdir: Path) -> Path | None:
    """An ONNX file with the same weights: the registry's, else a fresh export."""
    from ..errors import ModelError
    from ..models.registry import get_entry

    try:
        entry = get_entry(model)
        if entry.onnx_path is not None and entry.onnx_path.is_file():
            return entry.onnx_path
    except ModelError:
        pass
    try:
        from ..models.export import export_onnx

        return export_onnx(copy.deepcopy(module), workdir / f"{Path(model).stem}.onnx")
    except Exception as exc:  # noqa: BLE001 - the onnx rows are then left out, and said so
        print(f"bench: no ONNX export of {model}: {exc}", file=sys.stderr)
        return None


def module_or_name(model: str):
    return _load_module(model) if model == UPSTREAM_FAST else model


def read_shape(path: Path) -> tuple[int, ...]:
    from ..io import read_image

    return tuple(read_image(path).data.shape)


def _named(info, model: str):
    from dataclasses import replace

    return replace(info, name=model)
