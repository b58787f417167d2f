"""Export trained weights: ``.safetensors`` (state dict) and ``.onnx`` (dynamic N/H/W)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export_safetensors(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Save the model's state dict (float32, contiguous) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float32).contiguous().cpu() for k, v in model.state_dict().items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)
    return path


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export to ONNX with input ``"input"`` / output ``"output"`` and dynamic N, H, W.

    Uses :func:`astrosleuth_astro.models.export.export_onnx` when the package has it (one
    exporter for the whole project), else ``torch.onnx.export`` here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    try:
        from ..models.export import export_onnx as core_export  # type: ignore[attr-defined]
    except ImportError:
        core_export = None
    if core_export is not None:
        core_export(model, path, opset=opset)
        return path
    x = torch.rand(1, 3, 32, 32)
    tmp = path.with_name(path.name + ".tmp.onnx")
    with torch.no_grad():
        # The TorchScript exporter gives one self-contained file with plain dynamic axes.
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "output": {0: "batch", 2: "height4", 3: "width4"},
            },
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    shapes=((1, 3, 24, 40), (2, 3, 37, 29)),
    seed: int = 0,
) -> float:
    """Largest |torch - onnxruntime| over random inputs of several shapes (dynamic H/W)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    model = model.eval().float()
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        (y_ort,) = sess.run(["output"], {"input": x})
        with torch.no_grad():
            y_t = model(torch.from_numpy(x)).numpy()
        if y_ort.shape != y_t.shape:
            raise RuntimeError(f"{path}: onnx output shape {y_ort.shape} != torch {y_t.shape}")
        worst = max(worst, float(np.abs(y_ort - y_t).max()))
    return worst
