"""The ``train`` command: ``astrosleuth-astro train CONFIG|--preset NAME [options]``.

Shared by the main CLI and ``python -m astrosleuth_astro.train``. Heavy imports (torch)
happen only when the command runs, so building the CLI parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from ..errors import InputError

#: Presets: configs shipped in ``astrosleuth_astro/train/configs`` (name -> file).
PRESETS = {
    "smoke": "smoke.toml",
    "default": "default.toml",
    "noise-aware": "noise_aware.toml",
    "legacy-default": "legacy_default.toml",
    "compare-fast": "compare_fast.toml",
    "compare-v1": "compare_rrdb.toml",
}


def preset_path(name: str) -> Path:
    """Path of the shipped config of preset ``name``."""
    if name not in PRESETS:
        raise InputError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return Path(str(resources.files("astrosleuth_astro.train") / "configs" / PRESETS[name]))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` options."""
    p.add_argument("config", nargs="?", help="TOML training config (see the README, Training)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="use a shipped config instead: smoke (tiny, < 1 min on 2 cores), default (the "
        "shipped default model), noise-aware (the same with the observed noisy target), "
        "legacy-default (the default until issue 26), "
        "compare-fast / compare-v1 (the comparison models)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--steps", type=int, help="override [train] steps")
    p.add_argument("--out", help="output folder (overrides [output] out_dir)")
    p.add_argument("--data", help="folder of real images (overrides [data] data_dir)")
    p.add_argument("--init", help="fine-tune: start from these weights or registry name")
    p.add_argument("--max-minutes", type=float, help="override [train] max_minutes")
    p.add_argument(
        "--export-only", action="store_true", help="export the EMA weights of OUT/last.pt"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no log lines on stderr"
    )


def _config(args: argparse.Namespace):
    from .config import load_config

    if bool(args.config) == bool(args.preset):
        raise InputError("train: give a CONFIG file or --preset NAME (one of them)")
    cfg = load_config(args.config or preset_path(args.preset))
    if args.out:
        cfg.output.out_dir = args.out
    if args.steps is not None:
        if args.steps < 1:
            raise InputError(f"--steps: must be >= 1, got {args.steps}")
        cfg.train.steps = args.steps
    if args.max_minutes is not None:
        cfg.train.max_minutes = args.max_minutes
    if args.data:
        if not Path(args.data).is_dir():
            raise InputError(f"{args.data}: --data folder not found")
        cfg.data.data_dir = str(Path(args.data).resolve())
    if args.init:
        cfg.model.init = str(Path(args.init).resolve()) if Path(args.init).exists() else args.init
    return cfg


def run(args: argparse.Namespace) -> int:
    """Train (or export) as ``args`` says; print the exported files."""
    cfg = _config(args)
    from .data import load_sources, validation_set
    from .loop import data_summary, evaluate, export_run, load_checkpoint_ema, train

    out = Path(cfg.output.out_dir)
    if args.export_only:
        last = out / "last.pt"
        if not last.is_file():
            raise InputError(f"{last}: no checkpoint to export")
        ema, ck = load_checkpoint_ema(last, cfg)
        # The registry entry records the validation of the exported weights.
        train_src, val_src = load_sources(cfg)
        rows = evaluate(ema, validation_set(cfg, train_src, val_src), cfg.data.scale)
        summary = data_summary(cfg, train_src, val_src)
        _print_exports(export_run(cfg, ema, ck["step"], summary=summary, validation=rows))
        return 0

    # A progress bar on a terminal; plain log lines when stderr is a file (nohup, CI).
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.steps, desc="train", unit="step", file=sys.stderr)

    def log(msg: str) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        elif not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def progress(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(0)

    try:
        res = train(cfg, resume=args.resume, log=log, progress=progress if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if not res["finished"]:
        print(f"stopped at step {res['step']}; continue with --resume", file=sys.stderr)
        return 0
    _print_exports(res["exports"])
    return 0


def _print_exports(exports: dict) -> None:
    for key in ("safetensors", "onnx", "config", "registry"):
        if key in exports:
            print(exports[key])
