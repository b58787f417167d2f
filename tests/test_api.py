"""The Python API end to end with a real (tiny) network: units, header, WCS, NDData."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.wcs import WCS

import astrosleuth_astro as asa
from astrosleuth_astro.errors import InputError

from .conftest import sha256, write_sim_fits


def _pixels_agree(w_in: WCS, w_out: WCS, scale: int, shape, n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, shape[1] - 0.5, n)
    y = rng.uniform(-0.5, shape[0] - 0.5, n)
    a = w_in.pixel_to_world(x, y)
    b = w_out.pixel_to_world((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5)
    return a.separation(b).to(u.arcsec).value.max()


def test_numpy_in_numpy_out(tiny_fast_model):
    img = np.random.default_rng(0).normal(1000, 10, (20, 24)).astype(np.float32)
    out = asa.upscale(img, model=tiny_fast_model, scale=4)
    assert isinstance(out, np.ndarray) and out.shape == (80, 96) and out.dtype == np.float32
    # units kept: the output lives at the input's level
    assert abs(np.median(out) - np.median(img)) < 5


def test_ccddata_keeps_wcs_mask_uncertainty(tiny_fast_model, sim_fits):
    ccd = CCDData.read(sim_fits, unit="adu")
    ccd.mask = np.zeros(ccd.shape, bool)
    ccd.mask[5, 7] = True
    ccd.uncertainty = StdDevUncertainty(np.sqrt(np.abs(ccd.data)) + 1)
    out = asa.upscale(ccd, model=tiny_fast_model, scale=2)
    assert isinstance(out, CCDData)
    assert out.shape == (2 * ccd.shape[0], 2 * ccd.shape[1])
    assert out.unit == u.adu
    assert out.mask.dtype == bool and out.mask.sum() == 4 and out.mask[10:12, 14:16].all()
    assert isinstance(out.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(out.uncertainty.array[::2, ::2], ccd.uncertainty.array)
    assert _pixels_agree(ccd.wcs, out.wcs, 2, ccd.shape) < 1e-4
    assert out.meta["ASTSLSCL"] == 2
    assert out.meta["XPIXSZ"] == pytest.approx(3.76 / 2)


def test_hdu_in_hdu_out(tiny_fast_model, sim_fits):
    hdu = fits.open(sim_fits)[0]
    out = asa.upscale(hdu, model=tiny_fast_model, scale=3)
    assert isinstance(out, fits.PrimaryHDU)
    assert out.data.shape == (3 * hdu.data.shape[0], 3 * hdu.data.shape[1])
    assert out.header["OBJECT"] == "sim"
    assert _pixels_agree(WCS(hdu.header), WCS(out.header), 3, hdu.data.shape) < 1e-4


def test_upscale_file_keeps_header_and_provenance(tiny_fast_model, sim_fits, tmp_path):
    before = sha256(sim_fits)
    dst = tmp_path / "out.fits"
    report = asa.upscale_file(sim_fits, dst, model=tiny_fast_model, scale=4)
    assert sha256(sim_fits) == before  # the input is never modified
    hin, hout = fits.getheader(sim_fits), fits.getheader(dst)
    assert hout["BITPIX"] == -32
    assert hout["NAXIS1"] == 4 * hin["NAXIS1"] and hout["NAXIS2"] == 4 * hin["NAXIS2"]
    for key in ("OBJECT", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2"):
        assert hout[key] == hin[key]
    assert hout["ASTSLMOD"] == report.model
    assert hout["ASTSLSHA"] == sha256(tiny_fast_model)
    assert hout["ASTSLSTR"] == report.stretch == "mtf"
    assert hout["ASTSLVER"] == asa.__version__
    # The precision actually used (auto resolves to fp32 or bf16 on a CPU).
    assert hout["ASTSLPRC"] == asa.get_backend(tiny_fast_model).precision
    assert hout["ASTSLPRC"] in ("fp32", "bf16")
    assert any("astrosleuth" in str(h).lower() for h in hout["HISTORY"])
    assert _pixels_agree(WCS(hin), WCS(hout), 4, (hin["NAXIS2"], hin["NAXIS1"])) < 1e-4
    assert report.shape_out == [4 * hin["NAXIS2"], 4 * hin["NAXIS1"]]


def test_fp32_precision_is_recorded(tiny_fast_model, sim_fits, tmp_path):
    dst = tmp_path / "out.fits"
    asa.upscale_file(sim_fits, dst, model=tiny_fast_model, precision="fp32")
    assert fits.getheader(dst)["ASTSLPRC"] == "fp32"


def test_uint16_bzero_input(tiny_fast_model, tmp_path):
    src = write_sim_fits(tmp_path / "u16.fits", dtype=np.uint16)
    hdr = fits.getheader(src)
    assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768
    dst = tmp_path / "u16_x2.fits"
    asa.upscale_file(src, dst, model=tiny_fast_model, scale=2)
    lr = fits.getdata(src).astype(np.float64)
    sr = fits.getdata(dst)
    assert sr.dtype.kind == "f" and "BZERO" not in fits.getheader(dst)
    # physical values (BZERO applied), not the raw int16 storage
    assert abs(np.median(sr) - np.median(lr)) < 0.02 * np.median(lr)


def test_rgb_cube(tiny_fast_model, tmp_path):
    src = write_sim_fits(tmp_path / "rgb.fits", channels=3, shape=(24, 32))
    dst = tmp_path / "rgb_x4.fits"
    asa.upscale_file(src, dst, model=tiny_fast_model)
    assert fits.getdata(dst).shape == (3, 96, 128)
    dst2 = tmp_path / "rgb_lum.fits"
    asa.upscale_file(src, dst2, model=tiny_fast_model, luminance_only=True)
    assert fits.getdata(dst2).shape == (3, 96, 128)


def test_never_replaces_without_overwrite(tiny_fast_model, sim_fits, tmp_path):
    dst = tmp_path / "out.fits"
    dst.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists"):
        asa.upscale_file(sim_fits, dst, model=tiny_fast_model)
    assert dst.read_bytes() == b"precious"
    asa.upscale_file(sim_fits, dst, model=tiny_fast_model, overwrite=True)
    assert fits.getdata(dst).shape[0] == 4 * fits.getdata(sim_fits).shape[0]


def test_output_equal_to_input_is_refused(tiny_fast_model, sim_fits):
    before = sha256(sim_fits)
    with pytest.raises(InputError):
        asa.upscale_file(sim_fits, sim_fits, model=tiny_fast_model, overwrite=True)
    assert sha256(sim_fits) == before


def test_torch_and_onnx_backends_agree(tiny_fast_model, tiny_fast_onnx):
    img = np.random.default_rng(3).normal(500, 8, (3, 18, 22)).astype(np.float32)
    # fp32 on both (precision "auto" would run torch in bf16 on CPUs that have it).
    a = asa.upscale(img, model=tiny_fast_model, backend="torch", precision="fp32")
    b = asa.upscale(img, model=tiny_fast_onnx, backend="onnx")
    # compare in the stretched domain's units: relative to the data range
    assert np.max(np.abs(a - b)) / (img.max() - img.min()) < 1e-4


def test_unsupported_object():
    with pytest.raises(InputError, match="unsupported input"):
        asa.upscale([1, 2, 3], model="default")


@pytest.mark.parametrize("scale", [4, 3])
def test_memory_mapped_output_equals_in_memory(tiny_fast_model, tmp_path, scale):
    from astrosleuth_astro.api import upscale_image
    from astrosleuth_astro.io import read_image

    src = write_sim_fits(tmp_path / "in.fits", shape=(40, 36))
    net = asa.get_backend(tiny_fast_model)
    image = read_image(src)
    a, b = tmp_path / "mem.fits", tmp_path / "mmap.fits"
    upscale_image(image, a, net, scale=scale)
    upscale_image(image, b, net, scale=scale, memmap_threshold=0)  # force streaming
    np.testing.assert_array_equal(fits.getdata(a), fits.getdata(b))
    assert fits.getheader(a) == fits.getheader(b)
