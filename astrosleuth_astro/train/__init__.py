"""The bundled trainer (config-driven; BasicSR-style separation of concerns).

``python -m astrosleuth_astro.train CONFIG.toml [--resume]``

Modules: :mod:`.config` (TOML -> dataclasses), :mod:`.data` (sources, the pair bank,
the validation set), :mod:`.degradations`, :mod:`.losses`, :mod:`.loop`, :mod:`.export`.
The inference core never imports this package; it imports the core.
"""

from __future__ import annotations

from .config import Config, load_config

__all__ = ["Config", "load_config", "train"]


def train(*args, **kwargs):
    """Lazy alias of :func:`astrosleuth_astro.train.loop.train` (keeps torch import lazy)."""
    from .loop import train as _train

    return _train(*args, **kwargs)
