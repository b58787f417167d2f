"""The Siril command: :func:`upscale_current_image` on the image loaded in Siril
(through sirilpy), with Siril's undo, log and progress bar.

The whole adapter is described in :mod:`astrosleuth_astro.siril`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import pipeline
from ..api import backend_for
from ..errors import AstroSleuthError, InputError, OptionError
from ..pipeline import UpscaleOptions
from ..stretch import fit_stretch
from .header import build_output_header, has_celestial_wcs, parse_siril_header, siril_header_string
from .pixels import check_pixels, from_pipeline_output

#: sirilpy's limit for ``undo_save_state`` messages, in UTF-8 bytes.
UNDO_MAX_BYTES = 70


#: Prefix of every line this module writes to the Siril log.
LOG_PREFIX = "AstroSleuth"
#: Prefix of every error line (red in Siril; a fixed string to grep in siril-cli's output).
ERROR_PREFIX = f"{LOG_PREFIX}: ERROR:"


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
    stretch_reason : str
        Why ``auto`` read the image as display-referred (``"none"``); empty otherwise.
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
    stretch_reason: str = ""


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
    message = f"{ERROR_PREFIX} {_describe(exc)}{suffix}. The image was not changed."
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


def _restore(siril: Any, pixels: np.ndarray, header_text: str | None) -> bool:
    """Put the original image back after a failed write (still inside the lock)."""
    try:
        siril.set_image_pixeldata(pixels)
        if header_text:
            # As it came, without the C string's NUL after END (see parse_siril_header).
            siril.set_image_metadata_from_header_string(header_text.split("\x00", 1)[0])
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

    On any error one line goes to the Siril log (red, starting with ``AstroSleuth: ERROR:``),
    the image is left as it was, and :class:`SirilUpscaleError` is raised. ``cmd()`` is
    never called.

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
            pixels = check_pixels(siril.get_image_pixeldata())
            header_text = siril.get_image_fits_header()
            header = parse_siril_header(header_text)

            chw = pixels[np.newaxis] if pixels.ndim == 2 else pixels
            work = chw.astype(np.float32)  # a copy: ``pixels`` stays the pristine original
            fitted = fit_stretch(work, options.stretch, linear_first=True)
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
        wcs=has_celestial_wcs(header),
        star_protection=options.protect_stars,
        seconds=round(time.perf_counter() - start, 3),
        stretch_reason=fitted.reason,
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
    if fitted.reason:
        # auto read the image as a stretched picture: say so, with this script's option.
        _log(siril, f"{LOG_PREFIX}: {siril_option_names(fitted.reason)}", "SALMON")
    hint = undo_pixel_size_hint(siril, header)
    if hint:
        _log(siril, hint)
    return report


def siril_option_names(text: str) -> str:
    """``text`` with the command line's stretch flag spelled as the script's option."""
    return text.replace("--stretch mtf", "-stretch=mtf (Stretch: mtf in the dialog)")


def undo_pixel_size_hint(siril: Any, header: Any) -> str | None:
    """The Siril commands that give the pixel size back after an Undo, or None.

    Siril 1.4's Undo restores the pixels, the WCS and the focal length, not the pixel size
    (``XPIXSZ``/``YPIXSZ`` stay at the upscaled value; measured in Siril 1.4.4's GUI, and
    sirilpy has no hook on Undo). ``update_key XPIXSZ value`` sets it again (measured).
    Headless runs have no Undo: None.
    """
    try:
        if siril.is_cli():
            return None
    except Exception:  # noqa: BLE001 - an interface without is_cli: assume the GUI
        pass
    commands = [
        f"update_key {key} {header[key]:.10g}"
        for key in ("XPIXSZ", "YPIXSZ")
        if isinstance(header.get(key), int | float) and not isinstance(header.get(key), bool)
    ]
    if not commands:
        return None
    return (
        f"{LOG_PREFIX}: Undo does not restore the pixel size; after an Undo, type in "
        f"Siril's command line: {' then '.join(commands)}"
    )
