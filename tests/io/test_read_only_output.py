"""``--overwrite`` never replaces a file its owner made read-only (issue 24)."""

from __future__ import annotations

import hashlib
import os

import pytest

from astrosleuth_astro.cli import main
from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io.atomic import atomic_output, check_output_path

from ..conftest import write_sim_fits


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_overwrite_refuses_a_read_only_output(tmp_path, capsys, tiny_fast_model):
    src = write_sim_fits(tmp_path / "in.fits", shape=(16, 16))
    dst = tmp_path / "out.fits"
    dst.write_bytes(b"keep me")
    dst.chmod(0o444)
    before = (_sha(src), _sha(dst), sorted(os.listdir(tmp_path)))
    args = ["upscale", str(src), "-o", str(dst), "--model", str(tiny_fast_model), "--quiet"]
    code = main([*args, "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"astrosleuth-astro: error: {dst}: is read-only; --overwrite does not replace it "
        "(chmod u+w first)"
    ]
    assert (_sha(src), _sha(dst), sorted(os.listdir(tmp_path))) == before
    assert dst.stat().st_mode & 0o777 == 0o444
    # made writable again, the same command replaces it
    dst.chmod(0o644)
    assert main([*args, "--overwrite"]) == 0
    assert dst.read_bytes()[:6] == b"SIMPLE"


def test_protected_while_working_is_not_replaced(tmp_path):
    dst = tmp_path / "out.fits"
    dst.write_bytes(b"old")
    with pytest.raises(InputError, match="is read-only"):
        with atomic_output(dst, overwrite=True) as tmp:
            tmp.write_bytes(b"new")
            dst.chmod(0o400)  # the user protects it before the commit
    assert dst.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.fits"]  # the temporary file is gone


def test_writable_files_and_links_are_replaced(tmp_path):
    dst = tmp_path / "out.fits"
    dst.write_bytes(b"old")
    assert check_output_path(dst, overwrite=True) == dst
    dangling = tmp_path / "dangling.fits"
    dangling.symlink_to(tmp_path / "nowhere.fits")
    assert check_output_path(dangling, overwrite=True) == dangling
    ro = tmp_path / "ro.fits"
    ro.write_bytes(b"x")
    ro.chmod(0o444)
    link = tmp_path / "link.fits"
    link.symlink_to(ro)  # a link to a protected file is the protected file
    with pytest.raises(InputError, match="is read-only"):
        check_output_path(link, overwrite=True)
    # without --overwrite the message stays the one about existing files
    with pytest.raises(InputError, match="exists"):
        check_output_path(ro, overwrite=False)
