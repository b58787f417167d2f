"""Export trained weights: ``.safetensors`` (state dict) and ``.onnx`` (dynamic N/H/W)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..archs import cond_channels
from ..archs.compact import FOLD_RING, fold_upsampling
from ..models.http import sha256_file


def export_safetensors(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Save the model's state dict (float32, contiguous) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float32).contiguous().cpu() for k, v in model.state_dict().items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)
    return path


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    shapes=((1, 3, 24, 40), (2, 3, 37, 29)),
    seed: int = 0,
) -> float:
    """Largest |torch - onnxruntime| over random inputs of several shapes (dynamic H/W);
    the channel count of ``shapes`` is the model's own (conditioning channels included).

    A FAST file exported in its folded inference form (metadata ``astrosleuth.folded =
    "1"``) is compared with that form everywhere, and with ``model`` itself away from the
    outermost 6 output pixels, the only place where the two forms differ.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    model = model.eval().float()
    meta = sess.get_modelmeta().custom_metadata_map
    folded = fold_upsampling(model).eval() if meta.get("astrosleuth.folded") == "1" else None
    # NEXT exports take their options as extra inputs; zeros are the neutral options the
    # torch module runs with by default (no conditioning, no colour matching).
    extra = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in sess.get_inputs()
        if i.name != "input"
    }
    n_in = 3 + cond_channels(model)
    for shape in shapes:
        x = rng.random((shape[0], n_in, *shape[2:]), dtype=np.float32)
        (y_ort,) = sess.run(["output"], {"input": x, **extra})
        with torch.no_grad():
            y_t = model(torch.from_numpy(x)).numpy()
            y_f = folded(torch.from_numpy(x)).numpy() if folded is not None else None
        if y_ort.shape != y_t.shape:
            raise RuntimeError(f"{path}: onnx output shape {y_ort.shape} != torch {y_t.shape}")
        if y_f is None:
            worst = max(worst, float(np.abs(y_ort - y_t).max()))
        else:
            ring = slice(FOLD_RING, -FOLD_RING)
            inner = (..., ring, ring)
            worst = max(
                worst,
                float(np.abs(y_ort - y_f).max()),
                float(np.abs(y_ort[inner] - y_t[inner]).max()),
            )
    return worst


# -- registry entry -----------------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        if isinstance(v, float) and not np.isfinite(v):
            return '"nan"' if np.isnan(v) else ('"inf"' if v > 0 else '"-inf"')
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def toml_dumps(tables: dict[str, dict]) -> str:
    """Write ``{"a.b": {key: value}}`` as TOML tables ``[a.b]`` (values: scalars, lists,
    inline tables). Enough for registry entries and configs; not a general TOML writer."""
    out = []
    for name, body in tables.items():
        out.append(f"[{name}]")
        # None = "not set": left out, so the default applies when the file is read back.
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in body.items() if v is not None)
        out.append("")
    return "\n".join(out)


def registry_entry(
    name: str,
    arch: str,
    weights: Path,
    onnx: Path,
    *,
    config_file: str,
    steps: int,
    kwargs: dict,
    data_summary: dict,
    validation: list[dict],
    tile: int,
    init: str = "",
    init_sha256: str = "",
) -> str:
    """A ``[models.<name>]`` registry table (paths relative to the export folder) with its
    ``[models.<name>.training]`` table: config file, steps, architecture, data, validation.

    Append it to a registry file (``$ASTROSLEUTH_REGISTRY``) and copy the two model files
    next to that registry to use the model by name. A fine-tune (``init``, the
    ``[model] init`` it started from, with the sha256 of those weights) records both, so
    the chain of trainings that made a model can be followed.
    """
    n_params = kwargs.pop("_params", None)
    arch_txt = ", ".join(
        f"{k} {v}" for k, v in kwargs.items() if k not in ("num_in_ch", "num_out_ch")
    )
    entry = {
        "arch": arch,
        "scale": 4,
        "file": weights.name,
        "onnx": onnx.name,
        "sha256": sha256_file(weights),
        "onnx_sha256": sha256_file(onnx),
        "license": "",
        "description": f"Trained by astrosleuth-astro train ({arch}: {arch_txt}; "
        f"{n_params} parameters; {steps} steps).",
        "tile": tile,
        "tile_pad": 16,
    }
    training = {
        "config": config_file,
        "steps": steps,
        **({"init": init, "init_sha256": init_sha256} if init else {}),
        "arch_kwargs": kwargs,
        "parameters": n_params,
        **{k: v for k, v in data_summary.items()},
    }
    if validation:
        training["validation"] = {
            str(r["image"]): {
                "psnr_db": round(float(r["psnr"]), 3),
                "gain_over_bicubic_db": round(float(r["gain"]), 3),
            }
            for r in validation
        }
    return toml_dumps({f"models.{name}": entry, f"models.{name}.training": training})
