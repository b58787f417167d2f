"""The linear-data pipeline around a network: stretch, tiles, exact inverse.

``upscale_array`` is the core of every entry point (Python API, CLI, Siril, batch):

1. Non-finite pixels (NaN stack borders, inf) are masked and filled with the channel's
   background so they do not disturb the network; they are put back, unchanged, at the
   matching output pixels, so they never spread into their neighbours.
2. The data is mapped into [0, 1] with an invertible stretch fitted on the whole input
   (:mod:`astrosleuth_astro.stretch`).
3. The network runs tile by tile (:mod:`astrosleuth_astro.engine.tiles`). Mono images are
   replicated to 3 channels and the 3 outputs averaged.
4. The exact inverse stretch maps the result back to linear data in the input's units.
5. What the stretch clipped (values below the black point, above the white point) is not
   lost: that *clipped residual* ``x - clip(x, black, white)`` is carried through plain
   bilinear interpolation and added back. Bilinear interpolation keeps the residual's
   mean over each input-pixel footprint (up to the image border), so the clipped part of
   the flux is conserved without the network ever having to represent it.
6. Optionally (``protect_stars``), stars are repaired inside their footprints on the
   native 4x grid (:mod:`astrosleuth_astro.stars.protect`): stars are detected once on the whole
   linear input, and pixels outside the dilated footprints are not touched.
7. Optionally (``conserve_flux``), input pixels get their flux back: the 4x4 output
   pixels of every pixel that holds a source (or of every pixel) are corrected to average
   to its value (:mod:`astrosleuth_astro.conserve`).
8. Scales 1-3 are made from the native 4x result by flux-conserving area resampling.

Steps 4-8 run band by band over output rows, so the output may be a memory-mapped array.
Without star protection, steps 1-2 are not applied to the whole image either: the
stretched input, the clipped residual and the non-finite mask are computed one band of
rows at a time as the tiles and bands read them (:class:`RowSource`), so memory does not
grow with the image height.

Modules: :mod:`.options` (:class:`UpscaleOptions`), :mod:`.prepared` (steps 1-2),
:mod:`.finish` (steps 3-8 for a band of rows), :mod:`.run` (:func:`upscale_array`).
"""

from ..resample import NATIVE_SCALE, SCALES
from .finish import (
    BAND_PIXELS,
    BAND_ROWS,
    LUMA,
    FluxKeeper,
    band_rows,
    clock,
    finish_bands,
    finish_rows,
    linear_band,
    to_linear,
)
from .options import BACKENDS, UpscaleOptions
from .prepared import Prepared, RowSource, as_chw, has_finite, prepare
from .run import STAGES, TIMED_STAGES, Net, PipelineResult, mono_net, upscale_array

__all__ = [
    "BACKENDS",
    "BAND_PIXELS",
    "BAND_ROWS",
    "LUMA",
    "NATIVE_SCALE",
    "SCALES",
    "STAGES",
    "TIMED_STAGES",
    "FluxKeeper",
    "Net",
    "PipelineResult",
    "Prepared",
    "RowSource",
    "UpscaleOptions",
    "as_chw",
    "has_finite",
    "band_rows",
    "clock",
    "finish_bands",
    "linear_band",
    "finish_rows",
    "mono_net",
    "prepare",
    "to_linear",
    "upscale_array",
]
