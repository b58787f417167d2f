"""The run: every configuration timed side by side, interleaved repetitions, medians,
then the star-protection run, bf16 PSNR and peak memory; ``bench.json`` and ``bench.md``."""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import (
    BARE_SIZE,
    NAIVE_PAD,
    NAIVE_TILE,
    PSNR_SIZE,
    UPSTREAM_FAST,
    _load_module,
    _median,
    _named,
    _onnx_for,
    megapixels,
    read_shape,
    synthetic_fits,
)
from .memory import measure_rss
from .quality import bf16_psnr
from .report import markdown
from .timing import (
    _Config,
    _naive_net,
    _time_bare,
    _time_gemm,
    _time_naive,
    _time_pipeline,
    conv_flops_per_pixel,
)


def run_bench(
    out_dir: str | os.PathLike,
    models: list[tuple[str, float]],
    *,
    inputs: list[str] | None = None,
    rss_sizes: list[float] | None = (1.0, 4.0, 16.0),
    repeats: int = 3,
    bare_size: int = BARE_SIZE,
    psnr_size: int = PSNR_SIZE,
    protect_stars: bool = False,
    log=None,
) -> dict[str, Any]:
    """Run the benchmark and write ``bench.json`` and ``bench.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Output directory (created).
    models : list of (str, float)
        Models (registry names, weights files or ``"fast-upstream"``) and the synthetic
        input size in megapixels of each one's throughput runs.
    inputs : list of str, optional
        Image files to time instead of synthetic fields (all models use all files).
    rss_sizes : list of float, optional
        Input sizes (MP) of the peak-memory runs, with the first model; None skips them.
    repeats : int
        Interleaved repetitions; medians are reported.
    bare_size : int
        Side in LR pixels of the bare-network tensor.
    psnr_size : int
        Side in LR pixels of the field for the bf16-vs-fp32 PSNR.
    protect_stars : bool
        Run the timed pipelines with star protection. Off by default, as in ``upscale``;
        one extra run of the first configuration with it on is always reported
        (``protect_stars_run``), so the cost of star detection is in the split.
    log : callable, optional
        ``log(message)`` for progress lines.

    Returns
    -------
    dict
        What ``bench.json`` holds.
    """
    import torch

    from ..engine.backends import TorchBackend, make_backend
    from ..engine.precision import cpu_supports_bf16

    say = log or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    repeats = max(1, int(repeats))
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "version": _version(),
        "machine": _machine(),
        "settings": {
            "repeats": repeats,
            "bare_size": bare_size,
            "naive": {"tile": NAIVE_TILE, "pad": NAIVE_PAD, "precision": "fp32", "nchw": True},
            "protect_stars": protect_stars,
            "models": [{"model": m, "input_mp": mp} for m, mp in models],
        },
        "configs": [],
    }
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        configs: list[_Config] = []
        naive: dict[str, tuple] = {}
        srcs: dict[str, list[Path]] = {}
        flops: dict[str, float] = {}
        gemm: list[float] = []
        for model, mp in models:
            module = _load_module(model)
            if inputs:
                srcs[model] = [Path(p) for p in inputs]
            else:
                path = work / f"in_{Path(model).stem}_{mp:g}.fits"
                srcs[model] = [synthetic_fits(path, mp)]
            from ..io import read_image
            from ..pipeline import prepare

            stretched = [prepare(read_image(p).data).stretched for p in srcs[model]]
            naive[model] = (_naive_net(module), stretched, [])
            flops[model] = conv_flops_per_pixel(module)
            channels = 1 if all(st.shape[0] == 1 for st in stretched) else 3
            precs = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
            for prec in precs:
                net = TorchBackend(copy.deepcopy(module), "cpu", prec)
                net.provenance = _named(net.provenance, model)
                configs.append(_Config(model, "torch", prec, net, mp, channels))
            onnx_path = _onnx_for(model, module, work)
            if onnx_path is not None:
                net = make_backend(onnx_path, backend="onnx")
                net.provenance = _named(net.provenance, model)
                configs.append(_Config(model, "onnx", "fp32", net, mp, channels))
        # Warm-up (first-call allocations, oneDNN kernel selection), not timed.
        for cfg in configs:
            cfg.run(np.zeros((1, cfg.channels + cfg.n_cond, 64, 64), np.float32))
        threads = torch.get_num_threads()
        for rep in range(repeats):
            for cfg in configs:
                for k, src in enumerate(srcs[cfg.model]):
                    _time_pipeline(cfg, src, work / f"out_{k}.fits", protect_stars)
                _time_bare(cfg, bare_size)
                say(f"rep {rep + 1}/{repeats} {cfg.key}: pipeline {cfg.pipeline_s[-1]:.1f} s")
            for model, (nv, stretched, times) in naive.items():
                times.append(sum(_time_naive(nv, s) for s in stretched))
                say(f"rep {rep + 1}/{repeats} {model}/naive: {times[-1]:.1f} s")
            gemm.append(max(_time_gemm() for _ in range(3)))
            say(f"rep {rep + 1}/{repeats} fp32 GEMM: {gemm[-1]:.0f} GFLOP/s")
        result["gemm_gflops"] = round(_median(gemm), 1)
        for cfg in configs:
            mp_total = sum(megapixels(read_shape(p)) for p in srcs[cfg.model])
            pipe = _median(cfg.pipeline_s)
            bare = _median(cfg.bare_s)
            naive_s = _median(naive[cfg.model][2])
            mid = sorted(range(len(cfg.pipeline_s)), key=cfg.pipeline_s.__getitem__)[
                (len(cfg.pipeline_s) - 1) // 2
            ]
            split = {k: round(v, 3) for k, v in cfg.splits[mid].items()}
            plan = cfg.net.tiling
            result["configs"].append(
                {
                    "model": cfg.model,
                    "arch": cfg.net.arch,
                    "backend": cfg.backend,
                    "precision": cfg.precision,
                    "input_mp": round(mp_total, 3),
                    "tile": plan.tile,
                    "pad": plan.pad,
                    "batch_size": plan.batch_size,
                    "pipeline_s": round(pipe, 3),
                    "pipeline_mp_per_min": round(60 * mp_total / pipe, 3),
                    "bare_mp_per_min": round(60 * bare_size**2 / 1e6 / bare, 3),
                    "bare_channels": cfg.channels,
                    "naive_mp_per_min": round(60 * mp_total / naive_s, 3),
                    "efficiency": round((mp_total / pipe) / (bare_size**2 / 1e6 / bare), 3),
                    "speedup_vs_naive": round(naive_s / pipe, 3),
                    "conv_gflop_per_input_mp": round(flops[cfg.model] / 1e3, 2),
                    # Useful network work per second of each loop (input pixels only: the
                    # tile context they also compute is overhead, not work).
                    "pipeline_gflops": round(flops[cfg.model] * mp_total * 1e6 / pipe / 1e9, 1),
                    "bare_gflops": round(flops[cfg.model] * bare_size**2 / bare / 1e9, 1),
                    "naive_gflops": round(flops[cfg.model] * mp_total * 1e6 / naive_s / 1e9, 1),
                    "split_s": split,
                    "io_stretch_stars_fraction": round(
                        sum(split.get(k, 0.0) for k in ("read", "stretch", "stars", "write"))
                        / cfg.pipeline_s[mid],
                        4,
                    ),
                    "runs_s": [round(t, 3) for t in cfg.pipeline_s],
                }
            )
        _ratios(result)
        first_model = models[0][0]
        if not protect_stars:
            say("one run with star protection")
            # The fastest precision when there is one; on CPUs without bf16 every
            # configuration is fp32 and the first one is used.
            first = next((c for c in configs if c.precision != "fp32"), configs[0])
            first.pipeline_s, first.splits = [], []
            star_src = synthetic_fits(work / "stars_in.fits", min(1.0, models[0][1]), seed=3)
            _time_pipeline(first, star_src, work / "out_stars.fits", True)
            result["protect_stars_run"] = {
                "config": first.key,
                "input_mp": round(megapixels(read_shape(star_src)), 3),
                "seconds": round(first.pipeline_s[0], 3),
                "split_s": {k: round(v, 3) for k, v in first.splits[0].items()},
            }
        if cpu_supports_bf16():
            # Random weights (fast-upstream) have no meaningful PSNR against a truth.
            say("bf16 vs fp32 PSNR")
            result["bf16_psnr"] = {
                m: bf16_psnr(_load_module(m), psnr_size, protect_stars)
                for m, _ in models
                if m != UPSTREAM_FAST
            }
        else:
            result["bf16_psnr"] = None
        if rss_sizes:
            say(f"peak RSS at {', '.join(f'{s:g}' for s in rss_sizes)} MP")
            rows = measure_rss(first_model, "auto", list(rss_sizes), work)
            result["rss"] = {"model": first_model, "rows": rows}
            if len(rows) >= 2:
                a, b = rows[-2]["peak_rss_anon_mb"], rows[-1]["peak_rss_anon_mb"]
                result["rss"]["growth_last_two"] = round(b / a - 1, 4)
        else:
            result["rss"] = None
        result["threads"] = threads
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(result))
    return result


def _ratios(result: dict) -> None:
    """bf16/fp32 and onnx/torch-fp32 throughput ratios per model."""
    by = {(c["model"], c["backend"], c["precision"]): c for c in result["configs"]}
    ratios = {}
    for model in {c["model"] for c in result["configs"]}:
        fp32 = by.get((model, "torch", "fp32"))
        r: dict[str, float] = {}
        if fp32 and (model, "torch", "bf16") in by:
            bf = by[(model, "torch", "bf16")]
            r["bf16_over_fp32"] = round(bf["pipeline_mp_per_min"] / fp32["pipeline_mp_per_min"], 3)
        if fp32 and (model, "onnx", "fp32") in by:
            ox = by[(model, "onnx", "fp32")]
            r["onnx_over_torch_fp32"] = round(
                ox["pipeline_mp_per_min"] / fp32["pipeline_mp_per_min"], 3
            )
        ratios[model] = r
    result["ratios"] = ratios


def _version() -> str:
    from .._version import __version__

    return __version__


def _machine() -> dict:
    import torch

    from ..engine.precision import cpu_supports_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16": cpu_supports_bf16(),
        "torch": torch.__version__,
        "onnxruntime": ort,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
