"""User options of AstroSleuth NEXT, shared by the torch network and the ONNX runner.

This module imports numpy only (no torch), so the ONNX path can validate and feed the
options without torch installed.

NEXT has two independent extras on top of the plain RRDB super-resolution:

* **conditioning**: three style strengths (``star_strength``, ``detail_strength``,
  ``spikes_strength``, each in [-1, 1]) pick a point in a 512-d condition space around a fixed
  ``average`` vector; ``cond_strength`` (in [0, 5]) scales how much that condition steers every
  RRDB block. ``cond_strength == 0`` switches conditioning off, which is exactly upstream's
  ``use_cond=False``.
* **chroma matching** (``color_matching``): keep the network's luminance but take the chroma
  (YCbCr Cb/Cr) from the bilinear x4 upsampled input; the result is clipped to [0, 1].

In an exported ONNX graph these become three extra graph inputs (see :data:`ONNX_INPUTS`), so
one ``.onnx`` file serves every setting.

Conditioning vectors
--------------------
The four fixed 512-d vectors (``average``, ``stars``, ``detail``, ``spikes``) are not part of
NEXT's released state dict, and astrosleuth-astro does not ship them: ``astrosleuth-astro
models download AstroSleuthNEXT`` fetches them from upstream (see
:mod:`astrosleuth_astro.models.cond_vectors`) into the user cache as
:data:`VECTORS_FILENAME`. :func:`condition_vectors` reads, in order,

1. ``$ASTROSLEUTH_NEXT_VECTORS`` (:data:`VECTORS_ENV`): path of a ``.npy`` file of shape
   ``(4, 512)``, rows ``average, stars, detail, spikes``;
2. ``<cache>/next_cond_vectors.npy``, ``<cache>`` being
   :func:`astrosleuth_astro.models.cache_dir` (:func:`cached_vectors_path`).

Without them NEXT still runs with conditioning off (the default); asking for conditioning
(:func:`conditioning_requested`) then raises :class:`~astrosleuth_astro.errors.ModelError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..cache import cache_dir
from ..errors import InputError, ModelError

#: Names accepted as model options (keyword arguments of ``load``/``make_backend``).
OPTION_NAMES = (
    "star_strength",
    "detail_strength",
    "spikes_strength",
    "cond_strength",
    "color_matching",
)

#: Extra ONNX graph inputs of an exported NEXT model, after the image input:
#: ``strengths`` float32 (3,) = (star, detail, spikes); ``cond_strength`` float32 (1,);
#: ``color_match`` float32 (1,), 1.0 = chroma matching on, 0.0 = off.
ONNX_INPUTS = ("strengths", "cond_strength", "color_match")

#: Conditioning strength used when a style strength is set but ``cond_strength`` is not
#: (the default of upstream's "Strength" slider).
DEFAULT_COND_STRENGTH = 0.5

#: ONNX metadata key telling whether a NEXT export holds the conditioning vectors.
COND_META_KEY = "astrosleuth.next_conditioning"

#: Environment variable naming an explicit ``.npy`` file with the conditioning vectors.
VECTORS_ENV = "ASTROSLEUTH_NEXT_VECTORS"
#: File name of the cached conditioning vectors inside the model cache folder.
VECTORS_FILENAME = "next_cond_vectors.npy"
#: Row order of the conditioning vectors array.
VECTOR_NAMES = ("average", "stars", "detail", "spikes")
#: Width of each conditioning vector.
COND_DIM = 512

#: The one-line message of a conditioning request without conditioning vectors.
MISSING_VECTORS_MESSAGE = (
    "NEXT conditioning (cond_strength / star, detail, spikes strengths) needs its "
    "conditioning vectors, which are not installed; run "
    "'astrosleuth-astro models download AstroSleuthNEXT'"
)

_STYLE_RANGE = (-1.0, 1.0)  # upstream UI slider limits
_COND_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class NextOptions:
    """Validated NEXT options.

    Attributes
    ----------
    star_strength, detail_strength, spikes_strength : float
        Style strengths in [-1, 1] (0 = neutral).
    cond_strength : float
        Overall conditioning strength in [0, 5]; 0 disables conditioning.
    color_matching : bool
        Take the output chroma from the bilinear-upsampled input.
    """

    star_strength: float = 0.0
    detail_strength: float = 0.0
    spikes_strength: float = 0.0
    cond_strength: float = 0.0
    color_matching: bool = False

    @property
    def strengths(self) -> tuple[float, float, float]:
        """``(star, detail, spikes)``, the order of the ONNX ``strengths`` input."""
        return (self.star_strength, self.detail_strength, self.spikes_strength)

    def as_dict(self) -> dict:
        """Plain dict, for provenance records and ONNX metadata."""
        return asdict(self)

    def onnx_feeds(self) -> dict[str, np.ndarray]:
        """The extra ONNX inputs for these options (float32 arrays)."""
        return {
            "strengths": np.asarray(self.strengths, dtype=np.float32),
            "cond_strength": np.asarray([self.cond_strength], dtype=np.float32),
            "color_match": np.asarray([1.0 if self.color_matching else 0.0], dtype=np.float32),
        }


def _number(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name}: expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or not lo <= out <= hi:
        raise InputError(f"{name}: {out:g} is outside [{lo:g}, {hi:g}]")
    return out


def next_options(base: NextOptions | None = None, **options: object) -> NextOptions:
    """Validate NEXT options, starting from ``base`` (defaults when None).

    Parameters
    ----------
    base : NextOptions, optional
        Options to update (e.g. defaults stored in an ONNX file).
    **options
        Any of :data:`OPTION_NAMES`. ``None`` values are ignored. When a style strength is
        non-zero and ``cond_strength`` is neither given nor set in ``base``, conditioning is
        switched on at :data:`DEFAULT_COND_STRENGTH`.

    Returns
    -------
    NextOptions

    Raises
    ------
    InputError
        Unknown option name, non-numeric or out-of-range value.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise InputError(
            f"unknown model option(s) {', '.join(unknown)}; NEXT accepts {', '.join(OPTION_NAMES)}"
        )
    values = (base or NextOptions()).as_dict()
    given = {k: v for k, v in options.items() if v is not None}
    for key in ("star_strength", "detail_strength", "spikes_strength"):
        if key in given:
            values[key] = _number(key, given[key], *_STYLE_RANGE)
    if "cond_strength" in given:
        values["cond_strength"] = _number("cond_strength", given["cond_strength"], *_COND_RANGE)
    elif values["cond_strength"] == 0.0 and any(
        values[k] != 0.0 for k in ("star_strength", "detail_strength", "spikes_strength")
    ):
        # A style strength without conditioning would be silently ignored: turn it on.
        values["cond_strength"] = DEFAULT_COND_STRENGTH
    if "color_matching" in given:
        flag = given["color_matching"]
        if not isinstance(flag, (bool, np.bool_, int)) or flag not in (0, 1):
            raise InputError(f"color_matching: expected true/false, got {flag!r}")
        values["color_matching"] = bool(flag)
    return NextOptions(**values)


def conditioning_requested(options: NextOptions) -> bool:
    """Whether ``options`` ask for conditioning, which needs the conditioning vectors.

    True when ``cond_strength > 0`` or any style strength is non-zero (a style strength with
    ``cond_strength == 0`` has no effect, but is refused the same way, so that a request for
    a style never passes silently without the vectors).
    """
    return options.cond_strength != 0.0 or any(s != 0.0 for s in options.strengths)


def missing_vectors_error() -> ModelError:
    """The :class:`ModelError` raised when conditioning is asked for without vectors."""
    return ModelError(MISSING_VECTORS_MESSAGE)


def cached_vectors_path() -> Path:
    """Where ``models download AstroSleuthNEXT`` stores the vectors (may not exist)."""
    return cache_dir() / VECTORS_FILENAME


def vectors_path() -> tuple[Path, bool]:
    """The conditioning vectors file to use and whether it was named explicitly.

    Returns
    -------
    (pathlib.Path, bool)
        ``$ASTROSLEUTH_NEXT_VECTORS`` and True when that is set, else the cache file
        (:func:`cached_vectors_path`) and False. The file may not exist.
    """
    env = os.environ.get(VECTORS_ENV, "").strip()
    if env:
        return Path(env).expanduser(), True
    return cached_vectors_path(), False


def check_vectors(arr: object, source: str) -> np.ndarray:
    """Validate a conditioning vectors array.

    Parameters
    ----------
    arr : array-like
        Candidate array.
    source : str
        File or URL named in error messages.

    Returns
    -------
    numpy.ndarray
        Read-only C-contiguous float32 array of shape ``(4, 512)``.

    Raises
    ------
    ModelError
        Wrong shape, non-numeric or non-finite values.
    """
    try:
        out = np.array(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelError(f"{source}: NEXT conditioning vectors are not numeric") from None
    expected = (len(VECTOR_NAMES), COND_DIM)
    if out.shape != expected:
        raise ModelError(
            f"{source}: NEXT conditioning vectors have shape {out.shape}; expected {expected} "
            f"(rows {', '.join(VECTOR_NAMES)})"
        )
    if not np.isfinite(out).all():
        raise ModelError(f"{source}: NEXT conditioning vectors hold NaN or infinite values")
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _read_vectors(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # mtime and size are part of the cache key, so a file replaced by a new download is read
    # again.
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ModelError(
            f"{path}: not a readable .npy file of NEXT conditioning vectors ({exc})"
        ) from None
    return check_vectors(arr, path)


def condition_vectors(required: bool = True) -> np.ndarray | None:
    """The fixed NEXT conditioning vectors, when available (see the module docstring).

    Parameters
    ----------
    required : bool
        Raise when no vectors are available (else return None).

    Returns
    -------
    numpy.ndarray or None
        float32, shape ``(4, 512)``; rows ``average, stars, detail, spikes``. Read-only.
        None when not available and ``required`` is False.

    Raises
    ------
    ModelError
        ``$ASTROSLEUTH_NEXT_VECTORS`` names a missing or invalid file; the cached file is
        invalid; or no vectors are available and ``required`` is True.
    """
    path, explicit = vectors_path()
    try:
        stat = path.stat()
    except OSError:
        if explicit:
            raise ModelError(
                f"{path}: no such file (named by ${VECTORS_ENV}, the NEXT conditioning vectors)"
            ) from None
        if required:
            raise missing_vectors_error() from None
        return None
    try:
        return _read_vectors(str(path), stat.st_mtime_ns, stat.st_size)
    except ModelError as exc:
        if explicit:
            raise
        raise ModelError(
            f"{exc}; run 'astrosleuth-astro models download AstroSleuthNEXT --force'"
        ) from None
