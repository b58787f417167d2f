"""Reading and writing FITS, TIFF, PNG and JPEG images through one interface.

:func:`read_image` recognises the format from the file's first bytes, checked against its
extension; :func:`write_image` picks the output format from the output extension.

Sample types and ranges
-----------------------
* FITS and float TIFF hold *linear* data and are read as stored (physical values).
* 8- and 16-bit integer TIFF, PNG and JPEG are pictures (``display_referred``): they are
  read as float32 in their own units (0-255 or 0-65535, ``normalised_by`` holding the full
  scale) and written back in the same bit depth (divided by that full scale, clipped,
  rounded). A picture upscaled to FITS therefore holds 0-255 (or 0-65535) values, the
  same numbers as the API gives for the same 8-bit array. Other integer TIFF sample types
  (int16, uint32...) are read as their float32 values, like FITS.

Layouts: ``(H, W)`` greyscale, ``(H, W, 3)`` interleaved RGB and (TIFF) planar
``(3, H, W)`` RGB are read; the result is always ``(C, H, W)``.

Alpha channels (RGBA, grey+alpha, palette images with transparency) are dropped: the
networks and the FITS output have no alpha, and astronomical pictures rarely need one. The
colour values under transparent pixels are kept as stored, and the drop is recorded in
:attr:`LoadedImage.notes` (and logged) so a front end can tell the user.

An EXIF orientation tag (cameras' JPEGs) is applied, so the data is the picture as viewers
show it; the output carries no EXIF and is therefore displayed the same way.

Pillow reads 16-bit RGB(A) PNG files at 8 bits and cannot write them; the 16-bit path here
decodes them at full precision (Pillow's own decoder run twice, for the high and the low
bytes) and writes them with a small PNG encoder (zlib, filter "Up").
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import InputError
from .atomic import atomic_output
from .files import LoadedImage, check_input_file, describe_magic, one_line
from .fits import FITS_SUFFIXES, read_fits
from .fits_write import write_fits

__all__ = ["IMAGE_FORMATS", "format_from_name", "read_image", "write_image"]

log = logging.getLogger(__name__)

#: Output extension -> format name.
IMAGE_FORMATS = {
    **dict.fromkeys(FITS_SUFFIXES, "fits"),
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: JPEG quality for 8-bit output; 4:4:4 chroma keeps colour stars sharp.
JPEG_QUALITY = 95

#: EXIF orientation -> numpy operation on an (H, W, ...) array (what Pillow's
#: ImageOps.exif_transpose does to the picture).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def format_from_name(path: str | os.PathLike[str]) -> str | None:
    """Format implied by a file name: ``"fits"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or None."""
    name = str(path).lower()
    # Longest suffix first, so that ".fits.gz" wins over ".gz"-less matches.
    for suffix in sorted(IMAGE_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return IMAGE_FORMATS[suffix]
    return None


def _sniff(head: bytes) -> str | None:
    """Format from the first bytes: fits/tiff/png/jpeg/compressed, or None."""
    if head.startswith(b"SIMPLE"):
        return "fits"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"\x1f\x8b", b"BZh")):
        return "compressed"
    return None


def read_image(
    path: str | os.PathLike[str], hdu: int | str | None = None, *, memmap: bool = False
) -> LoadedImage:
    """Read a FITS, TIFF, PNG or JPEG image as float32 ``(C, H, W)``.

    Parameters
    ----------
    path : str or path-like
        The image. Its content decides the reader; a name that promises FITS
        (``.fits``, ``.fit``, ``.fts``, with ``.gz``/``.fz``) must hold FITS.
    hdu : int or str, optional
        FITS only: the HDU to read (see :func:`~astrosleuth_astro.io.fits.read_fits`).
    memmap : bool
        FITS only: memory-map uncompressed float32 data instead of copying it (see
        :func:`~astrosleuth_astro.io.fits.read_fits`); ignored for other formats.

    Returns
    -------
    LoadedImage
        See the module docstring for value ranges and layouts.

    Raises
    ------
    InputError
        One line ``"{path}: problem"``: unreadable file, unknown or mismatched format,
        unsupported layout or sample type, ``hdu`` given for a non-FITS file, and every
        FITS problem listed in :func:`~astrosleuth_astro.io.fits.read_fits`.
    """
    head = check_input_file(path, 32)
    content = _sniff(head)
    named = format_from_name(path)
    if content in ("fits", "compressed") or named == "fits":
        # read_fits checks the signature and explains what a mis-named file really is.
        return read_fits(path, hdu=hdu, memmap=memmap)
    if content is None:
        what = describe_magic(head)
        extra = f" ({what})" if what else ""
        raise InputError(
            f"{path}: unrecognised image format{extra}; expected FITS, TIFF, PNG or JPEG"
        )
    if hdu is not None:
        raise InputError(f"{path}: --hdu applies to FITS files only, this is a {content} file")
    notes: list[str] = []
    if named is not None and named != content:
        notes.append(f"the file is {content.upper()} despite its name; read as {content.upper()}")
    if content == "tiff":
        image = _read_tiff(path)
    else:
        image = _read_pillow(path, content)
    image.notes = tuple(notes) + image.notes
    for note in image.notes:
        log.info("%s: %s", path, note)
    return image


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


def _finish(
    path: str | os.PathLike[str],
    hwc: np.ndarray,
    fmt: str,
    notes: list[str],
) -> LoadedImage:
    """(H, W) or (H, W, C) stored samples -> LoadedImage with float32 (C, H, W)."""
    dtype = hwc.dtype
    if dtype.kind == "b":
        raise InputError(f"{path}: 1-bit {fmt.upper()} images are not supported")
    if dtype.kind not in "uif":
        raise InputError(f"{path}: unsupported {fmt.upper()} sample type {dtype}")
    was_2d = hwc.ndim == 2
    chw = hwc[np.newaxis] if was_2d else np.moveaxis(hwc, -1, 0)
    display = dtype in (np.uint8, np.uint16)
    # Pictures keep their units (0-255, 0-65535): one meaning on every route.
    norm = float(np.iinfo(dtype).max) if display else None
    data = np.empty(chw.shape, dtype=np.float32)
    data[...] = chw
    return LoadedImage(
        data=data,
        header=fits.Header(),
        path=Path(path),
        hdu_index=0,
        format=fmt,
        display_referred=display,
        was_2d=was_2d,
        source_dtype=np.dtype(dtype),
        normalised_by=norm,
        notes=tuple(notes),
    )


def _drop_alpha(
    path: str | os.PathLike[str], hwc: np.ndarray, fmt: str, notes: list[str]
) -> np.ndarray:
    """Reduce (H, W, S) samples to (H, W) grey or (H, W, 3) RGB, dropping alpha."""
    if hwc.ndim == 2:
        return hwc
    samples = hwc.shape[-1]
    if samples == 1:
        return hwc[..., 0]
    if samples == 3:
        return hwc
    if samples in (2, 4):
        notes.append("alpha channel dropped (colour values under transparency kept)")
        return hwc[..., 0] if samples == 2 else hwc[..., :3]
    raise InputError(
        f"{path}: {fmt.upper()} image with {samples} samples per pixel; expected grey or RGB"
    )


def _read_tiff(path: str | os.PathLike[str]) -> LoadedImage:
    import tifffile

    notes: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            page = tif.pages[0]
            photometric = getattr(page.photometric, "name", str(page.photometric))
            arr = series.asarray()
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: corrupt or unsupported TIFF file ({one_line(exc)})") from None
    # Drop length-1 axes other than Y/X (e.g. 'IYX' with one page).
    keep = [i for i, a in enumerate(axes) if a in "YX" or arr.shape[i] != 1]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if photometric in ("SEPARATED", "CIELAB", "ICCLAB", "ITULAB", "PALETTE"):
        raise InputError(
            f"{path}: TIFF photometric {photometric} is not supported; use grey or RGB"
        )
    if axes == "YX":
        hwc = arr
    elif axes == "YXS":
        hwc = arr
    elif axes in ("SYX", "CYX") and arr.shape[0] <= 4:
        hwc = np.moveaxis(arr, 0, -1)  # planar configuration
    else:
        raise InputError(
            f"{path}: TIFF with axes {axes!r} and shape {arr.shape} (multi-page or "
            "multi-dimensional); expected one grey or RGB image"
        )
    hwc = _drop_alpha(path, hwc, "tiff", notes)
    return _finish(path, np.ascontiguousarray(hwc), "tiff", notes)


def _png_ihdr(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise InputError(f"{path}: corrupt PNG file (no IHDR chunk)")
    return head[24], head[25]


def _read_png16_rgb(path: str | os.PathLike[str], im: object) -> np.ndarray | None:
    """Full-precision samples of a 16-bit RGB/RGBA PNG that Pillow reduces to 8 bits.

    Pillow unfilters the rows with the right pixel stride, then keeps the high byte of
    each big-endian sample ("RGB;16B"). Decoding a second time with the little-endian
    raw mode ("RGB;16L") keeps the *other* byte, the low one. Returns None if the
    Pillow internals differ from what this expects.
    """
    from PIL import Image

    try:
        tiles = list(im.tile)
        rawmode = tiles[0].args if isinstance(tiles[0].args, str) else tiles[0].args[0]
        if rawmode not in ("RGB;16B", "RGBA;16B"):
            return None
        low_mode = rawmode.replace(";16B", ";16L")
        hi = np.asarray(im)  # decodes with the original tiles
        with Image.open(path) as im2:
            im2.tile = [
                t._replace(args=low_mode if isinstance(t.args, str) else (low_mode, *t.args[1:]))
                for t in im2.tile
            ]
            lo = np.asarray(im2)
    except Exception:  # noqa: BLE001 - any surprise: fall back to Pillow's 8 bits
        return None
    if hi.shape != lo.shape or hi.dtype != np.uint8:
        return None
    return (hi.astype(np.uint16) << 8) | lo


def _read_pillow(path: str | os.PathLike[str], fmt: str) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    notes: list[str] = []
    try:
        with Image.open(path) as im:
            arr = None
            if fmt == "png":
                depth, colour_type = _png_ihdr(path)
                if depth == 16 and colour_type in (2, 6):
                    arr = _read_png16_rgb(path, im)
                    if arr is None:
                        notes.append("16-bit RGB PNG read at 8-bit precision")
                        arr = np.asarray(im.convert("RGBA" if colour_type == 6 else "RGB"))
            if arr is None:
                arr = _pillow_samples(path, im, notes)
            # After decoding: for PNG, getexif() loads the image (and consumes its tiles).
            orientation = im.getexif().get(0x0112, 1)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{path}: corrupt {fmt.upper()} file ({one_line(exc)})") from None
    if fmt == "png" and arr.dtype == np.int32:
        arr = arr.astype(np.uint16)  # mode "I" from a 16-bit grey PNG
    hwc = _drop_alpha(path, arr, fmt, notes)
    if orientation in _ORIENT:
        hwc = _ORIENT[orientation](hwc)
        notes.append(f"EXIF orientation {orientation} applied")
    return _finish(path, np.ascontiguousarray(hwc), fmt, notes)


def _pillow_samples(path: str | os.PathLike[str], im: object, notes: list[str]) -> np.ndarray:
    """Samples of a Pillow image as (H, W) or (H, W, S) uint8/uint16."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.uint16)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("P", "PA"):
        has_alpha = "transparency" in im.info or mode == "PA"
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(f"{path}: 32-bit integer {im.format} images are not supported")
        return arr.astype(np.uint16)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        notes.append(f"{mode} image converted to RGB")
        return np.asarray(im.convert("RGB"))
    raise InputError(f"{path}: unsupported {im.format} image mode {mode}")


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


def _to_uint(hwc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """[0, 1] floats -> clipped, rounded integers of ``dtype`` (NaN -> 0)."""
    top = float(np.iinfo(dtype).max)
    scaled = np.nan_to_num(hwc.astype(np.float32, copy=False), nan=0.0) * np.float32(top)
    return np.rint(np.clip(scaled, 0.0, top)).astype(dtype)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png16(hwc: np.ndarray) -> bytes:
    """Encode a uint16 ``(H, W)`` grey or ``(H, W, 3)`` RGB image as a 16-bit PNG.

    Pillow cannot write 16-bit RGB PNG. Every row uses PNG filter 2 ("Up": difference
    with the row above, modulo 256), which numpy computes for the whole image at once.

    Parameters
    ----------
    hwc : numpy.ndarray
        uint16, ``(H, W)`` or ``(H, W, 3)``.

    Returns
    -------
    bytes
        The PNG file.
    """
    if hwc.dtype != np.uint16 or not (hwc.ndim == 2 or (hwc.ndim == 3 and hwc.shape[2] == 3)):
        raise ValueError(
            f"encode_png16 wants uint16 (H, W) or (H, W, 3), got {hwc.dtype} {hwc.shape}"
        )
    height, width = hwc.shape[:2]
    colour_type = 0 if hwc.ndim == 2 else 2
    rows = np.ascontiguousarray(hwc, dtype=">u2").view(np.uint8).reshape(height, -1)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter requires
    filtered = np.empty((height, up.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[:, 1:] = up
    compressed = zlib.compress(filtered.tobytes(), 6)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    step = 1 << 20  # 1 MiB IDAT chunks
    idat = b"".join(
        _png_chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)
    )
    return _PNG_MAGIC + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")


def _as_chw(path: str | os.PathLike[str], data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(
            f"{path}: image data must be (H, W) or (C, H, W), C in {{1, 3}}; got {arr.shape}"
        )
    return arr


def write_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    header: fits.Header | None = None,
    *,
    like: LoadedImage | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an image atomically in the format named by the output extension.

    Parameters
    ----------
    path : str or path-like
        Output file: ``.fits``/``.fit``/``.fts`` (also ``.gz``, ``.fz``), ``.tif``/
        ``.tiff``, ``.png``, ``.jpg``/``.jpeg``.
    data : numpy.ndarray
        ``(C, H, W)`` (C in {1, 3}) or ``(H, W)`` float data.
    header : astropy.io.fits.Header, optional
        FITS header (normally from :func:`~astrosleuth_astro.io.wcs.rescale_header`); used
        for FITS output only.
    like : LoadedImage, optional
        The input the data came from. It decides the layout and sample type:

        * FITS: float32; ``(H, W)`` when ``like`` was 2-D and ``C == 1``.
        * TIFF: the input's uint8/uint16 when ``like`` is an integer TIFF, else float32
          (values as given).
        * PNG: 8-bit when ``like`` has 8-bit samples, else 16-bit.
        * JPEG: 8-bit, quality 95, no chroma subsampling.

        Integer outputs take ``data / like.normalised_by`` when ``like`` is a picture
        (its own units: 0-255, 0-65535), else ``data`` (linear data in [0, 1]); that is
        clipped to [0, 1], scaled by the output type's maximum and rounded; NaN becomes 0.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Unknown output extension, existing output without ``overwrite``, missing or
        read-only output directory.
    """
    fmt = format_from_name(path)
    if fmt is None:
        raise InputError(
            f"{path}: unknown output format; use .fits, .fit, .fts, .tif, .tiff, .png or .jpg"
        )
    chw = _as_chw(path, data)
    if fmt == "fits":
        arr = np.asarray(data)
        if like is not None and arr.ndim == 3:
            arr = like.restore_shape(arr)
        return write_fits(path, arr, header, overwrite=overwrite)

    hwc = chw[0] if chw.shape[0] == 1 else np.moveaxis(chw, 0, -1)
    # Integer samples are written from [0, 1]: a picture's values are in its own units.
    full = like.normalised_by if like is not None and like.display_referred else None

    def unit() -> np.ndarray:
        return hwc / np.float32(full) if full else hwc

    if fmt == "tiff":
        import tifffile

        src = like.source_dtype if like is not None else None
        if like is not None and like.format == "tiff" and like.display_referred:
            out = _to_uint(unit(), np.dtype(src))
        else:
            out = np.ascontiguousarray(hwc, dtype=np.float32)
        photometric = "minisblack" if out.ndim == 2 else "rgb"
        with atomic_output(path, overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, out, photometric=photometric)
        return Path(path)

    from PIL import Image

    if fmt == "png":
        eight_bit = like is not None and np.dtype(like.source_dtype).itemsize == 1
        with atomic_output(path, overwrite=overwrite) as tmp:
            if eight_bit:
                Image.fromarray(_to_uint(unit(), np.dtype(np.uint8))).save(tmp, format="PNG")
            else:
                tmp.write_bytes(encode_png16(_to_uint(unit(), np.dtype(np.uint16))))
        return Path(path)

    # JPEG
    with atomic_output(path, overwrite=overwrite) as tmp:
        Image.fromarray(_to_uint(unit(), np.dtype(np.uint8))).save(
            tmp, format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
    return Path(path)
