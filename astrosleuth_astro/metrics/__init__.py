"""Star-aware metrics of a super-resolved image, and the image-quality measures of the package.

Modules, in data-flow order: :mod:`.image` (PSNR, SSIM, the scoring stretch, bicubic, the
reference keys: one implementation of each for the whole package), :mod:`.profiles`
(radial profiles, shadow depth), :mod:`.photometry` (local backgrounds, aperture sums),
:mod:`.sources` (LR/SR matching, hallucinated sources) and :mod:`.measure`
(:func:`measure` and :func:`compute_metrics`, which put them together; its notes define
every summary key).
"""

from __future__ import annotations

from .image import (
    BICUBIC_A,
    NOISE_FREE,
    REFERENCE_KEYS,
    SCORING_STRETCH,
    bicubic,
    psnr,
    psnr_from_mse,
    reference_metrics,
    reference_stretch,
    scoring_stretch,
    ssim,
    to_scoring_domain,
)
from .measure import (
    METRIC_KEYS,
    MIN_GEOMETRY_FWHM,
    StarMetrics,
    compute_metrics,
    infer_scale,
    measure,
)
from .profiles import (
    MIN_BIN_PIXELS,
    PROFILE_BIN_FWHM,
    PROFILE_RADII_FWHM,
    SHADOW_BKG_FWHM,
    SHADOW_ZONE_FWHM,
    radial_profile,
    shadow_depth,
)

__all__ = [
    "BICUBIC_A",
    "METRIC_KEYS",
    "MIN_BIN_PIXELS",
    "MIN_GEOMETRY_FWHM",
    "NOISE_FREE",
    "PROFILE_BIN_FWHM",
    "PROFILE_RADII_FWHM",
    "REFERENCE_KEYS",
    "SCORING_STRETCH",
    "SHADOW_BKG_FWHM",
    "SHADOW_ZONE_FWHM",
    "StarMetrics",
    "bicubic",
    "compute_metrics",
    "infer_scale",
    "measure",
    "psnr",
    "psnr_from_mse",
    "radial_profile",
    "reference_metrics",
    "reference_stretch",
    "scoring_stretch",
    "shadow_depth",
    "ssim",
    "to_scoring_domain",
]
