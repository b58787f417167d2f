"""The training loop.

AdamW on the generator, a warm-up + cosine learning-rate schedule computed from the step
(stateless, so resuming needs no scheduler state), an EMA copy of the weights (the one
that is validated and exported), gradient-norm clipping, optional bf16 autocast on CPU.

The loss is the weighted sum of the ``[losses]`` terms (:mod:`.objective`: pixel,
star-aware, perceptual, adversarial with its discriminator update after each generator
step); with the default weights it is the pixel loss alone.

Every ``checkpoint_every`` steps the model, EMA, optimizer, step, loss history and the
objective's state (discriminator, its optimizer, the perceptual feature net) are
written to ``out_dir/checkpoints/`` and ``out_dir/last.pt``. Because the batches are a
pure function of the step (see :mod:`.data`), ``resume=True`` continues with exactly the
losses an uninterrupted run would have had.

Every ``[val] every`` steps the EMA model is scored on the fixed validation set: PSNR in
the stretched domain against the HR truth, next to bicubic upsampling of the same LR,
appended to ``out_dir/val.csv``.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..archs.compact import CompactSR
from ..archs.next import NextSR
from ..archs.rrdb import RRDBNet
from ..errors import AstroSleuthError, InputError
from ..metrics import bicubic, compute_metrics, ssim
from ..metrics import psnr as psnr_np
from ..models import resolve, sha256_file
from ..models.export import export_onnx
from ..models.loader import load, load_state_dict
from .config import Config
from .data import Pair, PairBank, load_sources, validation_set
from .losses import build_loss
from .objective import Objective, mean_terms

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def build_model(cfg: Config) -> torch.nn.Module:
    """The generator of ``[model]``: initialised from ``[train] seed``, or loaded from
    ``[model] init`` (fine-tuning).

    Raises
    ------
    InputError
        ``init`` cannot be read or its weights do not fit the ``[model]`` architecture.
    """
    torch.manual_seed(cfg.train.seed)
    model = _generator(cfg)
    init = cfg.resolved_init()
    if init:
        model.load_state_dict(_init_state(init, model))
    return model


def _init_sha256(cfg: Config) -> str:
    """sha256 of the weights file ``[model] init`` names ("" when not fine-tuning)."""
    init = cfg.resolved_init()
    if not init:
        return ""
    return sha256_file(resolve(init)[0])


def _init_state(init: str, model: torch.nn.Module) -> dict:
    """The state dict of ``init`` (a weights file or registry name), checked against
    ``model``'s keys and shapes."""
    try:
        if init.lower().endswith(".onnx"):
            raise InputError(
                f"{init}: [model] init needs torch weights (.safetensors/.pth), not ONNX"
            )
        if Path(init).suffix.lower() in (".safetensors", ".pth", ".pt"):
            sd = load_state_dict(init)
        else:
            sd = load(init).state_dict()
    except InputError:
        raise
    except AstroSleuthError as exc:
        raise InputError(f"[model] init: {exc}") from None
    want = model.state_dict()
    bad = sorted(set(want) ^ set(sd)) or [k for k in want if want[k].shape != sd[k].shape]
    if bad:
        raise InputError(
            f"{init}: [model] init weights do not fit the [model] architecture "
            f"(first mismatching key: {bad[0]})"
        )
    return {k: v.float() for k, v in sd.items()}


def _generator(cfg: Config) -> torch.nn.Module:
    """A fresh generator of ``[model] arch`` (``fast``: CompactSR, ``rrdb``: RRDBNet)."""
    if cfg.model.arch == "next":
        return NextSR(**cfg.model.kwargs(), upscale=cfg.data.scale)
    if cfg.model.arch == "rrdb":
        return RRDBNet(**cfg.model.kwargs(), upscale=cfg.data.scale)
    return CompactSR(**cfg.model.kwargs(), upscale=cfg.data.scale)


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate of ``step``: linear warm-up, then cosine decay to ``min_lr``."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    frac = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * frac))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema = d * ema + (1 - d) * model`` with a short warm-up of ``d``."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(d).add_(pm.detach(), alpha=1.0 - d)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


@torch.no_grad()
def run_model(model: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    """Network output ``(3, 4h, 4w)`` for one stretched ``(3, h, w)`` image (fp32)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(lr))[None].float())[0].numpy()


def evaluate(
    model: torch.nn.Module, pairs: list[Pair], scale: int = 4, star_metrics: bool = False
) -> list[dict]:
    """PSNR and SSIM (stretched domain) of the model and PSNR of bicubic on each pair; with
    ``star_metrics``, the star-aware metrics of :mod:`astrosleuth_astro.metrics` (on the
    linear data: the pair's stretch inverted) of the model output against its LR input.

    Mono pairs are scored on the mean of the three output channels, as the pipeline
    averages them. PSNR, SSIM and bicubic are those of :mod:`astrosleuth_astro.metrics`.
    """
    rows = []
    for p in pairs:
        out = np.clip(run_model(model, p.lr), 0.0, 1.0)
        bic = bicubic(p.image, scale)
        tgt = p.hr
        if p.mono:
            out, bic, tgt = out.mean(0, keepdims=True), bic[:1], tgt[:1]
        a, b = psnr_np(out, tgt), psnr_np(bic, tgt)
        row = {
            "image": p.name,
            "psnr": a,
            "psnr_bicubic": b,
            "gain": a - b,
            "ssim": ssim(out, tgt, 1.0),
        }
        if star_metrics:
            row.update(_star_row(p, out, scale))
        rows.append(row)
    return rows


#: Star metrics logged at validation (keys of :func:`astrosleuth_astro.metrics.compute_metrics`).
VAL_STAR_KEYS = (
    "n_stars",
    "flux_ratio_median",
    "shadow_depth_sigma_p90",
    "split_fraction",
    "n_hallucinated",
)


def _star_row(p: Pair, out: np.ndarray, scale: int) -> dict:
    """Star metrics of one validation output (NaN where undefined or not measurable)."""
    nan = {k: float("nan") for k in VAL_STAR_KEYS}
    if p.stretch is None:
        return nan
    lr = p.image[:1] if p.mono else p.image
    try:
        lr_lin, sr_lin = p.stretch.inverse(lr), p.stretch.inverse(out)
        m = compute_metrics(
            lr_lin[0] if p.mono else lr_lin, sr_lin[0] if p.mono else sr_lin, scale=scale
        )
    except (AstroSleuthError, ValueError):  # too small or no stars: nothing to measure
        return nan
    return {k: float("nan") if m.get(k) is None else float(m[k]) for k in VAL_STAR_KEYS}


def _summarise(rows: list[dict]) -> str:
    sim = [r["gain"] for r in rows if r["image"].startswith("sim")]
    real = [r["gain"] for r in rows if not r["image"].startswith("sim")]
    parts = []
    if sim:
        parts.append(f"sim gain {np.mean(sim):+.2f} dB")
    if real:
        parts.append(f"real gain {np.mean(real):+.2f} dB")
    return ", ".join(parts)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _append_csv(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


def train(
    cfg: Config,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    export: bool = True,
    log: Log = _print,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train the generator described by ``cfg``.

    Parameters
    ----------
    cfg : Config
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists.
    stop_after : int, optional
        Stop (with a checkpoint) after this global step, as an interruption would; the
        schedule still follows ``[train] steps``.
    export : bool
        Export the EMA weights when the run reaches its end (or its time limit).
    log : callable
        Receives each log line.
    progress : callable, optional
        Called after every step with ``(step, total_steps, loss)`` (a progress bar).

    Returns
    -------
    dict
        ``step`` reached, ``history`` (loss of every step from 0), ``val`` (last
        validation rows), ``exports`` (paths), ``out_dir``, ``elapsed`` (s).
    """
    t_cfg, o_cfg = cfg.train, cfg.output
    out = Path(o_cfg.out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if t_cfg.threads > 0:
        torch.set_num_threads(t_cfg.threads)

    device = torch.device(t_cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("[train] device = 'cuda', but torch sees no CUDA device here")
    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.parameters(), lr=t_cfg.lr, betas=t_cfg.betas, weight_decay=t_cfg.weight_decay
    )
    loss_fn = build_loss(t_cfg.loss, huber_delta=t_cfg.huber_delta)
    objective = Objective(cfg, loss_fn)
    objective_state: dict | None = None

    step, history, elapsed_before = 0, [], 0.0
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["config"]["model"] != cfg.to_dict()["model"]:
            raise ValueError(f"{last}: checkpoint was trained with another [model] section")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        objective_state = ck.get("objective")
        step, history, elapsed_before = ck["step"], list(ck["history"]), ck.get("elapsed", 0.0)
        log(f"resumed from {last} at step {step}")
    elif resume:
        log(f"no checkpoint at {last}; starting from scratch")

    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=list))
    train_src, val_src = load_sources(cfg)
    bank = PairBank(cfg, train_src)
    objective.setup(bank, objective_state, log)
    val_pairs = validation_set(cfg, train_src, val_src)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.model.init and step == 0:
        log(f"initialised from {cfg.resolved_init()}")
    log(
        f"model {cfg.model.arch} {cfg.model.kwargs()} ({n_params} params); "
        f"real sources: {[s.name for s in train_src] or 'none (simulator only)'}; "
        f"val: {[p.name for p in val_pairs]}"
    )

    def checkpoint() -> None:
        ck = {
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "config": cfg.to_dict(),
            "history": history,
            "elapsed": elapsed_before + (time.time() - t0),
        }
        if (obj_state := objective.state_dict()) is not None:
            ck["objective"] = obj_state
        path = out / "checkpoints" / f"step_{step:07d}.pt"
        _save(ck, path)
        _save(ck, last)
        old = sorted((out / "checkpoints").glob("step_*.pt"))[: -o_cfg.keep_checkpoints]
        for p in old:
            p.unlink(missing_ok=True)

    tb = _tensorboard(out, log)

    def cpu_ema() -> torch.nn.Module:
        return ema if device.type == "cpu" else copy.deepcopy(ema).cpu()

    def validate() -> list[dict]:
        rows = evaluate(cpu_ema(), val_pairs, cfg.data.scale, star_metrics=cfg.val.star_metrics)
        if rows:
            _append_csv(out / "val.csv", [{"step": step, **r} for r in rows])
            if tb is not None:
                for r in rows:
                    for k, v in r.items():
                        if k != "image" and np.isfinite(v):
                            tb.add_scalar(f"val/{r['image']}/{k}", v, step)
                tb.flush()
            log(
                f"step {step} val: {_summarise(rows)}; "
                + ", ".join(f"{r['image']} {r['gain']:+.2f}" for r in rows)
            )
        return rows

    amp = t_cfg.amp == "bf16"
    amp_device = device.type
    t0 = time.time()
    t_log, loss_acc, gn_acc, n_acc = time.time(), 0.0, 0.0, 0
    term_acc: dict[str, list[float]] = {}
    end = t_cfg.steps if stop_after is None else min(t_cfg.steps, stop_after)
    rows: list[dict] = []
    timed_out = False
    model.train()
    stop = _StopRequest()
    try:
        while step < end:
            batch = bank.full_batch(step)
            lr_t = torch.from_numpy(batch.lr).to(device, non_blocking=True)
            hr_t = torch.from_numpy(batch.hr).to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            with torch.autocast(amp_device, dtype=torch.bfloat16, enabled=amp):
                pred = model(lr_t)
            loss, terms = objective.generator_loss(pred, hr_t, batch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(
                model.parameters(), t_cfg.grad_clip if t_cfg.grad_clip > 0 else float("inf")
            )
            opt.step()
            terms.update(objective.discriminator_step(pred, hr_t, step))
            for k, v in terms.items():
                term_acc.setdefault(k, []).append(float(v))
            ema_update(ema, model, t_cfg.ema_decay, step)
            loss_v = float(loss.detach())
            history.append(loss_v)
            loss_acc += loss_v
            gn_acc += float(gn)
            n_acc += 1
            step += 1
            model.train()
            if progress is not None:
                progress(step, t_cfg.steps, loss_v)

            if step % o_cfg.log_every == 0 or step == end:
                now = time.time()
                rate = n_acc / max(now - t_log, 1e-9)
                row = {
                    "step": step,
                    "loss": loss_acc / n_acc,
                    "grad_norm": gn_acc / n_acc,
                    "lr": lr_at(step - 1, cfg),
                    "steps_per_s": rate,
                    "elapsed_s": elapsed_before + now - t0,
                    **mean_terms(term_acc, objective.columns),
                }
                term_acc = {}
                _append_csv(out / "train_log.csv", [row])
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(f"train/{k}", v, step)
                log(
                    f"step {step}/{t_cfg.steps} loss {row['loss']:.5f} |g| {row['grad_norm']:.3f} lr {row['lr']:.2e} {rate:.2f} it/s"
                )
                t_log, loss_acc, gn_acc, n_acc = now, 0.0, 0.0, 0
            if step % cfg.val.every == 0 and step < t_cfg.steps:
                rows = validate()
            if step % o_cfg.checkpoint_every == 0:
                checkpoint()
            if (
                t_cfg.max_minutes > 0
                and elapsed_before + time.time() - t0 > 60.0 * t_cfg.max_minutes
            ):
                log(f"time limit of {t_cfg.max_minutes} min reached at step {step}")
                timed_out = True
                break
            if stop.requested is not None:
                # Interrupted (Ctrl-C, SIGTERM): save the finished step so --resume loses nothing.
                checkpoint()
                log(f"interrupted at step {step}; checkpoint {last}; continue with --resume")
                stop.restore()
                stop.reraise()
    finally:
        stop.restore()

    finished = step >= t_cfg.steps or timed_out
    if step % o_cfg.checkpoint_every != 0 or timed_out:
        checkpoint()
    exports: dict[str, str] = {}
    if finished:
        rows = validate()
        if export:
            exports = export_run(
                cfg, cpu_ema(), step, summary=data_summary(cfg, train_src, val_src), validation=rows
            )
            log(f"exported {exports}")
    if tb is not None:
        tb.close()
    return {
        "step": step,
        "history": history,
        "val": rows,
        "exports": exports,
        "out_dir": str(out),
        "elapsed": elapsed_before + time.time() - t0,
        "finished": finished,
    }


class _StopRequest:
    """Defer SIGINT/SIGTERM to the end of the current step.

    A signal in the middle of a step would leave the model, the optimiser and the step
    counter out of step with each other; the loop checks :attr:`requested` after each step,
    writes a checkpoint of the finished step and then re-raises (``KeyboardInterrupt`` for
    SIGINT, ``SystemExit(143)`` for SIGTERM). Only the main thread can install handlers;
    elsewhere signals behave as usual.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._old: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    def reraise(self) -> None:
        if self.requested == signal.SIGTERM:
            raise SystemExit(143)
        raise KeyboardInterrupt


def _tensorboard(out: Path, log: Log):
    """A TensorBoard writer in ``out/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; val.csv and train_log.csv always exist
        return None
    log(f"TensorBoard logs: {out / 'tensorboard'}")
    return SummaryWriter(str(out / "tensorboard"))


def data_summary(cfg: Config, train_src: list, val_src: list) -> dict:
    """What a model was trained and validated on (for its registry entry)."""
    d = cfg.data

    def describe(src, role: str) -> dict:
        _, h, w = src.data.shape
        return {
            "name": src.name,
            "role": role,
            "shape": [int(x) for x in src.data.shape],
            "linear": bool(src.linear),
            "train_columns": [0, int(src.train_cols)] if role == "train" else [0, 0],
            "held_out_columns": [int(src.train_cols), int(w)] if role == "train" else [0, int(w)],
        }

    return {
        "sim_weight": d.sim_weight,
        "real_weight": d.real_weight if train_src else 0.0,
        "holdout": d.holdout,
        "stretch": d.stretch,
        "hr_crop": d.hr_crop,
        "batch_size": cfg.train.batch_size,
        "real_sources": [describe(s, "train") for s in train_src]
        + [describe(s, "validation only") for s in val_src],
    }


def export_run(
    cfg: Config,
    ema: torch.nn.Module,
    step: int,
    out_dir: str | None = None,
    *,
    summary: dict | None = None,
    validation: list[dict] | None = None,
) -> dict[str, str]:
    """Write the EMA weights as ``.safetensors`` and ``.onnx``, check the ONNX file, and
    write ``<name>.train.toml`` (the resolved config) and ``<name>.registry.toml`` (a
    registry entry with sha256, config, data summary and validation results)."""
    from .export import check_onnx, export_safetensors, registry_entry, toml_dumps

    out = Path(out_dir or Path(cfg.output.out_dir) / "export")
    name = cfg.output.export_name
    meta = {
        "arch": cfg.model.arch,
        "kwargs": json.dumps(cfg.model.kwargs()),
        "steps": str(step),
        "scale": str(cfg.data.scale),
    }
    st = export_safetensors(ema, out / f"{name}.safetensors", meta)
    ox = export_onnx(
        copy.deepcopy(ema).float().eval(), out / f"{name}.onnx", opset=cfg.output.onnx_opset
    )
    err = check_onnx(ema, ox)
    if err > 1e-4:
        raise RuntimeError(f"{ox}: onnxruntime and torch differ by {err:.2e} (> 1e-4)")
    cfg_file = out / f"{name}.train.toml"
    conf = cfg.to_dict()
    cfg_file.write_text(
        f"# Resolved training config of {name} (written by astrosleuth-astro train).\n\n"
        + toml_dumps(conf)
    )
    if summary is None:
        summary = data_summary(cfg, *load_sources(cfg))
    kwargs = dict(cfg.model.kwargs())
    kwargs["_params"] = sum(p.numel() for p in ema.parameters())
    reg = out / f"{name}.registry.toml"
    reg.write_text(
        registry_entry(
            name,
            cfg.model.arch,
            st,
            ox,
            config_file=cfg_file.name,
            steps=step,
            kwargs=kwargs,
            data_summary=summary,
            validation=validation or [],
            tile=256 if cfg.model.arch == "fast" else 192,
            init=cfg.model.init,
            init_sha256=_init_sha256(cfg),
        )
    )
    return {
        "safetensors": str(st),
        "onnx": str(ox),
        "onnx_max_abs_diff": f"{err:.2e}",
        "config": str(cfg_file),
        "registry": str(reg),
    }


def load_checkpoint_ema(
    path: str | os.PathLike, cfg: Config | None = None
) -> tuple[CompactSR, dict]:
    """The EMA generator stored in a checkpoint (and the checkpoint dict)."""
    from .config import from_dict

    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = cfg or from_dict(ck["config"])
    model = _generator(cfg)
    model.load_state_dict(ck["ema"])
    return model.eval(), ck
