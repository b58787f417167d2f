"""What every reader shares: the :class:`LoadedImage` record, input-file checks, and the
memory a read may take."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import InputError

__all__ = ["LoadedImage", "check_input_file", "describe_magic", "format_bytes", "physical_memory"]


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


GZIP_MAGIC = b"\x1f\x8b"


BZIP2_MAGIC = b"BZh"


@dataclass
class LoadedImage:
    """An image read from disk, with what is needed to write a faithful output.

    Attributes
    ----------
    data : numpy.ndarray
        Native ``float32``, shape ``(C, H, W)`` with ``C`` in {1, 3}. Physical values for
        FITS (BZERO/BSCALE applied, BLANK pixels are NaN) and float TIFF; the stored values
        (0-255, 0-65535) for display-referred integer images.
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
        For display-referred integer images, their full scale, the dtype maximum (255,
        65535): the network sees ``data / normalised_by`` and integer outputs are written
        from it. None for linear data.
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


def one_line(exc: BaseException) -> str:
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


def check_memory_to_read(path: str | os.PathLike[str], shape: tuple[int, ...]) -> None:
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
        raise InputError(f"{path}: cannot read the file ({one_line(exc)})") from None
    if not head:
        raise InputError(f"{path}: empty file, not an image")
    return head


def describe_magic(head: bytes) -> str | None:
    """Name the file type from its first bytes (``"a PNG image"``, ``"FITS"``...), or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(GZIP_MAGIC):
        return "a gzip file"
    if head.startswith(BZIP2_MAGIC):
        return "a bzip2 file"
    return None
