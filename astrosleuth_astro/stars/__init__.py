"""Star detection, measurement and masks on linear data (photutils).

:func:`detect_stars` finds the stars of a linear image and measures each one; it returns a
:class:`StarDetection` whose ``catalog`` is an astropy :class:`~astropy.table.Table` and
whose ``segmentation`` holds every star's footprint. :func:`find_stars` returns the table
alone and :func:`star_mask` turns the footprints into a mask, dilated by a multiple of the
image's FWHM, at the input's or at an upscaled resolution.

Method
------
1. **Background and its RMS** from :class:`photutils.background.Background2D` (sigma-clipped
   median and MAD standard deviation per box, median-filtered and interpolated). The box
   is chosen from the image size and the PSF (about 8 FWHM, at most a third of the image);
   images too small for three boxes fall back to sigma-clipped global statistics. A second
   pass masks the stars found in the first, so bright stars do not lift the background.
2. **Detection by segmentation with deblending** (``detect_sources`` then
   ``deblend_sources`` on the background-subtracted image smoothed with a Gaussian of the
   PSF's FWHM). Segmentation was chosen over ``DAOStarFinder``/``IRAFStarFinder`` because
   it gives each star's *footprint* of any size and shape -- what masks, photometry of
   large stars and star protection need -- and because it keeps the stars a fixed-FWHM
   finder rejects with its sharpness/roundness cuts: saturated flat-topped stars, stars
   with diffraction spikes, and stars already damaged by a network (the ones a star-aware
   metric must see). Multi-threshold deblending separates blended neighbours. The
   threshold is ``nsigma`` times the noise of the *smoothed* image, measured on it (so
   correlated noise, as in an upscaled image, is handled too).
3. **Per star**: the centroid and FWHM from a least-squares fit of a circular Gaussian
   *integrated over each pixel* (so an undersampled star of 2 px FWHM is measured without
   the ~1/12 px^2 pixelisation bias of a point-sampled fit; saturated pixels and
   neighbours' footprints are left out of the fit); the flux by aperture photometry in a
   radius of ``APERTURE_FWHM`` FWHM with the local background from a sigma-clipped
   annulus (``ANNULUS_FWHM``, other stars masked); the peak above the local background;
   and a saturation flag (a known saturation level is reached, or the core is flat).

Coordinates are 0-based pixel centres (numpy convention). Fluxes are in data units times
pixels (the sum over the aperture of the background-subtracted values).

Modules, in import order: :mod:`.background` (sky and noise maps), :mod:`.psf_fit`
(pixel-integrated Gaussian fits), :mod:`.peaks` (segmentation, deblending, split stars),
:mod:`.detect` (:func:`detect_stars`), :mod:`.masks` (:func:`star_mask`), and
:mod:`.protect` (star protection on the upscaled image, ``--protect-stars``).
"""

from .background import luminance
from .detect import (
    ANNULUS_FWHM,
    APERTURE_FWHM,
    DILATE_FWHM,
    StarDetection,
    detect_stars,
    find_stars,
)
from .masks import native_weights, star_mask
from .peaks import count_peaks, split_height

__all__ = [
    "ANNULUS_FWHM",
    "APERTURE_FWHM",
    "DILATE_FWHM",
    "StarDetection",
    "count_peaks",
    "split_height",
    "detect_stars",
    "find_stars",
    "luminance",
    "native_weights",
    "star_mask",
]
