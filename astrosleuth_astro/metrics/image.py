"""Image-quality measures, one implementation each: PSNR, SSIM, the stretch that scores are
computed in, and the bicubic upsampling that gains are measured against.

:func:`psnr` and :func:`ssim` compare two images; :func:`scoring_stretch` and
:func:`to_scoring_domain` put linear images into the stretched domain in which the
trainer's validation and the benchmarks score them (fitted on the input, as inference
fits its stretch); :func:`bicubic` is the interpolation baseline of every "gain over
bicubic"; :func:`reference_metrics` gives the ``psnr_linear``, ``psnr_stretched`` and
``ssim_stretched`` keys of :func:`~astrosleuth_astro.metrics.measure`. The train package,
``astrosleuth-astro bench``, ``compare`` and the scripts of the repository's ``bench/``
folder use these and no copy of their own.
"""

from __future__ import annotations

import math

import numpy as np

from ..stretch import Stretch, background_stats, fit_stretch

__all__ = [
    "BICUBIC_A",
    "NOISE_FREE",
    "REFERENCE_KEYS",
    "SCORING_STRETCH",
    "bicubic",
    "psnr",
    "psnr_from_mse",
    "reference_metrics",
    "reference_stretch",
    "scoring_stretch",
    "ssim",
    "to_scoring_domain",
]

REFERENCE_KEYS = ("psnr_linear", "psnr_stretched", "ssim_stretched")
#: A reference whose background sigma is below this fraction of the input's is noise-free.
NOISE_FREE = 0.1
#: Stretch kind of :func:`scoring_stretch` (the trainer's ``[data] stretch`` default).
SCORING_STRETCH = "mtf"
#: Keys' cubic-convolution parameter of :func:`bicubic` (torch's and OpenCV's bicubic).
BICUBIC_A = -0.75


def as_float(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio of ``a`` against ``b``, in dB, over their finite pixels.

    The one PSNR of the package (metrics, ``bench``, the trainer's validation and the
    benchmarks use it). ``peak`` is in the images' units (1.0 for stretched data).
    Returns inf for identical images and nan when no pixel is finite in both.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    mse = float(np.mean((a[ok].astype(np.float64) - b[ok]) ** 2)) if ok.any() else float("nan")
    return psnr_from_mse(mse, peak)


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error ``mse`` (same units as ``peak``, squared).

    Returns inf for a zero error and nan for a non-finite one.
    """
    if not np.isfinite(mse):
        return float("nan")
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of ``a`` against ``b``, averaged over channels.

    scikit-image's ``structural_similarity`` (7x7 uniform window) on each channel of
    ``(C, H, W)`` images (an ``(H, W)`` image is one channel), the mean over channels.
    ``data_range`` is 1.0 for stretched data.
    """
    from skimage.metrics import structural_similarity

    a3 = a if np.ndim(a) == 3 else np.asarray(a)[np.newaxis]
    b3 = b if np.ndim(b) == 3 else np.asarray(b)[np.newaxis]
    return float(
        np.mean(
            [
                structural_similarity(x, y, data_range=data_range)
                for x, y in zip(a3, b3, strict=True)
            ]
        )
    )


def scoring_stretch(lr: np.ndarray, kind: str = SCORING_STRETCH) -> Stretch:
    """The stretch that images are scored in: fitted on the input (LR), as inference fits
    its stretch, then applied to the input, the output and the truth alike
    (:func:`to_scoring_domain`). ``kind`` as for :func:`~astrosleuth_astro.stretch.fit_stretch`.
    """
    return fit_stretch(lr, kind)


def to_scoring_domain(st: Stretch, img: np.ndarray) -> np.ndarray:
    """``img`` (linear, the units ``st`` was fitted in) in the scoring domain:
    ``st.forward(img)`` clipped to [0, 1], float32."""
    return np.clip(st.forward(img), 0.0, 1.0)


def _cubic_taps(n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each ``(4, n * scale)``, of a bicubic upsampling of
    ``n`` samples: pixel centres aligned (``align_corners=False``), edges replicated."""
    real = (np.arange(n * scale) + 0.5) / scale - 0.5
    i0 = np.floor(real)
    t = real - i0
    a = BICUBIC_A

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)])
    index = np.clip(i0.astype(np.int64) + np.arange(-1, 3)[:, None], 0, n - 1)
    return index, weights


def bicubic(lr: np.ndarray, scale: int = 4, clip: bool = True) -> np.ndarray:
    """Bicubic upsampling (``align_corners=False``), clipped to [0, 1].

    Keys' cubic convolution with ``a =`` :data:`BICUBIC_A`, separable, pixel centres
    aligned, edge pixels replicated: the bicubic of ``torch.nn.functional.interpolate``
    (``mode="bicubic", align_corners=False``), computed in float64 here, so that the
    two agree to float32 rounding (tested), without torch.

    Parameters
    ----------
    lr : ndarray, shape (..., h, w)
        Stretched data (or any data with ``clip=False``).
    scale : int
        Integer upsampling factor.
    clip : bool
        Clip the result to [0, 1] (the scored form); off for an interpolation used as a
        network (``compare``'s baseline), whose output the pipeline handles.

    Returns
    -------
    ndarray of float32, shape (..., scale h, scale w)
    """
    x = np.asarray(lr, dtype=np.float64)
    iy, wy = _cubic_taps(x.shape[-2], scale)
    ix, wx = _cubic_taps(x.shape[-1], scale)
    rows = sum(x[..., ix[k]] * wx[k] for k in range(4))  # along x, then along y
    out = sum(rows[..., iy[k], :] * wy[k][:, None] for k in range(4))
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32)


def reference_stretch(hr: np.ndarray, lr: np.ndarray | None = None) -> Stretch:
    """The stretch of :func:`reference_metrics`: ``"auto"`` fitted on the reference
    ``hr``, or on the input ``lr`` when ``hr`` is noise-free (its background sigma below
    :data:`NOISE_FREE` times that of ``lr``)."""
    st = fit_stretch(hr, "auto")
    if lr is not None:
        _, sig_hr = background_stats(hr)
        _, sig_lr = background_stats(lr)
        if np.nanmedian(sig_hr) < NOISE_FREE * np.nanmedian(sig_lr):
            st = scoring_stretch(lr, "auto")
    return st


def reference_metrics(sr: np.ndarray, hr: np.ndarray, lr: np.ndarray | None = None) -> dict:
    """``psnr_linear``, ``psnr_stretched`` and ``ssim_stretched`` of SR against HR.

    Parameters
    ----------
    sr, hr : ndarray, shape (H, W) or (C, H, W)
        Same shape, linear data in the same units.
    lr : ndarray, optional
        The input. Only used when HR is noise-free (a simulator's truth): an
        autostretch fitted on a noise-free background clips at the background itself and
        turns any noise into full-scale errors, so the stretch is then fitted on LR
        instead, as the pipeline and the trainer fit theirs.

    Notes
    -----
    One stretch (:func:`~.stretch.fit_stretch`, ``"auto"``) is fitted on HR and applied
    to both images; HR counts as noise-free when its background sigma is below
    ``NOISE_FREE`` times that of LR.
    """
    sr = np.asarray(sr, dtype=np.float32)
    hr = np.asarray(hr, dtype=np.float32)
    if sr.shape != hr.shape:
        raise ValueError(f"reference: shape {hr.shape} differs from the output's {sr.shape}")
    sr3 = sr if sr.ndim == 3 else sr[np.newaxis]
    hr3 = hr if hr.ndim == 3 else hr[np.newaxis]
    finite = hr3[np.isfinite(hr3)]
    peak = float(finite.max() - finite.min()) if finite.size else float("nan")
    st = reference_stretch(hr3, lr)
    s_sr = st.forward(np.nan_to_num(sr3, nan=0.0))
    s_hr = st.forward(np.nan_to_num(hr3, nan=0.0))
    return {
        "psnr_linear": as_float(psnr(sr3, hr3, peak)),
        "psnr_stretched": as_float(psnr(s_sr, s_hr, 1.0)),
        "ssim_stretched": as_float(ssim(s_sr, s_hr, 1.0)),
    }
