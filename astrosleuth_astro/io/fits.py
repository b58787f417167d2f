"""Reading and writing FITS images.

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

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ..errors import InputError
from .atomic import atomic_output

__all__ = [
    "FITS_SUFFIXES",
    "LoadedImage",
    "check_input_file",
    "is_fits_name",
    "open_fits_output",
    "output_header",
    "read_fits",
    "update_datarange",
    "write_fits",
]

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
_BLOCK_PIXELS = 1 << 20

#: Cards that describe the stored array, not the image: rebuilt for every output.
_STRUCTURAL = frozenset(
    {
        "SIMPLE",
        "XTENSION",
        "BITPIX",
        "NAXIS",
        "EXTEND",
        "PCOUNT",
        "GCOUNT",
        "GROUPS",
        "BZERO",
        "BSCALE",
        "BLANK",
        # Checksums of the input's bytes are wrong for any output: dropped, not recomputed.
        "CHECKSUM",
        "DATASUM",
    }
)
_NAXISN = re.compile(r"^NAXIS\d+$")

#: Magic numbers used to name what a non-FITS file is in error messages.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"%PDF", "a PDF document"),
    (b"SIMPLE", "FITS"),
)
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"


@dataclass
class LoadedImage:
    """An image read from disk, with what is needed to write a faithful output.

    Attributes
    ----------
    data : numpy.ndarray
        Native ``float32``, shape ``(C, H, W)`` with ``C`` in {1, 3}. Physical values for
        FITS (BZERO/BSCALE applied, BLANK pixels are NaN) and float TIFF; values in [0, 1]
        for display-referred integer images (raw value / ``normalised_by``).
    header : astropy.io.fits.Header
        Header of the image HDU (a copy; structural cards such as BITPIX/BZERO as read).
        An empty header for non-FITS inputs.
    path : pathlib.Path
        The file read.
    hdu_index : int
        Index of the HDU read (0 = primary); 0 for non-FITS inputs.
    format : str
        ``"fits"``, ``"tiff"``, ``"png"`` or ``"jpeg"``.
    display_referred : bool
        True for 8/16-bit integer TIFF/PNG/JPEG: a picture, not linear data.
    was_2d : bool
        The stored array was ``(H, W)``: write a mono result back as ``(H, W)``.
    source_dtype : numpy.dtype
        The stored sample type (for FITS the *physical* type astropy would give, e.g.
        ``uint16`` for BITPIX 16 with BZERO 32768).
    normalised_by : float or None
        For display-referred integer images, the dtype maximum the raw values were divided
        by (255, 65535); None when ``data`` holds the stored values.
    notes : tuple of str
        One-line remarks about the conversion (e.g. a dropped alpha channel).
    """

    data: np.ndarray
    header: fits.Header
    path: Path
    hdu_index: int = 0
    format: str = "fits"
    display_referred: bool = False
    was_2d: bool = True
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    normalised_by: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        """Number of channels ``C`` (1 or 3)."""
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        """Image height ``H`` in pixels."""
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        """Image width ``W`` in pixels."""
        return int(self.data.shape[2])

    def restore_shape(self, data: np.ndarray) -> np.ndarray:
        """Give a ``(C, H', W')`` result the input's layout: ``(H', W')`` if it was 2-D.

        Parameters
        ----------
        data : numpy.ndarray
            Output array shaped ``(C, H', W')``.

        Returns
        -------
        numpy.ndarray
            A view, ``(H', W')`` when the input was 2-D and ``C == 1``, else ``data``.
        """
        if self.was_2d and data.ndim == 3 and data.shape[0] == 1:
            return data[0]
        return data


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or None where it cannot be told."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX (Windows)
        try:
            import psutil  # optional

            return int(psutil.virtual_memory().total)
        except Exception:  # noqa: BLE001 - unknown: no check
            return None


def format_bytes(n: float) -> str:
    """``"1.5 GiB"``, or MiB below a tenth of a GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def _check_memory_to_read(path: str | os.PathLike[str], shape: tuple[int, ...]) -> None:
    """Refuse, before any allocation, an image whose float32 copy cannot fit in memory."""
    need = 4 * math.prod(shape)
    memory = physical_memory()
    if memory is not None and need > memory:
        size = f"{shape[-1]}x{shape[-2]}" + (f"x{shape[0]}" if len(shape) == 3 else "")
        raise InputError(
            f"{path}: image of {size} would need {format_bytes(need)} of memory to read, "
            f"more than this machine's {format_bytes(memory)}"
        )


def check_input_file(path: str | os.PathLike[str], nbytes: int = 16) -> bytes:
    """Check that ``path`` is a readable, non-empty regular file; return its first bytes.

    Parameters
    ----------
    path : str or path-like
        The input file.
    nbytes : int
        How many leading bytes to return (for format detection).

    Returns
    -------
    bytes
        The first ``nbytes`` bytes of the file (fewer if it is shorter).

    Raises
    ------
    InputError
        Missing file, a directory, no read permission, or an empty file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(nbytes)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({_oneline(exc)})") from None
    if not head:
        raise InputError(f"{path}: empty file, not an image")
    return head


def describe_magic(head: bytes) -> str | None:
    """Name the file type from its first bytes (``"a PNG image"``, ``"FITS"``...), or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(_GZIP_MAGIC):
        return "a gzip file"
    if head.startswith(_BZIP2_MAGIC):
        return "a bzip2 file"
    return None


def is_fits_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends with one of :data:`FITS_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def _check_fits_signature(path: str | os.PathLike[str], head: bytes) -> None:
    """Raise InputError unless the (decompressed) file starts with the SIMPLE card."""
    if head.startswith((_GZIP_MAGIC, _BZIP2_MAGIC)):
        import bz2
        import gzip

        opener = gzip.open if head.startswith(_GZIP_MAGIC) else bz2.open
        try:
            with opener(path, "rb") as fh:
                head = fh.read(16)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: corrupt compressed file ({_oneline(exc)})") from None
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
            raise InputError(f"{path}: corrupt FITS file ({_oneline(exc)})") from None
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
            raise InputError(f"{path}: corrupt FITS file ({_oneline(exc)})") from None
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
    rows = max(1, _BLOCK_PIXELS // width)
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
        raise InputError(f"{path}: corrupt FITS file ({_oneline(exc)})") from None
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
        _check_memory_to_read(path, shape)
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
        raise InputError(f"{path}: corrupt or truncated FITS data ({_oneline(exc)})") from None
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
    return head.startswith((_GZIP_MAGIC, _BZIP2_MAGIC, b"PK\x03\x04"))


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _check_output_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    ok = (len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))) and all(n > 0 for n in shape)
    if not ok:
        raise ValueError(f"FITS output must be (H, W) or (C, H, W) with C in {{1, 3}}, got {shape}")
    return shape


def output_header(header: fits.Header | None, shape: tuple[int, ...]) -> fits.Header:
    """Build the primary header of a float32 output of ``shape`` from an image header.

    Parameters
    ----------
    header : astropy.io.fits.Header or None
        The (already rescaled) header of the image. Not modified.
    shape : tuple of int
        Output array shape, ``(H, W)`` or ``(C, H, W)``.

    Returns
    -------
    astropy.io.fits.Header
        ``SIMPLE``, ``BITPIX = -32``, ``NAXIS``, ``NAXISn`` from ``shape``, then every
        other card of ``header`` in order. BZERO/BSCALE/BLANK (the output is float),
        XTENSION/PCOUNT/GCOUNT/EXTEND and the now-wrong CHECKSUM/DATASUM are removed.
    """
    shape = _check_output_shape(shape)
    clean = fits.Header() if header is None else header.copy(strip=False)
    for key in list(dict.fromkeys(clean.keys())):
        if key in _STRUCTURAL or _NAXISN.match(key):
            del clean[key]
    # Let astropy lay out the mandatory cards for a float32 array of this rank.
    hdu = fits.PrimaryHDU(data=np.zeros((1,) * len(shape), dtype=np.float32), header=clean)
    # Fix what can be fixed (as writeto would), so that both writers emit the same bytes;
    # cards astropy cannot fix are written as they were read.
    hdu.verify("silentfix+ignore")
    out = hdu.header.copy()
    for i, n in enumerate(reversed(shape), start=1):
        out[f"NAXIS{i}"] = n
    return out


def _data_range(data: np.ndarray) -> tuple[float, float] | None:
    """Finite min and max of ``data``, block by block (works on memory maps)."""
    lo, hi = math.inf, -math.inf
    flat = data.reshape(-1, data.shape[-1])
    rows = max(1, _BLOCK_PIXELS // data.shape[-1])
    for r0 in range(0, flat.shape[0], rows):
        block = np.asarray(flat[r0 : r0 + rows], dtype=np.float32)
        finite = block[np.isfinite(block)]
        if finite.size:
            lo = min(lo, float(finite.min()))
            hi = max(hi, float(finite.max()))
    if lo > hi:
        return None
    return lo, hi


def update_datarange(header: fits.Header, data: np.ndarray) -> None:
    """Recompute DATAMIN/DATAMAX in place, only if ``header`` already has them.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Modified in place. Cards keep their position and comment.
    data : numpy.ndarray
        The data that will be written. NaN/inf are ignored; when no value is finite the
        two cards are removed.
    """
    if "DATAMIN" not in header and "DATAMAX" not in header:
        return
    rng = _data_range(data)
    for key, index in (("DATAMIN", 0), ("DATAMAX", 1)):
        if key in header:
            if rng is None:
                del header[key]
            else:
                header[key] = rng[index]


def _as_float32_array(data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    _check_output_shape(arr.shape)
    return arr


def _is_fz(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".fz")


def write_fits(
    path: str | os.PathLike[str],
    data: np.ndarray,
    header: fits.Header | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a float32 FITS image atomically.

    Parameters
    ----------
    path : str or path-like
        Output file. ``*.gz`` is written gzip'ed; ``*.fz`` as a lossless (GZIP_2,
        unquantised) tile-compressed image extension after an empty primary.
    data : numpy.ndarray
        ``(H, W)`` or ``(C, H, W)`` with ``C`` in {1, 3}; written as float32 in this shape
        (pass ``(H, W)`` when the input was 2-D, see :meth:`LoadedImage.restore_shape`).
    header : astropy.io.fits.Header, optional
        Image header (normally the output of
        :func:`~astrosleuth_astro.io.wcs.rescale_header`). Structural cards are rebuilt
        from ``data`` (see :func:`output_header`); DATAMIN/DATAMAX, if present, are
        recomputed from ``data``.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        ``path`` exists without ``overwrite``, or its directory is missing or read-only.
    """
    arr = _as_float32_array(data)
    hdr = output_header(header, arr.shape)
    update_datarange(hdr, arr)
    with atomic_output(path, overwrite=overwrite) as tmp:
        if _is_fz(path):
            image_header = hdr.copy()
            for key in ("SIMPLE", "EXTEND"):
                image_header.remove(key, ignore_missing=True)
            comp = fits.CompImageHDU(
                arr, header=image_header, compression_type="GZIP_2", quantize_level=0.0
            )
            fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp, output_verify="silentfix+ignore")
        else:
            fits.PrimaryHDU(data=arr, header=hdr).writeto(tmp, output_verify="silentfix+ignore")
    return Path(path)


@contextlib.contextmanager
def open_fits_output(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    header: fits.Header | None = None,
    overwrite: bool = False,
) -> Iterator[np.ndarray]:
    """Create a float32 FITS output whose data is filled in place through a memory map.

    For outputs too large to hold in memory: the header is written, the file is extended
    to its final size (sparse zeros), and the data section is memory-mapped as big-endian
    ``'>f4'``. The caller fills it, e.g. one row of tiles at a time; the kernel writes the
    pages back, so memory stays flat. The file is committed atomically when the ``with``
    block ends without error and removed otherwise (``KeyboardInterrupt`` included).

    Parameters
    ----------
    path : str or path-like
        Output file. Names ending in ``.gz``/``.fz`` cannot be memory-mapped: an in-memory
        float32 array is yielded instead and written with :func:`write_fits` at the end.
    shape : tuple of int
        ``(H, W)`` or ``(C, H, W)`` with ``C`` in {1, 3}.
    header : astropy.io.fits.Header, optional
        As for :func:`write_fits`. DATAMIN/DATAMAX, if present, are recomputed from the
        filled data before the commit.
    overwrite : bool
        Replace an existing ``path``.

    Yields
    ------
    numpy.ndarray
        A writable array of ``shape`` (a ``numpy.memmap`` of dtype ``'>f4'``), initially
        all zeros. Do not keep references to it after the ``with`` block.

    Raises
    ------
    InputError
        As for :func:`~astrosleuth_astro.io.atomic.atomic_output`, before anything is
        written.

    Notes
    -----
    The result is byte-for-byte the file :func:`write_fits` writes for the same data and
    header.
    """
    shape = _check_output_shape(tuple(shape))
    hdr = output_header(header, shape)
    if str(path).lower().endswith((".gz", ".fz")):
        from .atomic import check_output_path

        check_output_path(path, overwrite=overwrite)  # fail before the work is done
        buffer = np.zeros(shape, dtype=np.float32)
        yield buffer
        write_fits(path, buffer, hdr, overwrite=overwrite)
        return

    header_bytes = hdr.tostring().encode("ascii")  # padded to a multiple of 2880
    nbytes = 4 * math.prod(shape)
    padded = -(-nbytes // 2880) * 2880
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header_bytes)
            # Sparse extension: zero pages cost no disk until written; float 0.0 and the
            # FITS padding are both zero bytes.
            fh.truncate(len(header_bytes) + padded)
        mm = np.memmap(tmp, dtype=">f4", mode="r+", offset=len(header_bytes), shape=shape)
        try:
            yield mm
            mm.flush()
            if "DATAMIN" in hdr or "DATAMAX" in hdr:
                update_datarange(hdr, mm)
                new_bytes = hdr.tostring().encode("ascii")
                if len(new_bytes) != len(header_bytes):  # cannot happen: same cards
                    raise RuntimeError("header size changed while updating DATAMIN/DATAMAX")
                with open(tmp, "r+b") as fh:
                    fh.write(new_bytes)
        finally:
            del mm
