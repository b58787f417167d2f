"""The astropy-facing Python API: :func:`upscale` and :func:`upscale_file`.

Both build on :func:`astrosleuth_astro.pipeline.upscale_array` and keep everything an
astronomer relies on: pixel units, the FITS header, the WCS (exactly rescaled), masks
and uncertainties.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ._version import __version__
from .engine.backends import make_backend
from .errors import InputError
from .io import (
    LoadedImage,
    add_provenance,
    check_not_same,
    check_output_path,
    read_image,
    rescale_header,
    write_image,
)
from .io.files import format_bytes, physical_memory
from .io.fits_write import open_fits_output
from .io.formats import format_from_name as image_format
from .pipeline import NATIVE_SCALE, UpscaleOptions, clock, has_finite, upscale_array
from .resample import upsample_nearest
from .stretch import Stretch, display_stretch, fit_stretch

__all__ = [
    "UpscaleOptions",
    "UpscaleReport",
    "backend_for",
    "get_backend",
    "upscale",
    "upscale_file",
    "upscale_image",
]


def backend_for(options: UpscaleOptions):
    """The backend that ``options`` name (:func:`get_backend` with their model, backend,
    device, precision and model options; a ``model`` that is already a backend is used)."""
    return get_backend(options.model, **options.backend_kwargs())


def get_backend(
    model: Any = "default",
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "auto",
    **model_options,
):
    """Return a ready :class:`~astrosleuth_astro.engine.backends.Backend`.

    ``model`` may already be a backend (anything callable with a ``model_name``), which is
    returned unchanged: build it once and pass it to many calls. ``precision`` is one of
    ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (see
    :func:`~astrosleuth_astro.engine.precision.resolve_precision`).
    """
    if callable(model) and hasattr(model, "model_name"):
        return model

    return make_backend(model, backend=backend, device=device, precision=precision, **model_options)


def upscaled_header(
    header: fits.Header | None, stretch: Stretch, net, options: UpscaleOptions
) -> fits.Header:
    """The output's FITS header: ``header`` rescaled (:func:`~astrosleuth_astro.io.
    rescale_header`) with the data range and the provenance cards (model, weights sha256,
    scale, stretch, version, precision, flux conservation)."""
    scale = options.scale
    hdr = rescale_header(header if header is not None else fits.Header(), scale)
    # Always record the data range (the writers recompute it from the output): Siril takes a
    # float file without DATAMAX > 2 that says Siril wrote it for its own [0, 1] data.
    for key in ("DATAMIN", "DATAMAX"):
        if key not in hdr:
            hdr[key] = (0.0, "minimum data value" if key == "DATAMIN" else "maximum data value")
    return add_provenance(
        hdr,
        model=getattr(net, "model_name", "custom"),
        sha256=getattr(net, "sha256", ""),
        scale=scale,
        stretch=stretch.kind,
        version=__version__,
        precision=getattr(net, "precision", None),
        flux=options.conserve_flux,
    )


def _upscale_into(
    data: np.ndarray, net, options: UpscaleOptions, out: np.ndarray, **hooks: Any
) -> None:
    """Run the pipeline into ``out`` (a memmap); a 4x scratch memmap is used for scales < 4."""
    chw = data[np.newaxis] if data.ndim == 2 else data
    out_chw = out[np.newaxis] if out.ndim == 2 else out
    if options.scale == NATIVE_SCALE:
        upscale_array(chw, net, options, out=out_chw, **hooks)
        return
    import tempfile

    shape4 = (chw.shape[0], NATIVE_SCALE * chw.shape[1], NATIVE_SCALE * chw.shape[2])
    with tempfile.TemporaryFile(dir=os.environ.get("ASTROSLEUTH_SCRATCH")) as fh:
        work = np.memmap(fh, dtype=np.float32, mode="w+", shape=shape4)
        upscale_array(chw, net, options, out=out_chw, work=work, **hooks)
        del work


def _propagate_uncertainty(unc, scale: int):
    """Nearest-neighbour propagation of an NDData uncertainty (see :func:`upscale`)."""
    arr = np.asarray(unc.array)
    up = upsample_nearest(arr if arr.ndim >= 2 else arr.reshape(1, 1), scale)
    return unc.__class__(up, unit=getattr(unc, "unit", None))


def upscale(
    obj: Any,
    model: Any = "default",
    scale: int = 4,
    *,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    **options: Any,
) -> Any:
    """Upscale an image and keep its units, header and WCS.

    Parameters
    ----------
    obj : ndarray, `~astropy.nddata.CCDData`, `~astropy.nddata.NDData` or FITS image HDU
        A 2-D image or a ``(3, H, W)`` colour cube, linear or display-referred.
    model : str, path or Backend
        Registry name (``"default"``), a weights file (``.pth``, ``.safetensors``,
        ``.onnx``), or a backend from :func:`get_backend`.
    scale : {1, 2, 3, 4}
        Output scale; pixel values keep their units (a flat background of level b stays b).
    backend : {"auto", "torch", "onnx"}
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Network precision. ``auto`` is bf16 on CPUs with AVX512-BF16/AMX and fp16 on CUDA
        for the FAST architecture (measured within 0.05 dB PSNR of fp32), else fp32. A
        precision the backend or device cannot run raises InputError. Ignored when
        ``model`` is already a backend.
    stretch : {"auto", "mtf", "asinh", "none"}
    tile, pad, batch_size : int, optional
        Tiling (input pixels, tiles per network call); by default the backend's plan for
        its architecture and device (:attr:`Backend.tiling`).
    luminance_only : bool
        Colour only: network luminance, chroma upsampled from the input.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``.
    stage : callable, optional
        ``stage(name)`` when a long stage begins: ``"detecting stars"``, ``"upscaling"``,
        ``"repairing stars"`` (:data:`astrosleuth_astro.pipeline.STAGES`; the star stages
        only with ``protect_stars``).
    protect_stars : bool
        Repair dark rings, flux and split cores inside the stars' dilated footprints;
        pixels outside them are unchanged (:mod:`astrosleuth_astro.stars.protect`).
    protect_strength : float
        0 to 1, the strength of the star protection.
    conserve_flux : {False, True, "off", "sources", "all"}
        Give input pixels their flux back (after star protection): ``"sources"`` (or
        ``True``) the pixels of stars and other sources (more than 5 sigma above the
        background), ``"all"`` every pixel; binning the output by 4 then gives the input
        back there (:mod:`astrosleuth_astro.conserve`).
    **model_options
        Passed to the model (e.g. NEXT's conditioning strengths).

    Every option is checked (:class:`~astrosleuth_astro.pipeline.UpscaleOptions`) before
    any work; a bad one raises :class:`~astrosleuth_astro.errors.OptionError` naming its
    keyword.

    Returns
    -------
    Same kind as ``obj``
        ndarray -> ndarray; CCDData/NDData -> the same class with ``wcs`` and ``meta``
        rescaled, ``mask`` upscaled by nearest neighbour and ``uncertainty`` propagated;
        HDU -> the same HDU class with the rescaled header.

    Notes
    -----
    Uncertainty rule: each output pixel carries the uncertainty of the input pixel it
    lies in (nearest-neighbour). The ``scale x scale`` output pixels of one input pixel
    are fully correlated estimates of the same intensity, so their uncertainty is not
    reduced, and averaging them back recovers the input's uncertainty exactly.
    """
    from astropy.nddata import NDData

    hdu_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    if not isinstance(obj, hdu_types + (NDData, np.ndarray)):
        raise InputError(
            f"upscale: unsupported input type {type(obj).__name__} "
            "(use a numpy array, CCDData/NDData or a FITS image HDU)"
        )
    opts = UpscaleOptions.from_kwargs(model=model, scale=scale, **options)
    net = backend_for(opts)
    hooks = dict(progress=progress, stage=stage)

    if (
        isinstance(obj, np.ndarray)
        and obj.dtype == np.uint8
        and isinstance(opts.stretch, str)
        and opts.stretch in ("auto", "none")
    ):
        # An 8-bit array is a picture: the same numbers as the file routes give for it.
        channels = 1 if obj.ndim == 2 else obj.shape[0]
        opts = opts.replace(stretch=display_stretch(channels, 255.0))

    if isinstance(obj, hdu_types):
        if obj.data is None:
            raise InputError("HDU: has no image data")
        result = upscale_array(obj.data, net, opts, **hooks)
        header = upscaled_header(obj.header, result.stretch, net, opts)
        cls = fits.ImageHDU if isinstance(obj, fits.CompImageHDU) else obj.__class__
        return cls(data=result.data, header=header)

    if isinstance(obj, NDData):
        result = upscale_array(np.asarray(obj.data), net, opts, **hooks)
        src_header = _nddata_header(obj)
        header = upscaled_header(src_header, result.stretch, net, opts)
        kwargs: dict[str, Any] = {"meta": header}
        if getattr(obj, "unit", None) is not None:
            kwargs["unit"] = obj.unit
        if obj.wcs is not None:
            from astropy.wcs import WCS

            kwargs["wcs"] = WCS(header)
        if obj.mask is not None:
            kwargs["mask"] = upsample_nearest(np.asarray(obj.mask), opts.scale).astype(bool)
        if obj.uncertainty is not None:
            kwargs["uncertainty"] = _propagate_uncertainty(obj.uncertainty, opts.scale)
        return obj.__class__(result.data, **kwargs)

    return upscale_array(obj, net, opts, **hooks).data


def _nddata_header(obj) -> fits.Header:
    """A FITS header for an NDData: its meta plus its WCS (the WCS wins)."""
    header = fits.Header()
    meta = obj.meta
    if isinstance(meta, fits.Header):
        header = meta.copy()
    elif meta:
        for key, value in meta.items():
            if len(key) <= 8 and isinstance(value, str | int | float | bool):
                header[key] = value
    if obj.wcs is not None:
        try:
            header.update(obj.wcs.to_header(relax=True))
        except AttributeError:  # a non-FITS (gwcs) WCS cannot be rescaled here
            raise InputError("NDData: only FITS-WCS (astropy.wcs.WCS) can be rescaled") from None
    return header


@dataclass
class UpscaleReport:
    """What :func:`upscale_file` did (the CLI's ``--json`` summary)."""

    input: str
    output: str
    model: str
    sha256: str
    backend: str
    scale: int
    stretch: str
    shape_in: list[int]
    shape_out: list[int]
    seconds: float = 0.0
    #: Why ``--stretch auto`` read a FITS file or array as display-referred ("" otherwise).
    stretch_reason: str = ""
    extra: dict = field(default_factory=dict)


def upscale_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: Any = "default",
    scale: int = 4,
    hdu: int | str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    **options: Any,
) -> UpscaleReport:
    """Upscale one image file into another.

    FITS in, FITS out keeps every header card except those that must change (size,
    BITPIX/BZERO/BSCALE, the WCS and pixel-size keywords, DATAMIN/DATAMAX), and adds
    provenance (model, weights sha256, scale, stretch, version). The output is float32
    and written atomically; an existing output is replaced only with ``overwrite=True``;
    the input is never modified. TIFF, PNG and JPEG are read and written too.

    Parameters
    ----------
    src, dst : path-like
        Input and output files; the output format follows ``dst``'s extension.
    model
        As for :func:`upscale`.
    scale : {1, 2, 3, 4}
    hdu : int or str, optional
        FITS HDU index or EXTNAME (default: the first image HDU).
    overwrite : bool
        Replace an existing ``dst``.
    progress, stage : callable, optional
        As for :func:`upscale`.
    **options
        ``backend``, ``device``, ``precision``, ``stretch``, ``tile``, ``pad``,
        ``batch_size``, ``luminance_only``, ``protect_stars``, ``protect_strength``,
        ``conserve_flux`` and model options, as for :func:`upscale`
        (:class:`~astrosleuth_astro.pipeline.UpscaleOptions`).

    Returns
    -------
    UpscaleReport
    """
    opts = UpscaleOptions.from_kwargs(model=model, scale=scale, **options)
    src, dst = Path(src), Path(dst)
    check_not_same(src, dst)
    check_output_path(dst, overwrite=overwrite)
    image = read_image(src, hdu=hdu, memmap=True)
    net = backend_for(opts)
    return upscale_image(image, dst, net, opts, overwrite=overwrite, progress=progress, stage=stage)


class _Commit:
    """Times, into ``timings["write"]``, a memory-mapped output's flush and commit: from
    :meth:`start` (the pipeline is done) to the end of the ``with`` block."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings, self.t0 = timings, None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Commit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.timings is not None and self.t0 is not None:
            elapsed = time.perf_counter() - self.t0
            self.timings["write"] = self.timings.get("write", 0.0) + elapsed


#: Outputs larger than this (bytes) are streamed into a memory-mapped FITS data section
#: (128 MiB: a 2 MP mono image at 4x); smaller ones are written from memory.
MEMMAP_THRESHOLD = 1 << 27


def _disk_free(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (None if unknown)."""
    import shutil

    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _file_bytes(dst: Path, out_shape: tuple) -> int | None:
    """Size on disk of the output, where the format tells it before the pixels exist."""
    fmt = image_format(dst)
    n = int(np.prod(out_shape))
    if fmt == "fits" and not dst.name.lower().endswith((".gz", ".fz")):
        return 4 * n + 2 * 2880 * 4  # float32 data and a few header blocks
    if fmt == "tiff":
        return 4 * n  # float32 (integer TIFFs are smaller): an upper bound
    return None  # compressed (PNG, JPEG, .gz, .fz): unknown until written


def _check_room(dst: Path, in_shape: tuple, out_shape: tuple, scale: int, memmapped: bool) -> None:
    """Refuse, before any allocation, an output that cannot fit in memory or on disk.

    In memory the pipeline holds the native 4x network output and the output; a
    memory-mapped FITS output needs its size on the output's disk, plus a 4x scratch file
    (in ``$ASTROSLEUTH_SCRATCH`` or the temp directory) for scales below 4. An output
    written from memory needs its file size on the output's disk, where the format tells
    it in advance (FITS, TIFF): hours of work must not end in a full disk.
    """
    import tempfile

    n = int(np.prod(in_shape))  # C*H*W (or H*W)
    out_bytes = 4 * int(np.prod(out_shape))
    work_bytes = 4 * n * NATIVE_SCALE**2
    size = f"{out_shape[-1]}x{out_shape[-2]}"
    checks: list[tuple[Path, int]] = []
    if not memmapped:
        need, have = out_bytes + work_bytes, physical_memory()
        if have is not None and need > have:
            raise InputError(
                f"{dst}: output of {size} would need {format_bytes(need)} of memory, more than "
                f"this machine's {format_bytes(have)} (write a FITS output: it is memory-mapped)"
            )
        file_bytes = _file_bytes(dst, out_shape)
        if file_bytes is not None:
            checks.append((dst.parent, file_bytes))
    else:
        checks.append((dst.parent, out_bytes))
        if scale != NATIVE_SCALE:
            checks.append(
                (Path(os.environ.get("ASTROSLEUTH_SCRATCH") or tempfile.gettempdir()), work_bytes)
            )
    for where, need in checks:
        have = _disk_free(where)
        if have is not None and need > have:
            raise InputError(
                f"{dst}: output of {size} would need {format_bytes(need)} of disk in "
                f"{str(where)!r}, more than the {format_bytes(have)} free"
            )


def input_stretch(image: LoadedImage, stretch: str | Stretch) -> Stretch:
    """The stretch an image read by :func:`~astrosleuth_astro.io.read_image` is upscaled with.

    Display-referred pictures (8/16-bit PNG, JPEG, TIFF) keep their units (0-255 or
    0-65535) through every route; with ``stretch="auto"`` or ``"none"`` the network sees
    ``value / full_scale`` (:func:`~astrosleuth_astro.stretch.display_stretch`), whatever
    the picture's own range. Everything else is fitted on the data (``fit_stretch``).
    """
    if isinstance(stretch, Stretch):
        return stretch
    if image.display_referred and image.normalised_by and stretch in ("auto", "none"):
        return display_stretch(image.channels, image.normalised_by)
    return fit_stretch(image.data, stretch, linear_first=True)


def upscale_image(
    image: LoadedImage,
    dst: str | os.PathLike,
    net,
    options: UpscaleOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    memmap_threshold: int = MEMMAP_THRESHOLD,
    timings: dict[str, float] | None = None,
    **option_kwargs: Any,
) -> UpscaleReport:
    """Upscale an image already read by :func:`astrosleuth_astro.io.read_image` into ``dst``.

    This is :func:`upscale_file` after the reading, for callers (the CLI, batch runners)
    that validate inputs before they build a backend. FITS outputs larger than
    ``memmap_threshold`` bytes are written through a memory-mapped data section (and the
    4x intermediate through a memory-mapped scratch file), so memory does not hold them.
    ``timings``, when given, receives wall-clock seconds per stage: those of
    :func:`~astrosleuth_astro.pipeline.upscale_array` plus the stretch fit here
    (``stretch``) and the file output (``write``: encoding and writing the file, or
    flushing and committing the memory-mapped one).
    """
    start = time.perf_counter()
    dst = Path(dst)
    if options is None:
        options = UpscaleOptions(**option_kwargs)
    elif option_kwargs:
        options = options.replace(**option_kwargs)
    if not has_finite(image.data):
        raise InputError(f"{image.path}: no finite pixels")
    data = image.restore_shape(image.data)
    # The stretch is fitted up front: the output header records it before any pixel exists.
    with clock(timings, "stretch"):
        fitted = input_stretch(image, options.stretch)
    options = options.replace(stretch=fitted)
    hooks = dict(progress=progress, stage=stage, timings=timings)
    scale = options.scale
    out_shape = (*np.shape(data)[:-2], scale * data.shape[-2], scale * data.shape[-1])
    header = upscaled_header(image.header, fitted, net, options)
    nbytes = 4 * int(np.prod(out_shape))
    memmapped = image_format(dst) == "fits" and nbytes > memmap_threshold
    _check_room(dst, np.shape(data), out_shape, scale, memmapped)
    if memmapped:
        commit = _Commit(timings)
        with commit, open_fits_output(dst, out_shape, header, overwrite=overwrite) as out:
            _upscale_into(data, net, options, out, **hooks)
            commit.start()
    else:
        result = upscale_array(data, net, options, **hooks)
        with clock(timings, "write"):
            write_image(dst, result.data, header, like=image, overwrite=overwrite)
    return UpscaleReport(
        input=str(image.path),
        output=str(dst),
        model=getattr(net, "model_name", "custom"),
        sha256=getattr(net, "sha256", ""),
        backend=getattr(net, "name", "custom"),
        scale=scale,
        stretch=fitted.kind,
        stretch_reason=fitted.reason,
        shape_in=list(np.shape(data)),
        shape_out=list(out_shape),
        seconds=round(time.perf_counter() - start, 3),
    )
