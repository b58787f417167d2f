"""The Siril >= 1.4 plugin in the real program: ``siril-cli`` runs ``AstroSleuth_Upscale.py``.

Marked ``siril14`` and skipped unless ``ASTROSLEUTH_SIRIL14`` names a Siril 1.4 ``siril-cli``
whose Python venv has this project installed (``../shared/tools/build-siril.sh`` makes one:
``$ROOT/prefix/bin/siril-cli`` and the venv ``$ROOT/xdg/data/siril/venv``). Siril finds its
venv under ``$XDG_DATA_HOME/siril/venv``: export the ``XDG_DATA_HOME`` the build used, or
leave it unset and the build's layout (``<siril-cli>/../../xdg/data``) is used. Config and
cache directories are private to each run (parallel runs do not share ``siril.config``).

Every case is one headless script (``siril-cli -d DIR -s run.ssf``)::

    requires 1.4.0
    load in
    save ref                      # Siril's own load + save, the reference
    pyscript AstroSleuth_Upscale.py -scale=N -model=...
    save out

on four small images: a DSS-like plate (a DSS plate solution, no FITS WCS: Siril builds
the WCS from it), a PC-matrix TAN-SIP frame in [0, 1], a raw uint16 frame, and an RGB cube
with a CD matrix; at 2x and 4x. The saved files are read back with astropy, and checked:
size, BITPIX, the WCS (every output pixel sees the sky of its input pixel, against Siril's
own reference and against astropy's reading of the input), the pixel size, the sky level
(median ratio), the provenance cards (``ASTSL*`` with ``ASTSLPRC``; Siril drops HISTORY
cards it is given, so the HISTORY line is not checked), and a clean log (no ``END`` card warning, no traceback, no error line).

And the failure contract: a run with a bad option logs one ``AstroSleuth: ERROR:`` line and
closes the image, so the script file's next ``save`` fails and ``siril-cli`` exits with
status 1 (Siril itself ignores a Python script's exit status; measured on Siril 1.4.4).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from astrosleuth_astro.sim import simulate, to_hdu

SIRIL = os.environ.get("ASTROSLEUTH_SIRIL14")
SCRIPT = Path(__file__).resolve().parents[2] / "siril_scripts" / "AstroSleuth_Upscale.py"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.siril14,
    pytest.mark.skipif(
        not SIRIL,
        reason="set ASTROSLEUTH_SIRIL14=/path/to/siril-cli (Siril >= 1.4 with this project in "
        "its venv: ../shared/tools/build-siril.sh)",
    ),
    pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
]

#: Lines that must never be in the log of a good run.
BAD_LOG = re.compile(r"Traceback|AstroSleuth: ERROR|header keyword is invalid|exited with status")


def data_home() -> Path:
    """Siril's ``$XDG_DATA_HOME`` (the venv is ``<it>/siril/venv``)."""
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"])
    return Path(SIRIL).resolve().parents[2] / "xdg" / "data"  # build-siril.sh's layout


def run_siril(workdir: Path, lines: list[str], *, data: Path | None = None, timeout=600):
    """Run ``requires 1.4.0`` + ``lines`` headless in ``workdir``: (exit status, log)."""
    script = workdir / "run.ssf"
    script.write_text("requires 1.4.0\n" + "\n".join(lines) + "\n")
    private = workdir / ".siril-home"
    env = dict(os.environ, XDG_DATA_HOME=str(data or data_home()))
    env.update(XDG_CONFIG_HOME=str(private / "config"), XDG_CACHE_HOME=str(private / "cache"))
    env.pop("ASTROSLEUTH_INSTALL_FROM", None)
    proc = subprocess.run(
        [SIRIL, "-d", str(workdir), "-s", str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout + proc.stderr


def saved(workdir: Path, name: str) -> Path | None:
    for ext in (".fit", ".fits", ".fts"):
        if (workdir / f"{name}{ext}").exists():
            return workdir / f"{name}{ext}"
    return None


@pytest.fixture(scope="module")
def siril_version() -> str:
    out = subprocess.run([SIRIL, "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    major_minor = tuple(int(x) for x in match[1].split(".")[:2])
    assert major_minor >= (1, 4), f"{SIRIL} is Siril {match[1]}, not 1.4 or newer"
    venv_python = data_home() / "siril" / "venv" / "bin" / "python"
    assert venv_python.exists(), (
        f"no Siril venv at {venv_python.parent.parent}: export the XDG_DATA_HOME of the build"
    )
    check = subprocess.run(
        [str(venv_python), "-c", "import astrosleuth_astro.siril, sirilpy; print('ok')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.strip() == "ok", f"Siril's venv lacks this project: {check.stderr}"
    return match[1]


# --------------------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------------------

#: A DSS plate solution (the numbers of a UK Schmidt plate, as in astropy's DSS test file).
DSS_PLATE = {
    "PLTRAH": 14,
    "PLTRAM": 37,
    "PLTRAS": 46.88253,
    "PLTDECSN": "-",
    "PLTDECD": 60,
    "PLTDECM": 12,
    "PLTDECS": 59.28761,
    "EQUINOX": 2000.0,
    "EPOCH": 1976.1932373047,
    "PLTSCALE": 67.2,
    "CNPIX1": 8860,
    "CNPIX2": 1708,
    "XPIXELSZ": 25.28445,
    "YPIXELSZ": 25.28445,
    "PPO1": 0.0,
    "PPO2": 0.0,
    "PPO3": 176616.9833815,
    "PPO4": 0.0,
    "PPO5": 0.0,
    "PPO6": 177193.56115606,
    "AMDX1": 67.226158492105,
    "AMDX2": -0.23024540155842,
    "AMDX3": 1.0901493794544,
    "AMDX4": 1.1835555135256e-06,
    "AMDX5": 5.5613287069447e-06,
    "AMDX6": -3.8419945268889e-05,
    "AMDX7": 0.0,
    "AMDX8": 2.2770722559048e-06,
    "AMDX9": 1.0335160125448e-07,
    "AMDX10": 2.3321693523829e-06,
    "AMDX11": 1.8565977703272e-07,
    "AMDX12": 0.0,
    "AMDX13": 0.0,
    "AMDY1": 67.23331978069,
    "AMDY2": 0.22606735154764,
    "AMDY3": -0.52719954923422,
    "AMDY4": -7.3037555803828e-06,
    "AMDY5": 1.9544740562734e-05,
    "AMDY6": -5.6277730545338e-06,
    "AMDY7": 0.0,
    "AMDY8": 2.2086510085905e-06,
    "AMDY9": 1.0292330494988e-08,
    "AMDY10": 2.1738798605975e-06,
    "AMDY11": -1.5811855244111e-08,
    "AMDY12": 0.0,
    "AMDY13": 0.0,
}


def star_field(shape, channels=1, seed=0) -> np.ndarray:
    """A simulated star field in ADU, ``(H, W)`` or ``(C, H, W)``."""
    data = np.asarray(to_hdu(simulate(shape, channels=channels, seed=seed), which="lr").data)
    return data.astype(np.float64)


def pc_header(shape) -> fits.Header:
    """A TAN-SIP WCS with CDELT + PC, as Siril 1.4's plate solver writes it."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["EQUINOX"] = 2000.0
    h["CRPIX1"], h["CRPIX2"] = shape[-1] / 2 + 0.37, shape[-2] / 2 - 0.81
    h["CRVAL1"], h["CRVAL2"] = 85.25, -2.45
    h["CDELT1"], h["CDELT2"] = -4.07e-4, 4.07e-4
    h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = 0.99984, -0.01789, 0.01789, 0.99984
    h["A_ORDER"], h["A_0_2"], h["A_1_1"], h["A_2_0"] = 2, 2.1e-6, -1.3e-6, 3.4e-6
    h["B_ORDER"], h["B_0_2"], h["B_1_1"], h["B_2_0"] = 2, -1.7e-6, 2.2e-6, 0.9e-6
    h["XPIXSZ"], h["YPIXSZ"], h["FOCALLEN"] = 3.76, 3.76, 530.0
    return h


def make_input(case: str, path: Path) -> None:
    if case == "dss":  # a DSS plate cut-out: int16 plate densities, plate solution only
        data = np.clip(3000 + star_field((64, 64), seed=31), 0, 32767).astype(np.int16)
        header = fits.Header()
        for key, value in DSS_PLATE.items():
            header[key] = value
        header["OBJECT"] = "dss-like plate"
    elif case == "pc":  # float32 in [0, 1] (Siril's convention), CDELT + PC, SIP
        data = (np.clip(star_field((72, 80), seed=32), 0, 65535) / 65535).astype(np.float32)
        header = pc_header(data.shape)
    elif case == "uint16":  # a raw camera frame: unsigned 16-bit, no WCS
        data = np.clip(np.rint(star_field((64, 72), seed=33)), 0, 65535).astype(np.uint16)
        header = fits.Header()
        header["XPIXSZ"], header["YPIXSZ"], header["EXPTIME"] = 3.76, 3.76, 120.0
        header["INSTRUME"] = "raw frame"
    elif case == "rgb":  # an RGB cube in [0, 1] with a CD-matrix WCS
        rgb = star_field((64, 64), channels=3, seed=34)
        data = (np.clip(rgb, 0, 65535) / 65535).astype(np.float32)
        header = fits.Header()
        header["WCSAXES"] = 2
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["EQUINOX"], header["RADESYS"] = 2000.0, "ICRS"
        header["CRPIX1"], header["CRPIX2"], header["CRVAL1"], header["CRVAL2"] = (
            30.5,
            33.2,
            210.8,
            54.3,
        )
        header["CD1_1"], header["CD1_2"] = -1.10e-4, 8.0e-6
        header["CD2_1"], header["CD2_2"] = 8.5e-6, 1.10e-4
    else:
        raise ValueError(case)
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)


DSS_KEY = re.compile(r"^(AMD[XY]\d+|PPO\d+|CNPIX\d|PLT\w+|[XY]PIXELSZ)$")


def celestial(path: Path, *, fits_wcs_only: bool = False) -> WCS:
    """The celestial WCS astropy reads from ``path``.

    ``fits_wcs_only``: the FITS WCS keywords alone, the DSS plate keywords left out. A file
    Siril 1.4.4 saves from a DSS plate (with or without the plugin) carries ``CNPIX``,
    ``AMD*``, ``PPO*`` but not ``XPIXELSZ`` (renamed to ``XPIXSZ``): astropy then builds
    the plate solution from them with no pixel size (``CRPIX`` = inf, the sky NaN) instead
    of reading the FITS WCS Siril wrote.
    """
    header = fits.getheader(path)
    if fits_wcs_only:
        for key in [k for k in header if DSS_KEY.match(k)]:
            del header[key]
    return WCS(header, naxis=2)


def sky_offsets_arcsec(w_in: WCS, w_out: WCS, shape, s: int) -> np.ndarray:
    """Distances between input pixel centres and their output positions, on the sky."""
    h, w = shape[-2:]
    ys, xs = (a.ravel().astype(float) for a in np.mgrid[0:h:7, 0:w:7])
    xs, ys = np.r_[xs, w - 1.0, 0.0], np.r_[ys, h - 1.0, h - 1.0]  # the corners too
    ra0, dec0 = w_in.all_pix2world(xs, ys, 0)
    ra1, dec1 = w_out.all_pix2world((xs + 0.5) * s - 0.5, (ys + 0.5) * s - 0.5, 0)
    return SkyCoord(ra0, dec0, unit="deg").separation(SkyCoord(ra1, dec1, unit="deg")).arcsec


# --------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------

MEASURED: dict[str, dict] = {}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("case", ["dss", "pc", "uint16", "rgb"])
def test_plugin_in_real_siril(tmp_path, siril_version, tiny_fast_onnx, case, scale):
    make_input(case, tmp_path / "in.fits")
    start = time.perf_counter()
    rc, log = run_siril(
        tmp_path,
        [
            "load in",
            "save ref",
            f'pyscript "{SCRIPT}" -scale={scale} -model={tiny_fast_onnx}',
            "save out",
            "load out",
            "save again",  # Siril reads its file of the result back the same
        ],
    )
    seconds = time.perf_counter() - start
    assert rc == 0, log[-4000:]
    assert not BAD_LOG.search(log), log[-4000:]
    assert re.search(rf"log: AstroSleuth: upscaled x{scale} with ", log), log[-4000:]
    ref_path, out_path = saved(tmp_path, "ref"), saved(tmp_path, "out")
    assert ref_path and out_path, log[-4000:]

    with fits.open(ref_path) as ref_hdul, fits.open(out_path) as out_hdul:
        ref, out = ref_hdul[0], out_hdul[0]
        ref_data, out_data = ref.data.astype(np.float64), out.data.astype(np.float64)
        ref_h, out_h = ref.header, out.header

    # Size and bit depth: as Siril saves the image it loaded, times the scale.
    expected = (*ref_data.shape[:-2], ref_data.shape[-2] * scale, ref_data.shape[-1] * scale)
    assert out_data.shape == expected
    assert out_h["BITPIX"] == ref_h["BITPIX"]
    assert out_h.get("BZERO", 0) == ref_h.get("BZERO", 0)

    # The sky level: the output's median is the input's (per channel).
    ratios = [
        float(np.median(o) / np.median(r))
        for o, r in zip(
            out_data.reshape(-1, *out_data.shape[-2:]),
            ref_data.reshape(-1, *ref_data.shape[-2:]),
            strict=True,
        )
    ]
    assert all(abs(r - 1) < 0.02 for r in ratios), ratios

    # Provenance, from the one header builder.
    assert out_h["ASTSLSCL"] == scale and out_h["ASTSLMOD"]
    assert out_h["ASTSLPRC"] and out_h["ASTSLSTR"] and out_h["ASTSLVER"]
    assert len(out_h["ASTSLSHA"]) == 64
    # Not asserted: Siril 1.4.4 drops the HISTORY cards of a header it is given (it keeps
    # its own history), so the HISTORY line of the other outputs is not in Siril's file.
    history = any("astrosleuth" in str(v).lower() for v in out_h.get("HISTORY", []))

    # Pixel size.
    if "XPIXSZ" in ref_h:
        assert out_h["XPIXSZ"] == pytest.approx(ref_h["XPIXSZ"] / scale, rel=1e-6)
        assert out_h["YPIXSZ"] == pytest.approx(ref_h["YPIXSZ"] / scale, rel=1e-6)

    record = {
        "seconds": round(seconds, 1),
        "median_ratio": [round(r, 4) for r in ratios],
        "history_kept": history,
    }
    if case != "uint16":
        # The WCS: kept by Siril, and every output pixel sees the sky of its input pixel.
        assert "CTYPE1" in out_h and str(out_h["CTYPE1"]).startswith("RA---TAN"), repr(out_h)
        w_ref = celestial(ref_path, fits_wcs_only=True)
        w_out = celestial(out_path)  # as it is: no DSS keywords left to confuse astropy
        w_again = celestial(saved(tmp_path, "again"))
        again = sky_offsets_arcsec(w_out, w_again, out_data.shape, 1).max()
        assert again < 1e-4, again
        w_in = celestial(tmp_path / "in.fits")
        vs_siril = sky_offsets_arcsec(w_ref, w_out, ref_data.shape, scale).max()
        vs_astropy = sky_offsets_arcsec(w_in, w_out, ref_data.shape, scale).max()
        siril_vs_astropy = sky_offsets_arcsec(w_in, w_ref, ref_data.shape, 1).max()
        record.update(
            wcs_vs_siril_arcsec=float(vs_siril),
            wcs_vs_astropy_arcsec=float(vs_astropy),
            siril_load_vs_astropy_arcsec=float(siril_vs_astropy),
        )
        assert vs_siril < 1e-4, vs_siril  # exact against the WCS Siril had
        if case == "dss":
            # Siril keeps only the linear part of a DSS plate solution at load (here 7"
            # off astropy's reading of the whole solution, 5000 px from the plate centre):
            # the plugin adds nothing to that.
            assert abs(vs_astropy - siril_vs_astropy) < 1e-3, (vs_astropy, siril_vs_astropy)
        else:
            assert vs_astropy < 1e-4 and siril_vs_astropy < 1e-4, (vs_astropy, siril_vs_astropy)
    else:
        assert "CTYPE1" not in out_h
    if case == "dss":
        # The plate solution was replaced by Siril's WCS (rescaled): a file Siril saves with
        # the DSS keywords lacks XPIXELSZ, and Siril itself then loses its WCS on reload.
        assert not [k for k in out_h if DSS_KEY.match(k)], repr(out_h)
        assert [k for k in ref_h if DSS_KEY.match(k)]  # Siril's own save keeps them...
        ref_again = celestial(ref_path)  # ...and astropy (like Siril) cannot read it back
        assert not np.isfinite(ref_again.wcs.crpix).all()
        assert out_h["XPIXSZ"] == pytest.approx(DSS_PLATE["XPIXELSZ"] / scale, rel=1e-9)
    MEASURED[f"{case} x{scale}"] = record
    print(f"siril {siril_version} {case} x{scale}: {record}")


@pytest.mark.parametrize("bad", ["-scale=7", "-stretch=log", "-install_from"])
def test_bad_option_fails_the_siril_cli_script(tmp_path, siril_version, bad):
    make_input("uint16", tmp_path / "in.fits")
    rc, log = run_siril(tmp_path, ["load in", f'pyscript "{SCRIPT}" {bad}', "save out"])
    errors = [line for line in log.splitlines() if line.startswith("log: AstroSleuth: ERROR: ")]
    assert errors and "bad option" in errors[0], log[-3000:]
    assert "image was closed" in errors[-1]
    assert rc == 1, (rc, log[-3000:])  # siril-cli stopped at "save": detectable
    assert saved(tmp_path, "out") is None  # nothing that looks like a result


def test_good_run_then_failed_run_stops_at_the_failure(tmp_path, siril_version, tiny_fast_onnx):
    """A batch script: the first image is done and saved, the second run fails, the script
    file stops there (nothing after it runs) and siril-cli exits with status 1."""
    make_input("uint16", tmp_path / "in.fits")
    rc, log = run_siril(
        tmp_path,
        [
            "load in",
            f'pyscript "{SCRIPT}" -scale=2 -model={tiny_fast_onnx}',
            "save first",
            "load in",
            f'pyscript "{SCRIPT}" -scale=2 -model={tmp_path / "missing.onnx"}',
            "save second",
            "load in",
            "save third",
        ],
    )
    assert rc == 1, log[-3000:]
    assert saved(tmp_path, "first") is not None
    assert saved(tmp_path, "second") is None and saved(tmp_path, "third") is None
    errors = [line for line in log.splitlines() if line.startswith("log: AstroSleuth: ERROR: ")]
    assert errors and "missing.onnx" in errors[0], log[-3000:]


def test_default_model_in_real_siril(tmp_path, siril_version):
    """The shipped default model (not the tiny test network) on a raw uint16 frame at 4x."""
    make_input("uint16", tmp_path / "in.fits")
    rc, log = run_siril(
        tmp_path, ["load in", "save ref", f'pyscript "{SCRIPT}" -scale=4', "save out"]
    )
    assert rc == 0 and not BAD_LOG.search(log), log[-4000:]
    assert "log: AstroSleuth: upscaled x4 with default: 72x64 -> 288x256 uint16" in log
    ref = fits.getdata(saved(tmp_path, "ref")).astype(np.float64)
    out_h = fits.getheader(saved(tmp_path, "out"))
    out = fits.getdata(saved(tmp_path, "out")).astype(np.float64)
    assert out.shape == (256, 288) and out_h["BITPIX"] == 16 and out_h["ASTSLMOD"] == "default"
    ratio = float(np.median(out) / np.median(ref))
    assert abs(ratio - 1) < 0.01, ratio
    MEASURED["uint16 x4 default model"] = {"median_ratio": round(ratio, 4)}
    print(f"siril {siril_version} uint16 x4 default model: median ratio {ratio:.4f}")


@pytest.mark.slow
def test_first_run_in_a_fresh_siril_venv(tmp_path, siril_version, tiny_fast_onnx):
    """A Siril whose venv has never seen the package (Siril makes the venv at the first
    pyscript): the run fails detectably with the pip command for that venv's Python, and
    ``-install_from=<checkout>`` then installs the package (pip, with its dependencies)
    and upscales. About a minute (venv, pip from the local index or cache)."""
    data = tmp_path / "xdg-data"  # a fresh XDG_DATA_HOME: Siril makes a new venv there
    make_input("uint16", tmp_path / "in.fits")
    run = f'pyscript "{SCRIPT}" -scale=2 -model={tiny_fast_onnx}'
    rc, log = run_siril(tmp_path, ["load in", run, "save out"], data=data)
    venv_python = data / "siril" / "venv" / "bin"
    errors = [line for line in log.splitlines() if line.startswith("log: AstroSleuth: ERROR: ")]
    assert rc == 1 and saved(tmp_path, "out") is None, log[-4000:]
    assert "astrosleuth-astro is not installed in Siril's Python" in errors[0], errors
    assert re.search(rf'"{re.escape(str(venv_python))}/python3?" -m pip install ', errors[0])
    assert "-install_from=PATH" in errors[0] and "ASTROSLEUTH_INSTALL_FROM" in errors[0]

    rc, log = run_siril(tmp_path, ["load in", f"{run} -install_from={ROOT}", "save out"], data=data)
    assert rc == 0, log[-4000:]
    assert f"installing it from {ROOT}" in log and "log: AstroSleuth: upscaled x2" in log
    assert fits.getdata(saved(tmp_path, "out")).shape == (128, 144)
