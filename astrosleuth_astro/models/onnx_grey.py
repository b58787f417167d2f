"""The grey (one-channel) form of an ONNX network graph, made by editing its weights.

A grey image runs through the 3-channel networks as three equal channels, and the mean of
the three outputs is kept. Where the image enters through one conv and the output leaves
through a last conv, both steps touch only linear layers: the first conv sees three equal
inputs (its weights can be summed over the input channels) and the mean of the outputs is
the mean of the last conv's output channels. FAST's bilinear copy of the input works on
any number of channels. This is the ONNX counterpart of
:class:`~astrosleuth_astro.archs.compact.MonoCompactSR`, for installs that run onnxruntime
without torch; it suits the FAST and RRDB exports.

Only graphs of that layout are edited (one image input, read by one ``Conv`` and possibly
``Resize`` nodes; a last ``Conv`` whose output channels are a multiple of 3); anything else
gives ``None`` and callers keep the three-copies-and-mean path. Whatever follows the last
conv must be linear for the edit to hold, which the layout does not show, so callers check
the edited graph against that path once before using it (:meth:`.OnnxModel.grey`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["grey_graph"]

#: Image channels of the AstroSleuth networks.
CHANNELS = 3


def grey_graph(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of a network graph that maps ``(N, 1, H, W)`` to ``(N, 1, 4H, 4W)``.

    Parameters
    ----------
    proto : onnx.ModelProto
        An export of :func:`~astrosleuth_astro.models.export_onnx` (FAST folded or not,
        RRDB).

    Returns
    -------
    onnx.ModelProto or None
        The edited copy, or None when the graph does not have the layout described above.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        return None
    image = inputs[0].name
    readers = [n for n in graph.node if image in n.input]
    first = [n for n in readers if n.op_type == "Conv"]
    if len(first) != 1 or any(n.op_type not in ("Conv", "Resize") for n in readers):
        return None
    convs = [n for n in graph.node if n.op_type == "Conv"]
    first, last = first[0], convs[-1]
    if first is last or len(first.input) < 2 or len(last.input) < 3:
        return None
    names = (first.input[1], last.input[1], last.input[2])
    if any(name not in inits for name in names):
        return None
    uses = [name for n in graph.node for name in n.input]
    if any(uses.count(name) != 1 for name in names):  # shared weights: leave the graph alone
        return None
    w0, w2, b2 = (numpy_helper.to_array(inits[name]) for name in names)
    if w0.ndim != 4 or w0.shape[1] != CHANNELS or w2.ndim != 4 or w2.shape[0] % CHANNELS:
        return None
    phases = w2.shape[0] // CHANNELS  # sub-pixel phases of a folded export, else 1

    out = type(proto)()
    out.CopyFrom(proto)
    graph = out.graph
    # Sum (first conv) and mean (last conv) in float64, one rounding to the stored type.
    # Output channel o * phases + k of the last conv is phase k of image channel o.
    new = {
        names[0]: w0.astype(np.float64).sum(axis=1, keepdims=True).astype(w0.dtype),
        names[1]: w2.astype(np.float64)
        .reshape(CHANNELS, phases, *w2.shape[1:])
        .mean(axis=0)
        .astype(w2.dtype),
        names[2]: b2.astype(np.float64).reshape(CHANNELS, phases).mean(axis=0).astype(b2.dtype),
    }
    for tensor in graph.initializer:
        if tensor.name in new:
            tensor.CopyFrom(numpy_helper.from_array(new[tensor.name], tensor.name))
    for value in (*[i for i in graph.input if i.name == image], *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[1].ClearField("dim_param")
            dims[1].dim_value = 1
    # Intermediate shapes recorded for three channels would now be wrong.
    del graph.value_info[:]
    return out
