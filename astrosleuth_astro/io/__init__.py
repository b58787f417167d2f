"""Image input/output: FITS, TIFF, PNG and JPEG, exact header/WCS rescaling, atomic writes.

Everything here works on ``float32`` arrays shaped ``(C, H, W)`` with ``C`` in {1, 3}
(FITS axis order). Inputs are never modified; outputs appear complete or not at all.
"""

from __future__ import annotations

from .atomic import atomic_output, check_not_same, check_output_path
from .files import LoadedImage, check_input_file
from .fits import FITS_SUFFIXES, read_fits
from .fits_write import open_fits_output, output_header, update_datarange, write_fits
from .formats import IMAGE_FORMATS, format_from_name, read_image, write_image
from .wcs import PIXEL_SIZE_KEYWORDS, add_provenance, ensure_equinox, rescale_header

__all__ = [
    "FITS_SUFFIXES",
    "IMAGE_FORMATS",
    "PIXEL_SIZE_KEYWORDS",
    "LoadedImage",
    "add_provenance",
    "atomic_output",
    "check_input_file",
    "check_not_same",
    "check_output_path",
    "ensure_equinox",
    "format_from_name",
    "open_fits_output",
    "output_header",
    "read_fits",
    "read_image",
    "rescale_header",
    "update_datarange",
    "write_fits",
    "write_image",
]
