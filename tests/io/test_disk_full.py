"""A full disk is a clear input error, not an internal one (issue 27).

The output directory is a real, tiny tmpfs mounted in a private mount namespace
(``unshare --user --map-root-user --mount``): the real CLI meets a real ``ENOSPC``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ..conftest import write_sim_fits

EXE = os.path.join(os.path.dirname(sys.executable), "astrosleuth-astro")


def _in_tiny_tmpfs(tmp_path, size: str, *argv: str) -> tuple[int, str, list[str]]:
    """Run ``astrosleuth-astro ARGV`` with ``tmp_path/out`` a tmpfs of ``size``.

    Returns (exit code, stderr, what the tmpfs holds afterwards).
    """
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; shift 2; '
        '"$@"; rc=$?; echo "::rc=$rc" >&2; ls -A "$OUT" >&2; exit 0'
    )
    env = dict(os.environ, OUT=str(out))
    proc = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
            size,
            str(out),
            EXE,
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if proc.returncode != 0 or "::rc=" not in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    err, _, tail = proc.stderr.partition("::rc=")
    rc_text, _, listing = tail.partition("\n")
    return int(rc_text), err, listing.split()


def test_fits_output_too_big_is_refused_before_the_work(tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(64, 64))
    before = src.read_bytes()
    rc, err, left = _in_tiny_tmpfs(
        tmp_path, "128k", "upscale", str(src), "-o", str(tmp_path / "out" / "o.fits"), "--quiet"
    )
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # the path, the space needed and the space free
    assert f"{tmp_path / 'out' / 'o.fits'}: output of 256x256 would need" in lines[0]
    assert "MiB of disk in" in lines[0] and "free" in lines[0]
    assert left == [] and src.read_bytes() == before


def test_full_disk_while_writing_is_one_line_exit_2(tmp_path):
    # A PNG's size is not known before it is encoded: the write itself meets ENOSPC.
    rng = np.random.default_rng(0)
    src = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(src)
    before = src.read_bytes()
    rc, err, left = _in_tiny_tmpfs(
        tmp_path, "64k", "upscale", str(src), "-o", str(tmp_path / "out" / "o.png"), "--quiet"
    )
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in lines[0] and "Traceback" not in err
    assert f"{tmp_path / 'out' / 'o.png'}: no space left on the output's device" in lines[0]
    assert "MiB free in" in lines[0]
    assert left == [] and src.read_bytes() == before  # no partial output, no temp file
