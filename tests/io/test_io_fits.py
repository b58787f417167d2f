"""FITS reading and writing (astrosleuth_astro.io.fits)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io import (
    LoadedImage,
    open_fits_output,
    read_fits,
    rescale_header,
    write_fits,
)
from astrosleuth_astro.io.atomic import TEMP_PREFIX

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
H, W = 24, 36


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ramp(dtype, lo, hi, shape=(H, W)) -> np.ndarray:
    n = int(np.prod(shape))
    return np.linspace(lo, hi, n).reshape(shape).astype(dtype)


# --------------------------------------------------------------------------------------
# BITPIX / scaling
# --------------------------------------------------------------------------------------


def _write_scaled(path, stored, bscale=None, bzero=None, blank=None):
    hdu = fits.PrimaryHDU(stored)
    if bscale is not None:
        hdu.header["BSCALE"] = bscale
    if bzero is not None:
        hdu.header["BZERO"] = bzero
    if blank is not None:
        hdu.header["BLANK"] = blank
    hdu.writeto(path)


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "bitpix"),
    [
        (np.uint8, 0, 255, 8),
        (np.int16, -32768, 32767, 16),
        (np.int32, -2_000_000, 2_000_000, 32),
        (np.float32, -1e30, 3.0e38, -32),
        (np.float64, -1.5, 1e6, -64),
    ],
)
def test_bitpix_round_trip(tmp_path, dtype, lo, hi, bitpix):
    src = tmp_path / "in.fits"
    values = _ramp(dtype, lo, hi)
    fits.PrimaryHDU(values).writeto(src)
    assert fits.getheader(src)["BITPIX"] == bitpix
    img = read_fits(src)
    assert img.data.dtype == np.float32 and img.data.dtype.isnative
    assert img.data.shape == (1, H, W) and img.was_2d
    assert img.data.flags.c_contiguous and img.data.flags.writeable
    np.testing.assert_array_equal(img.data[0], values.astype(np.float32))
    assert img.source_dtype == np.dtype(dtype)
    assert img.format == "fits" and not img.display_referred and img.hdu_index == 0
    # Through the writer and back: float32, same values.
    out = tmp_path / "out.fits"
    write_fits(out, img.restore_shape(img.data), rescale_header(img.header, 1))
    with fits.open(out) as hdul:
        assert hdul[0].header["BITPIX"] == -32 and "BZERO" not in hdul[0].header
        np.testing.assert_array_equal(hdul[0].data, values.astype(np.float32))


def test_uint16_with_bzero_32768(tmp_path):
    """What cameras and Siril write: BITPIX 16, BZERO 32768."""
    src = tmp_path / "cam.fits"
    values = _ramp(np.uint16, 0, 65535)
    fits.PrimaryHDU(values).writeto(src)
    hdr = fits.getheader(src)
    assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768
    img = read_fits(src)
    np.testing.assert_array_equal(img.data[0], values.astype(np.float32))
    assert img.data[0].max() == 65535.0 and img.data[0].min() == 0.0
    assert img.source_dtype == np.uint16
    assert img.header["BZERO"] == 32768  # the header is reported as read


def test_bscale_bzero_and_blank(tmp_path):
    src = tmp_path / "scaled.fits"
    stored = _ramp(np.int16, -1000, 1000)
    stored[0, 0] = -32768
    _write_scaled(src, stored, bscale=0.25, bzero=100.0, blank=-32768)
    img = read_fits(src)
    expected = stored.astype(np.float64) * 0.25 + 100.0
    assert np.isnan(img.data[0, 0, 0])
    np.testing.assert_array_equal(img.data[0].ravel()[1:], expected.ravel()[1:].astype(np.float32))


def test_signed_bytes_bzero_minus_128(tmp_path):
    src = tmp_path / "i8.fits"
    values = _ramp(np.int8, -128, 127)
    fits.PrimaryHDU(values).writeto(src)
    img = read_fits(src)
    np.testing.assert_array_equal(img.data[0], values.astype(np.float32))
    assert img.source_dtype == np.int8


def test_rgb_cube(tmp_path):
    src = tmp_path / "rgb.fits"
    cube = _ramp(np.float32, 0, 1, (3, H, W))
    fits.PrimaryHDU(cube).writeto(src)
    img = read_fits(src)
    assert img.data.shape == (3, H, W) and not img.was_2d
    np.testing.assert_array_equal(img.data, cube)
    # Siril-style uint16 colour.
    src16 = tmp_path / "rgb16.fits"
    fits.PrimaryHDU(_ramp(np.uint16, 0, 65535, (3, H, W))).writeto(src16)
    assert read_fits(src16).data.shape == (3, H, W)


def test_single_plane_cube_is_mono(tmp_path):
    src = tmp_path / "one.fits"
    fits.PrimaryHDU(_ramp(np.float32, 0, 1, (1, H, W))).writeto(src)
    img = read_fits(src)
    assert img.data.shape == (1, H, W) and not img.was_2d
    assert img.restore_shape(img.data).shape == (1, H, W)


def test_first_image_in_extension(tmp_path):
    src = tmp_path / "mef.fits"
    data = _ramp(np.float32, 0, 10)
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    ext = fits.ImageHDU(data, name="SCI")
    ext.header["OBJECT"] = "NGC 7000"
    fits.HDUList([fits.PrimaryHDU(), table, ext]).writeto(src)
    img = read_fits(src)
    assert img.hdu_index == 2
    assert img.header["OBJECT"] == "NGC 7000"
    np.testing.assert_array_equal(img.data[0], data)


def test_tile_compressed_and_gzip(tmp_path):
    data = _ramp(np.uint16, 0, 65535)
    fz = tmp_path / "img.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(fz)
    img = read_fits(fz)
    assert img.hdu_index == 1
    np.testing.assert_array_equal(img.data[0], data.astype(np.float32))
    gz = tmp_path / "img.fits.gz"
    fits.PrimaryHDU(data).writeto(gz)
    np.testing.assert_array_equal(read_fits(gz).data[0], data.astype(np.float32))


def test_hdu_by_index_and_name(tmp_path):
    src = tmp_path / "multi.fits"
    a = _ramp(np.float32, 0, 1)
    b = _ramp(np.float32, 5, 6)
    fits.HDUList([fits.PrimaryHDU(a), fits.ImageHDU(b, name="GREEN")]).writeto(src)
    np.testing.assert_array_equal(read_fits(src).data[0], a)
    for key in (1, "1", "GREEN", "green"):
        img = read_fits(src, hdu=key)
        assert img.hdu_index == 1
        np.testing.assert_array_equal(img.data[0], b)
    assert read_fits(src, hdu=0).hdu_index == 0


def test_input_is_never_modified(tmp_path):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(_ramp(np.uint16, 0, 65535)).writeto(src)
    before = sha256(src)
    img = read_fits(src)
    img.data += 1  # the array is ours, not a view of the file
    del img
    assert sha256(src) == before


def test_memmap_float32_input(tmp_path):
    """memmap=True maps uncompressed float32 data read-only: same values, no copy, and the
    file cannot be changed through it."""
    src = tmp_path / "in.fits"
    data = _ramp(np.float32, -3.0, 7e4, (3, H, W))
    data[1, 2, 3] = np.nan
    fits.PrimaryHDU(data, header=fits.Header({"OBJECT": "M42"})).writeto(src)
    before = sha256(src)
    copied, mapped = read_fits(src), read_fits(src, memmap=True)
    assert copied.data.dtype == np.float32 and not isinstance(copied.data, np.memmap)
    assert isinstance(mapped.data, np.memmap) and mapped.data.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(mapped.data, copied.data)  # NaN where NaN
    assert mapped.header["OBJECT"] == "M42" and mapped.was_2d == copied.was_2d
    with pytest.raises(ValueError, match="read-only"):
        mapped.data[0, 0, 0] = 1.0
    del mapped
    assert sha256(src) == before


def test_memmap_reads_the_chosen_extension(tmp_path):
    """The map starts at the chosen HDU's data, not the file's first data block."""
    src = tmp_path / "mef.fits"
    first = _ramp(np.float32, 0, 1, (H, W))
    second = _ramp(np.float32, 100, 200, (2 * H, W + 3))
    fits.HDUList([fits.PrimaryHDU(first), fits.ImageHDU(second, name="SCI")]).writeto(src)
    for hdu in (0, 1, "SCI"):
        mapped, copied = read_fits(src, hdu=hdu, memmap=True), read_fits(src, hdu=hdu)
        assert isinstance(mapped.data, np.memmap)
        np.testing.assert_array_equal(mapped.data, copied.data)
    np.testing.assert_array_equal(read_fits(src, hdu="SCI", memmap=True).data[0], second)


@pytest.mark.parametrize("case", ["uint16_bzero", "float32_bscale", "gzip"])
def test_memmap_falls_back_to_a_native_copy(tmp_path, case):
    """Data that needs scaling or decompression is converted as without memmap."""
    if case == "uint16_bzero":
        src = tmp_path / "in.fits"
        fits.PrimaryHDU(_ramp(np.uint16, 0, 65535)).writeto(src)  # astropy adds BZERO
    elif case == "float32_bscale":
        src = tmp_path / "in.fits"
        _write_scaled(src, _ramp(np.float32, 0, 10), bscale=2.0)
    else:
        src = tmp_path / "in.fits.gz"
        fits.PrimaryHDU(_ramp(np.float32, 0, 10)).writeto(src)
    mapped, copied = read_fits(src, memmap=True), read_fits(src)
    assert not isinstance(mapped.data, np.memmap) and mapped.data.dtype == np.float32
    np.testing.assert_array_equal(mapped.data, copied.data)


# --------------------------------------------------------------------------------------
# Bad inputs: one-line InputError naming the file, input untouched
# --------------------------------------------------------------------------------------


def _fits_bytes(hdus) -> bytes:
    import io

    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def _good() -> bytes:
    return _fits_bytes([fits.PrimaryHDU(_ramp(np.int16, 0, 100))])


def _table_only() -> bytes:
    col = fits.Column(name="flux", format="E", array=np.arange(3.0))
    return _fits_bytes([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([col])])


BAD_FILES = {
    "png_renamed": (_png_bytes, "not a FITS file"),
    "empty": (lambda: b"", "empty file"),
    "text": (lambda: b"hello world\n" * 300, "not a FITS file"),
    "truncated_data": (lambda: _good()[:4000], "truncated"),
    "header_only": (lambda: _good()[:2880], "truncated"),
    "partial_header": (lambda: _good()[:1000], "corrupt"),
    "tables_only": (_table_only, "no image HDU"),
    "empty_primary_only": (lambda: _fits_bytes([fits.PrimaryHDU()]), "no image data"),
    "one_d": (lambda: _fits_bytes([fits.PrimaryHDU(np.arange(10.0))]), "1-D"),
    "four_d": (lambda: _fits_bytes([fits.PrimaryHDU(np.zeros((1, 3, 4, 5)))]), "4-D"),
    "two_planes": (lambda: _fits_bytes([fits.PrimaryHDU(np.zeros((2, 4, 5)))]), "2 planes"),
    "four_planes": (lambda: _fits_bytes([fits.PrimaryHDU(np.zeros((4, 4, 5)))]), "4 planes"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_input_error(tmp_path, case):
    make, message = BAD_FILES[case]
    src = tmp_path / f"{case}.fits"
    src.write_bytes(make())
    before = sha256(src)
    with pytest.raises(InputError, match=message) as info:
        read_fits(src)
    text = str(info.value)
    assert text.startswith(f"{src}: ") and "\n" not in text
    assert sha256(src) == before


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file") as info:
        read_fits(tmp_path / "missing.fits")
    assert str(tmp_path / "missing.fits") in str(info.value)
    with pytest.raises(InputError, match="is a directory"):
        read_fits(tmp_path)


@pytest.mark.skipif(IS_ROOT or os.name == "nt", reason="root can read anything")
def test_no_read_permission(tmp_path):
    src = tmp_path / "secret.fits"
    src.write_bytes(_good())
    src.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            read_fits(src)
    finally:
        src.chmod(0o644)


def test_no_read_permission_simulated(tmp_path, monkeypatch):
    src = tmp_path / "secret.fits"
    src.write_bytes(_good())
    real_open = open

    def deny(path, *args, **kwargs):
        if str(path) == str(src):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(InputError, match=f"^{src}: permission denied"):
        read_fits(src)


@pytest.mark.parametrize(
    ("hdu", "message"),
    [
        (5, "no such HDU"),
        ("-1", "no such HDU"),
        ("NOPE", "no HDU with that EXTNAME"),
        (1, "is a table"),
        ("EVENTS", "is a table"),
        (0, "has no image data"),
    ],
)
def test_bad_hdu(tmp_path, hdu, message):
    src = tmp_path / "t.fits"
    col = fits.Column(name="t", format="D", array=np.arange(3.0))
    table = fits.BinTableHDU.from_columns([col], name="EVENTS")
    fits.HDUList([fits.PrimaryHDU(), table, fits.ImageHDU(np.zeros((4, 5)))]).writeto(src)
    before = sha256(src)
    with pytest.raises(InputError, match=message) as info:
        read_fits(src, hdu=hdu)
    assert str(info.value).startswith(f"{src}: --hdu {hdu}")
    assert sha256(src) == before


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _header() -> fits.Header:
    h = fits.Header()
    h["OBJECT"] = ("M 31", "target")
    h["CTYPE1"] = "RA---TAN"
    h["CTYPE2"] = "DEC--TAN"
    h["CRPIX1"] = 18.5
    h["CRPIX2"] = 12.5
    h["CRVAL1"] = 10.68
    h["CRVAL2"] = 41.27
    h["CD1_1"] = -1e-4
    h["CD2_2"] = 1e-4
    h["RADESYS"] = "ICRS"
    h["DATAMIN"] = (0.0, "stale")
    h["DATAMAX"] = (65535.0, "stale")
    h["CHECKSUM"] = "stale0000"
    h.add_history("calibrated")
    return h


def test_write_fits_float32_header_and_datarange(tmp_path):
    out = tmp_path / "out.fits"
    data = _ramp(np.float64, -3.0, 7.5, (3, H, W))
    data[0, 0, 0] = np.nan
    write_fits(out, data, _header())
    with fits.open(out) as hdul:
        assert len(hdul) == 1
        hdr = hdul[0].header
        assert hdr["BITPIX"] == -32 and hdr["NAXIS"] == 3
        assert (hdr["NAXIS1"], hdr["NAXIS2"], hdr["NAXIS3"]) == (W, H, 3)
        assert hdr["DATAMIN"] == pytest.approx(data[0].ravel()[1]) and hdr["DATAMAX"] == 7.5
        assert hdr.comments["DATAMIN"] == "stale"  # position and comment kept
        assert "CHECKSUM" not in hdr
        assert hdr["OBJECT"] == "M 31" and list(hdr["HISTORY"]) == ["calibrated"]
        np.testing.assert_array_equal(hdul[0].data, data.astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_write_fits_2d_and_overwrite(tmp_path):
    out = tmp_path / "mono.fits"
    write_fits(out, _ramp(np.float32, 0, 1), None)
    assert fits.getdata(out).shape == (H, W)
    with pytest.raises(InputError, match=r"exists \(use --overwrite\)"):
        write_fits(out, np.zeros((H, W), np.float32))
    np.testing.assert_array_equal(fits.getdata(out), _ramp(np.float32, 0, 1))
    write_fits(out, np.zeros((1, H, W), np.float32), overwrite=True)
    assert fits.getdata(out).shape == (1, H, W)


def test_write_fits_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_fits(tmp_path / "x.fits", np.zeros((2, 4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_from_extension_header(tmp_path):
    """A header read from an image extension becomes a valid primary header."""
    src = tmp_path / "ext.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 5), np.int16), name="SCI")]).writeto(
        src
    )
    img = read_fits(src)
    out = tmp_path / "out.fits"
    write_fits(out, img.restore_shape(img.data), rescale_header(img.header, 2))
    with fits.open(out) as hdul:
        hdul.verify("exception")
        assert "XTENSION" not in hdul[0].header and hdul[0].header["EXTNAME"] == "SCI"


@pytest.mark.parametrize("name", ["out.fits.gz", "out.fits.fz"])
def test_compressed_outputs_are_lossless(tmp_path, name):
    data = np.random.default_rng(3).normal(100, 30, (3, H, W)).astype(np.float32)
    write_fits(tmp_path / name, data, _header())
    img = read_fits(tmp_path / name)
    np.testing.assert_array_equal(img.data, data)
    assert img.header["OBJECT"] == "M 31"


def test_wcs_survives_rescale_write_read(tmp_path):
    src = tmp_path / "in.fits"
    hdr = _header()
    del hdr["DATAMIN"], hdr["DATAMAX"], hdr["CHECKSUM"]
    fits.PrimaryHDU(_ramp(np.uint16, 0, 1000), header=hdr).writeto(src)
    img = read_fits(src)
    out = tmp_path / "up.fits"
    up = np.repeat(np.repeat(img.data, 4, axis=1), 4, axis=2)
    write_fits(out, img.restore_shape(up), rescale_header(img.header, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w_in, w_out = WCS(fits.getheader(src)), WCS(fits.getheader(out))
    assert fits.getheader(out)["EQUINOX"] == 2000.0  # added for Siril
    pix = np.array([[0.0, 0.0], [W - 1.0, H - 1.0], [7.3, 11.9]])
    np.testing.assert_allclose(
        w_out.wcs_pix2world((pix + 0.5) * 4 - 0.5, 0), w_in.wcs_pix2world(pix, 0), atol=1e-12
    )


# --------------------------------------------------------------------------------------
# Memory-mapped output
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(H, W), (1, H, W), (3, H, W)])
def test_memmap_output_equals_direct_write(tmp_path, shape):
    data = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    direct, mapped = tmp_path / "direct.fits", tmp_path / "mapped.fits"
    write_fits(direct, data, _header())
    with open_fits_output(mapped, shape, _header()) as out:
        assert out.shape == shape
        rows = 5
        for r0 in range(0, H, rows):  # tile row by tile row
            out[..., r0 : r0 + rows, :] = data[..., r0 : r0 + rows, :]
        assert not mapped.exists()  # committed only at the end
    del out
    assert mapped.read_bytes() == direct.read_bytes()
    with fits.open(mapped) as hdul:
        hdul.verify("exception")
        np.testing.assert_array_equal(hdul[0].data, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.fits", "mapped.fits"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_memmap_output_removed_on_error(tmp_path, exc):
    target = tmp_path / "big.fits"
    with pytest.raises(exc), open_fits_output(target, (3, H, W), None) as out:
        out[:, :5] = 1.0
        raise exc()
    del out
    assert list(tmp_path.iterdir()) == []


def test_memmap_output_refuses_existing(tmp_path):
    target = tmp_path / "big.fits"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists"), open_fits_output(target, (H, W)):
        pass
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["big.fits"]


def test_memmap_output_gz_falls_back_to_memory(tmp_path):
    target = tmp_path / "big.fits.gz"
    data = _ramp(np.float32, 0, 1, (3, H, W))
    with open_fits_output(target, data.shape, _header()) as out:
        out[...] = data
    np.testing.assert_array_equal(read_fits(target).data, data)


def test_loaded_image_helpers():
    img = LoadedImage(data=np.zeros((1, 2, 3), np.float32), header=fits.Header(), path="x")
    assert (img.channels, img.height, img.width) == (1, 2, 3)
    assert img.restore_shape(np.zeros((1, 8, 12))).shape == (8, 12)
    assert img.restore_shape(np.zeros((3, 8, 12))).shape == (3, 8, 12)


def test_no_temp_files_left_after_failed_write(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fits.PrimaryHDU, "writeto", broken)
    # a full disk is the user's problem, named as such (exit 2), not an internal error
    with pytest.raises(InputError, match="x.fits: no space left on the output's device"):
        write_fits(tmp_path / "x.fits", np.zeros((4, 4), np.float32))
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())
    assert list(tmp_path.iterdir()) == []
