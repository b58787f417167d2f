"""The ``astrosleuth-astro`` command line (:func:`main`).

One module per group of subcommands: :mod:`.upscale`, :mod:`.models` (``models``,
``export-onnx``), :mod:`.tools` (``simulate``, ``stars``, ``metrics``, ``compare``,
``bench``, ``train``); :mod:`.main` builds the parser and turns errors into exit codes;
:mod:`.common` holds what they share.
"""

from .common import PROG
from .main import build_parser, entry, main

__all__ = ["PROG", "build_parser", "entry", "main"]
