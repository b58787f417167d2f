"""PNG previews: input and output side by side, both stretched the same way."""

from __future__ import annotations

import os

import numpy as np

from .resample import upsample_nearest
from .stretch import Stretch, fit_stretch


def _to_rgb8(chw: np.ndarray) -> np.ndarray:
    img = np.nan_to_num(chw, nan=0.0)
    img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return np.moveaxis(img, 0, -1)


def side_by_side(lr: np.ndarray, sr: np.ndarray, stretch: Stretch | None = None) -> np.ndarray:
    """An 8-bit RGB picture ``(H, 2W, 3)``: the input (nearest-upsampled) left, output right.

    Rows are flipped so that FITS row 0 is at the bottom, as FITS viewers show it.

    Parameters
    ----------
    lr : ndarray, shape (H, W) or (C, H, W)
        The input image (linear or display-referred).
    sr : ndarray, shape (sH, sW) or (C, sH, sW)
        The upscaled image, same units as ``lr``.
    stretch : Stretch, optional
        Display stretch; by default an ``mtf`` (auto) stretch fitted on ``lr``. The same
        stretch is applied to both halves so they compare fairly.
    """
    lr3 = lr[np.newaxis] if lr.ndim == 2 else lr
    sr3 = sr[np.newaxis] if sr.ndim == 2 else sr
    scale = sr3.shape[-1] // lr3.shape[-1]
    st = stretch or fit_stretch(lr3, "auto")
    left = upsample_nearest(st.forward(lr3), max(scale, 1))
    right = st.forward(sr3)
    h = min(left.shape[-2], right.shape[-2])
    pair = np.concatenate([_to_rgb8(left[..., :h, :]), _to_rgb8(right[..., :h, :])], axis=1)
    # FITS row 0 is the bottom of the picture, as ds9 and Siril show it.
    return pair[::-1]


def save_side_by_side(path: str | os.PathLike, lr: np.ndarray, sr: np.ndarray, **kwargs) -> None:
    """Write :func:`side_by_side` to a PNG file."""
    from PIL import Image

    Image.fromarray(side_by_side(lr, sr, **kwargs)).save(path)
