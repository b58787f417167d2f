"""Writing FITS: the output header's structural cards, the data range, atomic writes, and
memory-mapped outputs for images larger than memory."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.io import fits

from .atomic import atomic_output
from .fits import BLOCK_PIXELS

__all__ = ["open_fits_output", "output_header", "update_datarange", "write_fits"]


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
    rows = max(1, BLOCK_PIXELS // data.shape[-1])
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
