"""Command line: ``python -m astrosleuth_astro.train CONFIG.toml [--resume]``."""

from __future__ import annotations

import argparse
import sys

from ..errors import AstroSleuthError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, export; return the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m astrosleuth_astro.train",
        description="Train an AstroSleuth FAST-family model from a TOML config.",
    )
    ap.add_argument("config", help="TOML training config (see astrosleuth_astro/train/configs/)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    ap.add_argument("--out-dir", help="override [output] out_dir")
    ap.add_argument("--steps", type=int, help="override [train] steps")
    ap.add_argument("--max-minutes", type=float, help="override [train] max_minutes")
    ap.add_argument(
        "--export-only",
        action="store_true",
        help="export the EMA weights of OUT_DIR/last.pt without training",
    )
    args = ap.parse_args(argv)

    from .config import load_config
    from .loop import export_run, load_checkpoint_ema, train

    try:
        cfg = load_config(args.config)
        if args.out_dir:
            cfg.output.out_dir = args.out_dir
        if args.steps:
            cfg.train.steps = args.steps
        if args.max_minutes is not None:
            cfg.train.max_minutes = args.max_minutes
        if args.export_only:
            from pathlib import Path

            ema, ck = load_checkpoint_ema(Path(cfg.output.out_dir) / "last.pt", cfg)
            print(export_run(cfg, ema, ck["step"]))
            return 0
        res = train(cfg, resume=args.resume)
    except AstroSleuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"done: step {res['step']}, {res['elapsed'] / 60:.1f} min, exports {res['exports']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
