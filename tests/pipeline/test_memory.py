"""Constant memory: the banded (lazy) pipeline equals the whole-image one, bit for bit,
and builds no whole-image intermediate."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

import astrosleuth_astro as asa
from astrosleuth_astro import pipeline
from astrosleuth_astro import stretch as stretch_module
from astrosleuth_astro.pipeline import prepare, upscale_array
from astrosleuth_astro.stretch import fit_stretch

from ..conftest import write_sim_fits


def _net(batch: np.ndarray) -> np.ndarray:
    """A cheap, non-linear, 3-channel 4x 'network' (numpy only)."""
    b = np.asarray(batch, dtype=np.float32)
    y = 0.7 * np.sqrt(np.clip(b, 0.0, None)) + 0.3 * np.roll(b, 1, axis=-1)
    return np.repeat(np.repeat(y, 4, axis=-2), 4, axis=-1)


def _field(dtype=np.float32, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.normal(100.0, 5.0, (channels, 90, 77))
    img[:, 30:33, 40:43] += 5000.0  # bright stars
    img = img.astype(dtype)
    return img[0] if channels == 1 else img


def _cases() -> dict[str, np.ndarray]:
    nan = _field()
    nan[:2] = np.nan
    nan[50, 50], nan[60, 3] = np.inf, -np.inf
    const = _field(channels=3)
    const[1] = 7.0
    return {
        "mono": _field(),
        "nan_inf": nan,
        "float64": _field(np.float64) * 1.0001,
        "uint16": np.clip(_field() * 10, 0, 65535).astype(np.uint16),
        "big_endian": _field().astype(">f4"),
        "rgb_constant": const,
    }


def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the pipeline build its whole-image arrays (the pre-banding behaviour)."""
    original = pipeline.prepare
    monkeypatch.setattr(
        pipeline.run, "prepare", lambda data, stretch, lazy=False: original(data, stretch)
    )


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("kind", ["auto", "mtf", "asinh", "none"])
def test_lazy_prepare_equals_eager(name, kind):
    data = _cases()[name]
    for stretch in (kind, fit_stretch(data, kind)):
        eager, lazy = prepare(data, stretch), prepare(data, stretch, lazy=True)
        assert eager.stretch.to_dict() == lazy.stretch.to_dict()
        _same_bits(eager.work, np.asarray(lazy.work))
        _same_bits(eager.stretched, np.asarray(lazy.stretched))
        _same_bits(eager.lo, lazy.lo)
        _same_bits(eager.constant, lazy.constant)
        assert (eager.residual is None) == (lazy.residual is None)
        if eager.residual is not None:
            _same_bits(eager.residual, np.asarray(lazy.residual))
        assert (eager.bad is None) == (lazy.bad is None)
        if eager.bad is not None:
            _same_bits(eager.bad, np.asarray(lazy.bad))
        # Reflected row indices, as the tile engine reads them, and 2-D row slices.
        rows = np.array([3, 2, 1, 0, 1, 2, 88, 89, 88])
        _same_bits(eager.stretched[:, rows, :], lazy.stretched[:, rows, :])
        _same_bits(eager.stretched[..., 5:9, 2:7], lazy.stretched[..., 5:9, 2:7])


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("scale", [4, 2])
def test_banded_pipeline_equals_whole_image(name, scale, monkeypatch):
    data = _cases()[name]
    opts = dict(scale=scale, tile=32, pad=5, batch_size=3)
    banded = upscale_array(data, _net, **opts).data
    lum = upscale_array(data, _net, luminance_only=True, **opts).data if data.ndim == 3 else None
    _eager(monkeypatch)
    _same_bits(upscale_array(data, _net, **opts).data, banded)
    if lum is not None:
        _same_bits(upscale_array(data, _net, luminance_only=True, **opts).data, lum)


@pytest.mark.parametrize("scale", [4, 3])
def test_streamed_file_output_equals_whole_image_path(
    tiny_fast_model, tmp_path, monkeypatch, scale
):
    from astrosleuth_astro.api import upscale_image
    from astrosleuth_astro.io import read_image

    src = write_sim_fits(tmp_path / "in.fits", shape=(52, 40))
    with fits.open(src, mode="update") as hdul:  # non-finite pixels and a clipped residual
        hdul[0].data[:2, :5] = np.nan
        hdul[0].data[20, 20] = np.inf
    net = asa.get_backend(tiny_fast_model)
    image = read_image(src)
    banded = tmp_path / "banded.fits"
    upscale_image(image, banded, net, scale=scale, memmap_threshold=0)
    _eager(monkeypatch)
    whole = tmp_path / "whole.fits"
    upscale_image(image, whole, net, scale=scale)  # in memory, whole-image arrays
    _same_bits(fits.getdata(banded), fits.getdata(whole))
    assert fits.getheader(banded) == fits.getheader(whole)


def test_no_whole_image_intermediate(tmp_path, monkeypatch):
    """Python-heap peak of a memory-mapped 4x run stays below half a float32 input copy.

    The image is tall and narrow, so the band and tile buffers (which scale with the width)
    are small next to any whole-image array (which scales with the height).
    """
    monkeypatch.setattr(pipeline.prepared, "SCAN_BLOCK_PIXELS", 1 << 14)
    # The background statistics (noise for the defect scan and the consistency step) run
    # on a strided subsample of at most MAX_STAT_PIXELS: a bounded transient, made small
    # here so that it cannot hide a whole-image array.
    monkeypatch.setattr(stretch_module, "MAX_STAT_PIXELS", 1 << 14)
    img = np.random.default_rng(0).normal(100.0, 5.0, (32768, 32)).astype(np.float32)
    img[100:103, 10:13] = 9000.0
    # No NaN here: the fill value is a median over a subsample of up to ~4 M pixels (the
    # whole of this image), a bounded transient that does not grow beyond that size.
    st = fit_stretch(img)
    out = np.memmap(tmp_path / "out.f4", dtype=np.float32, mode="w+", shape=(1, 4 * 32768, 128))
    tracemalloc.start()
    try:
        upscale_array(img, _net, stretch=st, out=out, tile=32, pad=4, batch_size=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A whole-image float32 array alone would be 1.0x; float64 temporaries 2.0x and more.
    assert peak < 0.5 * img.nbytes, f"peak {peak / img.nbytes:.2f} x the input's float32 size"


def test_band_rows_bounded_by_pixels():
    """Post-processing bands hold at most BAND_PIXELS input pixels (so their temporaries
    do not grow with the width) and always divide BAND_ROWS (distributed band cuts)."""
    for width in (1, 100, 2048, 2049, 4000, 8192, 10**6):
        rows = pipeline.band_rows(width)
        assert pipeline.BAND_ROWS % rows == 0
        assert rows * width <= pipeline.BAND_PIXELS or rows == 1
        assert rows == pipeline.BAND_ROWS or 2 * rows * width > pipeline.BAND_PIXELS
    assert pipeline.band_rows(2048) == 64 and pipeline.band_rows(4096) == 32


@pytest.mark.parametrize("name", ["mono", "nan_inf", "rgb_constant"])
def test_band_height_does_not_change_the_result(name, monkeypatch):
    data = _cases()[name]
    opts = dict(scale=4, tile=32, pad=5, batch_size=3)
    default = upscale_array(data, _net, **opts).data
    monkeypatch.setattr(pipeline.finish, "BAND_PIXELS", 3 * data.shape[-1])  # 2-row bands
    assert pipeline.band_rows(data.shape[-1]) == 2
    _same_bits(upscale_array(data, _net, **opts).data, default)


def test_memory_mapped_input_gives_the_same_file(tiny_fast_model, tmp_path):
    """A float32 FITS read through a memory map (what `upscale` does) upscales to the same
    bytes as the copied read, and the input file is untouched."""
    from astrosleuth_astro.api import upscale_image
    from astrosleuth_astro.io import read_image

    src = write_sim_fits(tmp_path / "in.fits", shape=(52, 40))
    before = src.read_bytes()
    net = asa.get_backend(tiny_fast_model)
    mapped = read_image(src, memmap=True)
    assert isinstance(mapped.data, np.memmap)
    a, b = tmp_path / "mapped.fits", tmp_path / "copied.fits"
    upscale_image(mapped, a, net, memmap_threshold=0)
    upscale_image(read_image(src), b, net, memmap_threshold=0)
    assert a.read_bytes() == b.read_bytes()
    assert src.read_bytes() == before
