"""astrosleuth-astro: FITS-faithful super-resolution of linear astronomical images.

The public API:

- :func:`upscale` - numpy arrays, CCDData/NDData or FITS HDUs in, the same kind out;
- :func:`upscale_file` - one image file into another, header and WCS kept;
- :func:`get_backend` - build a model backend once and reuse it;
- :class:`UpscaleOptions` - every upscale option in one checked object.
"""

from ._version import __version__
from .api import UpscaleReport, get_backend, upscale, upscale_file
from .errors import AstroSleuthError, InputError, ModelError, OptionError
from .pipeline import UpscaleOptions

__all__ = [
    "AstroSleuthError",
    "InputError",
    "ModelError",
    "OptionError",
    "UpscaleOptions",
    "UpscaleReport",
    "__version__",
    "get_backend",
    "upscale",
    "upscale_file",
]
