"""What the Siril script asks before it builds its dialog: a model's architecture, whether
it needs torch, the device to run on, and whether star protection is available."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..pipeline import UpscaleOptions


def _registry_entry(model: Any):
    if not isinstance(model, str):
        return None
    from ..errors import ModelError
    from ..models.registry import get_entry

    try:
        return get_entry(model)
    except ModelError:
        return None


def model_arch(model: Any) -> str | None:
    """Architecture of a registry model (``"fast"``, ``"rrdb"``, ``"next"``), or a guess.

    For a weights file the name decides: ``"next"`` when it contains "next", else None
    (unknown until loaded). Used by the dialog to show NEXT's conditioning sliders.
    """
    arch = getattr(model, "arch", None)
    if isinstance(arch, str) and arch:
        return arch
    entry = _registry_entry(model)
    if entry is not None:
        return entry.arch
    if isinstance(model, (str, Path)) and "next" in Path(str(model)).name.lower():
        return "next"
    return None


def model_needs_torch(model: Any) -> bool:
    """Whether running ``model`` needs PyTorch (no ONNX file available for it)."""
    if callable(model) and hasattr(model, "model_name"):
        return False  # an already built backend
    entry = _registry_entry(model)
    if entry is not None:
        return entry.onnx_path is None and entry.onnx_url is None
    path = Path(str(model))
    if not path.is_file():
        return False  # an unknown name or a missing file: loading it reports that
    return path.suffix.lower() != ".onnx"


def choose_device(
    use_gpu: bool,
    model: Any = "default",
    *,
    torch_helper: Any = None,
    onnx_helper: Any = None,
) -> tuple[str, str, str]:
    """Map the script's CPU/GPU choice onto this package's ``backend`` and ``device``.

    Parameters
    ----------
    use_gpu : bool
        The user asked for the GPU.
    model : str, path or Backend
        The model to run (ONNX needs an ONNX file of it).
    torch_helper, onnx_helper : optional
        ``sirilpy.TorchHelper()`` and ``sirilpy.ONNXHelper()`` instances; their
        ``is_torch_installed()``/``get_torch_device(use_gpu=True)`` and
        ``get_execution_providers_ordered(ai_gpu_acceleration=True)`` decide.

    Returns
    -------
    (backend, device, note)
        ``backend`` in {"auto", "torch", "onnx"}, ``device`` in {"cpu", "cuda", "mps"}, and a
        one-line note for the log.
    """
    if not use_gpu:
        return "auto", "cpu", "running on the CPU"
    if torch_helper is not None and torch_helper.is_torch_installed():
        dev = torch_helper.get_torch_device(use_gpu=True)
        kind = str(getattr(dev, "type", dev) or "cpu").split(":")[0]
        if kind in ("cuda", "mps"):
            return "torch", kind, f"running on the GPU with PyTorch ({kind})"
    if onnx_helper is not None and not model_needs_torch(model):
        providers = list(
            onnx_helper.get_execution_providers_ordered(ai_gpu_acceleration=True) or []
        )
        if "CUDAExecutionProvider" in providers:
            return "onnx", "cuda", "running on the GPU with onnxruntime (CUDA)"
    return (
        "auto",
        "cpu",
        "no GPU usable by PyTorch (CUDA, MPS) or onnxruntime (CUDA); running on the CPU",
    )


def star_protection_available() -> bool:
    """Whether this version has star protection (for the Siril script, which may be newer
    than the installed package)."""
    return "protect_stars" in UpscaleOptions.names()
