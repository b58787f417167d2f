"""Where the package keeps what it downloads (models, NEXT conditioning vectors).

The bottom layer: numpy-free and import-free, so both ``archs`` and ``models`` can ask
for the folder without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Folder for downloaded models.

    ``$ASTROSLEUTH_CACHE`` when set, else ``platformdirs.user_cache_dir("astrosleuth-astro")``.
    The folder is not created here.
    """
    env = os.environ.get("ASTROSLEUTH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs  # deferred: only needed when a path is asked for

    return Path(platformdirs.user_cache_dir("astrosleuth-astro"))
