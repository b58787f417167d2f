"""Siril's pixel arrays and the pipeline's: checks, layout and dtype on the way back."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


def check_pixels(pixels: Any) -> np.ndarray:
    """Validate what ``get_image_pixeldata()`` returned."""
    if pixels is None:
        raise InputError("Siril image: no pixel data (is an image loaded?)")
    arr = np.asarray(pixels)
    if arr.dtype not in (np.float32, np.uint16):
        raise InputError(
            f"Siril image: unexpected pixel type {arr.dtype} (expected float32 or uint16)"
        )
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] in (1, 3)):
        if min(arr.shape[-2:]) < 1:
            raise InputError(f"Siril image: empty image of shape {arr.shape}")
        return arr
    raise InputError(f"Siril image: unexpected shape {arr.shape} (expected (H, W) or (3, H, W))")


def from_pipeline_output(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Convert a float32 pipeline result back to the dtype Siril gave us.

    Parameters
    ----------
    result : ndarray
        The upscaled image, float32, in the input's units.
    like : ndarray
        The input as read from Siril (``uint16``, or ``float32`` in Siril's [0, 1] range).

    Returns
    -------
    ndarray
        ``uint16``: rounded to the nearest integer and clipped to [0, 65535] (NaN, which a
        uint16 input cannot produce, becomes 0). ``float32``: clipped to [0, 1], widened to
        the input's own range when it already went beyond (Siril accepts such data), NaN
        kept. C-contiguous, same number of dimensions as ``like``.
    """
    out = np.asarray(result, dtype=np.float32)
    if out.ndim == 3 and like.ndim == 2:
        out = out[0]
    elif out.ndim == 2 and like.ndim == 3:
        out = out[np.newaxis]
    if like.dtype == np.uint16:
        rounded = np.rint(np.nan_to_num(out, nan=0.0, posinf=65535.0, neginf=0.0))
        return np.ascontiguousarray(np.clip(rounded, 0, 65535).astype(np.uint16))
    finite = like[np.isfinite(like)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.ascontiguousarray(np.clip(out, lo, hi), dtype=np.float32)
