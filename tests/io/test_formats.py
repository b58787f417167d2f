"""TIFF/PNG/JPEG reading and writing, and format dispatch (astrosleuth_astro.io.formats)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image, ImageOps

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io import format_from_name, read_image, write_image
from astrosleuth_astro.io.formats import encode_png16

H, W = 20, 28
RNG = np.random.default_rng(7)
U16_RGB = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
U8_RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
F32_RGB = RNG.normal(0.2, 0.1, (H, W, 3)).astype(np.float32)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _chw(hwc: np.ndarray) -> np.ndarray:
    return hwc[np.newaxis] if hwc.ndim == 2 else np.moveaxis(hwc, -1, 0)


# --------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "display"),
    [
        (U16_RGB[..., 0], True),
        (U16_RGB, True),
        (U8_RGB[..., 1], True),
        (U8_RGB, True),
        (F32_RGB, False),
        (F32_RGB[..., 2], False),
    ],
    ids=["u16-grey", "u16-rgb", "u8-grey", "u8-rgb", "f32-rgb", "f32-grey"],
)
def test_tiff_read_and_round_trip(tmp_path, array, display):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    img = read_image(src)
    assert img.format == "tiff" and img.display_referred is display
    assert img.data.dtype == np.float32 and img.data.shape == _chw(array).shape
    assert img.was_2d is (array.ndim == 2)
    assert img.source_dtype == array.dtype
    if display:
        top = np.iinfo(array.dtype).max
        assert img.normalised_by == top
        np.testing.assert_array_equal(img.data, _chw(array))  # its own units
    else:
        assert img.normalised_by is None
        np.testing.assert_array_equal(img.data, _chw(array))
    out = tmp_path / "out.tiff"
    write_image(out, img.data, img.header, like=img)
    back = tifffile.imread(out)
    assert back.dtype == array.dtype  # uint8/uint16 TIFF stays so; float stays float32
    np.testing.assert_array_equal(back, array)


def test_tiff_planar_rgb(tmp_path):
    src = tmp_path / "planar.tif"
    planar = np.moveaxis(U16_RGB, -1, 0)
    tifffile.imwrite(src, planar, photometric="rgb", planarconfig="separate")
    img = read_image(src)
    assert img.data.shape == (3, H, W)
    np.testing.assert_array_equal(img.data, planar)


def test_tiff_rgba_drops_alpha_with_note(tmp_path):
    src = tmp_path / "rgba.tif"
    alpha = np.full((H, W, 1), 65535, np.uint16)
    tifffile.imwrite(
        src,
        np.concatenate([U16_RGB, alpha], axis=-1),
        photometric="rgb",
        extrasamples=["unassalpha"],
    )
    img = read_image(src)
    assert img.data.shape == (3, H, W)
    assert any("alpha" in note for note in img.notes)
    np.testing.assert_array_equal(img.data, _chw(U16_RGB))


def test_tiff_multipage_is_refused(tmp_path):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, np.zeros((5, H, W), np.uint16))
    with pytest.raises(InputError, match="multi-page") as info:
        read_image(src)
    assert str(info.value).startswith(f"{src}: ")


def test_float_output_from_fits_input_is_float_tiff(tmp_path):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.moveaxis(U16_RGB, -1, 0)).writeto(src)
    img = read_image(src)
    write_image(tmp_path / "out.tif", img.data, img.header, like=img)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.float32 and back.shape == (H, W, 3)
    np.testing.assert_array_equal(back, U16_RGB.astype(np.float32))


# --------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [U8_RGB[..., 0], U8_RGB, U16_RGB[..., 0], U16_RGB],
    ids=["u8-grey", "u8-rgb", "u16-grey", "u16-rgb"],
)
def test_png_read_and_round_trip(tmp_path, array):
    src = tmp_path / "in.png"
    if array.dtype == np.uint16:
        src.write_bytes(encode_png16(array))  # Pillow cannot write 16-bit RGB
    else:
        Image.fromarray(array).save(src)
    img = read_image(src)
    assert img.normalised_by == np.iinfo(array.dtype).max  # the full scale, for outputs
    assert img.format == "png" and img.display_referred and img.source_dtype == array.dtype
    assert img.data.shape == _chw(array).shape and img.was_2d is (array.ndim == 2)
    np.testing.assert_array_equal(img.data, _chw(array))  # its own units
    assert img.notes == ()
    out = tmp_path / "out.png"
    write_image(out, img.data, None, like=img)
    again = read_image(out)
    assert again.source_dtype == array.dtype
    np.testing.assert_array_equal(again.data, img.data)


def test_png16_grey_is_pillow_compatible(tmp_path):
    """The 16-bit encoder writes standard PNG: Pillow reads the grey case natively."""
    path = tmp_path / "g.png"
    path.write_bytes(encode_png16(U16_RGB[..., 0]))
    with Image.open(path) as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), U16_RGB[..., 0])
    path.write_bytes(encode_png16(U16_RGB))
    with Image.open(path) as im:  # Pillow's own 8-bit view agrees on the high bytes
        np.testing.assert_array_equal(np.asarray(im), (U16_RGB >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_png_alpha_dropped_with_note(tmp_path, mode):
    src = tmp_path / "a.png"
    im = Image.fromarray(U8_RGB).convert(mode)
    im.save(src)
    img = read_image(src)
    assert img.data.shape[0] == (3 if mode == "RGBA" else 1)
    assert any("alpha" in note for note in img.notes)


def test_png_palette(tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(U8_RGB).convert("P").save(src)
    img = read_image(src)
    assert img.data.shape == (3, H, W) and img.source_dtype == np.uint8


@pytest.mark.parametrize("array", [U8_RGB[..., 0], U8_RGB], ids=["grey", "rgb"])
def test_jpeg_read_and_write(tmp_path, array):
    smooth = np.clip(
        np.linspace(0, 255, H * W).reshape(H, W)[..., None] + np.zeros(array.shape[2:]), 0, 255
    )
    smooth = smooth.astype(np.uint8).reshape(array.shape)
    src = tmp_path / "in.jpg"
    Image.fromarray(smooth).save(src, quality=98)
    img = read_image(src)
    assert img.format == "jpeg" and img.display_referred and img.source_dtype == np.uint8
    assert img.data.shape == _chw(array).shape
    assert np.abs(img.data - _chw(smooth)).max() < 6
    out = tmp_path / "out.jpeg"
    write_image(out, img.data, None, like=img)
    again = read_image(out)
    assert again.data.shape == img.data.shape
    assert np.abs(again.data - img.data).max() < 6


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    src = tmp_path / "cam.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(U8_RGB).save(src, exif=exif, quality=95)
    img = read_image(src)
    with Image.open(src) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(img.data, _chw(expected))
    assert any("EXIF orientation" in n for n in img.notes)


def test_write_clips_rounds_and_zeroes_nan(tmp_path):
    # like an 8-bit picture: values in its units (0-255), clipped and rounded
    data = np.array([[[-0.5, 0.0, 0.4999, 0.5001, 255.0, 7.0 * 255, np.nan]]], np.float32)
    out = tmp_path / "c.png"
    Image.fromarray(np.zeros((1, 7), np.uint8)).save(tmp_path / "like.png")
    like = read_image(tmp_path / "like.png")
    write_image(out, data, None, like=like)
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im)[0], [0, 0, 0, 1, 255, 255, 0])


def test_png_without_like_is_16_bit(tmp_path):
    out = tmp_path / "x.png"
    write_image(out, np.full((3, 4, 5), 0.5, np.float32))
    img = read_image(out)
    assert img.source_dtype == np.uint16 and img.data.shape == (3, 4, 5)


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def test_format_from_name():
    assert format_from_name("a.FITS") == "fits"
    assert format_from_name("a.fits.gz") == "fits"
    assert format_from_name("a.fz") == "fits"
    assert format_from_name("a.TIF") == "tiff"
    assert format_from_name("a.jpeg") == "jpeg"
    assert format_from_name("a.bmp") is None


def test_fits_through_read_image_and_write_image(tmp_path):
    src = tmp_path / "m.fit"
    mono = RNG.normal(1000, 50, (H, W)).astype(np.float32)
    fits.PrimaryHDU(mono).writeto(src)
    img = read_image(src, hdu=0)
    assert img.format == "fits" and img.was_2d
    up = np.repeat(np.repeat(img.data, 2, axis=1), 2, axis=2)
    write_image(tmp_path / "o.fits", up, img.header, like=img)
    assert fits.getdata(tmp_path / "o.fits").shape == (2 * H, 2 * W)  # 2-D in, 2-D out


def test_png_renamed_fits_is_refused(tmp_path):
    src = tmp_path / "fake.fits"
    Image.fromarray(U8_RGB).save(src, format="PNG")
    before = sha256(src)
    with pytest.raises(InputError, match=r"not a FITS file.*PNG") as info:
        read_image(src)
    assert str(info.value).startswith(f"{src}: ")
    assert sha256(src) == before


def test_misnamed_raster_is_read_by_content_with_note(tmp_path):
    src = tmp_path / "photo.png"
    Image.fromarray(U8_RGB).save(src, format="JPEG")
    img = read_image(src)
    assert img.format == "jpeg"
    assert any("despite its name" in n for n in img.notes)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"BM" + bytes(100), "unrecognised image format"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "corrupt PNG"),
        (b"\xff\xd8\xff\xe0" + bytes(40), "corrupt JPEG"),
        (b"II*\x00" + bytes(40), "TIFF"),
    ],
)
def test_bad_raster_files(tmp_path, content, message):
    src = tmp_path / "bad.img"
    src.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_image(src)
    assert str(info.value).startswith(f"{src}: ") and "\n" not in str(info.value)
    assert src.read_bytes() == content


def test_hdu_option_on_png_is_refused(tmp_path):
    src = tmp_path / "x.png"
    Image.fromarray(U8_RGB).save(src)
    with pytest.raises(InputError, match="--hdu applies to FITS"):
        read_image(src, hdu=1)


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)


def test_write_image_unknown_extension_and_existing(tmp_path):
    data = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(InputError, match="unknown output format"):
        write_image(tmp_path / "x.bmp", data)
    write_image(tmp_path / "x.tif", data)
    with pytest.raises(InputError, match="exists"):
        write_image(tmp_path / "x.tif", data)
    write_image(tmp_path / "x.tif", data + 1, overwrite=True)
    assert tifffile.imread(tmp_path / "x.tif").max() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]
