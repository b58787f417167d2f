"""Inference backends: one small interface over torch and onnxruntime.

The precision rules live in :mod:`.precision`, the tile plan in :mod:`.plan`.

A :class:`Backend` is called with a float32 numpy batch ``(N, 3, h, w)`` in [0, 1] and returns
``(N, 3, 4h, 4w)`` float32. :func:`make_backend` picks torch or onnxruntime for a model name or
file. torch is never imported at module import time, so the ONNX path works without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..archs import arch_of, cond_channels
from ..errors import InputError, ModelError
from ..models.loader import ModelInfo, OnnxModel, check_batch, load
from ..models.registry import DEFAULT_MODEL, DEFAULT_TILE, ModelEntry, get_entry
from .plan import Tiling, module_receptive_field, onnx_receptive_field, plan_tiling
from .precision import PRECISIONS, resolve_precision

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BACKENDS",
    "DEVICES",
    "Backend",
    "OnnxBackend",
    "TorchBackend",
    "make_backend",
    "repeat_mean",
]


#: Accepted ``backend`` values.
BACKENDS = ("auto", "torch", "onnx")


#: Accepted ``device`` values (``cuda:<index>`` is accepted too).
DEVICES = ("cpu", "cuda", "mps")


def repeat_mean(
    net: Callable[[np.ndarray], np.ndarray], n_cond: int = 0
) -> Callable[[np.ndarray], np.ndarray]:
    """Run a 3-channel network on 1-channel batches: three copies in, the mean out.

    With ``n_cond`` conditioning channels (a noise-aware network), the batch is
    ``(N, 1 + n_cond, h, w)``: the image channel is copied, the conditioning ones follow.
    """

    def run(batch: np.ndarray) -> np.ndarray:
        image = np.repeat(batch[:, :1], 3, axis=1)
        out = net(np.concatenate([image, batch[:, 1:]], axis=1) if n_cond else image)
        return out.mean(axis=1, keepdims=True, dtype=np.float32)

    return run


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

    #: Precision the network runs at: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    precision: str = "fp32"

    @property
    def receptive_field(self) -> int | None:
        """Receptive-field radius in LR pixels, where known (FAST only), else None."""
        return None

    #: Conditioning channels the network takes after the image (2 for a noise-aware
    #: network, :mod:`astrosleuth_astro.noise`; the pipeline appends them to each tile).
    cond_channels: int = 0

    @property
    def tiling(self) -> Tiling:
        """Tile size, context pad and batch size for this model on this device."""
        return plan_tiling(self.arch, self.receptive_field, self.device, self.tile, self.name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Upscale ``(N, 3, h, w)`` float32 in [0, 1] to ``(N, 3, 4h, 4w)`` float32."""
        raise NotImplementedError

    def mono(self) -> Callable[[np.ndarray], np.ndarray]:
        """The network for grey images: ``(N, 1, h, w)`` to ``(N, 1, 4h, 4w)`` float32.

        Equal (to float rounding) to running the 3-channel network on three copies of the
        input and averaging its three outputs, which is what this default does. A
        noise-aware network's batch is ``(N, 1 + cond_channels, h, w)``.
        """
        return repeat_mean(self, self.cond_channels)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_name!r}, arch={self.arch!r}, "
            f"device={self.device!r}, precision={self.precision!r}, "
            f"sha256={self.sha256[:12]!r})"
        )


def _torch_module_info(model: nn.Module) -> ModelInfo:
    """Provenance for a module that did not come from :func:`load`."""

    info = getattr(model, "provenance", None)
    if isinstance(info, ModelInfo):
        return info
    arch = arch_of(model)
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
    precision : {"fp32", "bf16", "fp16", "auto"}
        ``bf16``/``fp16`` run the network under ``torch.autocast`` (weights stay fp32,
        convolutions run in the low precision, the output is returned as float32);
        ``auto`` is resolved by :func:`resolve_precision`.

    Raises
    ------
    InputError
        Device not available, or a precision it cannot run.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        _check_torch_device(device)
        self.device = device
        self._device = torch.device(device)
        self.provenance = _torch_module_info(model)
        self.precision = resolve_precision(precision, "torch", device, self.arch)
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.model = model.eval().to(self._device).to(memory_format=torch.channels_last)
        self._rf = module_receptive_field(self.model, self.arch)
        # FAST runs with its bilinear upsamplings folded into low-resolution convs: the
        # same output inside every tile's cropped context, without the interpolations.
        from ..archs.compact import FoldedCompactSR, fold_upsampling

        self._net = fold_upsampling(self.model).eval()
        self._net.to(memory_format=torch.channels_last)
        self._mixed = isinstance(self._net, FoldedCompactSR)
        self._mono: nn.Module | None = None  # built on first use by mono()
        self.cond_channels = cond_channels(self.model)

    @property
    def receptive_field(self) -> int | None:
        return self._rf

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self._net, check_batch(batch, channels=3 + self.cond_channels))

    def mono(self) -> Callable[[np.ndarray], np.ndarray]:
        """For FAST, the one-channel network (:class:`~astrosleuth_astro.archs.compact.
        MonoCompactSR`): the same result as the default without the three-channel copies;
        other architectures use the default."""
        import torch

        from ..archs.compact import mono_variant

        if self._mono is None:
            with torch.no_grad():
                net = mono_variant(self._net)
            if net is None:
                return super().mono()
            self._mono = net.eval().to(memory_format=torch.channels_last)
        net = self._mono

        def run(batch: np.ndarray) -> np.ndarray:
            return self._run(net, check_batch(batch, channels=1 + self.cond_channels))

        return run

    def _run(self, net: Any, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device).contiguous(memory_format=torch.channels_last)
            if self._dtype is None:
                y = net(t)
            elif self._mixed:
                y = _fast_mixed_forward(net, t, self._device.type, self._dtype)
            else:
                with torch.autocast(self._device.type, dtype=self._dtype):
                    y = net(t)
            y = y.float().cpu().numpy()
        return np.ascontiguousarray(y)


def _fast_mixed_forward(model: nn.Module, x: Any, device_type: str, dtype: Any) -> Any:
    """FAST forward with the first conv and the bilinear base copy in fp32, the rest in
    ``dtype``.

    The first conv sees the input in fp32 (bf16 would round the input itself to 8
    significant bits), and the bilinear x4 copy of the input that the network adds its
    output to stays fp32, so bf16 rounding only touches the predicted detail. Measured on
    4 simulated 192x192 fields with the default model (2 cores, 288-px tiles): 1.82x faster
    than fp32, output 69.5 dB or more (PSNR) from the fp32 output, PSNR against the truth
    within 0.002 dB of fp32. Keeping the upsampling tail in fp32 too was 5 dB closer but
    only 1.28x faster; the whole network under autocast was 1.88x and 67.5 dB. Same maths
    as ``CompactSR.forward`` (``model`` is a CompactSR or its folded form).
    """
    import torch

    out = model.body[1](model.body[0](x))
    with torch.autocast(device_type, dtype=dtype):
        for layer in model.body[2:]:
            out = layer(out)
        out = model.upsample(out)
    return out.float() + model.base(x)


class OnnxBackend(Backend):
    """Run an ONNX model with onnxruntime (graph optimisations on).

    Parameters
    ----------
    model : OnnxModel
        From :func:`astrosleuth_astro.models.load` (or :class:`OnnxModel` directly).
    precision : {"fp32", "auto"}
        onnxruntime runs the fp32 graph; other precisions raise :class:`InputError`.
    """

    name = "onnx"

    def __init__(self, model: OnnxModel, precision: str = "fp32") -> None:
        self.model = model
        self.device = model.device
        self.provenance = model.provenance
        self.precision = resolve_precision(precision, "onnx", self.device, self.arch)
        self._rf = onnx_receptive_field(self.provenance.path, self.arch)
        self._mono: Callable[[np.ndarray], np.ndarray] | bool | None = None  # see mono()
        self.cond_channels = model.cond_channels

    @property
    def receptive_field(self) -> int | None:
        return self._rf

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.model(batch)

    def mono(self) -> Callable[[np.ndarray], np.ndarray]:
        """A session on the one-channel form of the graph where the model has one
        (:meth:`~astrosleuth_astro.models.loader.OnnxModel.grey`: FAST and RRDB exports);
        else the default."""
        if self._mono is None:
            self._mono = self.model.grey() or False
        return self._mono or super().mono()


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
    precision: str = "auto",
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
    precision : {"auto", "fp32", "bf16", "fp16"}
        Network precision (see :func:`resolve_precision`): ``auto`` is bf16 on CPUs with
        AVX512-BF16/AMX and fp16 on CUDA for the FAST architecture, fp32 otherwise.
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
        Unknown backend, device or precision, device not available, a precision the
        backend/device cannot run, invalid options.
    ModelError
        The model cannot be found or loaded.
    """
    if precision not in PRECISIONS:
        raise InputError(
            f"precision {precision!r}: unknown; expected one of {', '.join(PRECISIONS)}"
        )
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: unknown; expected one of {', '.join(BACKENDS)}")
    _check_device_name(device)
    if isinstance(model, OnnxModel):
        if backend == "torch":
            raise InputError("backend 'torch' cannot run an ONNX model")
        if model_options:
            model.set_options(**model_options)
        return OnnxBackend(model, precision)
    if not isinstance(model, (str, os.PathLike)):
        if backend == "onnx":
            raise InputError("backend 'onnx' cannot run a torch module; export it first")
        if any(v is not None for v in model_options.values()):
            if not hasattr(model, "set_options"):
                raise InputError(
                    f"{', '.join(sorted(model_options))}: model options only apply to NEXT models"
                )
            model.set_options(**model_options)
        return TorchBackend(model, device, precision)
    chosen, use_onnx_file = _choose(model, backend)
    if chosen == "torch":
        _check_torch_device(device)
        return TorchBackend(load(model, **model_options), device, precision)
    if device == "mps":
        raise InputError("device mps: not supported by the ONNX backend (use cpu or cuda)")
    loaded = load(model, onnx=use_onnx_file, device=device, **model_options)
    assert isinstance(loaded, OnnxModel)
    return OnnxBackend(loaded, precision)
