"""Bad-input corpus (issue 8): every case through the real CLI has a clear outcome.

Each case either gives a valid result, or exit code 2 with exactly one stderr line that
names the file (or the option) and the problem. In every case there is no traceback, no
output or temporary file is left in the output directory, and the input's sha256 is
unchanged. Most cases run ``cli.main`` in-process (fast); a few run the console script.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrosleuth_astro import cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
_REAL_OPEN = open
EXE = os.path.join(os.path.dirname(sys.executable), "astrosleuth-astro")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _digest(path: Path) -> str | None:
    """sha256 of a file, or of a directory's listing (for directory 'inputs')."""
    if path.is_dir():
        return hashlib.sha256("\n".join(sorted(os.listdir(path))).encode()).hexdigest()
    if not path.exists():
        return None
    h = hashlib.sha256()
    st = path.stat()
    with _REAL_OPEN(path, "rb") as fh:  # not a monkeypatched open()
        if st.st_size > 64 << 20:
            # The sparse "huge" inputs (tens of GB of holes): hashing them would take minutes.
            # Their header, their tail and their metadata stand for the content.
            h.update(f"{st.st_size} {st.st_mtime_ns} {st.st_blocks}".encode())
            h.update(fh.read(1 << 20))
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read())
        else:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``cli.main`` in-process; usage errors (argparse's SystemExit) become exit codes."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def upscale(capsys, src, out, model, *extra):
    """Run ``upscale SRC -o OUT --model MODEL`` and check the invariants of every case.

    Returns (code, stderr). Checks: no traceback; input unchanged; on failure exit code 2,
    exactly one stderr line, and the output directory exactly as it was (no output, no
    temporary file).
    """
    src, out = Path(src), Path(out)
    before_in = _digest(src)
    before_dir = sorted(os.listdir(out.parent))
    code, _, err = run_cli(capsys, "upscale", src, "-o", out, "--model", model, "--quiet", *extra)
    assert "Traceback" not in err
    assert _digest(src) == before_in, "the input was modified"
    if code != 0:
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert sorted(os.listdir(out.parent)) == before_dir, "left a file behind"
    else:
        after = set(os.listdir(out.parent)) - set(before_dir)
        assert after == {out.name}, after  # the output and nothing else
    return code, err


def refused(capsys, src, out, model, needle, *extra, name=None):
    """The case must be refused (exit 2) with one line naming ``name`` and ``needle``."""
    code, err = upscale(capsys, src, out, model, *extra)
    assert code == 2, err
    assert str(name if name is not None else src) in err, err
    assert needle.lower() in err.lower(), err
    assert Path(out) == Path(src) or not Path(out).exists()
    return err


def write_fits(path: Path, data, **hdr) -> Path:
    hdu = fits.PrimaryHDU(np.asarray(data))
    for k, v in hdr.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


@pytest.fixture
def dirs(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    return src, out


# --------------------------------------------------------------------------------------
# Files that must be refused
# --------------------------------------------------------------------------------------


def _truncated(p: Path) -> Path:
    write_fits(p, np.ones((64, 64), np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 5000])
    return p


def _header_only(p: Path) -> Path:
    hdr = fits.PrimaryHDU(np.ones((32, 32), np.float32)).header
    p.write_bytes(hdr.tostring().encode("ascii"))  # the header promises data that is absent
    return p


def _no_data(p: Path) -> Path:
    fits.PrimaryHDU().writeto(p)  # NAXIS = 0
    return p


def _tables_only(p: Path) -> Path:
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=[1.0, 2.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(p)
    return p


def _png_renamed(p: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(p, format="PNG")
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _directory(p: Path) -> Path:
    p.mkdir()
    return p


BAD_FILES = [
    ("truncated", _truncated, "truncated"),
    ("header_no_data", _header_only, "truncated"),
    ("no_data", _no_data, "no image data"),
    ("tables_only", _tables_only, "table"),
    ("1d", lambda p: write_fits(p, np.ones(50, np.float32)), "1-D"),
    ("4d", lambda p: write_fits(p, np.ones((1, 1, 8, 8), np.float32)), "4-D"),
    ("2_planes", lambda p: write_fits(p, np.ones((2, 8, 8), np.float32)), "2 planes"),
    ("4_planes", lambda p: write_fits(p, np.ones((4, 8, 8), np.float32)), "4 planes"),
    ("png_renamed", _png_renamed, "PNG"),
    ("empty", _empty, "empty"),
    ("directory", _directory, "directory"),
]


@pytest.mark.parametrize(("case", "make", "needle"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_refused(capsys, tiny_fast_model, dirs, case, make, needle):
    src_dir, out_dir = dirs
    src = make(src_dir / f"{case}.fits")
    refused(capsys, src, out_dir / "o.fits", tiny_fast_model, needle)
    assert os.listdir(src_dir) == [src.name]  # nothing written next to the input either


def test_unreadable_file_refused(capsys, tiny_fast_model, dirs, monkeypatch):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "secret.fits", np.ones((8, 8), np.float32))
    if IS_ROOT or os.name == "nt":
        # Root reads anything: emulate EACCES at the open() the reader makes.
        import builtins

        real_open = builtins.open

        def deny(file, *a, **k):
            if Path(str(file)) == src:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", deny)
        refused(capsys, src, out_dir / "o.fits", tiny_fast_model, "permission denied")
        return
    src.chmod(0)
    try:
        refused(capsys, src, out_dir / "o.fits", tiny_fast_model, "permission denied")
    finally:
        src.chmod(0o644)


# --------------------------------------------------------------------------------------
# Huge NAXIS: refused before any allocation
# --------------------------------------------------------------------------------------


def _huge_fits(path: Path, h: int, w: int, bitpix: int = 8) -> Path:
    """A header declaring an H x W image, with a sparse data section (no disk used)."""
    from astrosleuth_astro.io.files import physical_memory

    memory = physical_memory()
    if memory is None or 4 * h * w <= memory:
        pytest.skip(f"this machine has enough memory ({memory} bytes) for a {w}x{h} image")
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = bitpix
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = w
    hdr["NAXIS2"] = h
    block = hdr.tostring().encode("ascii")
    with open(path, "wb") as fh:
        fh.write(block)
    os.truncate(path, len(block) + h * w * abs(bitpix) // 8)  # sparse: a hole, not zeros
    return path


def test_huge_image_refused_before_allocating(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    try:
        src = _huge_fits(src_dir / "huge.fits", 200_000, 200_000)  # 40 GB sparse, 160 GB float
    except OSError as exc:  # a file system without sparse files of that size
        pytest.skip(f"cannot create a sparse 40 GB file here: {exc}")
    # The reader's float32 copy alone (160 GB) is more than the machine has: an attempt to
    # allocate it would be a MemoryError (exit 1) or the OOM killer, not this message.
    err = refused(capsys, src, out_dir / "o.fits", tiny_fast_model, "GiB")
    assert "200000x200000" in err


def test_huge_image_console_script_under_memory_limit(tiny_fast_model, dirs):
    """The installed entry point, with an address-space limit that any large allocation hits."""
    src_dir, out_dir = dirs
    try:
        src = _huge_fits(src_dir / "huge.fits", 100_000, 150_000)
    except OSError as exc:
        pytest.skip(f"cannot create a sparse file here: {exc}")
    before = _digest(src)

    def limit():  # 8 GiB of address space: torch and the model fit, the image does not
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    proc = subprocess.run(
        [EXE, "upscale", str(src), "-o", str(out_dir / "o.fits"), "--model", str(tiny_fast_model)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and "150000x100000" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(out_dir) == []
    assert _digest(src) == before


def test_huge_output_refused_before_allocating(tiny_fast_model, tmp_path, monkeypatch):
    """An input that fits but whose output does not: refused before the pipeline runs."""
    from astrosleuth_astro import api
    from astrosleuth_astro.errors import InputError
    from astrosleuth_astro.io import read_image

    src = write_fits(tmp_path / "small.fits", np.ones((64, 64), np.float32))
    image = read_image(src)
    net = api.get_backend(str(tiny_fast_model), backend="torch")
    # Pretend a small machine: 64 KiB of memory and 64 KiB of free disk.
    monkeypatch.setattr(api, "physical_memory", lambda: 64 << 10)
    monkeypatch.setattr(api, "_disk_free", lambda path: 64 << 10)
    for dst, threshold, what in (
        (tmp_path / "o.png", api.MEMMAP_THRESHOLD, "memory"),
        (tmp_path / "o.fits", 0, "disk"),  # memory-mapped output: disk is the limit
    ):
        with pytest.raises(InputError, match=rf"256x256.*iB of {what}"):
            api.upscale_image(image, dst, net, scale=4, memmap_threshold=threshold)
        assert os.listdir(tmp_path) == ["small.fits"]


# --------------------------------------------------------------------------------------
# Odd but valid images
# --------------------------------------------------------------------------------------


def _upscaled(capsys, model, src, out, *extra, scale=2):
    code, err = upscale(capsys, src, out, model, "--scale", str(scale), *extra)
    assert code == 0, err
    return fits.getdata(out).astype(np.float64)


@pytest.mark.parametrize("value", [0.0, 1234.5, -50.0])
def test_constant_image_gives_constant_image(capsys, tiny_fast_model, dirs, value):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "c.fits", np.full((24, 20), value, np.float32))
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits")
    assert out.shape == (48, 40)
    if value == 0.0:
        assert np.all(out == 0.0)  # all-zero stays exactly all-zero
    else:
        np.testing.assert_allclose(out, value, rtol=1e-5)


def test_negative_values(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    rng = np.random.default_rng(1)
    data = (rng.normal(-200.0, 30.0, (24, 24))).astype(np.float32)  # entirely negative
    src = write_fits(src_dir / "neg.fits", data)
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits")
    assert out.shape == (48, 48) and np.all(np.isfinite(out))
    assert abs(out.mean() - data.mean()) < 5.0  # still the same (negative) level


def test_infinities_and_nan(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    data = np.random.default_rng(2).random((24, 24)).astype(np.float32) * 100
    data[3, 4], data[10, 10], data[20, 5] = np.inf, -np.inf, np.nan
    src = write_fits(src_dir / "inf.fits", data)
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits")
    assert out.shape == (48, 48)
    # Non-finite pixels come back unchanged at their output pixels and do not spread.
    np.testing.assert_array_equal(out[6:8, 8:10], np.inf)
    np.testing.assert_array_equal(out[20:22, 20:22], -np.inf)
    assert np.isnan(out[40:42, 10:12]).all()
    assert np.isfinite(out).sum() == out.size - 3 * 4


@pytest.mark.parametrize("shape", [(16, 16), (3, 16, 16)])
def test_all_nan_is_refused(capsys, tiny_fast_model, dirs, shape):
    # Nothing to upscale: a NaN image out would only look like a result (issue 24).
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "nan.fits", np.full(shape, np.nan, np.float32))
    code, err = upscale(capsys, src, out_dir / "o.fits", tiny_fast_model)
    assert code == 2 and err.strip() == f"astrosleuth-astro: error: {src}: no finite pixels", err


def test_one_finite_pixel_is_enough(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    data = np.full((16, 16), np.nan, np.float32)
    data[7, 9] = 5.0
    src = write_fits(src_dir / "one.fits", data)
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits")
    assert out.shape == (32, 32) and np.isnan(out).sum() == 32 * 32 - 4


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (2, 3)])
def test_tiny_shapes(capsys, tiny_fast_model, dirs, shape):
    src_dir, out_dir = dirs
    data = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    src = write_fits(src_dir / "t.fits", data)
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits", scale=4)
    assert out.shape == (4 * shape[0], 4 * shape[1]) and np.isfinite(out).all()


def test_colour_cube_tile_larger_than_image(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    data = np.random.default_rng(3).random((3, 12, 10)).astype(np.float32)
    src = write_fits(src_dir / "rgb.fits", data)
    out = _upscaled(capsys, tiny_fast_model, src, out_dir / "o.fits", "--tile", "4096")
    assert out.shape == (3, 24, 20) and np.isfinite(out).all()


def test_luminance_only_on_mono_is_harmless(capsys, tiny_fast_model, dirs):
    """``--luminance-only`` on a mono image is not a contradiction: mono is luminance."""
    src_dir, out_dir = dirs
    data = np.random.default_rng(4).random((16, 16)).astype(np.float32)
    src = write_fits(src_dir / "m.fits", data)
    a = _upscaled(capsys, tiny_fast_model, src, out_dir / "a.fits")
    b = _upscaled(capsys, tiny_fast_model, src, out_dir / "b.fits", "--luminance-only")
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def test_output_equal_to_input(capsys, tiny_fast_model, dirs):
    src_dir, _ = dirs
    src = write_fits(src_dir / "same.fits", np.ones((8, 8), np.float32))
    for extra in ((), ("--overwrite",)):
        refused(capsys, src, src, tiny_fast_model, "same file", *extra)
        assert os.listdir(src_dir) == ["same.fits"]


def test_output_in_read_only_directory(capsys, tiny_fast_model, dirs, monkeypatch):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "x.fits", np.ones((8, 8), np.float32))
    ro = out_dir / "ro"
    ro.mkdir()
    if IS_ROOT or os.name == "nt":
        # Root writes anywhere: emulate EACCES where the writer creates its temp file.
        from astrosleuth_astro.io import atomic

        real_open = os.open

        def deny(path, flags, *a, **k):
            if Path(path).parent == ro and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(atomic.os, "open", deny)
        refused(capsys, src, ro / "o.fits", tiny_fast_model, "not writable", name=ro / "o.fits")
        assert os.listdir(ro) == []
        return
    ro.chmod(0o555)
    try:
        refused(capsys, src, ro / "o.fits", tiny_fast_model, "not writable", name=ro / "o.fits")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_existing_output_kept(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "x.fits", np.ones((8, 8), np.float32))
    out = out_dir / "o.fits"
    out.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "upscale", src, "-o", out, "--model", tiny_fast_model)
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious" and os.listdir(out_dir) == ["o.fits"]


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model_cases(tmp: Path, good: Path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(good))
    cases = []

    p = tmp / "truncated.pth"
    torch.save(sd, p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    cases.append((p, None, "truncated"))

    marker = tmp / "PWNED"
    p = tmp / "evil.pth"
    torch.save({"params": _Evil(str(marker))}, p)
    cases.append((p, marker, "weights-only"))

    p = tmp / "unknown_arch.pth"
    torch.save({"encoder.block7.weight": torch.zeros(5, 7), "head.bias": torch.zeros(3)}, p)
    cases.append((p, None, "unknown network layout"))

    p = tmp / "unknown_arch.safetensors"
    save_file({"foo.weight": torch.zeros(4, 4)}, str(p))
    cases.append((p, None, "unknown network layout"))

    p = tmp / "missing_keys.safetensors"
    missing = dict(sd)
    missing.pop("body.2.bias")  # a FAST layout, one tensor short
    save_file(missing, str(p))
    cases.append((p, None, "1 missing (body.2.bias)"))

    p = tmp / "wrong_rank.onnx"
    _write_wrong_rank_onnx(p)
    cases.append((p, None, "rank 2"))
    return cases


def _write_wrong_rank_onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["h", "w"])  # rank 2, not 4
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_bad_models_refused(capsys, tiny_fast_model, dirs, tmp_path):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "x.fits", np.ones((8, 8), np.float32))
    models = tmp_path / "models"
    models.mkdir()
    for model, marker, needle in _model_cases(models, tiny_fast_model):
        before = _digest(model)
        refused(capsys, src, out_dir / "o.fits", model, needle, name=model)
        assert _digest(model) == before
        if marker is not None:
            assert not marker.exists(), "the pickle ran code"
    assert not (models / "PWNED").exists()


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (("--scale", "0"), "--scale"),
    (("--scale", "5"), "--scale"),
    (("--scale", "two"), "--scale"),
    (("--tile", "0"), "--tile"),
    (("--tile", "-8"), "--tile"),
    (("--stretch", "gamma"), "--stretch"),
    (("--protect-strength", "2"), "--protect-strength"),
    (("--backend", "tensorflow"), "--backend"),
    (("--bands", "2", "--protect-stars"), "--protect-stars"),  # contradictory
    (("--star-strength", "0.5"), "NEXT"),  # a NEXT option with a non-NEXT model
]


@pytest.mark.parametrize(
    ("extra", "needle"), BAD_OPTIONS, ids=[" ".join(c[0]) for c in BAD_OPTIONS]
)
def test_bad_options_refused(capsys, tiny_fast_model, dirs, extra, needle):
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "x.fits", np.ones((8, 8), np.float32))
    refused(capsys, src, out_dir / "o.fits", tiny_fast_model, needle, *extra, name="")


# --------------------------------------------------------------------------------------
# Batch mode and the console script
# --------------------------------------------------------------------------------------


def test_batch_with_bad_files(capsys, tiny_fast_model, dirs):
    """A directory of inputs: good files are done, each bad one is reported, exit code 2."""
    src_dir, out_dir = dirs
    write_fits(src_dir / "good.fits", np.ones((8, 8), np.float32))
    _truncated(src_dir / "cut.fits")
    write_fits(src_dir / "cube4.fits", np.ones((4, 8, 8), np.float32))
    _png_renamed(src_dir / "fake.fits")
    before = {p.name: _digest(p) for p in src_dir.iterdir()}
    code, _, err = run_cli(
        capsys, "upscale", src_dir, "-o", out_dir, "--model", tiny_fast_model, "--quiet"
    )
    assert code == 2 and "Traceback" not in err
    for name in ("cut.fits", "cube4.fits", "fake.fits"):
        assert str(src_dir / name) in err
    assert sorted(os.listdir(out_dir)) == ["good_x4.fits", "manifest.json"]
    assert {p.name: _digest(p) for p in src_dir.iterdir()} == before


def test_batch_empty_directory(capsys, tiny_fast_model, dirs):
    src_dir, out_dir = dirs
    code, _, err = run_cli(
        capsys, "upscale", src_dir, "-o", out_dir, "--model", tiny_fast_model, "--quiet"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(src_dir) in err
    assert os.listdir(out_dir) == []


def test_console_script_all_nan_is_one_line_exit_2(tiny_fast_model, dirs):
    """The installed entry point: exit 2, one line naming the file, no output."""
    src_dir, out_dir = dirs
    src = write_fits(src_dir / "nan.fits", np.full((8, 8), np.nan, np.float32))
    out = out_dir / "o.fits"
    args = [EXE, "upscale", str(src), "-o", str(out), "--model", str(tiny_fast_model)]
    proc = subprocess.run([*args, "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"astrosleuth-astro: error: {src}: no finite pixels"
    ]
    assert os.listdir(out_dir) == []


def test_console_script_mostly_nan_is_quiet(tiny_fast_model, dirs):
    """A valid run of the installed entry point prints nothing with --quiet (no warnings)."""
    src_dir, out_dir = dirs
    data = np.full((8, 8), np.nan, np.float32)
    data[2:4, 5] = [1.0, 2.0]
    src = write_fits(src_dir / "nan.fits", data)
    out = out_dir / "o.fits"
    args = [EXE, "upscale", str(src), "-o", str(out), "--model", str(tiny_fast_model)]
    proc = subprocess.run([*args, "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert np.isnan(fits.getdata(out)).sum() == 32 * 32 - 2 * 16 and os.listdir(out_dir) == [
        "o.fits"
    ]
