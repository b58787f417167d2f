"""Issue 3's quality targets for a model, measured on held-out data.

Three measurements, each through the real pipeline (:func:`astrosleuth_astro.upscale`,
linear in, linear out):

* **synthetic fields** (seeds the trainer never uses): the noisy LR of
  :func:`astrosleuth_astro.sim.simulate` is upscaled; PSNR against the *noise-free* truth
  in the stretched domain (an ``mtf`` stretch fitted on the LR, as inference does),
  next to bicubic upsampling of the stretched LR. Target: gain >= 2 dB.
* **real images**: the held-out part of each training image (the rightmost ``holdout``
  fraction of the columns, as in the config) and every ``val_only`` image is area-averaged
  by 4, upscaled, and compared with the original in the same stretched domain. No noise is
  added. Target: gain >= +1 dB on each image.
* **star photometry**: :func:`astrosleuth_astro.metrics.compute_metrics`'s
  ``flux_ratio_median`` (SR aperture flux / scale**2 over LR aperture flux, unsaturated
  stars, local backgrounds) on the synthetic fields and on the real LR images.
  Target: within 2 % of 1.

Usage::

    python bench/model_targets.py --model default \\
        --config astrosleuth_astro/train/configs/default.toml --data ../shared/data \\
        [--json targets.json] [--protect-stars] [--conserve-flux [sources|all]]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import astrosleuth_astro as asa
from astrosleuth_astro.metrics import (
    bicubic,
    compute_metrics,
    psnr,
    scoring_stretch,
    to_scoring_domain,
)
from astrosleuth_astro.sim import area_downsample, simulate
from astrosleuth_astro.train.config import load_config
from astrosleuth_astro.train.data import load_image, sample_sim_kwargs

SCALE = 4
#: Seeds of the synthetic fields: disjoint from training (train.seed streams) and from the
#: trainer's validation fields (``[val] sim_seed``).
SIM_SEED = 424_242


def score(lr: np.ndarray, sr: np.ndarray, truth: np.ndarray) -> dict:
    """Stretched-domain PSNR of ``sr`` and of bicubic against ``truth``, all (C, H, W)."""
    st = scoring_stretch(lr, "mtf")
    lr_s = st.forward(lr).astype(np.float32)
    out = to_scoring_domain(st, sr)
    tgt = to_scoring_domain(st, truth)
    bic = bicubic(lr_s, SCALE)
    a, b = psnr(out, tgt), psnr(bic, tgt)
    return {"psnr": a, "psnr_bicubic": b, "gain_db": a - b}


def _flux_ratio(lr: np.ndarray, sr: np.ndarray) -> tuple[float | None, int]:
    m = compute_metrics(lr, sr, scale=SCALE)
    return m["flux_ratio_median"], int(m["n_stars"])


def synthetic(net, cfg, n: int, size: int, protect: bool, flux: str = "off") -> list[dict]:
    rows = []
    for i in range(n):
        rng = np.random.default_rng([SIM_SEED, i])
        kw = sample_sim_kwargs(rng, cfg.sim)
        kw["channels"] = 1
        res = simulate((size, size), scale=SCALE, seed=rng, **kw)
        lr, truth = res.lr.reshape(1, size, size), res.hr.reshape(1, size * SCALE, size * SCALE)
        sr = asa.upscale(lr[0], model=net, protect_stars=protect, conserve_flux=flux)[None]
        row = {"image": f"sim{i}", "fwhm_lr_px": kw["fwhm"], **score(lr, sr, truth)}
        row["flux_ratio_median"], row["n_stars"] = _flux_ratio(lr[0], sr[0])
        rows.append(row)
    return rows


def _held_out(data: np.ndarray, holdout: float, cap: int) -> np.ndarray:
    _, h, w = data.shape
    x0 = int(round(w * (1.0 - holdout)))
    part = data[:, :, x0:]
    hh = min(part.shape[1], cap) // SCALE * SCALE
    ww = min(part.shape[2], cap) // SCALE * SCALE
    y = (part.shape[1] - hh) // 2
    x = (part.shape[2] - ww) // 2
    return np.ascontiguousarray(part[:, y : y + hh, x : x + ww], dtype=np.float64)


def real_items(cfg, root: str, cap: int) -> list[tuple[str, np.ndarray]]:
    """``(name, HR)`` of every real held-out image of the config: the held-out columns of
    each training image and SDSS cube, and every ``val_only`` image whole."""
    from pathlib import Path

    d = cfg.data
    items: list[tuple[str, np.ndarray]] = []
    for f in d.files:
        data, _ = load_image(Path(root) / f)
        items.append((f, _held_out(data, d.holdout, cap)))
    for group in d.rgb:
        cube = np.concatenate([load_image(Path(root) / f)[0] for f in group], axis=0)
        items.append(
            (
                "rgb(" + ",".join(g.split(".")[0] for g in group) + ")",
                _held_out(cube, d.holdout, cap),
            )
        )
    for f in d.val_only:
        data, _ = load_image(Path(root) / f)
        items.append((f + " (val only)", _held_out(data, 1.0, cap)))
    return items


def real(net, cfg, root: str, cap: int, protect: bool, flux: str = "off") -> list[dict]:
    rows = []
    for name, hr in real_items(cfg, root, cap):
        lr = area_downsample(hr, SCALE)
        inp = lr[0] if lr.shape[0] == 1 else lr
        sr = asa.upscale(inp, model=net, protect_stars=protect, conserve_flux=flux)
        sr = sr.reshape(hr.shape)
        row = {"image": name, "lr_shape": list(lr.shape[1:]), **score(lr, sr, hr)}
        row["flux_ratio_median"], row["n_stars"] = _flux_ratio(
            inp, sr if sr.shape[0] > 1 else sr[0]
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="registry name or weights file")
    ap.add_argument("--config", default="astrosleuth_astro/train/configs/default.toml")
    ap.add_argument("--data", help="folder of the config's real images (omit: synthetic only)")
    ap.add_argument("--fields", type=int, default=8, help="synthetic fields (default 8)")
    ap.add_argument("--size", type=int, default=128, help="synthetic LR side, px (default 128)")
    ap.add_argument("--cap", type=int, default=1024, help="largest HR side of a real crop, px")
    ap.add_argument("--protect-stars", action="store_true")
    ap.add_argument("--conserve-flux", nargs="?", const="sources", default="off")
    ap.add_argument("--json", help="write the rows and the summary here")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    net = asa.get_backend(args.model)
    flux = args.conserve_flux
    sim_rows = synthetic(net, cfg, args.fields, args.size, args.protect_stars, flux)
    real_rows = real(net, cfg, args.data, args.cap, args.protect_stars, flux) if args.data else []

    def fr(rows):
        v = [r["flux_ratio_median"] for r in rows if r["flux_ratio_median"] is not None]
        return float(np.median(v)) if v else None

    summary = {
        "model": args.model,
        "protect_stars": args.protect_stars,
        "conserve_flux": flux,
        "sim_gain_db_min": min(r["gain_db"] for r in sim_rows),
        "sim_gain_db_mean": float(np.mean([r["gain_db"] for r in sim_rows])),
        "real_gain_db": {r["image"]: r["gain_db"] for r in real_rows},
        "flux_ratio_median_sim": fr(sim_rows),
        "flux_ratio_median_real": fr(real_rows),
    }
    summary["target_sim_2db"] = bool(summary["sim_gain_db_min"] >= 2.0)
    summary["target_real_1db"] = bool(real_rows) and bool(
        all(r["gain_db"] >= 1.0 for r in real_rows)
    )
    frs = [v for v in (summary["flux_ratio_median_sim"], summary["flux_ratio_median_real"]) if v]
    summary["target_flux_2pct"] = bool(frs) and bool(all(abs(v - 1.0) <= 0.02 for v in frs))

    flags = (" +protect-stars" if args.protect_stars else "") + (
        f" +conserve-flux={flux}" if flux != "off" else ""
    )
    print(f"model {args.model}{flags}")
    print(f"{'image':48s} {'PSNR':>7s} {'bicubic':>7s} {'gain':>6s} {'flux':>6s} {'stars':>5s}")
    for r in sim_rows + real_rows:
        f = r["flux_ratio_median"]
        print(
            f"{r['image']:48s} {r['psnr']:7.2f} {r['psnr_bicubic']:7.2f} {r['gain_db']:+6.2f} "
            f"{f if f is None else format(f, '6.3f'):>6} {r['n_stars']:5d}"
        )
    for k, v in summary.items():
        if k != "real_gain_db":
            print(f"{k}: {v}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "synthetic": sim_rows, "real": real_rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
