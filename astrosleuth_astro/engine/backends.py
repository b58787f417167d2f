"""Inference backends: one small interface over torch and onnxruntime.

A :class:`Backend` is called with a float32 numpy batch ``(N, 3, h, w)`` in [0, 1] and returns
``(N, 3, 4h, 4w)`` float32. :func:`make_backend` picks torch or onnxruntime for a model name or
file. torch is never imported at module import time, so the ONNX path works without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ModelError
from ..models.loader import ModelInfo, OnnxModel, check_batch, load
from ..models.registry import DEFAULT_MODEL, ModelEntry, get_entry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BACKENDS", "DEVICES", "Backend", "OnnxBackend", "TorchBackend", "make_backend"]

#: Accepted ``backend`` values.
BACKENDS = ("auto", "torch", "onnx")
#: Accepted ``device`` values (``cuda:<index>`` is accepted too).
DEVICES = ("cpu", "cuda", "mps")


class Backend:
    """Common interface of the inference backends.

    Attributes
    ----------
    name : str
        ``"torch"`` or ``"onnx"``.
    device : str
        ``"cpu"``, ``"cuda"`` (or ``"cuda:<i>"``) or ``"mps"``.
    model_name, arch, sha256 : str
        Provenance of the loaded model (registry name or file stem, architecture, file hash).
    scale : int
        Upscaling factor (4).
    tile, tile_pad : int
        Recommended tile size and overlap in input pixels.
    options : dict
        NEXT options in effect (empty for other architectures).
    provenance : ModelInfo
        All of the above in one record.
    """

    name: str = ""
    device: str = "cpu"
    provenance: ModelInfo

    @property
    def model_name(self) -> str:
        return self.provenance.name

    @property
    def arch(self) -> str:
        return self.provenance.arch

    @property
    def sha256(self) -> str:
        return self.provenance.sha256

    @property
    def scale(self) -> int:
        return self.provenance.scale

    @property
    def tile(self) -> int:
        return self.provenance.tile

    @property
    def tile_pad(self) -> int:
        return self.provenance.tile_pad

    @property
    def options(self) -> dict:
        return dict(self.provenance.options)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Upscale ``(N, 3, h, w)`` float32 in [0, 1] to ``(N, 3, 4h, 4w)`` float32."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_name!r}, arch={self.arch!r}, "
            f"device={self.device!r}, sha256={self.sha256[:12]!r})"
        )


def _torch_module_info(model: nn.Module) -> ModelInfo:
    """Provenance for a module that did not come from :func:`load`."""
    from ..models.export import _arch_of
    from ..models.registry import DEFAULT_TILE

    info = getattr(model, "provenance", None)
    if isinstance(info, ModelInfo):
        return info
    arch = _arch_of(model)
    opts = model.options.as_dict() if hasattr(model, "options") else {}
    return ModelInfo(
        name=type(model).__name__,
        arch=arch,
        sha256="",
        path=Path(""),
        format="pytorch",
        tile=DEFAULT_TILE.get(arch, 256),
        options=opts,
    )


class TorchBackend(Backend):
    """Run a torch network under ``torch.inference_mode`` in channels-last memory format.

    Parameters
    ----------
    model : torch.nn.Module
        Network from :func:`astrosleuth_astro.models.load` (or any module mapping
        ``(N, 3, h, w)`` to ``(N, 3, 4h, 4w)``).
    device : str
        ``"cpu"``, ``"cuda"``/``"cuda:<i>"`` or ``"mps"``.

    Raises
    ------
    InputError
        Device not available.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        import torch

        _check_torch_device(device)
        self.device = device
        self._device = torch.device(device)
        self.provenance = _torch_module_info(model)
        self.model = model.eval().to(self._device).to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = check_batch(batch)
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device).contiguous(memory_format=torch.channels_last)
            y = self.model(t).float().cpu().numpy()
        return np.ascontiguousarray(y)


class OnnxBackend(Backend):
    """Run an ONNX model with onnxruntime (graph optimisations on).

    Parameters
    ----------
    model : OnnxModel
        From :func:`astrosleuth_astro.models.load` (or :class:`OnnxModel` directly).
    """

    name = "onnx"

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.device = model.device
        self.provenance = model.provenance

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.model(batch)


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check_device_name(device: str) -> None:
    if not isinstance(device, str) or not (
        device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise InputError(f"device {device!r}: unknown; expected one of {', '.join(DEVICES)}")


def _check_torch_device(device: str) -> None:
    import torch

    _check_device_name(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device}: CUDA is not available to torch on this machine")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise InputError(f"device {device}: no such CUDA device")
    elif device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device mps: Apple MPS is not available to torch on this machine")


def _entry_or_none(model: str | os.PathLike) -> ModelEntry | None:
    if isinstance(model, os.PathLike):
        return None
    try:
        return get_entry(str(model))
    except ModelError:
        return None


def _choose(model: str | os.PathLike, backend: str) -> tuple[str, bool]:
    """Pick ``(backend_name, load_onnx_file_of_registry_entry)``."""
    entry = _entry_or_none(model)
    if entry is None:
        is_onnx = Path(model).suffix.lower() == ".onnx"
        if backend == "auto":
            return ("onnx" if is_onnx or not _torch_importable() else "torch"), False
        if backend == "torch" and is_onnx:
            raise InputError(f"{model}: an .onnx file needs backend 'onnx' (or 'auto')")
        if backend == "onnx" and not is_onnx:
            raise InputError(
                f"{model}: backend 'onnx' needs an .onnx file; export one with "
                "astrosleuth_astro.models.export_onnx"
            )
        return backend, False
    has_torch_file = entry.path is not None or entry.url is not None
    has_onnx_file = entry.onnx_path is not None or entry.onnx_url is not None
    if backend == "auto":
        torch_ok = _torch_importable()
        torch_file_missing = entry.path is not None and not entry.path.is_file()
        if torch_ok and has_torch_file and not (torch_file_missing and has_onnx_file):
            return "torch", False
        if has_onnx_file:
            return "onnx", True
        raise ModelError(
            f"{entry.name}: this model has torch weights only and PyTorch is not installed "
            "(pip install 'astrosleuth-astro[torch]')"
        )
    if backend == "onnx":
        if not has_onnx_file:
            raise InputError(
                f"{entry.name}: no ONNX file for this model; use backend 'torch' or export one "
                "with astrosleuth_astro.models.export_onnx"
            )
        return "onnx", True
    if not has_torch_file:
        raise InputError(f"{entry.name}: no torch weights for this model; use backend 'onnx'")
    return "torch", False


def make_backend(
    model: str | os.PathLike | Any = DEFAULT_MODEL,
    backend: str = "auto",
    device: str = "cpu",
    **model_options: Any,
) -> Backend:
    """Load a model and wrap it in the chosen backend.

    Parameters
    ----------
    model : str, os.PathLike, torch.nn.Module or OnnxModel
        Registry name (default ``"default"``), weights/ONNX file, or an already loaded model.
    backend : {"auto", "torch", "onnx"}
        ``"auto"``: torch when it is importable and the model is not ``.onnx``, else onnx
        (a registry model with an ONNX file, such as the default, falls back to it).
    device : {"cpu", "cuda", "mps"}
        Compute device (``cuda:<i>`` for torch). ONNX supports cpu and cuda.
    **model_options
        NEXT options: ``star_strength``, ``detail_strength``, ``spikes_strength`` (each in
        [-1, 1]), ``cond_strength`` (in [0, 5]; 0 = off), ``color_matching`` (bool).
        ``None`` values are ignored.

    Returns
    -------
    Backend

    Raises
    ------
    InputError
        Unknown backend or device, device not available, invalid options.
    ModelError
        The model cannot be found or loaded.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: unknown; expected one of {', '.join(BACKENDS)}")
    _check_device_name(device)
    if isinstance(model, OnnxModel):
        if backend == "torch":
            raise InputError("backend 'torch' cannot run an ONNX model")
        if model_options:
            model.set_options(**model_options)
        return OnnxBackend(model)
    if not isinstance(model, (str, os.PathLike)):
        if backend == "onnx":
            raise InputError("backend 'onnx' cannot run a torch module; export it first")
        if any(v is not None for v in model_options.values()):
            if not hasattr(model, "set_options"):
                raise InputError(
                    f"{', '.join(sorted(model_options))}: model options only apply to NEXT models"
                )
            model.set_options(**model_options)
        return TorchBackend(model, device)
    chosen, use_onnx_file = _choose(model, backend)
    if chosen == "torch":
        _check_torch_device(device)
        return TorchBackend(load(model, **model_options), device)
    if device == "mps":
        raise InputError("device mps: not supported by the ONNX backend (use cpu or cuda)")
    loaded = load(model, onnx=use_onnx_file, device=device, **model_options)
    assert isinstance(loaded, OnnxModel)
    return OnnxBackend(loaded)
