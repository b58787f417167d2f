"""Load a model file or registry name into something that can run.

* ``.pth`` / ``.pt`` / ``.ckpt``: ``torch.load(..., weights_only=True, map_location="cpu")``,
  so a pickle that would run code is refused (and never run);
* ``.safetensors``: ``safetensors.torch.load_file``;
* ``.onnx``: an :class:`OnnxModel` wrapping an ``onnxruntime.InferenceSession``.

torch is imported lazily, only for torch weights: this module imports with onnxruntime alone.
Every loaded model carries a :class:`ModelInfo` (``.provenance``) with its name, architecture
and the sha256 of the weights file.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..archs import arch_module, build_arch, detect_arch, unwrap_state_dict
from ..archs.next_options import (
    COND_META_KEY,
    MISSING_VECTORS_MESSAGE,
    ONNX_INPUTS,
    NextOptions,
    conditioning_requested,
    next_options,
)
from ..errors import InputError, ModelError
from .download import resolve, sha256_file
from .onnx_grey import grey_graph
from .registry import DEFAULT_TILE, ModelEntry

if TYPE_CHECKING:
    from torch import nn

    from ..archs.next_options import NextOptions

__all__ = ["ModelInfo", "OnnxModel", "check_batch", "load", "load_state_dict"]

_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a loaded model.

    Attributes
    ----------
    name : str
        Registry name, or the file stem for a plain path.
    arch : str
        ``"rrdb"``, ``"fast"``, ``"next"`` (``"unknown"`` for a foreign ONNX file).
    sha256 : str
        sha256 of the file that was loaded.
    path : pathlib.Path
        That file.
    format : str
        ``"pytorch"``, ``"safetensors"`` or ``"onnx"``.
    scale : int
        Upscaling factor (4).
    tile, tile_pad : int
        Recommended tile size and overlap (input pixels).
    options : dict
        NEXT options in effect (empty for other architectures).
    """

    name: str
    arch: str
    sha256: str
    path: Path
    format: str
    scale: int = 4
    tile: int = 256
    tile_pad: int = 16
    options: dict = field(default_factory=dict)


def check_batch(batch: Any, channels: int = 3) -> np.ndarray:
    """Validate a network input batch.

    Parameters
    ----------
    batch : array-like
        ``(N, channels, h, w)`` values in [0, 1].
    channels : int
        Expected channel count (3 for the AstroSleuth networks, 1 for their grey forms).

    Returns
    -------
    numpy.ndarray
        C-contiguous float32 view or copy.

    Raises
    ------
    InputError
        Wrong rank, channel count or empty.
    """
    arr = np.ascontiguousarray(batch, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != channels or min(arr.shape) == 0:
        raise InputError(
            f"network input must be a non-empty (N, {channels}, h, w) array, got {arr.shape}"
        )
    return arr


def _first_line(exc: BaseException | str) -> str:
    """First sentence of an error message (library messages run on for paragraphs)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0].split(". ")[0].split(" was not an allowed")[0].rstrip(".")


def _import_torch(path: Path):
    try:
        import torch
    except ImportError:
        raise ModelError(
            f"{path}: torch weights need PyTorch (pip install 'astrosleuth-astro[torch]'); "
            "use an .onnx model to run without it"
        ) from None
    return torch


def load_state_dict(path: str | os.PathLike) -> dict:
    """Read a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file into a plain state dict.

    Wrapper dicts (``params_ema``, ``params``, ...) and ``module.`` prefixes are removed.
    Pickles are read with ``weights_only=True`` only.

    Raises
    ------
    ModelError
        Unknown suffix, refused or corrupt/truncated file, not a state dict.
    """

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        _import_torch(path)
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(
                f"{path}: reading .safetensors needs the safetensors package"
            ) from None
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(
                f"{path}: not a readable safetensors file (truncated or corrupt: {_first_line(exc)})"
            ) from None
    elif suffix in _TORCH_SUFFIXES:
        torch = _import_torch(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pickle-protocol chatter, not for users
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's weights-only unpickler names the refused global on one of its lines.
            what = [ln.strip() for ln in str(exc).splitlines() if "nsupported" in ln]
            if what:
                raise ModelError(
                    f"{path}: refused: the pickle holds objects other than tensors "
                    f"({_first_line(what[0])}); only weights-only checkpoints are loaded and "
                    "nothing in it was run"
                ) from None
            raise ModelError(
                f"{path}: not a readable torch checkpoint (refused or corrupt pickle)"
            ) from None
        except Exception as exc:
            raise ModelError(
                f"{path}: not a readable torch checkpoint (truncated or corrupt: {_first_line(exc)})"
            ) from None
    else:
        raise ModelError(
            f"{path}: unknown model file type {suffix or '(no suffix)'!r}; "
            "expected .pth, .pt, .safetensors or .onnx"
        )
    try:
        return unwrap_state_dict(obj)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None


def _fit_report(model: nn.Module, sd: dict, arch: str) -> str | None:
    """Describe why ``sd`` does not fit ``model`` strictly (None when it does)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} {label} ({shown})")
    if not parts:
        return None
    return f"weights do not fit the {arch} network: " + "; ".join(parts)


def _build_torch(path: Path, arch: str | None) -> tuple[nn.Module, str, str]:

    sd = load_state_dict(path)
    fmt = "safetensors" if path.suffix.lower() == ".safetensors" else "pytorch"
    try:
        if arch is None:
            arch, kwargs = detect_arch(sd)
        else:
            mod = arch_module(arch)
            try:
                kwargs = mod.infer_kwargs(sd)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ModelError(
                    f"does not look like a {arch} model ({type(exc).__name__}: {exc})"
                ) from None
        model = build_arch(arch, **kwargs)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    problem = _fit_report(model, sd, arch)
    if problem:
        raise ModelError(f"{path}: {problem}")
    model.load_state_dict(sd, strict=True)
    return model, arch, fmt


def _clean_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def _check_sha(path: Path, digest: str, entry: ModelEntry | None) -> None:
    if entry is None:
        return
    expected = entry.onnx_sha256 if path.suffix.lower() == ".onnx" else entry.sha256
    if expected and digest != expected:
        raise ModelError(
            f"{path}: sha256 mismatch for model {entry.name!r} (expected {expected}, got {digest}); "
            "the file is corrupt or was replaced"
        )


def load(
    path_or_name: str | os.PathLike,
    arch: str | None = None,
    *,
    onnx: bool = False,
    device: str = "cpu",
    providers: list[str] | None = None,
    **options: Any,
) -> nn.Module | OnnxModel:
    """Load a model ready for inference.

    Parameters
    ----------
    path_or_name : str or os.PathLike
        Registry name (downloaded into the cache when needed) or a ``.pth``/``.pt``/
        ``.safetensors``/``.onnx`` file.
    arch : str, optional
        ``"rrdb"``, ``"fast"`` or ``"next"``; detected from the state-dict keys when None.
        Ignored for ONNX files.
    onnx : bool
        For registry names: load the model's ONNX file instead of its torch weights.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``: torch device, or the ONNX execution provider
        (``"cuda"`` selects ``CUDAExecutionProvider``).
    providers : list of str, optional
        Explicit onnxruntime providers (overrides ``device`` for ONNX).
    **options
        NEXT options (``star_strength``, ``detail_strength``, ``spikes_strength``,
        ``cond_strength``, ``color_matching``); ``None`` values are ignored.

    Returns
    -------
    torch.nn.Module or OnnxModel
        A torch module in eval mode, float32, without gradients, whose forward maps
        float32 ``(N, 3, H, W)`` in [0, 1] to ``(N, 3, 4H, 4W)``; or an :class:`OnnxModel`
        callable on numpy arrays. Either has a ``provenance`` attribute (:class:`ModelInfo`).

    Raises
    ------
    ModelError
        Unknown name, missing/corrupt/refused file, layout mismatch, sha256 mismatch.
    InputError
        Invalid options, or options given to a model that takes none.
    """
    path, entry = resolve(path_or_name, onnx=onnx)
    digest = sha256_file(path)
    _check_sha(path, digest, entry)
    options = _clean_options(options)
    name = entry.name if entry else path.stem
    if path.suffix.lower() == ".onnx":
        return OnnxModel(
            path,
            device=device,
            providers=providers,
            name=name,
            arch=entry.arch if entry else None,
            sha256=digest,
            tile=entry.tile if entry else None,
            tile_pad=entry.tile_pad if entry else 16,
            **options,
        )
    model, arch_name, fmt = _build_torch(path, arch)
    if arch_name == "next":
        model.set_options(**options)
        opts = model.options.as_dict()
    elif options:
        raise InputError(
            f"{', '.join(sorted(options))}: model options only apply to NEXT models "
            f"({name} is {arch_name})"
        )
    else:
        opts = {}
    model.eval().float().requires_grad_(False)
    if device != "cpu":
        try:
            model.to(device)
        except (RuntimeError, AssertionError, ValueError) as exc:  # torch's "not compiled with"
            raise InputError(
                f"device {device}: not available to torch ({_first_line(exc)})"
            ) from None
    model.provenance = ModelInfo(
        name=name,
        arch=arch_name,
        sha256=digest,
        path=path,
        format=fmt,
        tile=entry.tile if entry else DEFAULT_TILE[arch_name],
        tile_pad=entry.tile_pad if entry else 16,
        options=opts,
    )
    return model


class OnnxModel:
    """An ONNX super-resolution model run by onnxruntime, callable on numpy batches.

    Parameters
    ----------
    path : path-like
        ``.onnx`` file whose first input is an ``(N, 3, H, W)`` float32 image. NEXT exports
        have three more inputs (:data:`astrosleuth_astro.archs.next_options.ONNX_INPUTS`).
    device : str
        ``"cpu"`` or ``"cuda"`` (``CUDAExecutionProvider`` then CPU).
    providers : list of str, optional
        Explicit providers (overrides ``device``).
    name, arch, sha256 : str, optional
        Provenance; ``arch`` defaults to the ``astrosleuth.arch`` metadata of the file.
    tile, tile_pad : int, optional
        Recommended tiling (input pixels).
    **options
        NEXT options (only for NEXT exports); defaults come from the file's metadata.

    Attributes
    ----------
    cond_vectors_available : bool
        For NEXT exports: whether the graph holds the conditioning vectors (metadata
        ``astrosleuth.next_conditioning``; files without that record hold them). False for
        other models.

    Raises
    ------
    ModelError
        Not loadable, or the image input is not rank 4 / 3 channels / float; or NEXT
        conditioning asked for from an export made without the conditioning vectors.
    InputError
        Options for a model without NEXT inputs, or invalid options.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        providers: list[str] | None = None,
        name: str | None = None,
        arch: str | None = None,
        sha256: str | None = None,
        tile: int | None = None,
        tile_pad: int = 16,
        **options: Any,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if providers is None:
            providers = _onnx_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=_session_options(), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"{self.path}: not a loadable ONNX model ({_first_line(exc)})"
            ) from None
        inputs = self.session.get_inputs()
        image = inputs[0]
        if len(image.shape) != 4:
            raise ModelError(
                f"{self.path}: ONNX input {image.name!r} has rank {len(image.shape)}; "
                "expected an (N, 3, H, W) image"
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            #: Conditioning channels after the image (a noise-aware export, see
            #: :mod:`astrosleuth_astro.noise`); 0 for every other model.
            self.cond_channels = max(int(meta.get("astrosleuth.cond_channels", 0)), 0)
        except ValueError:
            raise ModelError(
                f"{self.path}: unreadable astrosleuth.cond_channels metadata"
            ) from None
        want = 3 + self.cond_channels
        if isinstance(image.shape[1], int) and image.shape[1] != want:
            raise ModelError(
                f"{self.path}: ONNX input {image.name!r} has {image.shape[1]} channels; "
                f"expected {want}"
            )
        if image.type != "tensor(float)":
            raise ModelError(
                f"{self.path}: ONNX input {image.name!r} is {image.type}; expected float32"
            )
        self.input_name = image.name
        extra = [i.name for i in inputs[1:]]
        if extra and sorted(extra) != sorted(ONNX_INPUTS):
            raise ModelError(
                f"{self.path}: unexpected ONNX inputs {', '.join(extra)} "
                f"(a NEXT export has {', '.join(ONNX_INPUTS)})"
            )
        self.is_next = bool(extra)
        self.cond_vectors_available = self.is_next and meta.get(COND_META_KEY) != "unavailable"
        self.scale = int(meta.get("astrosleuth.scale", 4))
        self.arch = arch or meta.get("astrosleuth.arch") or ("next" if self.is_next else "unknown")
        base = NextOptions()
        if self.is_next and meta.get("astrosleuth.next_options"):
            try:
                base = next_options(**json.loads(meta["astrosleuth.next_options"]))
            except (ValueError, InputError):
                base = NextOptions()  # unreadable stored defaults: fall back to upstream's
        options = _clean_options(options)
        if options:
            if not self.is_next:
                raise InputError(
                    f"{', '.join(sorted(options))}: model options only apply to NEXT models "
                    f"({self.path.name} has no NEXT inputs)"
                )
            base = next_options(base, **options)
        self._check_conditioning(base)
        self.options = base
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.provenance = ModelInfo(
            name=name or meta.get("astrosleuth.name") or self.path.stem,
            arch=self.arch,
            sha256=sha256 or sha256_file(self.path),
            path=self.path,
            format="onnx",
            scale=self.scale,
            tile=tile or DEFAULT_TILE.get(self.arch, 256),
            tile_pad=tile_pad,
            options=self.options.as_dict() if self.is_next else {},
        )

    def set_options(self, **options: Any) -> OnnxModel:
        """Update the NEXT options (see :mod:`astrosleuth_astro.archs.next_options`)."""

        options = _clean_options(options)
        if options and not self.is_next:
            raise InputError(
                f"{', '.join(sorted(options))}: model options only apply to NEXT models"
            )
        new = next_options(self.options, **options)
        self._check_conditioning(new)
        self.options = new
        return self

    def _check_conditioning(self, options: NextOptions) -> None:

        if self.is_next and not self.cond_vectors_available and conditioning_requested(options):
            raise ModelError(
                f"{self.path}: exported without the conditioning vectors; "
                f"{MISSING_VECTORS_MESSAGE}, then export the model again"
            )

    def grey(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The network for grey images, ``(N, 1, h, w)`` to ``(N, 1, 4h, 4w)``, or None.

        A session on the one-channel form of the graph
        (:func:`~astrosleuth_astro.models.onnx_grey.grey_graph`): the mean of the three
        outputs for three equal input channels, without computing them (FAST and RRDB
        exports). It is checked once against that mean on a random input (within 1e-4),
        and None is returned when it disagrees, when the graph does not have the layout the
        edit needs (NEXT exports do not), or when the ``onnx`` package is missing.
        """
        if self.is_next or self.cond_channels:
            return None
        try:
            import onnx
            import onnxruntime as ort

            edited = grey_graph(onnx.load(str(self.path)))
            if edited is None:
                return None
            session = ort.InferenceSession(
                edited.SerializeToString(),
                sess_options=_session_options(),
                providers=self.session.get_providers(),
            )
        except Exception:  # noqa: BLE001 - optional speed-up: the generic path still works
            return None

        def run(batch: np.ndarray) -> np.ndarray:
            x = check_batch(batch, channels=1)
            out = session.run(None, {self.input_name: x})[0]
            expected = (x.shape[0], 1, x.shape[2] * self.scale, x.shape[3] * self.scale)
            if out.shape != expected:
                raise ModelError(
                    f"{self.path}: grey ONNX output shape {out.shape} is not {expected}"
                )
            return np.ascontiguousarray(out, dtype=np.float32)

        probe = np.random.default_rng(0).random((1, 1, 24, 20), dtype=np.float32)
        ref = self(np.repeat(probe, 3, axis=1)).mean(axis=1, keepdims=True)
        try:
            ok = float(np.abs(run(probe) - ref).max()) <= 1e-4
        except Exception:  # noqa: BLE001 - a graph the edit broke: use the generic path
            ok = False
        return run if ok else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run the network.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 ``(N, 3, h, w)`` in [0, 1] (``(N, 3 + cond_channels, h, w)`` for a
            noise-aware export).

        Returns
        -------
        numpy.ndarray
            float32 ``(N, 3, scale*h, scale*w)``.
        """
        x = check_batch(batch, channels=3 + self.cond_channels)
        feeds = {self.input_name: x}
        if self.is_next:
            self._check_conditioning(self.options)
            feeds.update(self.options.onnx_feeds())
        out = self.session.run(None, feeds)[0]
        n, c, h, w = x.shape
        expected = (n, c - self.cond_channels, h * self.scale, w * self.scale)
        if out.shape != expected:
            raise ModelError(
                f"{self.path}: ONNX output shape {out.shape} is not the expected {expected}"
            )
        return np.ascontiguousarray(out, dtype=np.float32)


def _session_options() -> Any:
    """onnxruntime session options for every AstroSleuth session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: keep the CLI's stderr clean
    return so


def _onnx_providers(device: str, available: list[str]) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise InputError(
                "device cuda: onnxruntime has no CUDAExecutionProvider here "
                "(install onnxruntime-gpu, or use --device cpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"device {device}: not supported by the ONNX backend (use cpu or cuda)")
