"""astrosleuth-astro: FITS-faithful super-resolution of linear astronomical images."""

from ._version import __version__

__all__ = ["__version__"]
