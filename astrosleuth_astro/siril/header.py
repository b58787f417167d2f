"""Siril's FITS header text in and out: parsed to an astropy Header, rebuilt for the
upscaled image by the package's one header builder, written back as text."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from astropy.io import fits

from ..api import upscaled_header
from ..errors import InputError
from ..io import output_header, update_datarange
from ..pipeline import UpscaleOptions
from ..stretch import Stretch


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
    # sirilpy 1.4 hands over the C string with its NUL after END: a card "END\x00" would
    # be kept (astropy warns), and Siril stops reading at it.
    text = text.split("\x00", 1)[0]
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
    _complete_dss_solution(out)
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


#: The keywords of a DSS plate solution (the plate's own pixel grid, centre and polynomials).
DSS_SOLUTION = re.compile(
    r"^(CNPIX[12]|[XY]PIXELSZ|PPO\d+|AMD[XY]\d+|PLT(RA[HMS]|DEC(SN|[DMS])|SCALE))$"
)


def _complete_dss_solution(header: fits.Header) -> None:
    """Hand Siril a DSS plate back in a form it keeps, and saves in a form it reads again.

    Siril builds a WCS from a DSS plate solution (``CNPIX``, ``AMD*``, ``PLT*``) when it
    loads the file, and hands the image over with ``XPIXSZ`` but without ``XPIXELSZ``
    (measured, Siril 1.4.4, issue 25). The DSS keywords cannot go back as they are:

    * without ``XPIXELSZ``, Siril drops the WCS at once;
    * with ``XPIXELSZ``, Siril keeps the WCS, but saves ``XPIXSZ`` instead, so the file it
      writes has the DSS keywords without a pixel size: Siril loading that file again loses
      the WCS, and astropy reads it with ``CRPIX`` = inf (with or without the plugin).

    So, when the header has the celestial FITS WCS that Siril built (rescaled exactly), the
    DSS plate-solution keywords are removed: the output keeps Siril's WCS, in Siril and in
    the file it saves. Without such a WCS, ``XPIXELSZ = XPIXSZ`` (rescaled, like ``CNPIX``)
    keeps the plate solution consistent.
    """
    if "CNPIX1" not in header:
        return
    if has_celestial_wcs(header):
        for key in [k for k in header if DSS_SOLUTION.match(k)]:
            del header[key]
        return
    if "XPIXELSZ" in header:
        return
    for dss, siril in (("XPIXELSZ", "XPIXSZ"), ("YPIXELSZ", "YPIXSZ")):
        value = header.get(siril, header.get("XPIXSZ"))
        if isinstance(value, int | float) and not isinstance(value, bool):
            header[dss] = (float(value), "[um] pixel size (DSS), = the rescaled XPIXSZ")


def siril_header_string(header: fits.Header) -> str:
    """Serialise ``header`` the way Siril exchanges headers: cards joined by ``"\\n"``, then END."""
    return header.tostring(sep="\n", endcard=True, padding=False)


def has_celestial_wcs(header: fits.Header) -> bool:
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    return any(c.startswith(("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT")) for c in ctypes)
