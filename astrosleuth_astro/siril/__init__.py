"""Siril adapter: upscale the image loaded in Siril (>= 1.4) through its ``sirilpy`` module.

:func:`upscale_current_image` does the work behind the Siril script
``siril_scripts/AstroSleuth_Upscale.py``; the script only collects options (dialog or
``pyscript`` arguments) and calls it with a connected ``sirilpy.SirilInterface``.

The contract followed here was read from sirilpy's source (``python_module/sirilpy`` in
Siril's tree, sirilpy 1.0.8 as shipped with Siril 1.4.0 up to 1.0.25 in Siril 1.4.4) and
from the C side that answers it (``src/io/siril_pythoncommands.c``,
``src/io/siril_pythonmodule.c``):

* ``get_image_pixeldata()`` returns a copy shaped ``(H, W)`` for one channel or planar
  ``(C, H, W)``, ``float32`` (Siril's [0, 1] convention) or ``uint16``; it raises
  ``NoImageError`` when no single image is loaded.
* ``get_image_fits_header()`` returns the header as one string: every card followed by
  ``"\\n"`` and a final ``"END"``; ``None`` when the image has no header.
* ``image_lock()`` claims Siril's processing thread; entering it raises
  ``ProcessingThreadBusyError`` or ``ImageDialogOpenError`` when it cannot.
  ``set_image_pixeldata()`` is refused by Siril outside it (it may change the image size,
  and accepts only ``float32`` or ``uint16``); ``cmd()`` must not be called inside it.
* ``set_image_metadata_from_header_string()`` replaces the header: Siril feeds the string,
  split on ``"\\n"``, card by card to cfitsio and rebuilds its keywords and WCS from it.
  The header is sent after the pixels, inside the same lock.
* ``undo_save_state(msg)`` keeps at most 70 bytes, which also become a HISTORY entry; it
  returns None when Siril runs headless (no undo there).
* ``update_progress(msg, fraction)`` accepts fractions in [0, 1] only (ValueError otherwise);
  ``reset_progress()`` clears the bar; ``log(msg, color)`` writes one line to the log.

Nothing in the core (``io``, ``stretch``, ``engine``, ``pipeline``, ``api``, ``models``)
imports this module, and this module never imports ``sirilpy``: it is handed the
interface object, and recognises sirilpy's exceptions by their class names.

Modules: :mod:`.header` (Siril's header text), :mod:`.pixels` (its arrays),
:mod:`.capabilities` (what the script asks before its dialog), :mod:`.adapter` (the
command).
"""

from ..pipeline import SCALES
from ..stretch import STRETCHES
from .adapter import UNDO_MAX_BYTES, SirilUpscaleError, SirilUpscaleReport, upscale_current_image
from .capabilities import choose_device, model_arch, model_needs_torch, star_protection_available
from .header import build_output_header, parse_siril_header, siril_header_string
from .pixels import from_pipeline_output

__all__ = [
    "SCALES",
    "STRETCHES",
    "UNDO_MAX_BYTES",
    "SirilUpscaleError",
    "SirilUpscaleReport",
    "build_output_header",
    "choose_device",
    "from_pipeline_output",
    "model_arch",
    "model_needs_torch",
    "parse_siril_header",
    "siril_header_string",
    "star_protection_available",
    "upscale_current_image",
]
