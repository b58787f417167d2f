"""The model registry: ``models/registry.toml`` and where each model's file lives.

The registry is a TOML file with one ``[models.<name>]`` table per model (see the file for
the fields). It is found, in order, at

1. ``$ASTROSLEUTH_REGISTRY`` (a path to a TOML file; for tests and private model sets);
2. ``astrosleuth_astro/_models/registry.toml`` inside an installed wheel (package data);
3. ``models/registry.toml`` at the root of a source checkout.

Shipped files (``file`` / ``onnx`` keys) are relative to the registry's folder; models with a
``url`` are downloaded into the cache folder (:func:`cache_dir`).

No torch import here.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from ..cache import cache_dir
from ..errors import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "ModelEntry",
    "cache_dir",
    "get_entry",
    "list_models",
    "model_path",
    "registry_path",
]

#: Name of the model used when none is given.
DEFAULT_MODEL = "default"

#: Recommended tile size (input pixels) per architecture, for files outside the registry.
DEFAULT_TILE = {"fast": 256, "rrdb": 192, "next": 192}

_ARCHS = ("rrdb", "fast", "next")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_STR_KEYS = (
    "arch",
    "file",
    "onnx",
    "url",
    "onnx_url",
    "sha256",
    "onnx_sha256",
    "license",
    "description",
    "cond_vectors_url",
    "cond_vectors_sha256",
)
_SHA_KEYS = ("sha256", "onnx_sha256", "cond_vectors_sha256")
_INT_KEYS = ("scale", "tile", "tile_pad")


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes
    ----------
    name : str
        Registry name (``--model`` value).
    arch : str
        ``"rrdb"``, ``"fast"`` or ``"next"``.
    scale : int
        Upscaling factor of the network (4).
    file, onnx : str or None
        Shipped weights / ONNX file, relative to the registry folder.
    url, onnx_url : str or None
        Download URL of the weights / ONNX file (HTTPS).
    sha256, onnx_sha256 : str
        Expected lowercase hex digests; ``""`` when unknown (not verified).
    license, description : str
        Free text.
    cond_vectors_url : str or None
        NEXT only: HTTPS URL of the upstream source file holding NEXT's conditioning
        vectors; :func:`.download.download` fetches it, reads the vectors out of it without
        running it and caches them as ``next_cond_vectors.npy`` (see
        :mod:`astrosleuth_astro.archs.next_options`).
    cond_vectors_sha256 : str
        Expected lowercase hex sha256 of that source file; ``""`` when unknown.
    tile : int
        Recommended tile size in input pixels.
    tile_pad : int
        Tile overlap in input pixels, informational only: the engine derives the context
        pad from the network's receptive field (:attr:`Backend.tiling`), which is always
        enough. Kept so that registries that set it stay valid.
    training : dict or None
        Models made by the bundled trainer: the ``[models.<name>.training]`` table that
        ``astrosleuth-astro train`` writes (config file, steps, data summary, validation).
    path, onnx_path : pathlib.Path or None
        Absolute paths of the shipped files (they may be missing on disk).
    """

    name: str
    arch: str
    scale: int = 4
    file: str | None = None
    onnx: str | None = None
    url: str | None = None
    onnx_url: str | None = None
    sha256: str = ""
    onnx_sha256: str = ""
    license: str = ""
    description: str = ""
    cond_vectors_url: str | None = None
    cond_vectors_sha256: str = ""
    tile: int = 256
    tile_pad: int = 16
    training: dict | None = None
    path: Path | None = None
    onnx_path: Path | None = None

    @property
    def shipped(self) -> bool:
        """True when the entry names a shipped weights or ONNX file."""
        return self.file is not None or self.onnx is not None

    @property
    def available(self) -> bool:
        """True when a weights or ONNX file is on disk (shipped or downloaded)."""
        paths = [self.path, self.onnx_path]
        if self.url:
            paths.append(_cache_file(self))
        return any(p is not None and p.is_file() for p in paths)


def registry_path() -> Path:
    """Path of the registry TOML file in use (see the module docstring)."""
    env = os.environ.get("ASTROSLEUTH_REGISTRY")
    if env:
        return Path(env).expanduser()
    try:
        packaged = resources.files("astrosleuth_astro") / "_models" / "registry.toml"
        if packaged.is_file():
            return Path(str(packaged))
    except (ImportError, OSError, TypeError, AttributeError, ValueError):  # unusual installs
        pass
    return Path(__file__).resolve().parents[2] / "models" / "registry.toml"


def _parse_toml(text: str, path: Path) -> dict:
    """Parse the registry with ``tomllib`` (Python >= 3.11) or ``tomli`` (Python 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{path}: invalid TOML ({exc})") from None


def _entry(name: str, raw: object, root: Path, source: Path) -> ModelEntry:
    where = f"{source}: [models.{name}]"
    if not isinstance(raw, dict):
        raise ModelError(f"{where} is not a table")
    unknown = sorted(set(raw) - set(_STR_KEYS) - set(_INT_KEYS) - {"training"})
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {', '.join(unknown)}")
    fields: dict = {"name": name}
    for key in _STR_KEYS:
        if key in raw:
            if not isinstance(raw[key], str):
                raise ModelError(f"{where}: {key} must be a string")
            fields[key] = raw[key].strip() or ("" if key in _SHA_KEYS else None)
    for key in _INT_KEYS:
        if key in raw:
            if isinstance(raw[key], bool) or not isinstance(raw[key], int) or raw[key] <= 0:
                raise ModelError(f"{where}: {key} must be a positive integer")
            fields[key] = raw[key]
    if fields.get("arch") not in _ARCHS:
        raise ModelError(f"{where}: arch must be one of {', '.join(_ARCHS)}")
    if fields.get("scale", 4) != 4:
        raise ModelError(f"{where}: only scale = 4 models are supported")
    for key in _SHA_KEYS:
        digest = (fields.get(key) or "").lower()
        if digest and not _SHA.match(digest):
            raise ModelError(f"{where}: {key} must be 64 hex digits or empty")
        fields[key] = digest
    if not any(fields.get(k) for k in ("file", "onnx", "url", "onnx_url")):
        raise ModelError(f"{where}: needs a file, onnx or url")
    if fields["arch"] != "next" and (
        fields.get("cond_vectors_url") or fields["cond_vectors_sha256"]
    ):
        raise ModelError(f"{where}: cond_vectors_url/cond_vectors_sha256 apply to next models only")
    if "training" in raw:
        if not isinstance(raw["training"], dict):
            raise ModelError(f"{where}: training must be a table")
        fields["training"] = raw["training"]
    if fields.get("file"):
        fields["path"] = root / fields["file"]
    if fields.get("onnx"):
        fields["onnx_path"] = root / fields["onnx"]
    fields.setdefault("tile", DEFAULT_TILE[fields["arch"]])
    return ModelEntry(**fields)


def _load() -> dict[str, ModelEntry]:
    path = registry_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model registry ({exc.strerror})") from None
    data = _parse_toml(text, path)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ModelError(f"{path}: no [models.<name>] tables")
    root = path.resolve().parent
    return {name: _entry(name, raw, root, path) for name, raw in models.items()}


def list_models() -> list[ModelEntry]:
    """All registry entries, in file order."""
    return list(_load().values())


def get_entry(name: str) -> ModelEntry:
    """The registry entry called ``name`` (case-insensitive).

    Raises
    ------
    ModelError
        No such model.
    """
    entries = _load()
    if name in entries:
        return entries[name]
    folded = {k.lower(): v for k, v in entries.items()}
    if name.lower() in folded:
        return folded[name.lower()]
    raise ModelError(f"{name}: unknown model; known models: {', '.join(entries)}")


def _cache_file(entry: ModelEntry, onnx: bool = False) -> Path:
    url = entry.onnx_url if onnx else entry.url
    suffix = Path(urlparse(url or "").path).suffix or (".onnx" if onnx else ".pth")
    return cache_dir() / f"{entry.name}{suffix}"


def model_path(name: str, *, onnx: bool = False) -> Path:
    """Where model ``name``'s weights (or ONNX file) live: shipped path or cache path.

    The file may not exist yet (not downloaded, or a shipped file not yet built).

    Parameters
    ----------
    name : str
        Registry name.
    onnx : bool
        Ask for the ONNX file instead of the weights.

    Raises
    ------
    ModelError
        Unknown name, or the model has no file of that kind.
    """
    entry = get_entry(name)
    shipped = entry.onnx_path if onnx else entry.path
    if shipped is not None:
        return shipped
    if (entry.onnx_url if onnx else entry.url) is not None:
        return _cache_file(entry, onnx)
    kind = "ONNX file" if onnx else "torch weights file"
    raise ModelError(f"{entry.name}: the registry lists no {kind} for this model")
