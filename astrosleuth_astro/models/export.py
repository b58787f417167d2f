"""Export a network to ONNX with dynamic batch, height and width.

The graph has one image input ``input`` (float32 ``(N, 3, H, W)``; ``(N, 3 + 2, H, W)`` for a
noise-aware FAST, whose conditioning channels follow the image and are counted in
``astrosleuth.cond_channels``) and one output ``output`` (``(N, 3, 4H, 4W)``). NEXT exports also take the options as inputs (``strengths`` (3,),
``cond_strength`` (1,), ``color_match`` (1,)), so one file serves every setting; the options
set on the model at export time are stored as defaults in the file's metadata.

Metadata (``metadata_props``): ``astrosleuth.arch``, ``astrosleuth.scale``,
``astrosleuth.name``, ``astrosleuth.source_sha256``, ``astrosleuth.folded`` (FAST exported in
its folded inference form, see :func:`export_onnx`) and, for NEXT,
``astrosleuth.next_options`` (JSON) and ``astrosleuth.next_conditioning``.

NEXT's conditioning vectors are constants baked into the graph. When they are not available
at export time (not downloaded, see :mod:`astrosleuth_astro.archs.next_options`), the graph
holds zeros in their place, which leaves the unconditioned output (``cond_strength = 0``)
exact, and ``astrosleuth.next_conditioning`` is ``"unavailable"``: :class:`.OnnxModel` then
refuses conditioning with the same :class:`~astrosleuth_astro.errors.ModelError` as the torch
network. Otherwise it is ``"available"``.

torch is imported only when an export runs.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..archs import arch_of, cond_channels
from ..archs.next_options import (
    COND_META_KEY,
    ONNX_INPUTS,
    conditioning_requested,
    missing_vectors_error,
)
from ..errors import InputError, ModelError
from .loader import load

if TYPE_CHECKING:
    from torch import nn

__all__ = ["COND_META_KEY", "export_onnx"]


_EXPORTERS = ("auto", "legacy", "dynamo")


def _graph_module(model: nn.Module, arch: str):
    """Module whose forward takes exactly the graph inputs."""
    from torch import nn

    if arch != "next":
        return model

    class _NextGraph(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x, strengths, cond_strength, color_match):
            return self.net.forward_graph(x, strengths, cond_strength, color_match)

    return _NextGraph(model)


def _export(graph, args, tmp: Path, names: list[str], opset: int, exporter: str) -> str:
    import torch

    dyn_axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    dyn_axes["output"] = {0: "batch", 2: "out_height", 3: "out_width"}
    if exporter in ("auto", "legacy"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter warns that it is legacy
                torch.onnx.export(
                    graph,
                    args,
                    str(tmp),
                    dynamo=False,
                    input_names=names,
                    output_names=["output"],
                    dynamic_axes=dyn_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
            return "legacy"
        except (TypeError, NotImplementedError, RuntimeError, AttributeError, ImportError):
            if exporter == "legacy":
                raise
            # torch builds without the TorchScript exporter: fall through to dynamo.
    dim = torch.export.Dim.DYNAMIC
    image_dims = {0: dim, 2: dim, 3: dim}
    dynamic_shapes = (image_dims,) + (None,) * (len(args) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            args,
            dynamo=True,
            input_names=names,
            output_names=["output"],
            dynamic_shapes=dynamic_shapes,
            # dynamo emits opset 18 natively; down-converting fails for some graphs.
            opset_version=max(opset, 18),
            external_data=False,
            verbose=False,
        )
    program.save(str(tmp), external_data=False)
    return "dynamo"


def _write_metadata(path: Path, meta: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        if meta.get(COND_META_KEY) == "unavailable":
            # Without this record the file would accept conditioning it cannot do.
            raise ModelError(
                "recording that NEXT conditioning is unavailable needs the onnx package "
                "(pip install onnx), or download the vectors first"
            ) from None
        return  # otherwise metadata is optional; OnnxModel has fallbacks
    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def export_onnx(
    model_or_path: nn.Module | str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = 17,
    *,
    exporter: str = "auto",
    overwrite: bool = True,
    sample_hw: tuple[int, int] = (32, 32),
    fold: bool = True,
    **options: Any,
) -> Path:
    """Export a network to ONNX (written atomically).

    Parameters
    ----------
    model_or_path : torch.nn.Module, str or os.PathLike
        A network from :mod:`astrosleuth_astro.archs` (or :func:`.load`), or a registry
        name / weights file to load first.
    out_path : path-like
        Target ``.onnx`` file; its folder must exist.
    opset : int
        ONNX opset version.
    exporter : {"auto", "legacy", "dynamo"}
        ``"auto"`` uses the TorchScript exporter (``dynamo=False``) when this torch has it,
        else the ``torch.export``-based exporter with dynamic shapes (which writes opset
        ``max(opset, 18)``).
    overwrite : bool
        Replace an existing ``out_path``.
    sample_hw : (int, int)
        Height and width of the tracing input (the exported graph accepts any size).
    fold : bool
        FAST only: export the inference form with the bilinear upsamplings folded into
        low-resolution convs (:class:`~astrosleuth_astro.archs.compact.FoldedCompactSR`,
        what the torch backend runs; the file's metadata says ``astrosleuth.folded =
        "1"``). It gives the same output wherever the tile engine keeps it, and differs
        from the trained graph only in the outermost 6 output pixels when run on a whole
        image without padding. ``False`` exports the network as trained.
    **options
        NEXT options stored as the file's defaults (when loading from a path).

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    InputError
        Unknown exporter, or ``out_path`` exists and ``overwrite`` is False.
    ModelError
        The model could not be loaded or exported.
    """
    import torch
    from torch import nn

    if exporter not in _EXPORTERS:
        raise InputError(f"exporter {exporter!r}: expected one of {', '.join(_EXPORTERS)}")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists (pass overwrite=True to replace it)")
    if isinstance(model_or_path, nn.Module):
        model = model_or_path
        if options:
            if not hasattr(model, "set_options"):
                raise InputError(f"{', '.join(sorted(options))}: model options only apply to NEXT")
            model.set_options(**options)
    else:
        model = load(model_or_path, **options)
        if not isinstance(model, nn.Module):
            raise ModelError(f"{model_or_path}: already an ONNX model")
    arch = arch_of(model)
    info = getattr(model, "provenance", None)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    net = model
    if fold and arch == "fast":
        from ..archs.compact import fold_upsampling

        net = fold_upsampling(model).eval()
    graph = _graph_module(net, arch)
    n_cond = cond_channels(model)
    x = torch.rand(1, 3 + n_cond, *sample_hw, device=device)
    names = ["input"]
    args: tuple = (x,)
    meta = {"astrosleuth.arch": arch, "astrosleuth.scale": str(getattr(model, "upscale", 4))}
    meta["astrosleuth.folded"] = "1" if net is not model else "0"
    if n_cond:
        meta["astrosleuth.cond_channels"] = str(n_cond)
    if info is not None:
        meta["astrosleuth.name"] = info.name
        meta["astrosleuth.source_sha256"] = info.sha256
    if arch == "next":
        # Pick up vectors downloaded after the network was built.
        available = bool(model.load_condition_vectors(required=False))
        if conditioning_requested(model.options) and not available:
            model.train(was_training)
            raise missing_vectors_error()
        meta[COND_META_KEY] = "available" if available else "unavailable"
        feeds = model.options.onnx_feeds()
        args = (x, *(torch.from_numpy(feeds[k]).to(device) for k in ONNX_INPUTS))
        names += list(ONNX_INPUTS)
        meta["astrosleuth.next_options"] = json.dumps(model.options.as_dict())
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            meta["astrosleuth.exporter"] = _export(graph, args, tmp, names, opset, exporter)
        _write_metadata(tmp, meta)
        os.replace(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (InputError, KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(exc, Exception):
            text = str(exc).strip().splitlines()
            raise ModelError(
                f"{out}: ONNX export failed ({text[0] if text else type(exc).__name__})"
            ) from exc
        raise
    finally:
        model.train(was_training)
    return out
