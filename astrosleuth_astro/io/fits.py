"""Reading FITS images (writing is :mod:`.fits_write`).

Reading (:func:`read_fits`) accepts what cameras, stackers and archives write: any 2-D image
HDU or a ``(3, H, W)`` colour cube (FITS axis order, as Siril writes colour), BITPIX 8, 16,
32, -32 and -64 with BZERO/BSCALE/BLANK applied, tile-compressed (``.fz``) and gzip'ed
files. The result is always a native ``float32`` ``(C, H, W)`` array of *physical* values.

Writing (:func:`write_fits`, :func:`open_fits_output`) always produces uncompressed
``float32`` (BITPIX = -32) data, except for names ending in ``.gz`` (gzip'ed FITS) or
``.fz`` (lossless tile compression). Outputs are created atomically
(:mod:`astrosleuth_astro.io.atomic`): either the complete file appears or nothing does.

Inputs are opened read-only and never modified.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ..errors import InputError
from .files import (
    BZIP2_MAGIC,
    GZIP_MAGIC,
    LoadedImage,
    check_input_file,
    check_memory_to_read,
    describe_magic,
    one_line,
)

__all__ = ["FITS_SUFFIXES", "is_fits_name", "read_fits"]


#: File-name endings read and written as FITS (compression suffixes included).
FITS_SUFFIXES = (
    ".fits",
    ".fit",
    ".fts",
    ".fits.gz",
    ".fit.gz",
    ".fts.gz",
    ".fits.fz",
    ".fit.fz",
    ".fts.fz",
    ".fz",
)


#: Pixels converted per block when scaling raw FITS data: bounds the float64 scratch
#: memory (8 MiB per block) whatever the image size.
BLOCK_PIXELS = 1 << 20


def is_fits_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends with one of :data:`FITS_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def _check_fits_signature(path: str | os.PathLike[str], head: bytes) -> None:
    """Raise InputError unless the (decompressed) file starts with the SIMPLE card."""
    if head.startswith((GZIP_MAGIC, BZIP2_MAGIC)):
        import bz2
        import gzip

        opener = gzip.open if head.startswith(GZIP_MAGIC) else bz2.open
        try:
            with opener(path, "rb") as fh:
                head = fh.read(16)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: corrupt compressed file ({one_line(exc)})") from None
        if not head:
            raise InputError(f"{path}: empty compressed file, not a FITS file")
    if not head.startswith(b"SIMPLE"):
        what = describe_magic(head)
        hint = f"; it looks like {what}" if what and what != "FITS" else ""
        raise InputError(f"{path}: not a FITS file (no SIMPLE card{hint})")


def _is_image_hdu(hdu: fits.hdu.base._BaseHDU) -> bool:
    return bool(hdu.is_image) and not isinstance(hdu, fits.GroupsHDU)


def _has_data(hdu: fits.hdu.base._BaseHDU) -> bool:
    naxis = int(hdu.header.get("NAXIS", 0))
    return naxis > 0 and all(int(hdu.header.get(f"NAXIS{i}", 0)) > 0 for i in range(1, naxis + 1))


def _select_hdu(
    path: str | os.PathLike[str], hdul: fits.HDUList, hdu: int | str | None
) -> tuple[int, fits.hdu.base._BaseHDU]:
    """Pick the HDU to read: the one named by ``hdu``, else the first image with data."""
    if hdu is None:
        n_tables = 0
        try:
            for index, candidate in enumerate(hdul):
                if _is_image_hdu(candidate):
                    if _has_data(candidate):
                        return index, candidate
                else:
                    n_tables += 1
        except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            # A later HDU is damaged and no image came before it.
            raise InputError(f"{path}: corrupt FITS file ({one_line(exc)})") from None
        if n_tables:
            raise InputError(f"{path}: no image HDU (only {n_tables} table HDU(s) and no image)")
        raise InputError(f"{path}: no image data in any HDU (all HDUs are empty)")

    # An explicit --hdu: an index (int or digits) or an EXTNAME.
    key: int | str = hdu
    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        key = int(hdu.strip())
    if isinstance(key, int):
        try:
            n = len(hdul)
        except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise InputError(f"{path}: corrupt FITS file ({one_line(exc)})") from None
        if not 0 <= key < n:
            raise InputError(f"{path}: --hdu {hdu}: no such HDU (the file has {n}: 0..{n - 1})")
        index = key
    else:
        try:
            index = hdul.index_of(key)
        except (KeyError, IndexError):
            names = [h.name for h in hdul]
            raise InputError(
                f"{path}: --hdu {hdu}: no HDU with that EXTNAME (names: {', '.join(names)})"
            ) from None
    chosen = hdul[index]
    if not _is_image_hdu(chosen):
        raise InputError(f"{path}: --hdu {hdu}: HDU {index} is a table, not an image")
    if not _has_data(chosen):
        raise InputError(f"{path}: --hdu {hdu}: HDU {index} has no image data")
    return index, chosen


def _check_shape(path: str | os.PathLike[str], index: int, shape: tuple[int, ...]) -> None:
    expected = "a 2-D image or a (3, H, W) cube"
    if len(shape) == 2:
        return
    if len(shape) == 3:
        if shape[0] in (1, 3):
            return
        raise InputError(
            f"{path}: HDU {index} is a cube with {shape[0]} planes {shape}; expected {expected}"
        )
    raise InputError(f"{path}: HDU {index} has {len(shape)}-D data {shape}; expected {expected}")


def _physical_dtype(bitpix: int, bscale: float, bzero: float) -> np.dtype:
    """The dtype astropy would give the scaled data (reported as ``source_dtype``)."""
    stored = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32}
    stored_dtype = np.dtype(stored.get(bitpix, np.float64))
    if bscale == 1 and bzero == 0:
        return stored_dtype
    if bscale == 1 and bitpix > 0:
        # The unsigned / signed-byte conventions (FITS standard, section 5.3).
        if bitpix == 8 and bzero == -128:
            return np.dtype(np.int8)
        if bitpix > 8 and bzero == 2 ** (bitpix - 1):
            return np.dtype(f"uint{bitpix}")
    return np.dtype(np.float32 if bitpix in (8, 16, -32) else np.float64)


def _to_physical_float32(
    raw: np.ndarray, bscale: float, bzero: float, blank: int | None
) -> np.ndarray:
    """Convert stored FITS values to native float32 physical values, block by block.

    ``raw`` is typically a big-endian memory map of the file: converting a block of rows
    at a time keeps the peak memory at the float32 result plus one small scratch block,
    where ``astype`` on the whole array would first build a float64 copy.
    """
    out = np.empty(raw.shape, dtype=np.float32)
    width = raw.shape[-1]
    src = raw.reshape(-1, width)
    dst = out.reshape(-1, width)
    rows = max(1, BLOCK_PIXELS // width)
    scaled = bscale != 1 or bzero != 0
    use_blank = blank is not None and raw.dtype.kind in "iu"
    for r0 in range(0, src.shape[0], rows):
        block = np.asarray(src[r0 : r0 + rows])
        if scaled or use_blank:
            # float64 then one rounding to float32: exact for 8/16-bit, correctly rounded
            # for 32-bit integers and BSCALE != 1.
            values = block.astype(np.float64)
            if bscale != 1:
                values *= bscale
            if bzero != 0:
                values += bzero
            if use_blank:
                values[block == blank] = np.nan
            with np.errstate(over="ignore"):  # beyond float32's range is +-inf, as intended
                dst[r0 : r0 + rows] = values
        else:
            with np.errstate(over="ignore"):
                dst[r0 : r0 + rows] = block  # byte swap + cast only
    return out


def read_fits(
    path: str | os.PathLike[str], hdu: int | str | None = None, *, memmap: bool = False
) -> LoadedImage:
    """Read a FITS image as native float32 ``(C, H, W)`` physical values.

    Parameters
    ----------
    path : str or path-like
        A FITS file (``.fits``, ``.fit``, ``.fts``; also gzip'ed ``.gz`` and
        tile-compressed ``.fz``).
    hdu : int or str, optional
        The HDU to read: an index (``0`` = primary, an int or a string of digits) or an
        EXTNAME (case-insensitive). By default the first image HDU with data: the primary,
        or the first extension when the primary is empty (compressed files, MEF files).
    memmap : bool
        For an uncompressed float32 HDU without BSCALE/BZERO (BITPIX -32, what Siril and
        most stacking tools write), return ``data`` as a read-only memory map of the file
        (big-endian ``'>f4'``, the same values) instead of a native copy: huge inputs then
        take no anonymous memory, and the upscaling pipeline reads them band by band.
        Other HDUs are converted as usual.

    Returns
    -------
    LoadedImage
        ``data`` is native float32 ``(1, H, W)`` (mono; ``was_2d`` true for a 2-D HDU,
        false for a ``(1, H, W)`` cube) or ``(3, H, W)`` (colour). BZERO/BSCALE are
        applied and integer BLANK pixels become NaN. ``display_referred`` is False.

    Raises
    ------
    InputError
        One line ``"{path}: problem"`` for a missing/unreadable file, a directory, an empty
        file, a file that is not FITS, a truncated or corrupt file, a file with only table
        HDUs or no image data, 1-D or 4-D data, a cube with 2 or 4+ planes, or a bad
        ``hdu``.

    Notes
    -----
    The file is opened read-only with memory mapping; the raw (unscaled) data is read
    through the map and converted block by block, so the peak memory is about the size of
    the float32 result. Tile-compressed and gzip'ed files are decompressed in memory.
    """
    head = check_input_file(path)
    _check_fits_signature(path, head)
    try:
        with warnings.catch_warnings():
            # Non-standard cards in the wild are tolerated; truncation is checked below.
            warnings.simplefilter("ignore", AstropyUserWarning)
            hdul = fits.open(
                path,
                mode="readonly",
                memmap=True,
                do_not_scale_image_data=True,
                lazy_load_hdus=True,
            )
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise InputError(f"{path}: corrupt FITS file ({one_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            return _read_hdu(path, hdul, hdu, memmap)
    finally:
        hdul.close()


def _read_hdu(
    path: str | os.PathLike[str], hdul: fits.HDUList, hdu: int | str | None, memmap: bool
) -> LoadedImage:
    index, chosen = _select_hdu(path, hdul, hdu)
    header = chosen.header
    naxis = int(header["NAXIS"])
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    _check_shape(path, index, shape)

    bitpix = int(header.get("BITPIX", -32))
    bscale = float(header.get("BSCALE", 1.0))
    bzero = float(header.get("BZERO", 0.0))
    blank = header.get("BLANK") if bitpix > 0 else None
    compressed = isinstance(chosen, fits.CompImageHDU)

    plain_file = not compressed and not _file_is_compressed(path)
    if plain_file:
        # A header whose data is cut off (or absent): astropy would only warn.
        needed = chosen.fileinfo()["datLoc"] + abs(bitpix) // 8 * math.prod(shape)
        actual = os.path.getsize(path)
        if actual < needed:
            raise InputError(
                f"{path}: truncated FITS file (HDU {index} needs {needed} bytes, "
                f"the file has {actual})"
            )
    mappable = memmap and plain_file and bitpix == -32 and bscale == 1 and bzero == 0
    if not mappable:
        check_memory_to_read(path, shape)
    try:
        if mappable:
            # Its own read-only map (astropy's closes with the file): values as stored.
            data = np.memmap(
                path, dtype=">f4", mode="r", offset=chosen.fileinfo()["datLoc"], shape=shape
            )
        else:
            raw = chosen.data
            if raw is None or tuple(raw.shape) != shape:
                raise InputError(f"{path}: HDU {index} has no readable image data")
            data = _to_physical_float32(raw, bscale, bzero, blank)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise InputError(f"{path}: corrupt or truncated FITS data ({one_line(exc)})") from None
    finally:
        raw = None  # release the memory map before the file is closed

    was_2d = data.ndim == 2
    if was_2d:
        data = data[np.newaxis]
    return LoadedImage(
        data=data,
        header=header.copy(),
        path=Path(path),
        hdu_index=index,
        format="fits",
        display_referred=False,
        was_2d=was_2d,
        source_dtype=_physical_dtype(bitpix, bscale, bzero),
        normalised_by=None,
    )


def _file_is_compressed(path: str | os.PathLike[str]) -> bool:
    """Whether the file as a whole is gzip/bzip2/zip compressed (astropy inflates it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((GZIP_MAGIC, BZIP2_MAGIC, b"PK\x03\x04"))
