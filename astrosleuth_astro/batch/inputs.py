"""Expanding a batch's inputs: files, glob patterns, directories and Siril sequences."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..io.formats import format_from_name
from .jobs import InputFile

GLOB_MAGIC = re.compile(r"[*?[]")
_FITS_EXTS = (".fit", ".fits", ".fts", ".FIT", ".FITS", ".FTS")


def read_seq(path: str | os.PathLike[str]) -> list[Path]:
    """The FITS frames of a Siril sequence file (``.seq``).

    A ``.seq`` (Siril's ``src/io/seqfile.c``) holds ``#`` comments, one
    ``S 'name' beg number selnum fixed reference [version variable fz drizzle]`` line (the
    name is quoted in the current format, bare in old ones), an optional ``T`` line for
    single-file sequences (``TS`` SER, ``TA`` film, ``TF`` FITS cube), and one
    ``I filenum incl ...`` line per image. Frame ``filenum`` of a regular sequence is the
    file ``{name}{filenum}{ext}``, the number zero-padded to ``fixed`` digits when
    ``fixed > 1``, next to the ``.seq``; ``ext`` is ``.fit``, ``.fits`` or ``.fts`` (the first
    that exists; ``.fz`` appended for compressed sequences).

    Every frame listed is returned, whether selected (``incl``) in Siril or not.

    Raises
    ------
    InputError
        An unreadable or malformed file, or a SER/film/FITS-cube sequence (convert those to
        FITS frames in Siril first).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the sequence ({exc.strerror})") from None
    name: str | None = None
    number = fixed = fz = 0
    kind = None
    frames: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "#":
            continue
        try:
            if line[0] == "S":
                rest = line[2:]
                if rest.startswith("'"):
                    end = rest.index("'", 1)
                    name, numbers = rest[1:end], rest[end + 1 :].split()
                else:
                    name, *numbers = rest.split()
                values = [int(v) for v in numbers]
                if len(values) < 5:
                    raise ValueError("too few fields")
                number, fixed = values[1], values[3]
                fz = values[7] if len(values) > 7 else 0
            elif line[0] == "T" and len(line) > 1 and line[1] in "SAF":
                kind = {"S": "SER", "A": "film", "F": "FITS cube"}[line[1]]
            elif line[0] == "I":
                if name is None:
                    raise ValueError("image line before the S line")
                frames.append(int(line[2:].split()[0]))
        except (ValueError, IndexError):
            raise InputError(
                f"{path}: not a Siril sequence (line {lineno}: {line[:60]!r})"
            ) from None
    if name is None:
        raise InputError(f"{path}: not a Siril sequence (no S line)")
    if kind is not None:
        raise InputError(
            f"{path}: a {kind} sequence; only sequences of FITS frames are supported "
            "(convert it to FITS frames in Siril first)"
        )
    if not frames or len(frames) != number:
        raise InputError(f"{path}: declares {number} images but lists {len(frames)}")
    base = path.parent
    out = []
    for num in frames:
        stem = f"{name}{num:0{fixed}d}" if fixed > 1 else f"{name}{num}"
        candidates = [base / f"{stem}{ext}{'.fz' if fz else ''}" for ext in _FITS_EXTS]
        out.append(next((c for c in candidates if c.exists()), candidates[0]))
    return out


def _is_image_name(path: Path) -> bool:
    return format_from_name(path) is not None and not path.name.startswith(".")


def is_inside(path: Path, directory: Path | None) -> bool:
    if directory is None:
        return False
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def _scan_dir(root: Path, recursive: bool, exclude: Path | None) -> list[InputFile]:
    found = []
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for dirpath, dirnames, filenames in walker:
        # Hidden directories (ours: temp/scratch files) and the output tree are not inputs.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and not is_inside(Path(dirpath, d), exclude)
        )
        for fname in sorted(filenames):
            p = Path(dirpath, fname)
            if p.is_file() and _is_image_name(p) and not is_inside(p, exclude):
                found.append(InputFile(p, os.path.relpath(dirpath, root)))
    return found


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_inputs(
    specs: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = False,
    exclude: str | os.PathLike[str] | None = None,
) -> list[InputFile]:
    """Turn command-line inputs into the list of images to process.

    Parameters
    ----------
    specs : sequence of str or path-like
        Each one a file, a directory (its image files, by name: FITS, TIFF, PNG, JPEG;
        hidden files skipped), a Siril ``.seq`` (its frames) or a glob pattern (``*``, ``?``,
        ``[...]``; ``**`` spans directories with ``recursive``). A file that does not exist is
        kept: it fails as a bad input when processed, without stopping the others.
    recursive : bool
        Directories are searched through their sub-directories, and ``**`` in globs.
    exclude : path-like, optional
        A directory whose files are never inputs (the output directory).

    Returns
    -------
    list of InputFile
        In the order given (directories and globs sorted), duplicates removed.

    Raises
    ------
    InputError
        A glob that matches nothing, a directory without images, a malformed ``.seq``.
    """
    excl = Path(os.path.abspath(exclude)) if exclude is not None else None
    found: list[InputFile] = []
    for spec in specs:
        text = os.fspath(spec)
        path = Path(os.path.abspath(text))
        if path.is_dir():
            files = _scan_dir(path, recursive, excl)
            if not files:
                hint = "" if recursive else " (use --recursive for sub-directories)"
                raise InputError(f"{text}: no image files in this directory{hint}")
            found += files
        elif path.suffix.lower() == ".seq":
            if not path.is_file():
                raise InputError(f"{text}: no such sequence file")
            found += [InputFile(Path(os.path.abspath(p))) for p in read_seq(path)]
        elif not path.exists() and GLOB_MAGIC.search(text):
            root = Path(os.path.abspath(_glob_root(text)))
            matches = sorted(glob.glob(text, recursive=recursive))
            files = []
            for m in matches:
                p = Path(os.path.abspath(m))
                if p.is_file() and p.suffix.lower() == ".seq":
                    files += [InputFile(Path(os.path.abspath(q))) for q in read_seq(p)]
                elif p.is_file() and _is_image_name(p) and not is_inside(p, excl):
                    files.append(InputFile(p, os.path.relpath(p.parent, root)))
            if not files:
                raise InputError(f"{text}: matches no image file")
            found += files
        else:
            found.append(InputFile(path))
    seen: set[Path] = set()
    unique = []
    for f in found:
        if f.path not in seen:
            seen.add(f.path)
            unique.append(f)
    return unique
