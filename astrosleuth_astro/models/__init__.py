"""Model loading, the model registry, downloads and ONNX export.

Importing this package does not import torch (the default path runs on onnxruntime alone);
torch is imported only when torch weights are loaded or an export runs.

Public names
------------
load(path_or_name, arch=None, **options)
    Network ready for inference (torch module, or :class:`OnnxModel` for ``.onnx``).
list_models(), get_entry(name), model_path(name), resolve(path_or_name)
    The registry (``models/registry.toml``).
download(name, force=False, progress=None), download_url(url, dest, ...)
    Safe downloads into :func:`cache_dir`.
fetch_cond_vectors(entry, force=False)
    NEXT's conditioning vectors, fetched from upstream and parsed without running code
    (``download`` calls it for NEXT models).
export_onnx(model_or_path, out_path, opset=17)
    ONNX export with dynamic batch/height/width.
sha256_file(path)
    Hex digest used for verification and provenance.
"""

from __future__ import annotations

from .cond_vectors import fetch_cond_vectors
from .download import download, download_url, resolve, sha256_file
from .export import export_onnx
from .loader import ModelInfo, OnnxModel, check_batch, load, load_state_dict
from .registry import (
    DEFAULT_MODEL,
    ModelEntry,
    cache_dir,
    get_entry,
    list_models,
    model_path,
    registry_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelEntry",
    "ModelInfo",
    "OnnxModel",
    "cache_dir",
    "check_batch",
    "download",
    "download_url",
    "export_onnx",
    "fetch_cond_vectors",
    "get_entry",
    "list_models",
    "load",
    "load_state_dict",
    "model_path",
    "registry_path",
    "resolve",
    "sha256_file",
]
