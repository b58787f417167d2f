"""The tile plan of a network: tile core, context pad and batch size per architecture,
backend and device, from the network's receptive field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .tiles import DEFAULT_BATCH_SIZE, DEFAULT_PAD

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CPU_FAST_TILE", "CPU_FAST_TILE_ONNX", "Tiling", "fast_receptive_field", "plan_tiling"]

#: Tile core (LR px) on CPU for the FAST architecture. Measured on 2 cores (default model,
#: fp32 channels_last, one 1024x1024 input, network only): 256-px tiles 2.56 s, 128-px
#: 2.54 s, 512-px 2.96 s. Bigger tiles save context pad but their 4x activations
#: (16 channels at 4x the tile) fall out of the caches; 256 keeps the pad cost at ~28 %.
CPU_FAST_TILE = 256


#: The same for onnxruntime, whose CPU kernels run larger tiles faster (grey form, per tile
#: core pixel, median of 3 interleaved runs, 2 cores): default model 13.5 / 14.6 / 13.7
#: MP/min at 256 / 512 / 768 px, upstream-size FAST 1.84 / 2.14 / 2.30; torch on the same
#: upstream FAST 2.07 / 1.80 / 1.89, so torch keeps 256.
CPU_FAST_TILE_ONNX = 512


@dataclass(frozen=True)
class Tiling:
    """Tile geometry chosen for a backend (all in LR input pixels).

    Attributes
    ----------
    tile : int
        Largest tile core.
    pad : int
        Context on each side of a tile.
    batch_size : int
        Tiles per network call.
    """

    tile: int
    pad: int
    batch_size: int


def plan_tiling(
    arch: str,
    receptive_field: int | None,
    device: str,
    default_tile: int = 256,
    backend: str = "torch",
) -> Tiling:
    """Tile size, context pad and batch size for an architecture on a device.

    Parameters
    ----------
    arch : str
        Model architecture.
    receptive_field : int or None
        Theoretical receptive-field radius in LR pixels, when known (FAST: the number of
        3x3 convolutions, see :func:`fast_receptive_field`).
    device : str
        Compute device.
    default_tile : int
        The registry's recommended tile (used where nothing was measured).
    backend : {"torch", "onnx"}
        The backend that runs the tiles.

    Returns
    -------
    Tiling
        ``pad = min(DEFAULT_PAD, rf + ceil(rf / 8))`` when the receptive field is known,
        so that the pixels next to the blend band (``feather = pad // 8``) see the whole
        receptive field up to :data:`~astrosleuth_astro.engine.tiles.DEFAULT_PAD`
        (measured enough for the 35-px upstream FAST); else ``DEFAULT_PAD``. FAST on a
        CPU gets :data:`CPU_FAST_TILE` cores (:data:`CPU_FAST_TILE_ONNX` on
        onnxruntime) one per call (batching large tiles gains nothing on a CPU and
        multiplies the activation memory); elsewhere the registry tile with the default
        batch.
    """

    pad = DEFAULT_PAD
    if receptive_field is not None and receptive_field > 0:
        pad = min(DEFAULT_PAD, receptive_field + -(-receptive_field // 8))
    if arch == "fast" and device == "cpu":
        return Tiling(CPU_FAST_TILE_ONNX if backend == "onnx" else CPU_FAST_TILE, pad, 1)
    return Tiling(int(default_tile), pad, DEFAULT_BATCH_SIZE)


def fast_receptive_field(n_convs: int) -> int:
    """Receptive-field radius in LR pixels of a FAST network with ``n_convs`` 3x3 convs.

    The first conv and the body convs reach 1 LR px each; the two bilinear x2 stages and
    the two convs after them reach 0.5 + 0.5 + 0.25 + 0.25 = 1.5 LR px together, which is
    below the 2 px the two up convs are counted for here. So the radius is at most
    ``n_convs`` (first + body + 2 up convs).
    """
    return int(n_convs)


def module_receptive_field(model: nn.Module, arch: str) -> int | None:
    """FAST: the number of 3x3 convolutions (see :func:`fast_receptive_field`)."""
    if arch != "fast":
        return None
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs or any(tuple(m.kernel_size) != (3, 3) for m in convs):
        return None
    return fast_receptive_field(len(convs))


def onnx_receptive_field(path: Path, arch: str) -> int | None:
    """FAST ONNX exports: the number of 3x3 ``Conv`` nodes (None if unknown)."""
    if arch != "fast":
        return None
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - optional: onnx missing or unreadable -> unknown
        return None
    n = 0
    for node in graph.node:
        if node.op_type == "Conv":
            shape = [a.ints for a in node.attribute if a.name == "kernel_shape"]
            if shape and list(shape[0]) != [3, 3]:
                return None
            n += 1
    return fast_receptive_field(n) if n else None
