"""The bundled trainer (config-driven; BasicSR-style separation of concerns).

``astrosleuth-astro train CONFIG.toml|--preset NAME [--resume] [--steps N] [--out DIR]``
(or ``python -m astrosleuth_astro.train ...``).

Modules, in data-flow order: :mod:`.config` (TOML -> dataclasses), :mod:`.data` (sources,
the pair bank, the validation set) and :mod:`.degradations` (HR -> LR observations);
:mod:`.starmask` (star maps of the targets); the losses :mod:`.losses` (pixel),
:mod:`.starloss`, :mod:`.perceptual`, :mod:`.discriminator`, combined by
:mod:`.objective`; :mod:`.loop` (optimisation, EMA, validation, checkpoints);
:mod:`.export` (safetensors, ONNX, registry entry); :mod:`.command` (the CLI).
The inference core never imports this package; it imports the core.
"""

from __future__ import annotations

from .config import Config, load_config

__all__ = ["Config", "load_config", "train"]


def train(*args, **kwargs):
    """Lazy alias of :func:`astrosleuth_astro.train.loop.train` (keeps torch import lazy)."""
    from .loop import train as _train

    return _train(*args, **kwargs)
