"""``astrosleuth-astro bench``: throughput, efficiency, time split, memory and bf16 quality.

Everything is measured side by side in one run, and repetitions are interleaved
(configuration A, B, C, A, B, C, ...) with the median reported, so that a machine whose
speed drifts (thermal limits, other jobs) affects all configurations alike. Per model
(``name@MP``: the input size of its throughput runs), backend and precision:

* **pipeline**: the full file-to-file path: :func:`~astrosleuth_astro.io.read_image` of a
  FITS file, then :func:`~astrosleuth_astro.api.upscale_image` into a FITS output (stretch,
  star protection, tiled network, inverse stretch, write). Throughput is input MP/min.
* **bare network**: the same backend (weights, precision) on one ``BARE_SIZE`` squared
  tensor, no tiling, no pipeline: the best the network does on this machine. When every
  input is grey, the bare run uses the backend's grey form (``Backend.mono()``), as the
  pipeline does. ``efficiency = pipeline / bare`` (input MP/min over input MP/min).
* **naive loop**: the original tool's loop: one 256-px tile with 16 px of context per
  forward, eager fp32 NCHW torch, same weights, on the stretched input (the network and the
  tile stitching only, so the comparison favours the naive loop).
  ``speedup_vs_naive = pipeline / naive``.
* **split**: seconds in read, stretch, stars, network, tiling, inverse and write, from the
  pipeline runs (the median repetition).
* **roofline**: each loop's useful convolution work per second (:func:`conv_flops_per_pixel`
  x input pixels / seconds) against one fp32 2048^2 torch matrix product, timed in every
  repetition: how close each loop is to this machine's dense fp32 ceiling, and so the most
  any fp32 loop doing the same arithmetic could gain over the naive one.

Then, for the first model: the PSNR of the fp32 and bf16 outputs against the noise-free
truth of a simulated field, and peak memory at several input sizes, each in a fresh
subprocess (``RssAnon`` sampled every 5 ms: anonymous memory, i.e. not counting the
memory-mapped FITS output and input pages; ``VmHWM`` too, which does count them and the
shared libraries).

This module is outside the library core: nothing in io, stretch, engine, pipeline or api
imports it.

Modules, in the order of a run: :mod:`.inputs` (sizes, synthetic fields, the models),
:mod:`.timing` (pipeline, bare network, naive loop, roofline units), :mod:`.quality`
(bf16 vs fp32 PSNR), :mod:`.memory` (peak RSS in a fresh process, :mod:`.__main__` its
entry), :mod:`.run` (:func:`run_bench`), :mod:`.report` (``bench.md``) and
:mod:`.command` (the ``astrosleuth-astro bench`` arguments).
"""

from __future__ import annotations

from .command import run_from_args
from .inputs import (
    BARE_SIZE,
    NAIVE_PAD,
    NAIVE_TILE,
    PSNR_SEEDS,
    PSNR_SIZE,
    UPSTREAM_FAST,
    read_shape,
    synthetic_fits,
)
from .report import markdown
from .run import run_bench
from .timing import conv_flops_per_pixel

__all__ = [
    "BARE_SIZE",
    "NAIVE_PAD",
    "NAIVE_TILE",
    "PSNR_SEEDS",
    "PSNR_SIZE",
    "UPSTREAM_FAST",
    "conv_flops_per_pixel",
    "markdown",
    "read_shape",
    "run_bench",
    "run_from_args",
    "synthetic_fits",
]
