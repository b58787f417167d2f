"""Interoperability with the real Siril command line (``siril-cli``, Debian's Siril 1.0.6).

This is the Siril 1.0-1.2 workflow of ``siril_scripts/README.md``: Siril writes a FITS file,
``astrosleuth-astro upscale`` processes it, Siril loads the result. The tests check that

* Siril's ``stat`` on our output agrees with our own statistics of it (mean, median, sigma,
  min, max), for float32 and 16-bit inputs, mono and RGB cubes;
* the geometry is right: the brightest star is where we put it, seen from a Siril-side
  ``crop`` + ``stat``, and the array Siril saves back equals ours;
* a WCS written by the project survives Siril's ``load`` + ``save`` (Siril writes CTYPE only
  when EQUINOX is present, which the project writes).

Facts about Siril 1.0.6 used here (measured, see ``shared/SIRIL-NOTES.md``): a script's first
line must be ``requires 1.0.0``; ``stat`` reports 32-bit float data multiplied by 65535 and
skips pixels that are exactly 0; float data in ADU (values well above 1) is divided by 65535
on load; ``crop x y w h`` counts ``y`` from the top of the image, which is the last row of a
bottom-up FITS file; the float median comes from a histogram of ``min(65536, n)`` bins
between the minimum and the maximum, so it is exact to about one bin only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from astrosleuth_astro.cli import main as cli_main
from astrosleuth_astro.sim import simulate, to_hdu

SIRIL = shutil.which("siril-cli")
SCRIPTS = Path(__file__).resolve().parents[2] / "siril_scripts"
pytestmark = pytest.mark.skipif(
    SIRIL is None,
    reason="siril-cli is not installed (Debian/Ubuntu: apt-get install -y "
    "--no-install-recommends siril; .ci/run installs it)",
)

STAT = re.compile(
    r"log: (?P<layer>B&W|Red|Green|Blue) layer: Mean: (?P<mean>\S+), Median: (?P<median>\S+), "
    r"Sigma: (?P<sigma>\S+), AvgDev: \S+, Min: (?P<min>\S+), Max: (?P<max>\S+)"
)


def siril_version() -> tuple[int, ...]:
    out = subprocess.run([SIRIL, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


def run_siril(workdir: Path, *lines: str) -> str:
    """Run a Siril script headless in ``workdir``; return its log (stdout)."""
    script = workdir / "script.ssf"
    script.write_text("requires 1.0.0\n" + "\n".join(lines) + "\n")
    home = workdir / ".siril-home"  # private config: parallel runs do not share siril.config
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
    env.update(XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"))
    proc = subprocess.run(
        [SIRIL, "-s", str(script), "-d", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"siril-cli failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def ssf_commands(name: str) -> list[str]:
    """The commands of a shipped ``siril_scripts/*.ssf`` (comments and ``requires`` left out)."""
    text = (SCRIPTS / name).read_text()
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "requires"))]


def stats_blocks(log: str) -> list[list[dict[str, float]]]:
    """Every ``stat`` of the log, as lists of per-layer dicts (one list per command)."""
    blocks: list[list[dict[str, float]]] = []
    for match in STAT.finditer(log):
        row = {k: float(match[k]) for k in ("mean", "median", "sigma", "min", "max")}
        if match["layer"] in ("B&W", "Red"):
            blocks.append([])
        blocks[-1].append(row)
    return blocks


def upscale(src: Path, dst: Path, model: Path, scale: int) -> np.ndarray:
    """Upscale with the real CLI entry point; return the output as ``(C, H, W)`` float64."""
    code = cli_main(
        [
            "upscale",
            str(src),
            "-o",
            str(dst),
            "--model",
            str(model),
            "--scale",
            str(scale),
            "--quiet",
        ]
    )
    assert code == 0
    data = fits.getdata(dst).astype(np.float64)
    return data[np.newaxis] if data.ndim == 2 else data


def as_siril_sees_it(data: np.ndarray) -> np.ndarray:
    """Values as Siril's ``stat`` reports them (x65535 for [0, 1] data; ADU are normalised on load)."""
    return data * 65535.0 if np.nanmax(data) <= 1.0 else data


def source_field(path: Path, channels: int, depth: str, seed: int) -> None:
    """A simulated star field with a TAN WCS, as float32 in [0, 1] or uint16 ADU."""
    hdu = to_hdu(simulate((40, 44), channels=channels, seed=seed), which="lr")
    adu = np.clip(hdu.data, 1, 65535)  # no zeros: Siril's stat skips them
    if depth == "float32":
        data = (adu / 65535).astype(np.float32)
    else:
        data = np.rint(adu).astype(np.uint16)
    fits.PrimaryHDU(data, header=hdu.header).writeto(path)


# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth",
    [
        "float32",
        "uint16-converted",  # the documented workflow: Siril converts to 32-bit first
        "uint16",  # direct: works because the output always carries DATAMIN/DATAMAX
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_siril_reads_our_output_as_we_do(tmp_path, tiny_fast_model, channels, depth):
    # 1. Siril writes the input FITS (32-bit float, or 16-bit after set16bits).
    source_field(
        tmp_path / "src.fits",
        channels,
        "float32" if depth == "float32" else "uint16",
        seed=10 + channels,
    )
    bits = "set32bits" if depth == "float32" else "set16bits"
    run_siril(tmp_path, bits, "load src.fits", "save siril_in.fits")
    with fits.open(tmp_path / "siril_in.fits") as hdul:
        assert hdul[0].header["BITPIX"] == (-32 if depth == "float32" else 16)
        assert hdul[0].data.shape[0] == 3 if channels == 3 else hdul[0].data.ndim == 2
    src = tmp_path / "siril_in.fits"
    if depth == "uint16-converted":
        # The shipped step 1 (AstroSleuth_Export.ssf) on the loaded 16-bit image: float32 [0, 1].
        run_siril(tmp_path, "load siril_in.fits", *ssf_commands("AstroSleuth_Export.ssf"))
        src = tmp_path / "astrosleuth_in.fits"
        assert fits.getheader(src)["BITPIX"] == -32

    # 2. The project upscales it.
    scale = 4 if channels == 1 else 2
    ours = upscale(src, tmp_path / "astrosleuth_out.fits", tiny_fast_model, scale)
    n_ch, height, width = ours.shape
    assert not (ours == 0).any()  # Siril's stat would skip zeros
    view = as_siril_sees_it(ours)
    luminance = view.mean(axis=0)
    r, c = np.unravel_index(np.argmax(luminance), luminance.shape)
    r, c = int(np.clip(r, 3, height - 4)), int(np.clip(c, 3, width - 4))

    # 3. Siril loads it (the shipped step 3, AstroSleuth_Import.ssf), measures it, saves it
    # back, and looks where the star should be.
    top = height - 1 - (r + 3)  # crop's y counts from the top row of the displayed image
    mirror_top = r - 3  # where the box would be if the image were flipped
    log = run_siril(
        tmp_path,
        *ssf_commands("AstroSleuth_Import.ssf"),
        "stat",
        "save back.fits",
        f"crop {c - 3} {top} 7 7",
        "stat",
        "load astrosleuth_out.fits",
        f"crop {c - 3} {mirror_top} 7 7",
        "stat",
    )
    whole, star_box, mirror_box = stats_blocks(log)
    assert len(whole) == n_ch

    n = height * width
    for ch in range(n_ch):
        v = view[ch]
        got = whole[ch]
        tol = 0.06 + 2e-6 * abs(v).max()  # 1 printed decimal + float32 accumulation
        assert got["mean"] == pytest.approx(v.mean(), abs=tol), (ch, got, v.mean())
        assert got["sigma"] == pytest.approx(v.std(), abs=tol + 1e-4 * v.std()), (ch, got)
        assert got["min"] == pytest.approx(v.min(), abs=tol) and got["max"] == pytest.approx(
            v.max(), abs=tol
        )
        bin_width = (v.max() - v.min()) / (min(65536, n) - 1)
        assert abs(got["median"] - np.median(v)) <= 2 * bin_width + tol, (
            ch,
            got,
            np.median(v),
            bin_width,
        )

    # Orientation: the 7x7 box where we put the brightest star holds its peak in Siril...
    box = view[:, r - 3 : r + 4, c - 3 : c + 4]
    for ch in range(n_ch):
        assert star_box[ch]["max"] == pytest.approx(box[ch].max(), abs=0.06 + 2e-6 * box[ch].max())
    # ...and the mirrored box (a flipped image) does not.
    if abs((height - 1 - r) - r) > 7:
        assert max(b["max"] for b in mirror_box) < 0.9 * luminance.max()

    # The array Siril saves back is ours (normalised by 65535 when it held ADU).
    back = fits.getdata(tmp_path / "back.fits").astype(np.float64)
    back = back[np.newaxis] if back.ndim == 2 else back
    expected = ours if np.nanmax(ours) <= 1.0 else ours / 65535.0
    np.testing.assert_allclose(back, expected, rtol=2e-7, atol=1e-9)


def sky_offsets_arcsec(w_a: WCS, w_b: WCS, xa, ya, xb, yb) -> np.ndarray:
    ra0, dec0 = w_a.all_pix2world(xa, ya, 0)
    ra1, dec1 = w_b.all_pix2world(xb, yb, 0)
    return SkyCoord(ra0, dec0, unit="deg").separation(SkyCoord(ra1, dec1, unit="deg")).arcsec


def test_wcs_survives_siril_round_trip(tmp_path, tiny_fast_model):
    source_field(tmp_path / "src.fits", 1, "float32", seed=21)
    run_siril(tmp_path, "load src.fits", "save siril_in.fits")
    scale = 3
    upscale(tmp_path / "siril_in.fits", tmp_path / "out.fits", tiny_fast_model, scale)
    ours = fits.getheader(tmp_path / "out.fits")
    assert ours["EQUINOX"] == 2000.0 and ours["CTYPE1"] == "RA---TAN"

    run_siril(tmp_path, "load out.fits", "save back.fits")
    back = fits.getheader(tmp_path / "back.fits")
    assert back["CTYPE1"] == "RA---TAN" and back["CTYPE2"] == "DEC--TAN"

    w_in = WCS(fits.getheader(tmp_path / "siril_in.fits"))
    w_ours, w_back = WCS(ours), WCS(back)
    h, w = fits.getdata(tmp_path / "siril_in.fits").shape
    ys, xs = (a.ravel() for a in np.mgrid[0:h:3, 0:w:3].astype(float))
    xo, yo = (xs + 0.5) * scale - 0.5, (ys + 0.5) * scale - 0.5
    # Our WCS after Siril's round trip is the WCS we wrote...
    assert sky_offsets_arcsec(w_ours, w_back, xo, yo, xo, yo).max() < 1e-4
    # ...and maps every output pixel to the sky position of its input pixel.
    assert sky_offsets_arcsec(w_in, w_back, xs, ys, xo, yo).max() < 1e-4


@pytest.mark.skipif(
    SIRIL is not None and siril_version()[:2] != (1, 0),
    reason="documents a Siril 1.0 behaviour (CTYPE dropped without EQUINOX)",
)
def test_without_equinox_siril_drops_ctype(tmp_path):
    # Why the project always writes EQUINOX: without it Siril's round trip loses CTYPE.
    hdu = to_hdu(simulate((24, 24), seed=22), which="lr")
    del hdu.header["EQUINOX"]
    fits.PrimaryHDU((np.clip(hdu.data, 1, None) / 65535).astype(np.float32), hdu.header).writeto(
        tmp_path / "noeq.fits"
    )
    run_siril(tmp_path, "load noeq.fits", "save back.fits")
    assert "CTYPE1" not in fits.getheader(tmp_path / "back.fits")
