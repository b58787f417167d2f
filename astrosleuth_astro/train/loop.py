"""The training loop.

AdamW on the generator, a warm-up + cosine learning-rate schedule computed from the step
(stateless, so resuming needs no scheduler state), an EMA copy of the weights (the one
that is validated and exported), gradient-norm clipping, optional bf16 autocast on CPU.

Every ``checkpoint_every`` steps the model, EMA, optimizer, step and loss history are
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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..archs.compact import CompactSR
from .config import Config
from .data import Pair, PairBank, load_sources, validation_set
from .losses import build_loss, psnr

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def build_model(cfg: Config) -> CompactSR:
    """The generator of ``[model]``, initialised from ``[train] seed``."""
    torch.manual_seed(cfg.train.seed)
    return _generator(cfg)


def _generator(cfg: Config) -> torch.nn.Module:
    """A fresh generator of ``[model] arch`` (``fast``: CompactSR, ``rrdb``: RRDBNet)."""
    if cfg.model.arch == "rrdb":
        from ..archs.rrdb import RRDBNet

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


def bicubic(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Bicubic upsampling (``align_corners=False``), clipped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(lr))[None].float()
    return (
        F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0]
        .clamp(0, 1)
        .numpy()
    )


def _psnr_np(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return psnr(mse)


def evaluate(model: torch.nn.Module, pairs: list[Pair], scale: int = 4) -> list[dict]:
    """PSNR (stretched domain) of the model and of bicubic on each pair.

    Mono pairs are scored on the mean of the three output channels, as the pipeline
    averages them.
    """
    rows = []
    for p in pairs:
        out = np.clip(run_model(model, p.lr), 0.0, 1.0)
        bic = bicubic(p.lr, scale)
        tgt = p.hr
        if p.mono:
            out, bic, tgt = out.mean(0, keepdims=True), bic[:1], tgt[:1]
        a, b = _psnr_np(out, tgt), _psnr_np(bic, tgt)
        rows.append({"image": p.name, "psnr": a, "psnr_bicubic": b, "gain": a - b})
    return rows


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

    model = build_model(cfg)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.parameters(), lr=t_cfg.lr, betas=t_cfg.betas, weight_decay=t_cfg.weight_decay
    )
    loss_fn = build_loss(t_cfg.loss, huber_delta=t_cfg.huber_delta)

    step, history, elapsed_before = 0, [], 0.0
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["config"]["model"] != cfg.to_dict()["model"]:
            raise ValueError(f"{last}: checkpoint was trained with another [model] section")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        step, history, elapsed_before = ck["step"], list(ck["history"]), ck.get("elapsed", 0.0)
        log(f"resumed from {last} at step {step}")
    elif resume:
        log(f"no checkpoint at {last}; starting from scratch")

    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=list))
    train_src, val_src = load_sources(cfg)
    bank = PairBank(cfg, train_src)
    val_pairs = validation_set(cfg, train_src, val_src)
    n_params = sum(p.numel() for p in model.parameters())
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
        path = out / "checkpoints" / f"step_{step:07d}.pt"
        _save(ck, path)
        _save(ck, last)
        old = sorted((out / "checkpoints").glob("step_*.pt"))[: -o_cfg.keep_checkpoints]
        for p in old:
            p.unlink(missing_ok=True)

    def validate() -> list[dict]:
        rows = evaluate(ema, val_pairs, cfg.data.scale)
        if rows:
            _append_csv(out / "val.csv", [{"step": step, **r} for r in rows])
            log(
                f"step {step} val: {_summarise(rows)}; "
                + ", ".join(f"{r['image']} {r['gain']:+.2f}" for r in rows)
            )
        return rows

    amp = t_cfg.amp == "bf16"
    t0 = time.time()
    t_log, loss_acc, gn_acc, n_acc = time.time(), 0.0, 0.0, 0
    end = t_cfg.steps if stop_after is None else min(t_cfg.steps, stop_after)
    rows: list[dict] = []
    timed_out = False
    model.train()
    while step < end:
        lr_np, hr_np = bank.batch(step)
        lr_t, hr_t = torch.from_numpy(lr_np), torch.from_numpy(hr_np)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            pred = model(lr_t)
        loss = loss_fn(pred, hr_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(
            model.parameters(), t_cfg.grad_clip if t_cfg.grad_clip > 0 else float("inf")
        )
        opt.step()
        ema_update(ema, model, t_cfg.ema_decay, step)
        loss_v = float(loss.detach())
        history.append(loss_v)
        loss_acc += loss_v
        gn_acc += float(gn)
        n_acc += 1
        step += 1
        model.train()

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
            }
            _append_csv(out / "train_log.csv", [row])
            log(
                f"step {step}/{t_cfg.steps} loss {row['loss']:.5f} |g| {row['grad_norm']:.3f} lr {row['lr']:.2e} {rate:.2f} it/s"
            )
            t_log, loss_acc, gn_acc, n_acc = now, 0.0, 0.0, 0
        if step % cfg.val.every == 0 and step < t_cfg.steps:
            rows = validate()
        if step % o_cfg.checkpoint_every == 0:
            checkpoint()
        if t_cfg.max_minutes > 0 and elapsed_before + time.time() - t0 > 60.0 * t_cfg.max_minutes:
            log(f"time limit of {t_cfg.max_minutes} min reached at step {step}")
            timed_out = True
            break

    finished = step >= t_cfg.steps or timed_out
    if step % o_cfg.checkpoint_every != 0 or timed_out:
        checkpoint()
    exports: dict[str, str] = {}
    if finished:
        rows = validate()
        if export:
            exports = export_run(cfg, ema, step)
            log(f"exported {exports}")
    return {
        "step": step,
        "history": history,
        "val": rows,
        "exports": exports,
        "out_dir": str(out),
        "elapsed": elapsed_before + time.time() - t0,
        "finished": finished,
    }


def export_run(
    cfg: Config, ema: torch.nn.Module, step: int, out_dir: str | None = None
) -> dict[str, str]:
    """Write the EMA weights as ``.safetensors`` and ``.onnx`` and check the ONNX file."""
    from .export import check_onnx, export_onnx, export_safetensors

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
    return {"safetensors": str(st), "onnx": str(ox), "onnx_max_abs_diff": f"{err:.2e}"}


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
