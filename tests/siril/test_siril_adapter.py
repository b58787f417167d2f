"""The Siril adapter (``astrosleuth_astro.siril``) and the Siril script, without Siril.

``sirilpy`` ships only inside Siril, so these tests drive the adapter through
:class:`StandInSiril`, a stand-in that enforces the contract read from sirilpy's source
(``python_module/sirilpy/connection.py`` and ``exceptions.py``, Siril 1.4.0 to 1.4.4) and
from the C side that answers it (``src/io/siril_pythoncommands.c``,
``src/io/siril_pythonmodule.c``):

* ``image_lock()`` raises ``ProcessingThreadBusyError`` / ``ImageDialogOpenError`` (the
  real class names, subclasses of ``SirilError``) when the thread cannot be claimed;
* ``set_image_pixeldata`` is refused outside the lock (Siril answers "Processing thread is
  not claimed"), accepts only 2-D or ``(C, H, W)`` float32/uint16 arrays with C <= 3 and may
  change the size; ``set_image_metadata_from_header_string`` needs a ``str`` (TypeError
  otherwise) and is only accepted inside the lock here (stricter than Siril 1.4.4);
* ``cmd`` raises inside the lock (a Siril command there cannot get the thread);
* pixels come as ``(H, W)`` or ``(C, H, W)``, float32 or uint16, as copies; the header comes
  as one string, each card followed by ``"\\n"``, then ``END``;
* ``undo_save_state`` messages are limited to 70 bytes; ``update_progress`` accepts
  fractions in [0, 1] only (ValueError otherwise);
* ``cmd("close")`` unloads the image, and an image command (``save``) without an image
  fails, as Siril's command table says (``REQ_CMD_SINGLE_IMAGE``): this is how a failed
  plugin stops a ``siril-cli`` script file (measured with Siril 1.4.4, see test_siril14.py);
* sirilpy's ``ensure_installed`` raises ``SirilError`` when pip cannot install the package
  (``utility.py``: "Failed to install or verify package ..."), ``SystemExit`` when an
  imported package would need a reinstall.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from astrosleuth_astro import pipeline, siril
from astrosleuth_astro.api import get_backend
from astrosleuth_astro.pipeline import UpscaleOptions
from astrosleuth_astro.sim import simulate, to_hdu
from astrosleuth_astro.stretch import fit_stretch

SCRIPT = Path(__file__).resolve().parents[2] / "siril_scripts" / "AstroSleuth_Upscale.py"


# --------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------


class SirilError(Exception):
    """Same name and role as ``sirilpy.exceptions.SirilError``."""


class NoImageError(SirilError):
    pass


class CommandError(SirilError):
    pass


class ProcessingThreadBusyError(SirilError):
    pass


class ImageDialogOpenError(SirilError):
    pass


class SirilConnectionError(SirilError):
    pass


def siril_header_text(header: fits.Header) -> str:
    """A header as ``get_image_fits_header()`` gives it: stripped cards + "\\n", then END
    and the C string's NUL (measured on Siril 1.4.4, issue 25)."""
    return "".join(card.image.rstrip() + "\n" for card in header.cards) + "END\x00"


WCS_KEY = ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT", "PC", "CD", "A_", "B_", "AP_", "BP_")


def strip_wcs(header: fits.Header) -> fits.Header:
    """``header`` without its FITS WCS (what Siril does to a WCS it cannot use)."""
    out = header.copy()
    for key in [k for k in out if k.startswith(WCS_KEY) and k not in ("PCOUNT",)]:
        del out[key]
    return out


class StandInSiril:
    """A sirilpy ``SirilInterface`` stand-in that enforces the contract (see the module doc)."""

    def __init__(self, pixels, header=None, *, busy=False, dialog_open=False, cli=True):
        self.pixels = None if pixels is None else np.array(pixels)
        self.header_text = siril_header_text(header) if isinstance(header, fits.Header) else header
        self.busy = busy
        self.dialog_open = dialog_open
        self.cli = cli
        self.locked = False
        self.lock_entries = 0
        self.logs: list[str] = []
        self.log_colors: list = []
        self.progress: list[tuple[str, float]] = []
        self.resets = 0
        self.undo: list[str] = []
        self.commands: list[tuple[str, ...]] = []
        self.set_pixel_calls = 0
        self.set_header_calls = 0
        self.fail_next_header = False
        self.connected = False

    # connection
    def connect(self):
        self.connected = True
        return True

    def disconnect(self):
        self.connected = False

    def is_cli(self) -> bool:
        return self.cli

    def is_image_loaded(self) -> bool:
        return self.pixels is not None

    # lock
    @contextlib.contextmanager
    def image_lock(self):
        if self.busy or self.locked:
            raise ProcessingThreadBusyError("Processing thread is already in use")
        if self.dialog_open:
            raise ImageDialogOpenError("Image processing dialog is open")
        self.locked = True
        self.lock_entries += 1
        try:
            yield self
        finally:
            self.locked = False

    # reading
    def get_image_pixeldata(self, shape=None, preview=False, linked=False):
        if self.pixels is None:
            raise NoImageError(
                "Error in get_image_pixeldata(): no image is currently loaded in Siril"
            )
        assert self.pixels.dtype in (np.float32, np.uint16)
        assert self.pixels.ndim == 2 or (self.pixels.ndim == 3 and self.pixels.shape[0] in (2, 3))
        return self.pixels.copy()

    def get_image_fits_header(self, return_as="str"):
        if self.pixels is None:
            raise NoImageError("Error in get_image_fits_header(): no image is currently loaded")
        return self.header_text

    # writing
    def set_image_pixeldata(self, image_data):
        if not isinstance(image_data, np.ndarray):
            raise ValueError("Image data must be a numpy array")
        if image_data.ndim not in (2, 3):
            raise ValueError("Image must be 2D or 3D array")
        if image_data.dtype not in (np.float32, np.uint16):
            raise ValueError("Image data must be float32 or uint16")
        if self.pixels is None:
            raise NoImageError("Error in set_image_pixeldata(): no image loaded")
        if image_data.ndim == 3 and image_data.shape[0] > 3:
            raise ValueError("Image cannot have more than 3 channels")
        if not self.locked:
            raise SirilError(
                "Interface error in _execute_command: processing thread is not claimed: "
                "unable to update the current image"
            )
        self.set_pixel_calls += 1
        self.pixels = image_data.copy()

    def set_image_metadata_from_header_string(self, header):
        if not isinstance(header, str):
            raise TypeError("Header data must be a string")
        if self.pixels is None:
            raise NoImageError("no image loaded")
        if not self.locked:
            raise SirilError("set_image_metadata_from_header_string() outside image_lock()")
        if self.fail_next_header:
            self.fail_next_header = False
            raise SirilError(
                "Interface error in _execute_command: could not parse FITS header string"
            )
        parsed = fits.Header.fromstring(header, sep="\n")
        assert header.rstrip().endswith("END")
        assert list(parsed.keys())[:3] == ["SIMPLE", "BITPIX", "NAXIS"], list(parsed.keys())[:3]
        assert (
            tuple(parsed[f"NAXIS{i}"] for i in range(parsed["NAXIS"], 0, -1)) == self.pixels.shape
        )
        self.set_header_calls += 1
        if "CNPIX1" in parsed and "XPIXELSZ" not in parsed:
            # Siril 1.4.4: DSS plate keywords without XPIXELSZ: the WCS is dropped.
            parsed = strip_wcs(parsed)
            header = siril_header_text(parsed)
        self.header_text = header

    def save_and_reload(self) -> fits.Header:
        """The header after Siril 1.4.4 saves the image and loads the file again: XPIXELSZ
        is written as XPIXSZ, and DSS keywords without XPIXELSZ then lose the WCS."""
        saved = self.header()
        for dss, siril_key in (("XPIXELSZ", "XPIXSZ"), ("YPIXELSZ", "YPIXSZ")):
            if dss in saved:
                saved[siril_key] = saved.pop(dss)
        return strip_wcs(saved) if "CNPIX1" in saved else saved

    # everything else
    def cmd(self, *args):
        if self.locked:
            raise CommandError(f"Command '{args[0]}' failed: Command thread already running")
        self.commands.append(tuple(str(a) for a in args))
        if args[0] == "close":
            self.pixels, self.header_text = None, None
        elif args[0] == "save" and self.pixels is None:
            raise CommandError("Command 'save' failed: no image loaded")

    def undo_save_state(self, my_string):
        if len(my_string.encode("utf-8")) > 70:
            raise ValueError("undo_save_state: message longer than 70 bytes")
        self.undo.append(my_string)
        return True

    def update_progress(self, message, progress):
        if not (0.0 <= progress <= 1.0 or progress in (-1.0, -2.0)):
            raise ValueError("Progress value must be between 0.0 and 1.0")
        self.progress.append((message, progress))

    def reset_progress(self):
        self.resets += 1

    def log(self, my_string, color=None):
        self.logs.append(my_string)
        self.log_colors.append(color)
        return True

    def errors(self) -> list[str]:
        """The log's error lines: red, with the fixed prefix."""
        return [
            line
            for line, color in zip(self.logs, self.log_colors, strict=True)
            if line.startswith("AstroSleuth: ERROR: ") and color == LogColor.RED
        ]

    def error_messagebox(self, my_string, modal=False):
        self.logs.append(my_string)
        return True

    # helpers for the tests
    def header(self) -> fits.Header:
        """The current header (as Siril reads it: up to the C string's NUL)."""
        return fits.Header.fromstring(self.header_text.split("\x00")[0], sep="\n")


class FailingNet:
    """A backend that runs ``calls_ok`` batches, then fails like an exhausted allocator."""

    def __init__(self, net, calls_ok: int, exc: BaseException):
        self.net, self.calls_ok, self.exc = net, calls_ok, exc
        self.model_name, self.sha256, self.name, self.device = "failing", "", "torch", "cpu"
        self.tile = 16

    def __call__(self, batch):
        if self.calls_ok <= 0:
            raise self.exc
        self.calls_ok -= 1
        return self.net(batch)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def siril_14_header(shape, *, sip: bool = True, bitpix: int = -32) -> fits.Header:
    """A plate-solved header as Siril 1.4 writes it (CDELT + PC, EQUINOX, SIP)."""
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = bitpix
    h["NAXIS"] = len(shape)
    for i, n in enumerate(reversed(shape), start=1):
        h[f"NAXIS{i}"] = n
    h["EXTEND"] = True
    if bitpix == 16:
        h["BZERO"] = 32768.0
        h["BSCALE"] = 1.0
    h["DATE-OBS"] = "2025-01-05T21:03:00.000000"
    h["EXPTIME"] = 300.0
    h["XPIXSZ"] = 3.76
    h["YPIXSZ"] = 3.76
    h["XBINNING"] = 1
    h["FOCALLEN"] = 530.0
    h["OBJCTRA"] = "05 41 00.000"
    h["OBJCTDEC"] = "-02 27 00.00"
    h["RA"] = 85.25
    h["DEC"] = -2.45
    h["CTYPE1"] = "RA---TAN-SIP" if sip else "RA---TAN"
    h["CTYPE2"] = "DEC--TAN-SIP" if sip else "DEC--TAN"
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    h["EQUINOX"] = 2000.0
    h["CRPIX1"] = shape[-1] / 2 + 0.37
    h["CRPIX2"] = shape[-2] / 2 - 0.81
    h["CRVAL1"] = 85.25
    h["CRVAL2"] = -2.45
    h["LONPOLE"] = 180.0
    h["CDELT1"] = -4.07e-4
    h["CDELT2"] = 4.07e-4
    h["PC1_1"] = 0.99984
    h["PC1_2"] = -0.01789
    h["PC2_1"] = 0.01789
    h["PC2_2"] = 0.99984
    if sip:
        h["A_ORDER"] = 2
        h["A_0_2"] = 2.1e-6
        h["A_1_1"] = -1.3e-6
        h["A_2_0"] = 3.4e-6
        h["B_ORDER"] = 2
        h["B_0_2"] = -1.7e-6
        h["B_1_1"] = 2.2e-6
        h["B_2_0"] = 0.9e-6
    h.add_history("Plate solved by Siril")
    return h


def field(shape=(40, 48), channels=1, seed=0) -> np.ndarray:
    """A simulated star field in ADU (background ~1000, stars up to saturation)."""
    data = to_hdu(simulate(shape, channels=channels, seed=seed), which="lr").data
    return np.asarray(data, dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_net(tiny_fast_model):
    return get_backend(tiny_fast_model)


def sky_offsets_arcsec(w_in: WCS, w_out: WCS, shape, s: int) -> np.ndarray:
    """Angular distances between input pixels and their output positions."""
    ys, xs = np.mgrid[0 : shape[0] : 3, 0 : shape[1] : 3].astype(float)
    ra0, dec0 = w_in.all_pix2world(xs.ravel(), ys.ravel(), 0)
    ra1, dec1 = w_out.all_pix2world((xs.ravel() + 0.5) * s - 0.5, (ys.ravel() + 0.5) * s - 0.5, 0)
    a = SkyCoord(ra0, dec0, unit="deg")
    b = SkyCoord(ra1, dec1, unit="deg")
    return a.separation(b).arcsec


# --------------------------------------------------------------------------------------
# The stand-in enforces the contract
# --------------------------------------------------------------------------------------


def test_standin_enforces_the_lock_rules():
    fake = StandInSiril(np.zeros((4, 5), np.float32), fits.Header())
    with pytest.raises(SirilError, match="not claimed"):
        fake.set_image_pixeldata(np.zeros((8, 10), np.float32))
    with pytest.raises(SirilError):
        fake.set_image_metadata_from_header_string("SIMPLE  =                    T\nEND")
    with fake.image_lock():
        with pytest.raises(CommandError):
            fake.cmd("stat")
        with pytest.raises(ValueError, match="float32 or uint16"):
            fake.set_image_pixeldata(np.zeros((8, 10), np.float64))
        with pytest.raises(ProcessingThreadBusyError):
            with fake.image_lock():
                pass
    fake.cmd("stat")
    with pytest.raises(ValueError):
        fake.undo_save_state("x" * 71)
    with pytest.raises(ValueError):
        fake.update_progress("x", 1.5)


def test_header_string_format_parsed_like_siril_writes_it():
    h = siril_14_header((20, 30), sip=False)
    text = siril_header_text(h)
    # Siril appends the cards of a following table HDU; they are not this image's.
    assert text.endswith("END\x00")  # sirilpy 1.4's C string, NUL included
    text = text[: -len("END\x00")] + "XTENSION= 'BINTABLE'\nTTYPE1  = 'FLUX'\nEND\x00"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warned about an "END\x00" card
        parsed = siril.parse_siril_header(text)
    assert "END" not in parsed and not any("\x00" in k for k in parsed)
    assert parsed["CRPIX1"] == h["CRPIX1"] and parsed["EQUINOX"] == 2000.0
    assert "TTYPE1" not in parsed and "XTENSION" not in parsed
    assert len(parsed) == len(h)
    assert len(siril.parse_siril_header(None)) == 0


# --------------------------------------------------------------------------------------
# Upscaling through the stand-in
# --------------------------------------------------------------------------------------


def test_mono_uint16_stays_uint16_with_header_and_progress(tiny_net):
    adu = np.clip(np.rint(field((40, 48), seed=3)), 0, 65535).astype(np.uint16)
    fake = StandInSiril(adu, siril_14_header(adu.shape, sip=False, bitpix=16))
    report = siril.upscale_current_image(fake, model=tiny_net, scale=2, stretch="mtf", tile=24)

    assert fake.pixels.dtype == np.uint16 and fake.pixels.shape == (80, 96)
    assert report.shape_out == (80, 96) and report.dtype == "uint16" and report.wcs
    # Units kept: 2x2 block means follow the input, and the background is unchanged.
    blocks = fake.pixels.astype(np.float64).reshape(40, 2, 48, 2).mean(axis=(1, 3))
    assert np.median(blocks) == pytest.approx(np.median(adu), rel=0.01)
    assert abs(blocks.mean() / adu.mean() - 1) < 0.02
    hdr = fake.header()
    assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768 and hdr["NAXIS1"] == 96
    assert hdr["XPIXSZ"] == pytest.approx(3.76 / 2) and hdr["ASTSLSCL"] == 2
    assert hdr["EQUINOX"] == 2000.0 and hdr["CTYPE1"] == "RA---TAN"
    # Contract: one undo state (<= 70 bytes), pixels then header, inside one lock.
    assert len(fake.undo) == 1 and len(fake.undo[0].encode()) <= 70
    assert fake.set_pixel_calls == 1 and fake.set_header_calls == 1 and fake.lock_entries == 1
    assert fake.progress and all(0.0 <= f <= 1.0 for _, f in fake.progress)
    assert fake.progress[-1][1] == 1.0 and fake.resets == 1
    assert not fake.locked and fake.commands == []
    assert len(fake.logs) == 1 and "upscaled x2" in fake.logs[0] and "80" in fake.logs[0]


def test_rgb_float32_in_unit_range(tiny_net):
    rgb = field((32, 40), channels=3, seed=4) / np.float32(65535)
    header = siril_14_header(rgb.shape, sip=False)
    header["CTYPE3"] = "RGB"
    fake = StandInSiril(rgb.astype(np.float32), header)
    siril.upscale_current_image(fake, model=tiny_net, scale=4, luminance_only=True)

    out = fake.pixels
    assert out.dtype == np.float32 and out.shape == (3, 128, 160)
    assert 0.0 <= out.min() and out.max() <= 1.0
    blocks = out.astype(np.float64).reshape(3, 32, 4, 40, 4).mean(axis=(2, 4))
    for c in range(3):
        assert np.median(blocks[c]) == pytest.approx(np.median(rgb[c]), rel=0.01)
    hdr = fake.header()
    assert hdr["NAXIS"] == 3 and hdr["NAXIS3"] == 3 and hdr["BITPIX"] == -32
    assert "BZERO" not in hdr and hdr["CTYPE3"] == "RGB"


def test_auto_says_why_it_reads_a_picture_as_display_referred(tiny_net):
    """A stretched picture (in [0, 1], background at 0.25, off the 16-bit grid): ``auto``
    reads it as display-referred and says so in the log, naming this script's option;
    a linear frame gets no such line."""
    from astrosleuth_astro.stretch import fit_stretch

    adu = field((32, 40), seed=6).astype(np.float64)
    picture = np.clip(fit_stretch(adu, "mtf").forward(adu, dtype=np.float64), 0, 1)
    fake = StandInSiril(picture.astype(np.float32), siril_14_header(picture.shape, sip=False))
    report = siril.upscale_current_image(fake, model=tiny_net, scale=2)
    assert report.stretch == "none" and "display-referred" in report.stretch_reason
    notes = [line for line in fake.logs if "-stretch=mtf" in line]
    assert len(notes) == 1 and "--stretch" not in notes[0]

    linear = (adu / 65535).astype(np.float32)
    fake = StandInSiril(linear, siril_14_header(linear.shape, sip=False))
    report = siril.upscale_current_image(fake, model=tiny_net, scale=2)
    assert report.stretch == "mtf" and report.stretch_reason == ""
    assert not [line for line in fake.logs if "stretch=mtf" in line]


@pytest.mark.filterwarnings("ignore:.*'datfix' made the change")
@pytest.mark.parametrize("s", [3, 4])
def test_plate_solved_header_stays_plate_solved(tiny_net, s):
    data = (field((30, 36), seed=5) / 65535).astype(np.float32)
    header = siril_14_header(data.shape, sip=True)
    fake = StandInSiril(data, header)
    siril.upscale_current_image(fake, model=tiny_net, scale=s)

    out = fake.header()
    assert out["CTYPE1"] == "RA---TAN-SIP" and out["EQUINOX"] == 2000.0
    w_in, w_out = WCS(header), WCS(out)
    assert w_out.sip is not None
    sep = sky_offsets_arcsec(w_in, w_out, data.shape, s)
    assert sep.max() < 1e-4, sep.max()
    assert out["XPIXSZ"] == pytest.approx(3.76 / s) and out["RA"] == header["RA"]


def test_error_in_the_middle_leaves_image_unchanged(tiny_net):
    data = (field((40, 48), seed=6) / 65535).astype(np.float32)
    fake = StandInSiril(data, siril_14_header(data.shape))
    before_pixels, before_header = fake.pixels.copy(), fake.header_text
    net = FailingNet(tiny_net, calls_ok=2, exc=MemoryError())
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(fake, model=net, tile=16, batch_size=1)

    assert np.array_equal(fake.pixels, before_pixels) and fake.header_text == before_header
    assert fake.set_pixel_calls == 0 and fake.undo == [] and not fake.locked
    assert len(fake.progress) >= 2 and fake.resets == 1  # it failed while the tiles ran
    assert len(fake.logs) == 1 and "out of memory" in fake.logs[0]
    assert "not changed" in fake.logs[0]


def test_refused_header_write_puts_the_original_back(tiny_net):
    data = (field((24, 28), seed=7) / 65535).astype(np.float32)
    fake = StandInSiril(data, siril_14_header(data.shape))
    before_pixels, before_header = fake.pixels.copy(), fake.header_text
    fake.fail_next_header = True
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(fake, model=tiny_net, scale=2)
    assert np.array_equal(fake.pixels, before_pixels) and fake.pixels.shape == (24, 28)
    assert fake.header_text == before_header.split("\x00")[0]  # the original, up to its NUL
    assert len(fake.logs) == 1 and "Siril reported an error" in fake.logs[0]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"busy": True}, "busy"),
        ({"dialog_open": True}, "dialog is open"),
    ],
)
def test_busy_lock_is_reported_and_nothing_changes(tiny_net, kwargs, needle):
    data = np.full((12, 14), 1000, np.uint16)
    fake = StandInSiril(data, siril_14_header(data.shape, bitpix=16), **kwargs)
    before = fake.header_text
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(fake, model=tiny_net)
    assert np.array_equal(fake.pixels, data) and fake.header_text == before
    assert fake.undo == [] and fake.set_pixel_calls == 0
    assert len(fake.logs) == 1 and needle in fake.logs[0]


def test_missing_model_and_no_image(tmp_path, tiny_net):
    data = np.full((12, 14), 0.1, np.float32)
    fake = StandInSiril(data, None)
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(fake, model=tmp_path / "missing.safetensors")
    assert fake.lock_entries == 0 and np.array_equal(fake.pixels, data)
    assert len(fake.logs) == 1 and "missing.safetensors" in fake.logs[0]

    empty = StandInSiril(None, None)
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(empty, model=tiny_net)
    assert len(empty.logs) == 1 and "no image is loaded" in empty.logs[0]

    for bad in ({"scale": 5}, {"stretch": "log"}):
        with pytest.raises(siril.SirilUpscaleError):
            siril.upscale_current_image(fake, model=tiny_net, **bad)
    assert fake.lock_entries == 0


def test_headerless_image(tiny_net):
    data = np.linspace(0.05, 0.2, 12 * 14, dtype=np.float32).reshape(12, 14)
    fake = StandInSiril(data, None)
    report = siril.upscale_current_image(fake, model=tiny_net, scale=2)
    assert fake.pixels.shape == (24, 28) and not report.wcs
    assert fake.header()["NAXIS1"] == 28


def test_star_protection_reaches_the_pipeline_and_a_bad_strength_fails_first(tiny_net, monkeypatch):
    data = (field((20, 24), seed=8) / 65535).astype(np.float32)
    original = pipeline.upscale_array
    seen = []

    def spy(data, net, options, **hooks):
        seen.append(options)
        return original(data, net, options, **hooks)

    monkeypatch.setattr(pipeline, "upscale_array", spy)
    for strength, expected in ((0.5, 0.5), (0.25, 0.25), (None, 1.0)):
        fake = StandInSiril(data, None)
        report = siril.upscale_current_image(
            fake, model=tiny_net, scale=2, protect_stars=True, protect_strength=strength
        )
        opts = seen[-1]
        assert opts.protect_stars is True and opts.protect_strength == expected
        assert report.star_protection and "stars protected" in fake.logs[-1]
    assert siril.star_protection_available()

    for bad in (1.5, float("nan"), "strong"):
        fake = StandInSiril(data, None)
        with pytest.raises(siril.SirilUpscaleError):
            siril.upscale_current_image(
                fake, model=tiny_net, protect_stars=True, protect_strength=bad
            )
        assert len(fake.logs) == 1 and "-protect_strength=" in fake.logs[0]
        assert "between 0 and 1" in fake.logs[0] and fake.lock_entries == 0
        assert np.array_equal(fake.pixels, data)
    assert len(seen) == 3


def test_flux_conservation_reaches_the_pipeline_and_the_header(tiny_net):
    data = field((20, 24), seed=9).astype(np.float32)
    fake = StandInSiril(data, None)
    siril.upscale_current_image(fake, model=tiny_net, conserve_flux="all")
    binned = fake.pixels.reshape(20, 4, 24, 4).mean(axis=(1, 3), dtype=np.float64)
    np.testing.assert_allclose(binned, data, rtol=1e-6)
    assert fake.header()["ASTSLFLX"] == "all"
    fake = StandInSiril(data, None)
    with pytest.raises(siril.SirilUpscaleError):
        siril.upscale_current_image(fake, model=tiny_net, conserve_flux="stars")
    assert "-conserve_flux=stars: not a mode" in fake.logs[0] and fake.lock_entries == 0
    assert np.array_equal(fake.pixels, data)


def test_dtype_conversion_rounds_and_clips():
    like16 = np.zeros((2, 2), np.uint16)
    res = np.array([[-3.0, 1.49], [1.5, 70000.0]], np.float32)
    assert siril.from_pipeline_output(res, like16).tolist() == [[0, 1], [2, 65535]]
    like32 = np.array([[0.0, 0.5], [0.2, 1.0]], np.float32)
    out = siril.from_pipeline_output(np.array([[-0.1, 1.2], [np.nan, 0.3]], np.float32), like32)
    assert out.dtype == np.float32 and out[0].tolist() == [0.0, 1.0] and np.isnan(out[1, 0])
    wide = np.array([[-0.5, 0.5], [0.2, 3.0]], np.float32)  # beyond [0, 1] already
    out = siril.from_pipeline_output(np.array([[-1.0, 2.0], [0.0, 4.0]], np.float32), wide)
    assert out.ravel().tolist() == [-0.5, 2.0, 0.0, 3.0]


def test_choose_device(tmp_path):
    class Torch:
        def __init__(self, installed, kind):
            self.installed, self.kind = installed, kind

        def is_torch_installed(self):
            return self.installed

        def get_torch_device(self, use_gpu=True):
            return types.SimpleNamespace(type=self.kind)

    class Onnx:
        def __init__(self, providers):
            self.providers = providers

        def get_execution_providers_ordered(self, ai_gpu_acceleration=True):
            return self.providers

    assert siril.choose_device(False)[:2] == ("auto", "cpu")
    assert siril.choose_device(True, torch_helper=Torch(True, "cuda"))[:2] == ("torch", "cuda")
    assert siril.choose_device(True, torch_helper=Torch(True, "mps"))[:2] == ("torch", "mps")
    cuda_ort = Onnx(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert siril.choose_device(
        True, "default", torch_helper=Torch(False, "cpu"), onnx_helper=cuda_ort
    )[:2] == ("onnx", "cuda")
    # A torch-only model cannot use onnxruntime's GPU.
    backend, device, note = siril.choose_device(True, "AstroSleuthV2", onnx_helper=cuda_ort)
    assert (backend, device) == ("auto", "cpu") and "CPU" in note
    assert siril.model_needs_torch("AstroSleuthNEXT") and not siril.model_needs_torch("default")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert siril.model_needs_torch(weights) and not siril.model_needs_torch(tmp_path / "typo.pth")
    assert siril.model_arch("AstroSleuthNEXT") == "next" and siril.model_arch("default") == "fast"


# --------------------------------------------------------------------------------------
# The script, driven through its pyscript (argparse) path
# --------------------------------------------------------------------------------------


class LogColor(enum.IntEnum):
    DEFAULT = 0
    RED = 1
    SALMON = 2
    GREEN = 3
    BLUE = 4


def fake_sirilpy(
    instance: StandInSiril, calls: list, install_fails: bool = False
) -> types.ModuleType:
    """A ``sirilpy`` module whose ``SirilInterface()`` is ``instance``; its
    ``ensure_installed`` fails as sirilpy's does when pip finds nothing (``install_fails``)."""
    mod = types.ModuleType("sirilpy")
    mod.SirilInterface = lambda: instance
    mod.LogColor = LogColor
    exceptions = (SirilError, NoImageError, CommandError, ProcessingThreadBusyError)
    for exc in (*exceptions, ImageDialogOpenError, SirilConnectionError):
        setattr(mod, exc.__name__, exc)

    def ensure_installed(*packages, version_constraints=None, reinstall=False):
        calls.append(("ensure_installed", packages, version_constraints))
        if install_fails:
            print(f"Error processing {packages[0]}: Command '['pip', 'install']' returned 1")
            raise SirilError(f"Failed to install or verify package {packages[0]}")
        return True

    class TorchHelper:
        def is_torch_installed(self):
            return True

        def ensure_torch(self):
            calls.append(("ensure_torch",))
            return True

        def get_torch_device(self, use_gpu=True):
            return types.SimpleNamespace(type="cpu")

    class ONNXHelper:
        def get_execution_providers_ordered(self, ai_gpu_acceleration=True):
            return ["CPUExecutionProvider"]

    mod.ensure_installed = ensure_installed
    mod.check_module_version = lambda requires=None: True
    mod.TorchHelper = TorchHelper
    mod.ONNXHelper = ONNXHelper
    return mod


def load_script(monkeypatch, instance: StandInSiril, calls: list, install_fails: bool = False):
    monkeypatch.setitem(sys.modules, "sirilpy", fake_sirilpy(instance, calls, install_fails))
    spec = importlib.util.spec_from_file_location("AstroSleuth_Upscale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_pyscript_path(monkeypatch, tiny_fast_model):
    data = (field((24, 28), seed=9) / 65535).astype(np.float32)
    fake = StandInSiril(data, siril_14_header(data.shape, sip=False))
    calls: list = []
    script = load_script(monkeypatch, fake, calls)
    assert script.VERSION and "SPDX-License-Identifier: BSD-3-Clause" in SCRIPT.read_text()

    rc = script.main([f"-model={tiny_fast_model}", "-scale=2", "-stretch=mtf", "-device=gpu"])
    assert rc == 0, fake.logs
    assert fake.pixels.shape == (48, 56) and fake.pixels.dtype == np.float32
    assert fake.commands == [("requires", "1.4.0")]
    # The package is installed here (0.1.x): neither pip nor the package index is asked.
    assert not any(c[0] == "ensure_installed" and "astrosleuth-astro" in c[1] for c in calls)
    assert fake.errors() == []
    assert any("running on the CPU" in line for line in fake.logs)  # no GPU here
    assert "upscaled x2" in fake.logs[-1] and not fake.connected


def test_script_conserve_flux_option(monkeypatch, tiny_fast_model):
    data = field((16, 20), seed=3).astype(np.float32)
    fake = StandInSiril(data, None)
    script = load_script(monkeypatch, fake, [])
    assert script.parse_options(["-conserve_flux"])["conserve_flux"] == "sources"
    assert script.parse_options([])["conserve_flux"] is None
    assert script.main([f"-model={tiny_fast_model}", "-conserve_flux=all"]) == 0, fake.logs
    binned = fake.pixels.reshape(16, 4, 20, 4).mean(axis=(1, 3), dtype=np.float64)
    np.testing.assert_allclose(binned, data, rtol=1e-6)
    assert script.main(["-conserve_flux=stars"]) == 2


def test_script_bad_option_and_failure(monkeypatch, tiny_fast_model, tmp_path):
    data = np.full((10, 12), 0.1, np.float32)
    gui = StandInSiril(data, None, cli=False)
    script = load_script(monkeypatch, gui, [])
    assert script.main(["-scale=5"]) == 2
    assert len(gui.errors()) == 1 and "bad option" in gui.errors()[0]
    assert "-scale" in gui.errors()[0] and gui.lock_entries == 0
    assert np.array_equal(gui.pixels, data) and ("close",) not in gui.commands  # GUI: kept

    busy = StandInSiril(data, None, busy=True, cli=False)
    script = load_script(monkeypatch, busy, [])
    assert script.main([f"-model={tiny_fast_model}"]) == 1
    assert np.array_equal(busy.pixels, data)
    errors = busy.errors()
    assert len(errors) == 1 and "busy" in errors[0] and "not changed" in errors[0]


@pytest.mark.parametrize("argv", [["-scale=5"], ["-stretch=log"], ["-device=tpu"], ["-x"]])
def test_script_failure_stops_a_siril_cli_script(monkeypatch, argv):
    """Siril 1.4's ``pyscript`` always succeeds; under siril-cli a failed run closes the
    image, so the script file's next ``save`` fails (siril-cli then exits with status 1)."""
    data = np.full((10, 12), 0.1, np.float32)
    cli = StandInSiril(data, None, cli=True)
    script = load_script(monkeypatch, cli, [])
    assert script.main(argv) == 2
    errors = cli.errors()
    assert errors[0].startswith("AstroSleuth: ERROR: bad option: ") and "not changed" in errors[0]
    assert "image was closed" in errors[-1] and ("close",) in cli.commands
    with pytest.raises(CommandError):
        cli.cmd("save", "out")  # the script file's next line
    assert cli.lock_entries == 0 and not cli.connected


def test_script_install_error_says_how_to_fix_it(monkeypatch, tmp_path):
    """No package in Siril's venv and none on the index: one red line with the exact pip
    command for Siril's Python, the option and the environment variable."""
    data = np.full((10, 12), 0.1, np.float32)
    fake = StandInSiril(data, None, cli=True)
    calls: list = []
    script = load_script(monkeypatch, fake, calls, install_fails=True)
    monkeypatch.setattr(script, "installed_version", lambda: None)
    monkeypatch.delenv(script.INSTALL_ENV, raising=False)
    assert script.main(["-scale=2"]) == 1
    assert ("ensure_installed", ("astrosleuth-astro",), "~=0.1.0") in calls
    errors = fake.errors()
    assert len(errors) == 2, fake.logs  # the error, then "the image was closed"
    line = errors[0]
    assert "astrosleuth-astro is not installed in Siril's Python" in line
    assert f'"{sys.executable}" -m pip install "/path/to/astrosleuth-astro"' in line
    assert "-install_from=PATH" in line and "ASTROSLEUTH_INSTALL_FROM=PATH" in line
    assert "not changed" in line and fake.pixels is None  # closed: the next save fails

    # An installed but too old package is named as such.
    fake = StandInSiril(data, None, cli=False)
    script = load_script(monkeypatch, fake, [], install_fails=True)
    monkeypatch.setattr(script, "installed_version", lambda: "0.0.9")
    assert script.main(["-scale=2"]) == 1
    assert "astrosleuth-astro 0.0.9 is installed" in fake.errors()[0]
    assert np.array_equal(fake.pixels, data)  # GUI: nothing closed


def test_script_installs_from_a_local_wheel_or_checkout(monkeypatch, tmp_path):
    data = np.full((10, 12), 0.1, np.float32)
    fake = StandInSiril(data, None, cli=False)
    calls: list = []
    script = load_script(monkeypatch, fake, calls, install_fails=True)
    versions = iter([None, "0.1.0"])  # missing, then installed by pip
    monkeypatch.setattr(script, "installed_version", lambda: next(versions))
    pip: list = []
    monkeypatch.setattr(script, "run_pip", lambda args: pip.append(args) or 0)
    monkeypatch.setattr(script, "run_upscale", lambda siril, options: 0)
    wheel = tmp_path / "astrosleuth_astro-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    assert script.main(["-scale=2", f"-install_from={wheel}"]) == 0, fake.logs
    assert pip == [[str(wheel)]] and fake.errors() == []
    assert not any(c[0] == "ensure_installed" for c in calls)  # no index
    assert script.pip_command("x")[:4] == [sys.executable, "-m", "pip", "install"]

    # The argument forms: a checkout, a folder of wheels; the variable when no option.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text("[project]\n")
    assert script.install_args(str(checkout)) == [str(checkout)]
    assert script.install_args(str(tmp_path)) == [
        "--find-links",
        str(tmp_path),
        "astrosleuth-astro~=0.1.0",
    ]
    versions = iter([None, "0.1.0"])
    monkeypatch.setenv(script.INSTALL_ENV, str(checkout))
    pip.clear()
    assert script.main(["-scale=2"]) == 0 and pip == [[str(checkout)]]
    assert "installing it from" in " ".join(fake.logs)


@pytest.mark.parametrize("problem", ["missing", "not a wheel", "empty folder", "pip fails"])
def test_script_install_from_problems_are_one_clear_error(monkeypatch, tmp_path, problem):
    data = np.full((10, 12), 0.1, np.float32)
    fake = StandInSiril(data, None, cli=True)
    script = load_script(monkeypatch, fake, [])
    monkeypatch.setattr(script, "installed_version", lambda: None)
    monkeypatch.setattr(script, "run_pip", lambda args: 1)
    source = {
        "missing": tmp_path / "nowhere",
        "not a wheel": tmp_path / "notes.txt",
        "empty folder": tmp_path,
        "pip fails": tmp_path / "astrosleuth_astro-0.1.0-py3-none-any.whl",
    }[problem]
    if problem in ("not a wheel", "pip fails"):
        source.write_text("x")
    assert script.main([f"-install_from={source}"]) == 1
    errors = fake.errors()
    assert len(errors) == 2 and str(source.name) in errors[0], fake.logs
    assert f'"{sys.executable}" -m pip install' in errors[0] and fake.pixels is None
    if problem == "pip fails":
        assert "exit status 1" in errors[0]


def test_installed_package_that_does_not_import_is_an_install_error(monkeypatch):
    fake = StandInSiril(np.zeros((4, 4), np.float32), None, cli=False)
    script = load_script(monkeypatch, fake, [])

    def broken(name):
        raise ImportError("numpy.core.multiarray failed to import")

    monkeypatch.setattr(script.importlib, "import_module", broken)
    assert script.main(["-scale=2"]) == 1
    assert "cannot be imported (ImportError: numpy.core" in fake.errors()[0]
    assert script.version_ok("0.1.3") and not script.version_ok("0.2.0")
    assert not script.version_ok(None) and not script.version_ok("0.0.9")


def test_star_stages_show_in_sirils_progress_bar(tiny_net):
    data = field((40, 48), seed=3).astype(np.float32)
    fake = StandInSiril(data, None)
    siril.upscale_current_image(fake, model=tiny_net, scale=2, protect_stars=True, tile=24)
    messages = [m for m, _ in fake.progress]
    assert any(m.endswith(": detecting stars") for m in messages), messages
    assert any(m.endswith(": upscaling") for m in messages), messages
    assert all(0.0 <= f <= 1.0 for _, f in fake.progress)  # sirilpy refuses anything else
    stages = [f for m, f in fake.progress if m.endswith(("stars", "upscaling"))]
    assert stages[0] == 0.0  # detection starts before any tile


def dss_as_siril_hands_it(shape) -> fits.Header:
    """A DSS plate as sirilpy hands it over: Siril's WCS built from the plate solution, the
    DSS keywords, and the pixel size renamed XPIXSZ (no XPIXELSZ; Siril 1.4.4, issue 25)."""
    h = siril_14_header(shape, sip=False)
    h["CNPIX1"], h["CNPIX2"] = 716, 8444
    h["AMDX1"], h["AMDY1"], h["PPO3"], h["PLTSCALE"], h["PLTRAH"] = 67.1, 67.2, 1.7e5, 67.2, 5
    h["XPIXSZ"], h["YPIXSZ"] = 25.28, 25.28
    h["PLATEID"] = "0025"
    return h


@pytest.mark.filterwarnings("ignore:.*'datfix' made the change")
def test_dss_plate_keeps_sirils_wcs_in_siril_and_in_its_saved_file(tiny_net):
    """Siril drops the WCS when the DSS keywords come back without XPIXELSZ, and with
    XPIXELSZ it keeps the WCS but saves a file it cannot read back (XPIXSZ written instead):
    the output replaces the plate solution by Siril's WCS, rescaled."""
    data = (field((20, 30), seed=12) / 65535).astype(np.float32)
    h = dss_as_siril_hands_it(data.shape)
    # The stand-in does what Siril does with the header as it came.
    naive = StandInSiril(data, h)
    with naive.image_lock():
        naive.set_image_metadata_from_header_string(siril.siril_header_string(h))
    assert "CTYPE1" not in naive.header()
    fake = StandInSiril(data, h)
    siril.upscale_current_image(fake, model=tiny_net, scale=2)
    out = fake.header()
    assert out["CTYPE1"] == "RA---TAN" and out["XPIXSZ"] == pytest.approx(12.64)
    assert not [k for k in out if k.startswith(("CNPIX", "AMD", "PPO", "PLTRA", "PLTSC"))]
    assert "XPIXELSZ" not in out and out["PLATEID"] == "0025"  # the label stays
    siril_wcs = h.copy()  # Siril's WCS alone (astropy would read the partial plate solution)
    for key in [k for k in siril_wcs if k.startswith(("CNPIX", "AMD", "PPO", "PLT"))]:
        del siril_wcs[key]
    sep = sky_offsets_arcsec(WCS(siril_wcs), WCS(out), data.shape, 2)
    assert sep.max() < 1e-4
    assert fake.save_and_reload()["CTYPE1"] == "RA---TAN"  # Siril reads its file back


def test_dss_plate_without_a_fits_wcs_gets_its_pixel_size_back():
    """No FITS WCS next to the plate solution: XPIXELSZ = the rescaled XPIXSZ keeps the
    plate solution consistent with the rescaled CNPIX."""
    h = dss_as_siril_hands_it((20, 30))
    h = strip_wcs(h)
    out = siril.build_output_header(
        h,
        (40, 60),
        np.float32,
        stretch=fit_stretch(np.ones((4, 4)), "none"),
        net=None,
        options=UpscaleOptions(scale=2),
    )
    assert out["XPIXSZ"] == pytest.approx(12.64) and out["XPIXELSZ"] == pytest.approx(12.64)
    assert out["YPIXELSZ"] == pytest.approx(12.64)
    assert out["CNPIX1"] == 716 * 2 and out["AMDX1"] == 67.1  # plate mm: unchanged
    # without DSS keywords nothing is added
    del h["CNPIX1"], h["CNPIX2"]
    plain = siril.build_output_header(
        h,
        (40, 60),
        np.float32,
        stretch=fit_stretch(np.ones((4, 4)), "none"),
        net=None,
        options=UpscaleOptions(scale=2),
    )
    assert "XPIXELSZ" not in plain


def test_gui_run_says_how_to_restore_the_pixel_size_after_undo(tiny_net):
    """Siril's Undo restores pixels and WCS, not XPIXSZ (Siril 1.4.4, issue 25): a GUI run
    logs the update_key commands that set it back; a headless run (no Undo) does not."""
    data = (field((20, 24), seed=11) / 65535).astype(np.float32)
    header = siril_14_header(data.shape, sip=False)
    header["XPIXSZ"], header["YPIXSZ"] = 6.45, 6.45
    gui = StandInSiril(data, header, cli=False)
    siril.upscale_current_image(gui, model=tiny_net, scale=2)
    assert gui.header()["XPIXSZ"] == pytest.approx(3.225)
    assert gui.logs[-1].endswith("update_key XPIXSZ 6.45 then update_key YPIXSZ 6.45")
    cli = StandInSiril(data, header, cli=True)
    siril.upscale_current_image(cli, model=tiny_net, scale=2)
    assert len(cli.logs) == 1 and "Undo" not in cli.logs[0]
