"""Exact rescaling of FITS headers (WCS, SIP, pixel sizes) for an upscale by a factor s.

Geometry
--------
An upscale by ``s`` maps 0-based input pixel ``x`` to output ``(x + 0.5) * s - 0.5``: pixel
*edges* are preserved (the left edge of pixel 0, at -0.5, stays at -0.5). In FITS 1-based
coordinates ``p`` this is ``p' = (p - 0.5) * s + 0.5``. Every keyword below is changed so
that the output pixel ``p'`` has exactly the sky position of the input pixel ``p``:

``CRPIXj``
    ``CRPIX' = (CRPIX - 0.5) * s + 0.5`` (pixel axes 1 and 2; a colour axis 3 is unchanged).
``CDi_j``
    Columns ``j = 1, 2`` divided by ``s`` (``u' = p' - CRPIX' = s u``).
``CDELTi`` (with ``PCi_j`` or the old ``CROTA2`` form)
    ``CDELT1``, ``CDELT2`` divided by ``s``, ``PC``/``CROTA2`` unchanged. (If a PC matrix
    couples a spatial axis with a non-spatial one, its columns 1 and 2 are divided
    instead, which is equivalent in general.) Alternate descriptions (``CRPIX1A``...)
    are rescaled in the same way.
SIP (``A_p_q``, ``B_p_q``, ``AP_p_q``, ``BP_p_q``)
    Multiplied by ``s**(1 - p - q)``. Forward: the intermediate coordinate is
    ``CD (u + f(u, v))``; with ``u' = s u`` and ``CD' = CD / s`` we need
    ``f'(u', v') = s f(u'/s, v'/s)``, i.e. ``A'_pq = A_pq s**(1-p-q)``. Inverse: with
    ``U`` the undistorted pixel offset, ``u = U + g(U, V)`` and ``U' = s U``, the same
    algebra gives ``AP'_pq = AP_pq s**(1-p-q)`` (so ``AP_0_0`` scales by ``s``,
    ``AP_1_0`` is unchanged). ``A_ORDER``... are unchanged; ``A_DMAX``/``B_DMAX``
    (pixels) are multiplied by ``s``.
TPV / ``PVi_m`` / TPD
    Applied to intermediate world coordinates (after CD), so unchanged.
DSS plate solutions (``CNPIX1/2``, ``XPIXELSZ``/``YPIXELSZ``)
    Plate position in microns is ``(CNPIX1 + p - 0.5) * XPIXELSZ``: ``CNPIX`` is
    multiplied by ``s`` and ``XPIXELSZ``/``YPIXELSZ`` divided by ``s``. ``PPO*``/``AMD*``
    are in plate millimetres: unchanged.
IRAF ``LTVi``/``LTMi_j``
    ``logical = LTM physical + LTV``: ``LTM`` multiplied by ``s``,
    ``LTV' = s LTV + 0.5 - 0.5 s``.
Pixel sizes
    ``XPIXSZ``, ``YPIXSZ``, ``PIXSIZE``, ``PIXSIZE1``, ``PIXSIZE2`` (microns) and
    ``PIXSCALE``, ``PIXSCAL1``, ``PIXSCAL2``, ``SCALE``, ``SECPIX``, ``SECPIX1``,
    ``SECPIX2`` (arcsec/pixel) divided by ``s``. Siril derives the plate scale from
    ``FOCALLEN`` and ``XPIXSZ``; it divides the pixel size itself when it upscales (drizzle
    x2, "upscale at stacking") and leaves the binning alone, and so do we: ``XPIXSZ`` is
    already the effective (binned) pixel size in the MaxIm/Siril convention, and
    ``XBINNING``/``YBINNING`` describe how the camera read the sensor, a hardware fact an
    upscale does not change (a fractional binning would also break readers that expect an
    integer). ``FOCALLEN`` is unchanged.
``IMAGEW``/``IMAGEH`` (astrometry.net) and ``NAXIS1``/``NAXIS2``
    Multiplied by ``s`` and rounded (the FITS writer sets ``NAXISn`` from the data anyway).

Photometry
----------
The upscaled pixels keep the input's per-pixel level (surface brightness): binned back by
``s`` the output gives the input, so a star's aperture sum in the output is ``s**2`` times
its sum in the input. The calibration keywords follow, so that a magnitude or a physical
flux computed from the header and an aperture sum is the same before and after:

magnitude zero points (:data:`ZERO_POINT_KEYWORDS`: ``MAGZP``, ``MAGZPT``, ``ZP``, ...)
    ``+ 5 log10(s)`` (``m = ZP - 2.5 log10(sum)``).
flux per count (:data:`FLUX_PER_COUNT_KEYWORDS`: ``PHOTFLAM``, ``PHOTFNU``, ``NMGY``)
    divided by ``s**2``. ``PHOTZPT`` (HST, used with ``PHOTFLAM``) is unchanged.
counts of a reference source (:data:`COUNTS_PER_FLUX_KEYWORDS`: ``FLUXMAG0``)
    multiplied by ``s**2``.
unchanged, because a pixel value means what it meant
    ``BUNIT`` and ``FLUXCONV`` (Spitzer: MJy/sr per DN/s, a surface brightness), ``SATURATE``
    (the per-pixel level where the detector saturated), ``GAIN`` and ``RDNOISE`` (they
    convert and describe the units of a pixel value, which are unchanged; the output pixels
    are interpolated, so they are not independent Poisson samples), ``EXPTIME``.

Each rescaled calibration keyword gets one ``HISTORY`` card with the old and new value.

Removed: ``BITPIX``, ``BZERO``, ``BSCALE``, ``BLANK`` (the output is float32). Every other
card is kept, in order, with its comment, COMMENT and HISTORY included. DATAMIN/DATAMAX are
kept and recomputed by :func:`~astrosleuth_astro.io.fits_write.write_fits`; callers that do not
write through it should call :func:`~astrosleuth_astro.io.fits_write.update_datarange`.
Pixel-based distortion lookup tables (``CPDIS``/``D2IMDIS``, stored in other extensions)
are not supported and are left as they are.

Siril and EQUINOX
-----------------
Siril (checked with 1.0.6) writes ``CTYPE`` only when the header has ``EQUINOX``; without
it a Siril round trip turns the WCS into a linear one. For an equatorial (RA/DEC)
description without ``EQUINOX`` we therefore add one, without changing the meaning
(FITS WCS paper II defaults): with ``RADESYS`` ICRS/FK5, ``EQUINOX = 2000.0``; with neither
``RADESYS`` nor ``EQUINOX`` (which means ICRS), ``RADESYS = 'ICRS'`` and
``EQUINOX = 2000.0``; other frames (FK4...) are left alone.
"""

from __future__ import annotations

import math
import re
import string

from astropy.io import fits

__all__ = [
    "COUNTS_PER_FLUX_KEYWORDS",
    "FLUX_PER_COUNT_KEYWORDS",
    "PIXEL_SIZE_KEYWORDS",
    "ZERO_POINT_KEYWORDS",
    "add_provenance",
    "ensure_equinox",
    "rescale_header",
]

#: Keywords in microns or arcsec per pixel: divided by the scale factor.
PIXEL_SIZE_KEYWORDS = (
    "XPIXSZ",
    "YPIXSZ",
    "PIXSIZE",
    "PIXSIZE1",
    "PIXSIZE2",
    "PIXSCALE",
    "PIXSCAL1",
    "PIXSCAL2",
    "SCALE",
    "SECPIX",
    "SECPIX1",
    "SECPIX2",
)
#: Magnitude zero points (``m = ZP - 2.5 log10(counts)``): ``+ 5 log10(s)``. The names used
#: by SExtractor/SWarp and survey pipelines (MAGZP, MAGZPT), IRAF and AstroImageJ (ZP, ZPT,
#: MAGZERO, ZMAG, ZEROPT), ESO/VISTA (PHOTZP) and others.
ZERO_POINT_KEYWORDS = (
    "MAGZP",
    "MAGZPT",
    "MAGZERO",
    "ZP",
    "ZPT",
    "ZPMAG",
    "ZMAG",
    "ZEROPT",
    "ZEROPNT",
    "PHOTZP",
)
#: Physical flux per count in one pixel (HST PHOTFLAM/PHOTFNU, SDSS NMGY): divided by s**2.
FLUX_PER_COUNT_KEYWORDS = ("PHOTFLAM", "PHOTFNU", "NMGY")
#: Counts of a reference source (LSST FLUXMAG0: counts of a magnitude-0 star): times s**2.
COUNTS_PER_FLUX_KEYWORDS = ("FLUXMAG0",)
#: Keywords holding an image size in pixels: multiplied by the scale factor and rounded.
_SIZE_KEYWORDS = ("NAXIS1", "NAXIS2", "IMAGEW", "IMAGEH")
#: Storage keywords that do not apply to float32 output.
_STORAGE_KEYWORDS = ("BITPIX", "BZERO", "BSCALE", "BLANK")
#: The two pixel axes an upscale stretches (FITS numbering): x (NAXIS1) and y (NAXIS2).
_SPATIAL = (1, 2)

_ALT = "[A-Z]?"
_WCS_KEY = re.compile(
    rf"^(?:(?:CRPIX|CRVAL|CTYPE|CDELT|CUNIT|CROTA)\d+|(?:CD|PC)\d+_\d+|WCSAXES|WCSNAME)({_ALT})$"
)
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _alternates(header: fits.Header) -> list[str]:
    """Letters ('' for the primary) of every WCS description present in ``header``."""
    found = []
    for key in header:
        match = _WCS_KEY.match(key)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def _set(header: fits.Header, key: str, value: float, after: str | None = None) -> None:
    """Set ``key`` keeping its position and comment; insert it after ``after`` if new."""
    if key in header:
        header[key] = value
    elif after is not None and after in header:
        header.insert(after, (key, value), after=True)
    else:
        header[key] = value


def _scale_card(header: fits.Header, key: str, factor: float) -> None:
    value = header.get(key)
    if _is_number(value):
        header[key] = value * factor


def _rescale_linear(header: fits.Header, alt: str, s: float) -> None:
    """CRPIX and CD (or CDELT/PC/CROTA) of one WCS description."""
    # Only a description that involves the two image axes is touched (WCSNAMEa alone, or
    # a CUNIT3, is not one).
    spatial_keys = ("CRPIX", "CTYPE", "CRVAL", "CDELT")
    cd_or_pc = re.compile(rf"^(?:CD|PC)\d+_[12]{alt}$")
    if not any(f"{k}{j}{alt}" in header for k in spatial_keys for j in _SPATIAL) and not any(
        cd_or_pc.match(k) for k in header
    ):
        return
    # CRPIXj defaults to 0 when absent; the rescaled value then has to be written.
    anchor = None
    for j in _SPATIAL:
        key = f"CRPIX{j}{alt}"
        value = header.get(key, 0.0)
        if _is_number(value):
            _set(header, key, (value - 0.5) * s + 0.5, after=anchor)
        anchor = key

    cd = re.compile(rf"^CD(\d+)_(\d+){alt}$")
    pc = re.compile(rf"^PC(\d+)_(\d+){alt}$")
    cd_keys = [(k, cd.match(k)) for k in header if cd.match(k)]
    pc_keys = [(k, pc.match(k)) for k in header if pc.match(k)]
    if cd_keys:
        for key, m in cd_keys:
            if int(m.group(2)) in _SPATIAL:
                _scale_card(header, key, 1.0 / s)
        # CDELT is ignored next to CD but some software shows it as the pixel scale.
        for i in _SPATIAL:
            _scale_card(header, f"CDELT{i}{alt}", 1.0 / s)
        return

    mixed = any(
        (int(m.group(1)) in _SPATIAL) != (int(m.group(2)) in _SPATIAL)
        and _is_number(header[key])
        and header[key] != 0
        for key, m in pc_keys
    )
    if not mixed:
        # x_i = CDELT_i sum_j PC_ij u_j: with PC block-diagonal, dividing CDELT_i of the
        # spatial axes divides the spatial columns. CDELT defaults to 1.
        anchor = f"CRPIX2{alt}"
        for i in _SPATIAL:
            key = f"CDELT{i}{alt}"
            value = header.get(key, 1.0)
            if _is_number(value):
                _set(header, key, value / s, after=anchor)
            anchor = key
    else:
        for key, m in pc_keys:
            if int(m.group(2)) in _SPATIAL:
                _scale_card(header, key, 1.0 / s)
        for j in _SPATIAL:
            if f"PC{j}_{j}{alt}" not in header:  # diagonal defaults to 1
                _set(header, f"PC{j}_{j}{alt}", 1.0 / s, after=f"CRPIX2{alt}")


def _rescale_sip(header: fits.Header, s: float) -> None:
    for key in list(header.keys()):
        m = _SIP_KEY.match(key)
        if m:
            p, q = int(m.group(2)), int(m.group(3))
            _scale_card(header, key, s ** (1 - p - q))
    for key in ("A_DMAX", "B_DMAX"):
        _scale_card(header, key, s)


def _rescale_iraf_ltm(header: fits.Header, s: float) -> None:
    keys = ("LTV1", "LTV2", "LTM1_1", "LTM1_2", "LTM2_1", "LTM2_2")
    if not any(k in header for k in keys):
        return
    for i in _SPATIAL:
        key = f"LTV{i}"
        value = header.get(key, 0.0)
        if _is_number(value):
            _set(header, key, s * value + 0.5 - 0.5 * s)
    for i in _SPATIAL:
        for j in (1, 2):
            key = f"LTM{i}_{j}"
            if key in header:
                _scale_card(header, key, s)
            elif i == j:  # identity default
                _set(header, key, s)


def _rescale_dss(header: fits.Header, s: float) -> None:
    for key in ("CNPIX1", "CNPIX2"):
        _scale_card(header, key, s)
    for key in ("XPIXELSZ", "YPIXELSZ"):
        _scale_card(header, key, 1.0 / s)


def _rescale_sizes(header: fits.Header, s: float) -> None:
    for key in _SIZE_KEYWORDS:
        value = header.get(key)
        if _is_number(value):
            header[key] = int(round(value * s))
    for key in PIXEL_SIZE_KEYWORDS:
        _scale_card(header, key, 1.0 / s)


def _rescale_photometry(header: fits.Header, s: float) -> None:
    """Calibration keywords for aperture sums that grow by ``s**2`` (module docstring)."""
    rules = [(k, "zp", 5.0 * math.log10(s)) for k in ZERO_POINT_KEYWORDS]
    rules += [(k, "mul", 1.0 / (s * s)) for k in FLUX_PER_COUNT_KEYWORDS]
    rules += [(k, "mul", s * s) for k in COUNTS_PER_FLUX_KEYWORDS]
    for key, kind, amount in rules:
        old = header.get(key)
        if not _is_number(old) or not math.isfinite(old):
            continue
        new = old + amount if kind == "zp" else old * amount
        header[key] = new
        # One card (72 characters): the reason is in the README table "FITS in and out".
        header.add_history(
            f"astrosleuth-astro: {key} {old:.8g} -> {new:.8g} (aperture sums x{s * s:.6g})"
        )


def ensure_equinox(header: fits.Header) -> fits.Header:
    """Make ``EQUINOX`` explicit for RA/DEC descriptions, without changing their meaning.

    Siril writes ``CTYPE`` only when ``EQUINOX`` is present (see the module docstring).
    For each WCS description (primary and alternates) with an ``RA--``/``DEC-`` axis and
    no ``EQUINOXa``:

    * ``RADESYSa`` ICRS or FK5: add ``EQUINOXa = 2000.0`` (for FK5 the value of the old
      ``EPOCH`` keyword when present, as wcslib reads it);
    * no ``RADESYSa``: with ``EPOCH`` present add ``EQUINOX = EPOCH`` (its meaning to
      wcslib), else add ``RADESYSa = 'ICRS'`` and ``EQUINOXa = 2000.0`` (ICRS is the
      default when both are absent);
    * any other frame: unchanged.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Modified in place.

    Returns
    -------
    astropy.io.fits.Header
        ``header``.
    """
    for alt in _alternates(header):
        ctypes = [str(header.get(f"CTYPE{j}{alt}", "")).upper() for j in range(1, 4)]
        if not any(c.startswith(("RA--", "DEC-")) for c in ctypes):
            continue
        equinox_key, radesys_key = f"EQUINOX{alt}", f"RADESYS{alt}"
        if equinox_key in header:
            continue
        radesys = header.get(radesys_key)
        if radesys is None and alt == "":
            radesys = header.get("RADECSYS")  # pre-2002 spelling, still read by wcslib
            if radesys is not None:
                radesys_key = "RADECSYS"
        epoch = header.get("EPOCH") if alt == "" else None
        epoch = epoch if _is_number(epoch) else None
        comment = "Equinox of celestial coordinate system"
        if radesys is None:
            if epoch is not None:
                value, after = float(epoch), "EPOCH"
                header.insert(after, (equinox_key, value, comment), after=True)
                continue
            anchor = _last_key(header, alt)
            header.insert(anchor, (radesys_key, "ICRS", "Equatorial coordinate system"), after=True)
            header.insert(radesys_key, (equinox_key, 2000.0, comment), after=True)
            continue
        frame = str(radesys).strip().upper()
        if frame == "ICRS":
            header.insert(radesys_key, (equinox_key, 2000.0, comment), after=True)
        elif frame == "FK5":
            value = float(epoch) if epoch is not None else 2000.0
            header.insert(radesys_key, (equinox_key, value, comment), after=True)
    return header


def _last_key(header: fits.Header, alt: str) -> str:
    """The last card of the WCS description ``alt`` (insertion point for new cards)."""
    last = None
    for key in header:
        m = _WCS_KEY.match(key)
        if m and m.group(1) == alt:
            last = key
    assert last is not None  # only called for descriptions that exist
    return last


def rescale_header(header: fits.Header, scale: float) -> fits.Header:
    """Return a copy of ``header`` describing the image upscaled by ``scale``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the input image (not modified).
    scale : float
        Upscale factor ``s > 0`` (1, 2, 3, 4 or any non-integer value). Output pixel
        ``(x + 0.5) * s - 0.5`` (0-based) has the sky position of input pixel ``x``.

    Returns
    -------
    astropy.io.fits.Header
        The rescaled copy; see the module docstring for every keyword handled. With
        ``scale == 1`` only the storage keywords (BITPIX, BZERO, BSCALE, BLANK) are removed
        and EQUINOX made explicit; all values are bit-identical.

    Raises
    ------
    ValueError
        If ``scale`` is not a finite positive number.
    """
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    out = header.copy()
    for key in _STORAGE_KEYWORDS:
        out.remove(key, ignore_missing=True, remove_all=True)
    if s != 1.0:
        for alt in _alternates(out):
            _rescale_linear(out, alt, s)
        _rescale_sip(out, s)
        _rescale_iraf_ltm(out, s)
        _rescale_dss(out, s)
        _rescale_sizes(out, s)
        _rescale_photometry(out, s)
    ensure_equinox(out)
    return out


def _fits_text(value: object) -> str:
    """Printable ASCII for a FITS string value (FITS forbids anything else)."""
    text = str(value)
    return "".join(c if c in string.printable and c not in "\t\n\r\x0b\x0c" else "?" for c in text)


def add_provenance(
    header: fits.Header,
    *,
    model: str,
    sha256: str,
    scale: float,
    stretch: str,
    version: str,
    precision: str | None = None,
    flux: str | None = None,
) -> fits.Header:
    """Record how the image was made: keywords ``ASTSL*`` and one HISTORY card.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Modified **in place** (and returned). Existing ``ASTSL*`` keywords (an image that
        was upscaled before) are updated where they are; the HISTORY card is appended.
    model : str
        Model name (``ASTSLMOD``).
    sha256 : str
        Hex SHA-256 of the model weights (``ASTSLSHA``; 64 characters fill the card, so it
        carries no comment).
    scale : float
        Upscale factor (``ASTSLSCL``).
    stretch : str
        Stretch kind used, e.g. ``"mtf"`` (``ASTSLSTR``).
    version : str
        Package version (``ASTSLVER``).
    precision : str, optional
        Network arithmetic actually used, ``"fp32"``, ``"bf16"`` or ``"fp16"``
        (``ASTSLPRC``): reduced precision changes the output slightly, so it is recorded.
    flux : str, optional
        Flux conservation mode (:mod:`astrosleuth_astro.conserve`): ``"sources"`` or
        ``"all"`` are recorded as ``ASTSLFLX``; ``"off"`` removes an ``ASTSLFLX`` left by
        an earlier upscale; None leaves the header as it is.

    Returns
    -------
    astropy.io.fits.Header
        ``header``.
    """
    scale_value: int | float = int(scale) if float(scale).is_integer() else float(scale)
    cards = [
        ("ASTSLMOD", _fits_text(model), "astrosleuth-astro model"),
        ("ASTSLSHA", _fits_text(sha256), None),
        ("ASTSLSCL", scale_value, "astrosleuth-astro upscale factor"),
        ("ASTSLSTR", _fits_text(stretch), "astrosleuth-astro stretch"),
        ("ASTSLVER", _fits_text(version), "astrosleuth-astro version"),
    ]
    if precision:
        cards.append(("ASTSLPRC", _fits_text(precision), "astrosleuth-astro network precision"))
    if flux and flux != "off":
        cards.append(("ASTSLFLX", _fits_text(flux), "astrosleuth-astro flux conserved per pixel"))
    elif flux == "off":
        header.remove("ASTSLFLX", ignore_missing=True, remove_all=True)
    for key, value, comment in cards:
        if comment is None:
            if key in header:
                header[key] = value
            else:
                header.append((key, value))
        else:
            header[key] = (value, comment)
    header.add_history(
        _fits_text(
            # Short, so that it usually fits one card (72 characters); the SHA is in ASTSLSHA.
            f"astrosleuth-astro {version}: upscaled x{scale_value}, model {model}, "
            f"stretch {stretch}"
        )
    )
    return header
