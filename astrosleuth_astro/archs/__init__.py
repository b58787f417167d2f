"""Network architectures and the rules that recognise their state dicts.

One architecture per module, each with ``matches(state_dict)`` and
``infer_kwargs(state_dict)`` next to the network (as in spandrel):

=========  ==========================  =====================================
name       module                      networks
=========  ==========================  =====================================
``rrdb``   :mod:`.rrdb` (RRDBNet)      AstroSleuth V1, V2
``fast``   :mod:`.compact` (CompactSR) AstroSleuth FAST, the shipped default
``next``   :mod:`.next` (NextSR)       AstroSleuth NEXT (conditionable)
=========  ==========================  =====================================

This package module itself does not import torch: the architecture modules are imported on
first use, so the ONNX-only path can import :mod:`astrosleuth_astro.archs` (for instance
:mod:`.next_options`) without torch installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ..errors import ModelError

__all__ = [
    "ARCH_NAMES",
    "CompactSR",
    "NextSR",
    "RRDBNet",
    "arch_module",
    "arch_of",
    "build_arch",
    "cond_channels",
    "detect_arch",
    "unwrap_state_dict",
]

#: Architecture names, in detection order (NEXT before RRDB: NEXT holds every RRDB key).
ARCH_NAMES = ("next", "rrdb", "fast")

_MODULES = {"rrdb": "rrdb", "fast": "compact", "next": "next"}

#: Wrapper keys of training checkpoints, most preferred first (Real-ESRGAN / BasicSR use
#: ``params_ema`` and ``params``; Lightning-style checkpoints use ``state_dict``).
_WRAPPERS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net_g")
#: Key prefixes added by DataParallel / torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def arch_module(name: str) -> ModuleType:
    """Import and return the module of architecture ``name`` (imports torch).

    Raises
    ------
    ModelError
        Unknown architecture name.
    """
    try:
        mod = _MODULES[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; known: {', '.join(sorted(_MODULES))}"
        ) from None
    return importlib.import_module(f"{__name__}.{mod}")


_CLASSES = {"RRDBNet": "rrdb", "CompactSR": "fast", "NextSR": "next"}


def arch_of(model: Any) -> str:
    """The architecture name of a network module, ``"unknown"`` for a foreign one.

    A module from :func:`astrosleuth_astro.models.load` carries it in its provenance;
    otherwise the class decides (NEXT first: a NEXT net is an RRDB with more layers).
    """
    info = getattr(model, "provenance", None)
    if info is not None:
        return info.arch
    for cls_name in ("NextSR", "RRDBNet", "CompactSR"):
        if isinstance(model, getattr(arch_module(_CLASSES[cls_name]), cls_name)):
            return _CLASSES[cls_name]
    return "unknown"


def cond_channels(model: Any) -> int:
    """Conditioning channels a network takes after its 3 image channels (0 for most;
    2 for a noise-aware FAST, see :mod:`astrosleuth_astro.noise`)."""
    body = getattr(model, "body", None)
    first = body[0] if body is not None and len(body) else None
    n_out = getattr(model, "num_out_ch", None)
    if first is None or n_out is None or not hasattr(first, "in_channels"):
        return 0
    return max(int(first.in_channels) - int(n_out), 0)


def __getattr__(name: str) -> Any:
    # Lazy access to the network classes (``from astrosleuth_astro.archs import NextSR``)
    # without importing torch when the package is imported.
    if name in _CLASSES:
        return getattr(arch_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_tensor_like(value: object) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def unwrap_state_dict(obj: object) -> dict[str, Any]:
    """Return the plain ``{name: tensor}`` dict inside a checkpoint.

    Unwraps ``params_ema`` / ``params`` / ``state_dict`` / ... containers (``params_ema``
    wins when both are present, as in Real-ESRGAN) and strips ``module.`` / ``_orig_mod.``
    prefixes shared by every key.

    Parameters
    ----------
    obj : Mapping
        What ``torch.load`` or ``safetensors`` returned.

    Raises
    ------
    ModelError
        Not a mapping, empty, or holding non-tensor values.
    """
    for _ in range(4):  # wrappers nest at most a couple of levels
        if not isinstance(obj, Mapping):
            raise ModelError(f"not a state dict (got {type(obj).__name__})")
        # No next(): importing the ``.next`` submodule shadows the builtin in this namespace.
        inner = [obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)]
        if not inner:
            break
        obj = inner[0]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError("empty or malformed state dict")
    sd = {str(k): v for k, v in obj.items()}
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    bad = [k for k, v in sd.items() if not _is_tensor_like(v)]
    if bad:
        raise ModelError(
            f"state dict holds non-tensor entries ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        )
    return sd


def detect_arch(state_dict: Mapping[str, Any]) -> tuple[str, dict]:
    """Recognise the architecture of a state dict.

    Parameters
    ----------
    state_dict : Mapping
        Parameter name -> tensor (wrappers and prefixes are removed first).

    Returns
    -------
    (str, dict)
        Architecture name (one of :data:`ARCH_NAMES`) and constructor keyword arguments
        for :func:`build_arch`.

    Raises
    ------
    ModelError
        No known layout matches.
    """
    sd = unwrap_state_dict(state_dict)
    for name in ARCH_NAMES:
        mod = arch_module(name)
        if mod.matches(sd):
            try:
                return name, mod.infer_kwargs(sd)
            except ModelError:
                raise
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ModelError(f"malformed {name} state dict ({exc})") from None
    keys = list(sd)
    shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
    raise ModelError(
        f"unknown network layout ({len(keys)} tensors: {shown}); expected AstroSleuth "
        "V1/V2 (RRDB), FAST or NEXT weights"
    )


def build_arch(name: str, **kwargs: Any):
    """Construct architecture ``name`` (see :data:`ARCH_NAMES`) with ``kwargs``.

    Returns
    -------
    torch.nn.Module
        Freshly initialised network (training mode, float32, CPU).

    Raises
    ------
    ModelError
        Unknown name or invalid arguments.
    """
    mod = arch_module(name)
    cls = {arch: cls for cls, arch in _CLASSES.items()}[name]
    try:
        return getattr(mod, cls)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build {name} network: {exc}") from None
