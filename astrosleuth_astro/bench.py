"""``astrosleuth-astro bench``: throughput, efficiency, time split, memory and bf16 quality.

Everything is measured side by side in one run, and repetitions are interleaved
(configuration A, B, C, A, B, C, ...) with the median reported, so that a machine whose
speed drifts (thermal limits, other jobs) affects all configurations alike. Per model
(``name@MP``: the input size of its throughput runs), backend and precision:

* **pipeline**: the full file-to-file path: :func:`~astrosleuth_astro.io.read_image` of a
  FITS file, then :func:`~astrosleuth_astro.api.upscale_image` into a FITS output (stretch,
  star protection, tiled network, inverse stretch, write). Throughput is input MP/min.
* **bare network**: the same backend (weights, precision) on one ``BARE_SIZE`` squared
  tensor, no tiling, no pipeline: the best the network does on this machine. When every
  input is grey, the bare run uses the backend's grey form (``Backend.mono()``), as the
  pipeline does. ``efficiency = pipeline / bare`` (input MP/min over input MP/min).
* **naive loop**: the original tool's loop: one 256-px tile with 16 px of context per
  forward, eager fp32 NCHW torch, same weights, on the stretched input (the network and the
  tile stitching only, so the comparison favours the naive loop).
  ``speedup_vs_naive = pipeline / naive``.
* **split**: seconds in read, stretch, stars, network, tiling, inverse and write, from the
  pipeline runs (the median repetition).
* **roofline**: each loop's useful convolution work per second (:func:`conv_flops_per_pixel`
  x input pixels / seconds) against one fp32 2048^2 torch matrix product, timed in every
  repetition: how close each loop is to this machine's dense fp32 ceiling, and so the most
  any fp32 loop doing the same arithmetic could gain over the naive one.

Then, for the first model: the PSNR of the fp32 and bf16 outputs against the noise-free
truth of a simulated field, and peak memory at several input sizes, each in a fresh
subprocess (``RssAnon`` sampled every 5 ms: anonymous memory, i.e. not counting the
memory-mapped FITS output and input pages; ``VmHWM`` too, which does count them and the
shared libraries).

This module is outside the library core: nothing in io, stretch, engine, pipeline or api
imports it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .metrics import psnr

__all__ = ["BARE_SIZE", "UPSTREAM_FAST", "run_bench", "run_from_args"]

#: Side in LR pixels of the one tensor the bare network is timed on.
BARE_SIZE = 1024
#: Pseudo model name: the upstream-size FAST (64 features, 32 body convs), random weights.
UPSTREAM_FAST = "fast-upstream"
#: The original tool's loop: tile core and context, LR pixels.
NAIVE_TILE, NAIVE_PAD = 256, 16
#: Side in LR pixels of the simulated fields used for the bf16-vs-fp32 PSNR, and their seeds
#: (the mean over fields is reported: one field's PSNR against the truth can move by
#: tenths of a dB for a tiny change when it is very high).
PSNR_SIZE = 192
PSNR_SEEDS = (0, 1, 2, 3)


# --------------------------------------------------------------------------- helpers


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _mp(shape: tuple[int, ...]) -> float:
    """Input megapixels of an image shape ``(..., H, W)``."""
    return shape[-2] * shape[-1] / 1e6


def _side(mp: float) -> tuple[int, int]:
    """``(H, W)`` of a square-ish image of ``mp`` megapixels (multiples of 8)."""
    side = max(16, int(round(math.sqrt(mp * 1e6) / 8)) * 8)
    return side, side


def synthetic_fits(path: Path, mp: float, seed: int = 0) -> Path:
    """Write a mono simulated star field of about ``mp`` megapixels to ``path``."""
    from .io.fits import write_fits
    from .sim import simulate

    sim = simulate(_side(mp), scale=1, channels=1, wcs=False, seed=seed)
    write_fits(path, sim.lr[0], sim.header_lr, overwrite=True)
    return path


def _load_module(model: str):
    """A torch module for ``model`` (registry name, weights file or :data:`UPSTREAM_FAST`)."""
    import torch

    if model == UPSTREAM_FAST:
        from .archs.compact import CompactSR

        torch.manual_seed(0)
        net = CompactSR(num_feat=64, num_conv=32).eval()
        return net  # random weights: timings only (no PSNR is reported for it)
    from .models import load

    return load(model)


def _onnx_for(model: str, module, workdir: Path) -> Path | None:
    """An ONNX file with the same weights: the registry's, else a fresh export."""
    from .errors import ModelError
    from .models.registry import get_entry

    try:
        entry = get_entry(model)
        if entry.onnx_path is not None and entry.onnx_path.is_file():
            return entry.onnx_path
    except ModelError:
        pass
    try:
        from .models.export import export_onnx

        return export_onnx(copy.deepcopy(module), workdir / f"{Path(model).stem}.onnx")
    except Exception as exc:  # noqa: BLE001 - the onnx rows are then left out, and said so
        print(f"bench: no ONNX export of {model}: {exc}", file=sys.stderr)
        return None


class _Config:
    """One model/backend/precision combination and its measurements."""

    def __init__(
        self, model: str, backend: str, precision: str, net, input_mp: float, channels: int
    ) -> None:
        self.model, self.backend, self.precision, self.net = model, backend, precision, net
        self.input_mp = input_mp
        self.channels = channels  # of the inputs: 1 when every input is grey
        # What the pipeline runs on them (the grey form for grey inputs).
        self.run = net.mono() if channels == 1 else net
        self.pipeline_s: list[float] = []
        self.bare_s: list[float] = []
        self.splits: list[dict[str, float]] = []

    @property
    def key(self) -> str:
        return f"{self.model}/{self.backend}/{self.precision}"


def _naive_net(module):
    """The original loop's network: eager fp32 NCHW torch, default memory format."""
    import torch

    mod = copy.deepcopy(module).float().eval().to(memory_format=torch.contiguous_format)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mod(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return run


def _mono(net):
    from .pipeline import mono_net

    return mono_net(net)


def _time_pipeline(cfg: _Config, src: Path, dst: Path, protect_stars: bool) -> None:
    from .api import upscale_image
    from .io import read_image

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    t_read = time.perf_counter()
    image = read_image(src, memmap=True)  # as `upscale` reads it
    timings["read"] = time.perf_counter() - t_read
    upscale_image(
        image,
        dst,
        cfg.net,
        overwrite=True,
        protect_stars=protect_stars,
        memmap_threshold=0,
        timings=timings,
    )
    cfg.pipeline_s.append(time.perf_counter() - t0)
    cfg.splits.append(timings)


def conv_flops_per_pixel(module, size: int = 32) -> float:
    """Convolution FLOPs (2 per multiply-add) of a 3-channel network per input pixel.

    Counted with forward hooks on every ``Conv2d`` during one run on a ``size`` squared
    input; interpolation, activations and additions are not counted (they are memory-bound,
    not arithmetic). The folded and grey forms the backends run do the same or slightly
    less arithmetic, so this is the work of the network as trained, in one unit for all.
    """
    import torch

    total = [0]

    def hook(mod, _inp, out) -> None:
        k = mod.weight.shape  # (Cout, Cin / groups, kh, kw)
        total[0] += 2 * (out.numel() // out.shape[0]) * k[1] * k[2] * k[3]

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total[0] / size**2


def _time_gemm(n: int = 2048) -> float:
    """GFLOP/s of one fp32 ``n`` x ``n`` matrix product in torch: the machine's dense
    arithmetic ceiling for these convolutions (oneDNN runs them as GEMM-like kernels)."""
    import torch

    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b  # warm-up
    t0 = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t0) / 1e9


def _time_bare(cfg: _Config, size: int) -> None:
    # Grey inputs run through the backend's grey form in the pipeline: so does the bare run.
    x = np.random.default_rng(0).random((1, cfg.channels, size, size), dtype=np.float32)
    t0 = time.perf_counter()
    cfg.run(x)
    cfg.bare_s.append(time.perf_counter() - t0)


def _time_naive(naive, stretched: np.ndarray) -> float:
    from .engine.tiles import upscale_tiled

    t0 = time.perf_counter()
    upscale_tiled(stretched, _mono(naive), tile=NAIVE_TILE, pad=NAIVE_PAD, batch_size=1)
    return time.perf_counter() - t0


def _bf16_psnr(module, size: int, protect_stars: bool) -> dict[str, float]:
    """PSNR against the truth of fp32 and bf16 outputs of the same simulated field."""
    from .engine.backends import TorchBackend
    from .pipeline import upscale_array
    from .sim import simulate

    nets = {p: TorchBackend(copy.deepcopy(module), "cpu", p) for p in ("fp32", "bf16")}
    fields = []
    for seed in PSNR_SEEDS:
        sim = simulate((size, size), scale=4, channels=1, wcs=False, seed=seed)
        truth = sim.hr[0]
        peak = float(truth.max() - truth.min())
        outs = {}
        for prec, net in nets.items():
            plan = net.tiling
            outs[prec] = upscale_array(
                sim.lr,
                net,
                tile=plan.tile,
                pad=plan.pad,
                batch_size=plan.batch_size,
                protect_stars=protect_stars,
            ).data[0]
        p32, p16 = psnr(outs["fp32"], truth, peak), psnr(outs["bf16"], truth, peak)
        fields.append((p32, p16, psnr(outs["bf16"], outs["fp32"], peak)))
    p32 = float(np.mean([f[0] for f in fields]))
    p16 = float(np.mean([f[1] for f in fields]))
    return {
        "psnr_fp32_db": round(p32, 4),
        "psnr_bf16_db": round(p16, 4),
        "delta_db": round(p16 - p32, 4),
        "max_abs_field_delta_db": round(max(abs(f[1] - f[0]) for f in fields), 4),
        "psnr_bf16_vs_fp32_db": round(min(f[2] for f in fields), 2),
        "field_lr_px": size,
        "fields": len(fields),
    }


# --------------------------------------------------------------------------- peak memory


def _rss_child(src: str, dst: str, model: str, precision: str) -> None:
    """Run in a fresh process: upscale ``src`` into a memory-mapped FITS ``dst``, print JSON."""
    import resource

    peak = {"anon": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak["anon"] = max(peak["anon"], int(line.split()[1]) * 1024)
                        break
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    from .api import get_backend, upscale_image
    from .io import read_image

    net = get_backend(_module_or_name(model), precision=precision)
    t0 = time.perf_counter()
    upscale_image(read_image(src, memmap=True), dst, net, overwrite=True, memmap_threshold=0)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    # VmHWM: ru_maxrss is inherited across fork+exec on Linux (it reported the parent's
    # peak), the kernel's high-water mark of this process is not.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                maxrss = int(line.split()[1]) * 1024
    print(
        json.dumps(
            {
                "peak_anon_bytes": peak["anon"],
                "ru_maxrss_bytes": maxrss,
                "seconds": seconds,
                "precision": net.precision,
            }
        )
    )


def _module_or_name(model: str):
    return _load_module(model) if model == UPSTREAM_FAST else model


def _measure_rss(model: str, precision: str, sizes: list[float], workdir: Path) -> list[dict]:
    rows = []
    for mp in sizes:
        src = synthetic_fits(workdir / f"rss_{mp:g}.fits", mp, seed=1)
        dst = workdir / f"rss_{mp:g}_x4.fits"
        cmd = [sys.executable, "-m", "astrosleuth_astro.bench", "--rss-child"]
        cmd += [str(src), str(dst), model, precision]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench: peak-RSS run at {mp} MP failed: {proc.stderr.strip()}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        shape = _side(mp)
        rows.append(
            {
                "input_mp": round(_mp(shape), 3),
                "output_mp": round(16 * _mp(shape), 2),
                "peak_rss_anon_mb": round(res["peak_anon_bytes"] / 2**20, 1),
                "ru_maxrss_mb": round(res["ru_maxrss_bytes"] / 2**20, 1),
                "seconds": round(res["seconds"], 2),
                "precision": res["precision"],
            }
        )
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return rows


# --------------------------------------------------------------------------- the run


def _parse_models(spec: str, default_mp: float) -> list[tuple[str, float]]:
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, mp = item.partition("@")
        try:
            size = float(mp) if mp else default_mp
        except ValueError:
            raise InputError(f"--models: bad size in {item!r} (use NAME@MP)") from None
        if not size > 0:
            raise InputError(f"--models: size must be positive in {item!r}")
        out.append((name, size))
    if not out:
        raise InputError("--models: no model given")
    return out


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

    from .engine.backends import TorchBackend, cpu_supports_bf16, make_backend

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
            from .io import read_image
            from .pipeline import prepare

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
            cfg.run(np.zeros((1, cfg.channels, 64, 64), np.float32))
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
            mp_total = sum(_mp(read_shape(p)) for p in srcs[cfg.model])
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
                "input_mp": round(_mp(read_shape(star_src)), 3),
                "seconds": round(first.pipeline_s[0], 3),
                "split_s": {k: round(v, 3) for k, v in first.splits[0].items()},
            }
        if cpu_supports_bf16():
            # Random weights (fast-upstream) have no meaningful PSNR against a truth.
            say("bf16 vs fp32 PSNR")
            result["bf16_psnr"] = {
                m: _bf16_psnr(_load_module(m), psnr_size, protect_stars)
                for m, _ in models
                if m != UPSTREAM_FAST
            }
        else:
            result["bf16_psnr"] = None
        if rss_sizes:
            say(f"peak RSS at {', '.join(f'{s:g}' for s in rss_sizes)} MP")
            rows = _measure_rss(first_model, "auto", list(rss_sizes), work)
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


def read_shape(path: Path) -> tuple[int, ...]:
    from .io import read_image

    return tuple(read_image(path).data.shape)


def _named(info, model: str):
    from dataclasses import replace

    return replace(info, name=model)


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
    from ._version import __version__

    return __version__


def _machine() -> dict:
    import torch

    from .engine.backends import cpu_supports_bf16

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


def markdown(result: dict) -> str:
    """The Markdown tables of a :func:`run_bench` result."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, bf16 {'yes' if m['bf16'] else 'no'}; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; "
        f"{result['settings']['repeats']} interleaved repetitions (medians); "
        f"bare network on one {result['settings']['bare_size']}^2 tensor; "
        f"star protection {'on' if result['settings']['protect_stars'] else 'off'}; "
        f"{result['seconds']} s in all.",
        "",
        "| model | backend | precision | input MP | tile/pad/batch | pipeline MP/min "
        "| bare MP/min | efficiency | naive MP/min | speed-up vs naive |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in result["configs"]:
        lines.append(
            f"| {c['model']} | {c['backend']} | {c['precision']} | {c['input_mp']:.2f} "
            f"| {c['tile']}/{c['pad']}/{c['batch_size']} | {c['pipeline_mp_per_min']:.2f} "
            f"| {c['bare_mp_per_min']:.2f} | {c['efficiency']:.2f} "
            f"| {c['naive_mp_per_min']:.2f} | {c['speedup_vs_naive']:.2f}x |"
        )
    peak = result.get("gemm_gflops")
    if peak:
        lines += [
            "",
            f"Roofline: useful convolution work per second (conv FLOPs of the network per "
            f"input pixel x input pixels / seconds; tile context not counted) against one "
            f"fp32 2048^2 torch matrix product on this machine, {peak:.0f} GFLOP/s (median "
            f"of the repetitions). sgemm / naive is the most any fp32 loop that does the "
            f"same arithmetic can gain over the naive loop.",
            "",
            "| model | backend | precision | conv GFLOP per input MP | pipeline GFLOP/s "
            "| bare GFLOP/s | naive GFLOP/s | naive / sgemm | sgemm / naive |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in result["configs"]:
            lines.append(
                f"| {c['model']} | {c['backend']} | {c['precision']} "
                f"| {c['conv_gflop_per_input_mp']:.1f} | {c['pipeline_gflops']:.0f} "
                f"| {c['bare_gflops']:.0f} | {c['naive_gflops']:.0f} "
                f"| {c['naive_gflops'] / peak:.2f} | {peak / c['naive_gflops']:.2f}x |"
            )
    lines += ["", "| model | bf16 / fp32 | onnx / torch fp32 |", "|---|---:|---:|"]
    for model, r in sorted(result["ratios"].items()):
        bf = f"{r['bf16_over_fp32']:.2f}x" if "bf16_over_fp32" in r else "n/a"
        ox = f"{r['onnx_over_torch_fp32']:.2f}x" if "onnx_over_torch_fp32" in r else "n/a"
        lines.append(f"| {model} | {bf} | {ox} |")
    stages = ("read", "stretch", "stars", "network", "tiling", "inverse", "write")
    lines += [
        "",
        "Time split (seconds, median run):",
        "",
        "| model | backend | precision | " + " | ".join(stages) + " | total "
        "| read+stretch+stars+write |",
        "|---|---|---|" + "---:|" * (len(stages) + 2),
    ]
    for c in result["configs"]:
        s = c["split_s"]
        cells = " | ".join(f"{s.get(k, 0.0):.2f}" for k in stages)
        total = c["runs_s"][
            sorted(range(len(c["runs_s"])), key=c["runs_s"].__getitem__)[
                (len(c["runs_s"]) - 1) // 2
            ]
        ]
        lines.append(
            f"| {c['model']} | {c['backend']} | {c['precision']} | {cells} | {total:.2f} "
            f"| {100 * c['io_stretch_stars_fraction']:.1f} % |"
        )
    if result.get("protect_stars_run"):
        r = result["protect_stars_run"]
        cells = ", ".join(f"{k} {v:.2f}" for k, v in r["split_s"].items())
        lines += [
            "",
            f"With --protect-stars ({r['config']}, one run, {r['input_mp']:.2f} MP input): "
            f"{r['seconds']:.2f} s in all; "
            f"split: {cells}.",
        ]
    if result.get("bf16_psnr"):
        lines += [
            "",
            "bf16 vs fp32 (PSNR against the noise-free truth of simulated fields, mean over "
            "fields; worst single field; and the lowest PSNR of the bf16 output against the "
            "fp32 output):",
            "",
            "| model | fields | PSNR fp32 (dB) | PSNR bf16 (dB) | difference (dB) "
            "| worst field abs difference (dB) | PSNR bf16 vs fp32 output (dB) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for model, p in result["bf16_psnr"].items():
            lines.append(
                f"| {model} | {p['fields']} x {p['field_lr_px']}^2 | {p['psnr_fp32_db']:.3f} "
                f"| {p['psnr_bf16_db']:.3f} | {p['delta_db']:+.4f} "
                f"| {p['max_abs_field_delta_db']:.4f} | {p['psnr_bf16_vs_fp32_db']:.1f} |"
            )
    if result.get("rss"):
        rss = result["rss"]
        lines += [
            "",
            f"Peak memory, 4x mono, model {rss['model']}, precision {rss['rows'][0]['precision']}"
            ", memory-mapped FITS output, each in a fresh process:",
            "",
            "| input MP | output MP | peak RSS excl. mapped files (MB) | VmHWM incl. "
            "mapped files (MB) | seconds |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in rss["rows"]:
            lines.append(
                f"| {r['input_mp']:.2f} | {r['output_mp']:.1f} | {r['peak_rss_anon_mb']:.0f} "
                f"| {r['ru_maxrss_mb']:.0f} | {r['seconds']:.1f} |"
            )
        if "growth_last_two" in rss:
            lines += [
                "",
                f"Growth between the last two sizes: {100 * rss['growth_last_two']:.1f} %.",
            ]
    return "\n".join(lines) + "\n"


def run_from_args(args) -> int:
    """``astrosleuth-astro bench`` (see :func:`run_bench`)."""
    default_mp = 0.02 if args.quick else args.size
    models = _parse_models(args.models, default_mp)
    if args.quick:
        models = [(name, min(mp, 0.02)) for name, mp in models]
    try:
        rss = None if args.no_rss else [float(s) for s in args.rss_sizes.split(",") if s]
    except ValueError:
        raise InputError(f"--rss-sizes: expected numbers, got {args.rss_sizes!r}") from None
    if rss is not None and args.quick:
        rss = [0.01, 0.02]
    if args.repeats < 1:
        raise InputError(f"--repeats: must be at least 1, got {args.repeats}")
    for p in args.inputs or []:
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file")
    result = run_bench(
        args.out,
        models,
        inputs=args.inputs or None,
        rss_sizes=rss,
        repeats=1 if args.quick else args.repeats,
        bare_size=96 if args.quick else BARE_SIZE,
        psnr_size=48 if args.quick else PSNR_SIZE,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print((Path(args.out) / "bench.md").read_text(), end="")
    return 0 if result else 1


if __name__ == "__main__":  # the peak-RSS child: python -m astrosleuth_astro.bench --rss-child
    if len(sys.argv) == 6 and sys.argv[1] == "--rss-child":
        _rss_child(*sys.argv[2:6])
    else:
        sys.exit("usage: python -m astrosleuth_astro.bench --rss-child SRC DST MODEL PRECISION")
