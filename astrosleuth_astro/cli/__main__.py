"""``python -m astrosleuth_astro.cli``."""

from .main import entry

entry()
