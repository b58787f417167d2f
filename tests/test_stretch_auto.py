"""``--stretch auto`` reads raw frames as linear (issue 23, item 3).

Integer FITS (BITPIX 16/32, BZERO pedestals, uint16 camera frames) and float FITS are
linear (``mtf``) unless the evidence is strong; where ``auto`` does pick the display path
for a FITS, it says so in one line on stderr (and in ``--json``), with the reason and the
flag that overrides it. Real simulated frames, real FITS files written by astropy, the real
API and the real CLI (in-process, as in ``tests/cli/test_cli.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

import astrosleuth_astro as asa
from astrosleuth_astro.cli import main
from astrosleuth_astro.sim import simulate
from astrosleuth_astro.stretch import (
    DISPLAY_BACKGROUND,
    background_stats,
    fit_stretch,
    linear_auto,
)

SHAPE = (64, 64)
FLAG = "--stretch mtf"


# -- simulated frames ---------------------------------------------------------------------
def raw_adu(
    *,
    seed: int = 1,
    pedestal: float = 1000.0,
    sky: float = 300.0,
    dark: float = 0.0,
    dead: int = 0,
    hot: int = 0,
    hot_value: float = 65535.0,
    gain_up: float = 1.0,
) -> np.ndarray:
    """A raw camera frame in ADU (float64, clipped to 0..65535).

    A simulated star field with sky ``sky`` on a bias ``pedestal``, a dark-current ramp of
    ``dark`` ADU across the frame, ``dead`` pixels at 0 and ``hot`` pixels at
    ``hot_value`` (``gain_up`` multiplies the signal, to bring a frame near saturation).
    """
    res = simulate(SHAPE, seed=seed, background=sky, nebulosity=0.3, hot_pixels=0.0, wcs=False)
    img = np.asarray(res.lr[0], dtype=np.float64) * gain_up + pedestal
    h, w = SHAPE
    yy, xx = np.mgrid[:h, :w]
    img += dark * (0.6 * xx / w + 0.4 * yy / h)  # amp glow / dark current gradient
    rng = np.random.default_rng(seed + 100)
    idx = rng.choice(img.size, dead + hot, replace=False)
    img.flat[idx[:dead]] = 0.0
    img.flat[idx[dead:]] = hot_value
    return np.clip(img, 0.0, 65535.0)


def stretched_picture(level: float = 0.25) -> np.ndarray:
    """A processed picture in [0, 1]: a raw frame autostretched (background at ``level``)."""
    adu = raw_adu(pedestal=2048, dark=300, dead=5, hot=5)
    y = fit_stretch(adu, "mtf").forward(adu[np.newaxis], dtype=np.float64)[0]
    if level != 0.25:  # move the background by a gamma, keeping 0 and 1 in place
        y = y ** (np.log(level) / np.log(0.25))
    return y.astype(np.float32)


def _u16(a: np.ndarray) -> np.ndarray:
    return np.round(a).astype(np.uint16)


#: name -> (array as written to FITS, expected BITPIX, expected BZERO on disk)
RAW_FRAMES = {
    # uint16 camera frame, 1000 ADU pedestal: astropy stores it as BITPIX 16, BZERO 32768.
    "uint16_pedestal_1000": (_u16(raw_adu(pedestal=1000)), 16, 32768),
    # Pedestal 2048 plus a dark-current gradient of 400 ADU across the frame.
    "uint16_pedestal_2048_dark": (_u16(raw_adu(pedestal=2048, dark=400)), 16, 32768),
    # Dead pixels at 0 and hot pixels at 65535 (full scale of the ADC).
    "uint16_dead_hot_saturated": (_u16(raw_adu(pedestal=1000, dead=30, hot=30)), 16, 32768),
    # Hot pixels at pedestal + 5000 ADU rather than at saturation.
    "uint16_hot_plus_5000": (
        _u16(raw_adu(pedestal=1000, dark=200, dead=10, hot=30, hot_value=6300.0)),
        16,
        32768,
    ),
    # A bright frame near saturation: signal x40 on a 2048 pedestal (background ~2/3 of
    # full scale), hot pixels clipped at 65535.
    "uint16_bright_near_saturation": (
        _u16(raw_adu(pedestal=2048, sky=1000, gain_up=40.0, hot=10)),
        16,
        32768,
    ),
    # Signed 16-bit without BZERO (some cameras/software write int16 frames).
    "int16_no_bzero": (
        np.round(raw_adu(pedestal=500, dead=10, hot=10, hot_value=32767.0)).astype(np.int16),
        16,
        None,
    ),
    # BITPIX 32 integer frame (e.g. a summed stack), dead and hot pixels.
    "int32": (
        np.round(raw_adu(pedestal=2048, dark=300, dead=10, hot=10)).astype(np.int32),
        32,
        None,
    ),
    # float32 FITS in ADU (a calibrated frame or a stack), dead and hot pixels.
    "float32_adu": (
        raw_adu(pedestal=1000, dark=200, dead=10, hot=10).astype(np.float32),
        -32,
        None,
    ),
    # A faint frame in [0, 1] as Siril's set32bits makes of a faint uint16 frame: its
    # brightest star peaks at 0.01 of full scale (no hot pixels).
    "float32_unit_faint_0.01": (
        (lambda a: a * (0.01 / a.max()))(raw_adu(pedestal=100, sky=100)).astype(np.float32),
        -32,
        None,
    ),
    # The same convention with a 2048 pedestal, dead pixels at 0 and hot pixels at 1.0.
    "float32_unit_pedestal_dead_hot": (
        (raw_adu(pedestal=2048, dark=400, dead=20, hot=20) / 65535.0).astype(np.float32),
        -32,
        None,
    ),
}


def write_fits(path, data: np.ndarray):
    fits.PrimaryHDU(data).writeto(path)
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- 1. raw frames are linear -------------------------------------------------------------
def test_simulated_frames_are_what_they_claim():
    """The frames really have their pedestal, dead and hot pixels (else the tests below
    would prove nothing)."""
    ped = RAW_FRAMES["uint16_pedestal_2048_dark"][0]
    med, _ = background_stats(ped)
    assert 2048 + 300 < med[0] < 2048 + 300 + 400  # sky 300 + part of the dark ramp
    dh = RAW_FRAMES["uint16_dead_hot_saturated"][0]
    assert (dh == 0).sum() >= 30 and (dh == 65535).sum() >= 30
    bright = RAW_FRAMES["uint16_bright_near_saturation"][0]
    assert background_stats(bright)[0][0] > 0.5 * 65535
    faint = RAW_FRAMES["float32_unit_faint_0.01"][0]
    assert faint.max() == pytest.approx(0.01) and faint.min() > 0
    unit = RAW_FRAMES["float32_unit_pedestal_dead_hot"][0]
    assert unit.min() == 0.0 and unit.max() == 1.0


@pytest.mark.parametrize("name", list(RAW_FRAMES))
def test_raw_frame_auto_is_linear_in_memory(name):
    """``linear_auto`` and ``fit_stretch(auto, linear_first=True)`` read each simulated raw
    frame as linear: ``mtf`` with no reason, and the black point is set by the background,
    not by the dead pixels (it lies within a few sigma below the background median)."""
    data = RAW_FRAMES[name][0]
    assert linear_auto(data) == ("mtf", "")
    st = fit_stretch(data, "auto", linear_first=True)
    assert st.kind == "mtf" and st.reason == ""
    med, sigma = background_stats(data)
    assert med[0] - 4 * sigma[0] < st.black[0] < med[0]
    assert st.white[0] == pytest.approx(float(data.max()))


@pytest.mark.parametrize("name", list(RAW_FRAMES))
def test_raw_frame_auto_is_linear_from_file(tiny_fast_model, tmp_path, name):
    """Through a real FITS file (astropy writes BITPIX/BZERO) and ``asa.upscale_file``: the
    report says ``mtf`` with an empty ``stretch_reason``, and the output header records it."""
    data, bitpix, bzero = RAW_FRAMES[name]
    src = write_fits(tmp_path / f"{name}.fits", data)
    hdr = fits.getheader(src)
    assert hdr["BITPIX"] == bitpix and hdr.get("BZERO") == bzero
    out = tmp_path / "out.fits"
    report = asa.upscale_file(src, out, model=tiny_fast_model, scale=2)
    assert report.stretch == "mtf"
    assert report.stretch_reason == ""
    assert fits.getheader(out)["ASTSLSTR"] == "mtf"


def test_raw_frame_cli_json_linear_and_silent(capsys, tiny_fast_model, tmp_path):
    """The CLI on a uint16 BZERO frame with pedestal, dark ramp, dead and hot pixels:
    ``--json`` says ``mtf`` with an empty ``stretch_reason`` and stderr has no stretch
    line."""
    data = RAW_FRAMES["uint16_dead_hot_saturated"][0]
    src = write_fits(tmp_path / "light_0001.fits", data)
    out = tmp_path / "up.fits"
    code, stdout, err = run_cli(
        capsys, "upscale", src, "-o", out, "--model", tiny_fast_model, "--scale", "2", "--json"
    )
    assert code == 0, err
    (result,) = json.loads(stdout)["results"]
    assert result["stretch"] == "mtf" and result["stretch_reason"] == ""
    assert "display-referred" not in err and FLAG not in err


# -- 2. strong evidence for display -------------------------------------------------------
DISPLAY = {
    # A processed picture saved as float FITS: background at 0.25 of full scale.
    "float_picture_bg_0.25": stretched_picture(0.25),
    # The same, darker: background at 0.20.
    "float_picture_bg_0.20": stretched_picture(0.20),
    # 8-bit picture data (PNG-like) with the background near 50/255.
    "uint8_bg_50": np.round(stretched_picture(50 / 255) * 255).astype(np.uint8),
}


@pytest.mark.parametrize("name", list(DISPLAY))
def test_display_data_auto_is_none_with_reason(name):
    """Data in [0, 1] (or 8-bit) with a bright background is display-referred: ``none``,
    and a one-line reason that gives the measured level and names ``--stretch mtf``."""
    data = DISPLAY[name]
    full = 255.0 if data.dtype == np.uint8 else 1.0
    level = float(background_stats(data)[0][0]) / full
    assert level > DISPLAY_BACKGROUND + 0.03  # the evidence is clear, not borderline
    kind, reason = linear_auto(data)
    assert kind == "none"
    assert FLAG in reason and "display-referred" in reason
    assert f"{level:.2f} of full scale" in reason
    assert "\n" not in reason
    st = fit_stretch(data, "auto", linear_first=True)
    assert st.kind == "none" and st.reason == reason
    # An explicit stretch is never second-guessed.
    explicit = fit_stretch(data, "mtf", linear_first=True)
    assert explicit.kind == "mtf" and explicit.reason == ""


@pytest.fixture
def display_fits(tmp_path):
    """A stretched picture (background 0.25) saved as a float32 FITS file."""
    return write_fits(tmp_path / "processed.fits", DISPLAY["float_picture_bg_0.25"])


def upscale_2x(capsys, model, src, out, *flags):
    """``astrosleuth-astro upscale SRC -o OUT --model MODEL --scale 2 FLAGS...`` in-process:
    ``(exit code, stdout, stderr)``."""
    return run_cli(capsys, "upscale", src, "-o", out, "--model", model, "--scale", "2", *flags)


def _reason_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if FLAG in line]


def test_display_fits_cli_says_so_in_one_line(capsys, tiny_fast_model, display_fits, tmp_path):
    """The CLI on a display-referred FITS, plain output: exactly one stderr line names the
    file, the reason and ``--stretch mtf``; the output is upscaled with ``none``."""
    out = tmp_path / "up.fits"
    code, stdout, err = run_cli(
        capsys, "upscale", display_fits, "-o", out, "--model", tiny_fast_model, "--scale", "2"
    )
    assert code == 0, err
    _, reason = linear_auto(DISPLAY["float_picture_bg_0.25"])
    lines = _reason_lines(err)
    assert len(lines) == 1, err
    assert lines[0].strip() == f"{display_fits}: {reason}"
    assert (
        sum(str(display_fits) in line and "display-referred" in line for line in err.splitlines())
        == 1
    )
    assert stdout == ""
    assert fits.getheader(out)["ASTSLSTR"] == "none"


def test_display_fits_cli_json_has_reason(capsys, tiny_fast_model, display_fits, tmp_path):
    """``--json`` on a display-referred FITS: the result's ``stretch`` is ``none`` and its
    ``stretch_reason`` is the same sentence, naming ``--stretch mtf``; stderr still has
    the one line."""
    out = tmp_path / "up.fits"
    code, stdout, err = upscale_2x(capsys, tiny_fast_model, display_fits, out, "--json")
    assert code == 0, err
    (result,) = json.loads(stdout)["results"]
    assert result["stretch"] == "none"
    assert FLAG in result["stretch_reason"] and "display-referred" in result["stretch_reason"]
    assert _reason_lines(err) == [f"{display_fits}: {result['stretch_reason']}"]


def test_display_fits_explicit_mtf_is_silent(capsys, tiny_fast_model, display_fits, tmp_path):
    """With ``--stretch mtf`` the choice is the user's: no stretch line on stderr, an empty
    ``stretch_reason`` and ``mtf`` in the JSON and in the output header."""
    out = tmp_path / "up.fits"
    code, stdout, err = upscale_2x(
        capsys, tiny_fast_model, display_fits, out, "--stretch", "mtf", "--json"
    )
    assert code == 0, err
    (result,) = json.loads(stdout)["results"]
    assert result["stretch"] == "mtf" and result["stretch_reason"] == ""
    assert _reason_lines(err) == [] and "display-referred" not in err
    assert fits.getheader(out)["ASTSLSTR"] == "mtf"


# -- 3. --quiet ---------------------------------------------------------------------------
def test_display_fits_quiet_suppresses_line_not_json(
    capsys, tiny_fast_model, display_fits, tmp_path
):
    """``--quiet`` silences stderr entirely (the code skips the stretch line under
    ``--quiet``), but the ``--json`` result still carries the reason."""
    out = tmp_path / "up.fits"
    code, stdout, err = upscale_2x(capsys, tiny_fast_model, display_fits, out, "--json", "--quiet")
    assert code == 0, err
    assert err == ""
    (result,) = json.loads(stdout)["results"]
    assert result["stretch"] == "none" and FLAG in result["stretch_reason"]


# -- beyond the list: a bright-sky raw frame in Siril's [0, 1] convention ------------------
def test_bright_sky_unit_float_raw_frame_is_linear():
    """A light-polluted raw frame in Siril's float convention is still a raw frame (its
    values sit on the 1/65535 grid, dead pixels at 0, hot pixels at 1.0): it should be read
    as linear."""
    adu = np.rint(raw_adu(pedestal=2048, sky=10000, dead=20, hot=20))  # a camera counts
    data = (adu / 65535.0).astype(np.float32)
    assert linear_auto(data)[0] == "mtf"
    # The same frame stretched is off the 1/65535 grid: still read as a picture.
    st = fit_stretch(adu, "mtf")
    picture = np.clip(st.forward(adu, dtype=np.float64), 0, 1).astype(np.float32)
    assert linear_auto(picture)[0] == "none"


def test_batch_route_says_why_display(capsys, tiny_fast_model, display_fits, tmp_path):
    """Several inputs go through the batch runner: where ``auto`` picks the display path
    for one of them, that route too should say so in one line and in ``--json``."""
    raw = write_fits(tmp_path / "light.fits", RAW_FRAMES["uint16_pedestal_1000"][0])
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, stdout, err = run_cli(
        capsys,
        "upscale",
        display_fits,
        raw,
        "-o",
        outdir,
        "--model",
        tiny_fast_model,
        "--scale",
        "2",
        "--json",
    )
    assert code == 0, err
    assert fits.getheader(outdir / "processed_x2.fits")["ASTSLSTR"] == "none"
    assert len(_reason_lines(err)) == 1 and str(display_fits) in _reason_lines(err)[0]
    assert FLAG in stdout
