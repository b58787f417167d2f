"""Atomic output files (astrosleuth_astro.io.atomic)."""

from __future__ import annotations

import errno
import os

import pytest

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io import atomic
from astrosleuth_astro.io.atomic import TEMP_PREFIX, atomic_output, check_not_same

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_success_renames_temp_in_same_directory(tmp_path):
    out = tmp_path / "result.fits.gz"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith("result.fits.gz")  # same suffixes for the writer
        assert not tmp.exists()
        tmp.write_bytes(b"payload")
        assert not out.exists()  # nothing visible before the commit
    assert out.read_bytes() == b"payload"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_failure_removes_temp_and_keeps_existing_file(tmp_path, exc):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old")
    with pytest.raises(type(exc)), atomic_output(out, overwrite=True) as tmp:
        tmp.write_bytes(b"partial")
        raise exc
    assert out.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_failure_leaves_no_output(tmp_path):
    out = tmp_path / "new.png"
    with pytest.raises(ValueError), atomic_output(out) as tmp:
        tmp.write_bytes(b"x")
        raise ValueError
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_before_work(tmp_path):
    out = tmp_path / "out.fits"
    out.write_bytes(b"keep")
    ran = False
    with pytest.raises(InputError, match=r"out\.fits: exists \(use --overwrite\)"):
        with atomic_output(out):
            ran = True
    assert not ran
    assert out.read_bytes() == b"keep"


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old")
    with atomic_output(out, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_output_appearing_meanwhile_is_not_clobbered(tmp_path):
    out = tmp_path / "race.fits"
    with pytest.raises(InputError, match="exists"), atomic_output(out) as tmp:
        tmp.write_bytes(b"mine")
        out.write_bytes(b"theirs")  # another process created it during the run
    assert out.read_bytes() == b"theirs"
    assert _leftovers(tmp_path) == []


def test_missing_directory(tmp_path):
    out = tmp_path / "nope" / "out.fits"
    with pytest.raises(InputError, match="does not exist") as info:
        with atomic_output(out):
            pass
    assert str(out) in str(info.value)


def test_output_is_a_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        with atomic_output(tmp_path, overwrite=True):
            pass


@pytest.mark.skipif(IS_ROOT or os.name == "nt", reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            with atomic_output(ro / "out.fits"):
                pass
    finally:
        ro.chmod(0o755)


def test_unwritable_directory_reported_cleanly(tmp_path, monkeypatch):
    """Root passes os.access; the real create still fails on e.g. a read-only mount."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path / TEMP_PREFIX)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", fake_open)
    with pytest.raises(InputError, match="read-only file system") as info:
        with atomic_output(tmp_path / "out.fits"):
            pass
    assert str(tmp_path / "out.fits") in str(info.value)


def test_writer_that_writes_nothing_fails(tmp_path):
    out = tmp_path / "out.fits"
    with pytest.raises(FileNotFoundError), atomic_output(out):
        pass
    assert not out.exists()


def test_fsync_before_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "link", lambda a, b: (calls.append("link"), real_link(a, b)))
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))
    )
    with atomic_output(tmp_path / "a.fits") as tmp:
        tmp.write_bytes(b"1")
    assert calls[0] == "fsync" and calls[1] == "link"
    calls.clear()
    with atomic_output(tmp_path / "a.fits", overwrite=True) as tmp:
        tmp.write_bytes(b"2")
    assert calls[0] == "fsync" and calls[1] == "replace"


def test_check_not_same(tmp_path):
    src = tmp_path / "in.fits"
    src.write_bytes(b"data")
    with pytest.raises(InputError, match="same file as the input"):
        check_not_same(src, src)
    with pytest.raises(InputError, match="same file"):
        check_not_same(src, tmp_path / "." / "in.fits")
    link = tmp_path / "link.fits"
    link.symlink_to(src)
    with pytest.raises(InputError, match="same file"):
        check_not_same(src, link)
    hard = tmp_path / "hard.fits"
    os.link(src, hard)
    with pytest.raises(InputError, match="same file"):
        check_not_same(src, hard)
    other = tmp_path / "other.fits"
    other.write_bytes(b"data")
    check_not_same(src, other)
    check_not_same(src, tmp_path / "missing.fits")
