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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from . import pipeline
from .api import backend_for, upscaled_header
from .errors import AstroSleuthError, InputError, OptionError
from .io import output_header, update_datarange
from .pipeline import SCALES, UpscaleOptions
from .stretch import STRETCHES, Stretch, fit_stretch

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

#: sirilpy's limit for ``undo_save_state`` messages, in UTF-8 bytes.
UNDO_MAX_BYTES = 70
#: Prefix of every line this module writes to the Siril log.
LOG_PREFIX = "AstroSleuth"
#: NEXT conditioning options, forwarded to the backend (see ``make_backend``).
NEXT_OPTIONS = (
    "star_strength",
    "detail_strength",
    "spikes_strength",
    "cond_strength",
    "color_matching",
)


class SirilUpscaleError(AstroSleuthError):
    """:func:`upscale_current_image` failed; its message is already in the Siril log.

    The image loaded in Siril is unchanged. Callers should not log the message again.
    """


@dataclass
class SirilUpscaleReport:
    """What :func:`upscale_current_image` did.

    Attributes
    ----------
    model, sha256, backend, device : str
        The network used and where it ran.
    scale : int
    stretch : str
        The stretch kind that was fitted (``"mtf"``, ``"asinh"`` or ``"none"``).
    shape_in, shape_out : tuple of int
        Pixel array shapes as sirilpy gives them (``(H, W)`` or ``(C, H, W)``).
    dtype : str
        ``"float32"`` or ``"uint16"``, the same in and out.
    wcs : bool
        The header had a celestial WCS, which was rescaled.
    star_protection : bool
    seconds : float
    """

    model: str
    sha256: str
    backend: str
    device: str
    scale: int
    stretch: str
    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]
    dtype: str
    wcs: bool
    star_protection: bool
    seconds: float


# --------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------


def parse_siril_header(text: str | None) -> fits.Header:
    """Parse the header string of ``get_image_fits_header()``.

    Parameters
    ----------
    text : str or None
        Cards separated by ``"\\n"`` and ending with ``END`` (Siril's format; cards may
        have their trailing blanks stripped). None or ``""`` (no header) gives an empty
        header.

    Returns
    -------
    astropy.io.fits.Header

    Raises
    ------
    InputError
        The text cannot be parsed as FITS cards.
    """
    if not text:
        return fits.Header()
    lines: list[str] = []
    for i, line in enumerate(text.replace("\r\n", "\n").split("\n")):
        if line.rstrip() == "END":
            break
        # Siril appends the cards of following non-image HDUs (tables); they do not
        # describe this image.
        if i > 0 and line.startswith("XTENSION="):
            break
        if line.strip():
            lines.append(line[:80])
    try:
        return fits.Header.fromstring("\n".join(lines), sep="\n")
    except (ValueError, KeyError, IndexError) as exc:
        raise InputError(f"Siril image header: not a valid FITS header ({exc})") from None


def build_output_header(
    header: fits.Header,
    shape: tuple[int, ...],
    dtype: np.dtype | type,
    *,
    stretch: Stretch,
    net: Any,
    options: UpscaleOptions,
    data: np.ndarray | None = None,
) -> fits.Header:
    """The complete header of the upscaled image, for ``set_image_metadata_from_header_string``.

    The header of every other output (:func:`astrosleuth_astro.api.upscaled_header`: the
    WCS and pixel sizes rescaled, provenance), laid out as Siril writes a FITS file.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the image before the upscale (not modified).
    shape : tuple of int
        The new pixel array shape, ``(H, W)`` or ``(C, H, W)``.
    dtype : numpy dtype
        ``float32`` or ``uint16``: BITPIX (and BZERO/BSCALE for uint16) describe it, as in a
        FITS file Siril writes.
    stretch : Stretch
        The fitted stretch (``ASTSLSTR``).
    net : Backend
        The network (model name, weights sha256 and precision are recorded).
    options : UpscaleOptions
        The options of the run (scale, flux conservation).
    data : ndarray, optional
        The new pixels: DATAMIN/DATAMAX are recomputed from them when present.

    Returns
    -------
    astropy.io.fits.Header
        SIMPLE, BITPIX, NAXIS, NAXISn first, then every card of ``header`` with the WCS
        (TAN, SIP, CD or CDELT/PC) and pixel sizes rescaled exactly, and EQUINOX made
        explicit for RA/DEC frames (Siril keeps CTYPE only when EQUINOX is present).
    """
    out = output_header(upscaled_header(header, stretch, net, options), tuple(shape))
    if data is not None:
        update_datarange(out, data)
    if np.dtype(dtype) == np.uint16:
        # Unsigned 16-bit as FITS stores it (and Siril writes it): BITPIX 16, BZERO 32768.
        out["BITPIX"] = (16, "number of bits per data pixel")
        last_axis = f"NAXIS{len(shape)}"
        out.insert(
            last_axis, ("BZERO", 32768, "offset data range to that of unsigned short"), after=True
        )
        out.insert("BZERO", ("BSCALE", 1, "default scaling factor"), after=True)
    return out


def siril_header_string(header: fits.Header) -> str:
    """Serialise ``header`` the way Siril exchanges headers: cards joined by ``"\\n"``, then END."""
    return header.tostring(sep="\n", endcard=True, padding=False)


def _has_celestial_wcs(header: fits.Header) -> bool:
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    return any(c.startswith(("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT")) for c in ctypes)


# --------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------


def _check_pixels(pixels: Any) -> np.ndarray:
    """Validate what ``get_image_pixeldata()`` returned."""
    if pixels is None:
        raise InputError("Siril image: no pixel data (is an image loaded?)")
    arr = np.asarray(pixels)
    if arr.dtype not in (np.float32, np.uint16):
        raise InputError(
            f"Siril image: unexpected pixel type {arr.dtype} (expected float32 or uint16)"
        )
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] in (1, 3)):
        if min(arr.shape[-2:]) < 1:
            raise InputError(f"Siril image: empty image of shape {arr.shape}")
        return arr
    raise InputError(f"Siril image: unexpected shape {arr.shape} (expected (H, W) or (3, H, W))")


def from_pipeline_output(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Convert a float32 pipeline result back to the dtype Siril gave us.

    Parameters
    ----------
    result : ndarray
        The upscaled image, float32, in the input's units.
    like : ndarray
        The input as read from Siril (``uint16``, or ``float32`` in Siril's [0, 1] range).

    Returns
    -------
    ndarray
        ``uint16``: rounded to the nearest integer and clipped to [0, 65535] (NaN, which a
        uint16 input cannot produce, becomes 0). ``float32``: clipped to [0, 1], widened to
        the input's own range when it already went beyond (Siril accepts such data), NaN
        kept. C-contiguous, same number of dimensions as ``like``.
    """
    out = np.asarray(result, dtype=np.float32)
    if out.ndim == 3 and like.ndim == 2:
        out = out[0]
    elif out.ndim == 2 and like.ndim == 3:
        out = out[np.newaxis]
    if like.dtype == np.uint16:
        rounded = np.rint(np.nan_to_num(out, nan=0.0, posinf=65535.0, neginf=0.0))
        return np.ascontiguousarray(np.clip(rounded, 0, 65535).astype(np.uint16))
    finite = like[np.isfinite(like)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.ascontiguousarray(np.clip(out, lo, hi), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Models, devices and star protection
# --------------------------------------------------------------------------------------


def _registry_entry(model: Any):
    if not isinstance(model, str):
        return None
    from .errors import ModelError
    from .models.registry import get_entry

    try:
        return get_entry(model)
    except ModelError:
        return None


def model_arch(model: Any) -> str | None:
    """Architecture of a registry model (``"fast"``, ``"rrdb"``, ``"next"``), or a guess.

    For a weights file the name decides: ``"next"`` when it contains "next", else None
    (unknown until loaded). Used by the dialog to show NEXT's conditioning sliders.
    """
    arch = getattr(model, "arch", None)
    if isinstance(arch, str) and arch:
        return arch
    entry = _registry_entry(model)
    if entry is not None:
        return entry.arch
    if isinstance(model, (str, Path)) and "next" in Path(str(model)).name.lower():
        return "next"
    return None


def model_needs_torch(model: Any) -> bool:
    """Whether running ``model`` needs PyTorch (no ONNX file available for it)."""
    if callable(model) and hasattr(model, "model_name"):
        return False  # an already built backend
    entry = _registry_entry(model)
    if entry is not None:
        return entry.onnx_path is None and entry.onnx_url is None
    path = Path(str(model))
    if not path.is_file():
        return False  # an unknown name or a missing file: loading it reports that
    return path.suffix.lower() != ".onnx"


def choose_device(
    use_gpu: bool,
    model: Any = "default",
    *,
    torch_helper: Any = None,
    onnx_helper: Any = None,
) -> tuple[str, str, str]:
    """Map the script's CPU/GPU choice onto this package's ``backend`` and ``device``.

    Parameters
    ----------
    use_gpu : bool
        The user asked for the GPU.
    model : str, path or Backend
        The model to run (ONNX needs an ONNX file of it).
    torch_helper, onnx_helper : optional
        ``sirilpy.TorchHelper()`` and ``sirilpy.ONNXHelper()`` instances; their
        ``is_torch_installed()``/``get_torch_device(use_gpu=True)`` and
        ``get_execution_providers_ordered(ai_gpu_acceleration=True)`` decide.

    Returns
    -------
    (backend, device, note)
        ``backend`` in {"auto", "torch", "onnx"}, ``device`` in {"cpu", "cuda", "mps"}, and a
        one-line note for the log.
    """
    if not use_gpu:
        return "auto", "cpu", "running on the CPU"
    if torch_helper is not None and torch_helper.is_torch_installed():
        dev = torch_helper.get_torch_device(use_gpu=True)
        kind = str(getattr(dev, "type", dev) or "cpu").split(":")[0]
        if kind in ("cuda", "mps"):
            return "torch", kind, f"running on the GPU with PyTorch ({kind})"
    if onnx_helper is not None and not model_needs_torch(model):
        providers = list(
            onnx_helper.get_execution_providers_ordered(ai_gpu_acceleration=True) or []
        )
        if "CUDAExecutionProvider" in providers:
            return "onnx", "cuda", "running on the GPU with onnxruntime (CUDA)"
    return (
        "auto",
        "cpu",
        "no GPU usable by PyTorch (CUDA, MPS) or onnxruntime (CUDA); running on the CPU",
    )


def star_protection_available() -> bool:
    """Whether this version has star protection (for the Siril script, which may be newer
    than the installed package)."""
    return "protect_stars" in UpscaleOptions.names()


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def _log(siril: Any, message: str, color: str = "DEFAULT") -> None:
    """One line in the Siril log; a failing log call never hides the real outcome."""
    try:
        try:
            from sirilpy import LogColor  # only inside Siril: colours are sirilpy enums
        except ImportError:
            siril.log(message)
        else:
            siril.log(message, getattr(LogColor, color, LogColor.DEFAULT))
    except Exception:  # noqa: BLE001 - the log is best effort
        pass


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _describe(exc: BaseException) -> str:
    """One clear line for the Siril log, without the traceback."""
    names = _class_names(exc)
    detail = " ".join(str(exc).split())
    if "ProcessingThreadBusyError" in names:
        return (
            "Siril is busy with another processing task; wait for it to finish "
            "(or stop it) and run AstroSleuth again"
        )
    if "ImageDialogOpenError" in names:
        return "an image processing dialog is open in Siril; close it and run AstroSleuth again"
    if "NoImageError" in names:
        return "no image is loaded in Siril; open an image (not a sequence) first"
    if (
        isinstance(exc, MemoryError)
        or "OutOfMemoryError" in names
        or "out of memory" in detail.lower()
    ):
        return (
            "out of memory while upscaling; try a smaller scale, crop the image, "
            "or close other images and programs"
        )
    if isinstance(exc, OptionError):  # as the script's arguments spell it: -scale=7
        return exc.named(f"-{exc.keyword}", sep="=")
    if isinstance(exc, AstroSleuthError):
        return detail
    if "SirilError" in names:
        return f"Siril reported an error: {detail or type(exc).__name__}"
    return f"unexpected error: {type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _fail(siril: Any, exc: BaseException, suffix: str = "") -> SirilUpscaleError:
    message = f"{LOG_PREFIX}: {_describe(exc)}{suffix}. The image was not changed."
    _log(siril, message, "RED")
    return SirilUpscaleError(message)


def _progress_callback(siril: Any, label: str) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        fraction = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
        siril.update_progress(f"{label}: tile {done}/{total}", fraction)

    return progress


def _stage_callback(siril: Any, label: str) -> Callable[[str], None]:
    """``stage=`` for the pipeline: the star stages of star protection get their own line
    in Siril's progress bar (they can take longer than the tiles)."""

    def stage(name: str) -> None:
        # Star repair runs after the last tile: the bar stays full while it does.
        siril.update_progress(f"{label}: {name}", 1.0 if name == "repairing stars" else 0.0)

    return stage


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def _restore(siril: Any, pixels: np.ndarray, header_text: str | None) -> bool:
    """Put the original image back after a failed write (still inside the lock)."""
    try:
        siril.set_image_pixeldata(pixels)
        if header_text:
            siril.set_image_metadata_from_header_string(header_text)
    except Exception:  # noqa: BLE001 - reported by the caller
        return False
    return True


def upscale_current_image(
    siril: Any,
    *,
    model: Any = "default",
    scale: int = 4,
    stretch: str = "auto",
    luminance_only: bool = False,
    protect_stars: bool = False,
    protect_strength: float | None = None,
    conserve_flux: bool | str | None = None,
    backend: str = "auto",
    device: str = "cpu",
    tile: int | None = None,
    batch_size: int = 4,
    star_strength: float | None = None,
    detail_strength: float | None = None,
    spikes_strength: float | None = None,
    cond_strength: float | None = None,
    color_matching: bool | None = None,
) -> SirilUpscaleReport:
    """Upscale the image loaded in Siril, in place, keeping its units, dtype and astrometry.

    Steps:

    1. check the options and build the network (a missing model fails here, before the
       image is touched);
    2. claim Siril's processing thread (``with siril.image_lock():``), so nothing else
       changes the image meanwhile; a busy thread or an open image dialog fails here;
    3. read the pixels (``get_image_pixeldata``) and the header (``get_image_fits_header``);
    4. run the CLI's pipeline: invertible stretch fitted on the whole image, tiled network
       (progress in Siril's bar), exact inverse, clipped residual, star protection when
       asked; convert back to the input's dtype (uint16 rounded and clipped);
    5. save an undo state, then send the pixels (``set_image_pixeldata``) and the complete
       rescaled header (``set_image_metadata_from_header_string``: WCS, SIP, pixel size,
       EQUINOX, provenance), both inside the lock; if either is refused, the original
       pixels and header are sent back;
    6. reset the progress bar and log a one-line summary.

    On any error one line goes to the Siril log (red), the image is left as it was, and
    :class:`SirilUpscaleError` is raised. ``cmd()`` is never called.

    Parameters
    ----------
    siril : sirilpy.SirilInterface
        A connected interface.
    model : str, path or Backend
        Registry name (``"default"``, ``"AstroSleuthNEXT"``...), weights/ONNX file, or a
        backend from :func:`astrosleuth_astro.get_backend`.
    scale : {1, 2, 3, 4}
    stretch : {"auto", "mtf", "asinh", "none"}
    luminance_only : bool
        Colour images: network luminance, chroma upsampled from the input.
    protect_stars : bool
        Star protection (passed to the pipeline when this version has it; an error
        otherwise). ``protect_strength`` sets its strength.
    protect_strength : float, optional
    conserve_flux : {None, False, True, "off", "sources", "all"}
        Give input pixels their flux back exactly (:mod:`astrosleuth_astro.conserve`);
        ``True`` means ``"sources"``.
    backend : {"auto", "torch", "onnx"}
    device : {"cpu", "cuda", "mps"}
        See :func:`choose_device` for the script's CPU/GPU switch.
    tile, batch_size : int
        Tiling (input pixels; default the model's recommended tile) and tiles per forward.
    star_strength, detail_strength, spikes_strength, cond_strength, color_matching
        NEXT conditioning options (NEXT models only).

    Returns
    -------
    SirilUpscaleReport

    Raises
    ------
    SirilUpscaleError
        Anything went wrong; the message is already in the Siril log.
    """
    start = time.perf_counter()
    try:
        next_opts = {
            name: value
            for name, value in zip(
                NEXT_OPTIONS,
                (star_strength, detail_strength, spikes_strength, cond_strength, color_matching),
                strict=True,
            )
            if value is not None
        }
        options = UpscaleOptions(
            model=model,
            scale=scale,
            stretch=stretch,
            backend=backend,
            device=device,
            tile=tile,
            batch_size=batch_size,
            luminance_only=luminance_only,
            protect_stars=protect_stars,
            protect_strength=1.0 if protect_strength is None else protect_strength,
            conserve_flux=conserve_flux,
            model_options=next_opts,
        )
        if hasattr(siril, "is_image_loaded") and not siril.is_image_loaded():
            raise InputError("no image is loaded in Siril; open an image (not a sequence) first")
        net = backend_for(options)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one log line
        raise _fail(siril, exc) from exc

    model_name = str(getattr(net, "model_name", "custom"))
    s = options.scale
    label = f"{LOG_PREFIX} x{s}"
    written = False
    try:
        with siril.image_lock():
            pixels = _check_pixels(siril.get_image_pixeldata())
            header_text = siril.get_image_fits_header()
            header = parse_siril_header(header_text)

            chw = pixels[np.newaxis] if pixels.ndim == 2 else pixels
            work = chw.astype(np.float32)  # a copy: ``pixels`` stays the pristine original
            fitted = fit_stretch(work, options.stretch)
            siril.update_progress(f"{label}: starting", 0.0)
            result = pipeline.upscale_array(
                work,
                net,
                options.replace(stretch=fitted),
                progress=_progress_callback(siril, label),
                stage=_stage_callback(siril, label),
            )
            new_pixels = from_pipeline_output(result.data, pixels)
            new_header = build_output_header(
                header,
                new_pixels.shape,
                new_pixels.dtype,
                stretch=fitted,
                net=net,
                options=options,
                data=new_pixels,
            )
            new_text = siril_header_string(new_header)
            undo = _truncate_utf8(
                f"{LOG_PREFIX} x{s} ({model_name}, {fitted.kind})", UNDO_MAX_BYTES
            )
            siril.undo_save_state(undo)
            try:
                siril.set_image_pixeldata(new_pixels)
                siril.set_image_metadata_from_header_string(new_text)
                written = True
            except Exception as exc:  # noqa: BLE001
                if _restore(siril, pixels, header_text):
                    raise _fail(siril, exc) from exc
                raise _fail(
                    siril, exc, "; the original image could not be put back: use Undo"
                ) from exc
    except SirilUpscaleError:
        raise
    except Exception as exc:  # noqa: BLE001
        if written:  # only releasing the lock failed, after a complete write
            message = f"{LOG_PREFIX}: {_describe(exc)}"
            _log(siril, message, "SALMON")
        else:
            raise _fail(siril, exc) from exc
    finally:
        try:
            siril.reset_progress()
        except Exception:  # noqa: BLE001 - cosmetic
            pass

    report = SirilUpscaleReport(
        model=model_name,
        sha256=str(getattr(net, "sha256", "")),
        backend=str(getattr(net, "name", "custom")),
        device=str(getattr(net, "device", device)),
        scale=s,
        stretch=fitted.kind,
        shape_in=tuple(pixels.shape),
        shape_out=tuple(new_pixels.shape),
        dtype=str(pixels.dtype),
        wcs=_has_celestial_wcs(header),
        star_protection=options.protect_stars,
        seconds=round(time.perf_counter() - start, 3),
    )
    size_in = "x".join(str(n) for n in pixels.shape[::-1][:2])
    size_out = "x".join(str(n) for n in new_pixels.shape[::-1][:2])
    extras = [f"stretch {fitted.kind}", f"{report.backend} on {report.device}"]
    if report.wcs:
        extras.append("WCS rescaled")
    if report.star_protection:
        extras.append("stars protected")
    if luminance_only and pixels.ndim == 3 and pixels.shape[0] == 3:
        extras.append("luminance only")
    _log(
        siril,
        f"{LOG_PREFIX}: upscaled x{s} with {model_name}: {size_in} -> {size_out} "
        f"{report.dtype} ({', '.join(extras)}) in {report.seconds:.1f} s",
        "GREEN",
    )
    return report
