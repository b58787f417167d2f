"""``astrosleuth-astro compare``: models and interpolation baselines, scored star by star.

:func:`run_compare` runs every model (and, with ``protect=True``, every model again with
star protection; with ``conserve="sources"`` or ``"all"``, again with flux conservation)
on every input through the same linear pipeline as ``upscale``
(:func:`~astrosleuth_astro.pipeline.upscale_array`), plus bicubic and Lanczos
interpolation run through that same pipeline (stretch -> interpolation in the stretched
domain -> exact inverse, clipped residual carried), and scores each output with
:func:`astrosleuth_astro.metrics.measure`. It writes into ``out``:

``metrics.csv``, ``metrics.json``
    One row per (input, method) with the metric keys of :mod:`~astrosleuth_astro.metrics`,
    the method's kind and its run time; ``metrics.json`` also holds the mean over inputs
    per method.
``report.md``
    The tables and the figures below.
``profiles.png``
    The mean radial star profile of every method with the input's, against radius in
    FWHM: peak-normalised (left) and in units of the background RMS (right), where
    shadows are dips below zero.
``worst_stars.png``
    Per method, the stars with the deepest shadows (split stars first), same display
    stretch for all.
``metrics.png``
    Bar charts of the main metrics per method (mean over inputs).

With ``reference_mode="downsample"`` each input is first area-downsampled by the scale
(:func:`~astrosleuth_astro.sim.area_downsample`) and the original is the reference; with
``references`` the given HR files are (e.g. a simulator's truth).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import InputError
from .metrics import METRIC_KEYS, PROFILE_RADII_FWHM, REFERENCE_KEYS, bicubic, measure

__all__ = ["BASELINES", "interpolation_net", "run_compare"]

#: Interpolation baselines (run in the stretched domain): the package's bicubic
#: (:func:`astrosleuth_astro.metrics.bicubic`) and Pillow's Lanczos-3.
BASELINES = ("bicubic", "lanczos")
#: Stars shown per method in the worst-star mosaic.
WORST_N = 6
#: Stars used for the mean profiles: unsaturated, with at least this peak S/N.
PROFILE_MIN_SNR = 20.0

Log = Callable[[str], None] | None


def interpolation_net(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """A 4x "network" that interpolates: ``(N, C, h, w)`` in [0, 1] -> ``(N, C, 4h, 4w)``.

    Parameters
    ----------
    kind : {"bicubic", "lanczos"}
        The package's bicubic (:func:`astrosleuth_astro.metrics.bicubic`, a = -0.75, the
        bicubic of every "gain over bicubic", not clipped here) or Pillow's Lanczos-3
        filter on float32 images, pixel centres aligned like the networks
        (``align_corners=False``).
    """
    from PIL import Image

    if kind not in BASELINES:
        raise InputError(
            f"--baselines: unknown baseline {kind!r} (choose from {', '.join(BASELINES)})"
        )
    flt = Image.Resampling.LANCZOS

    def net(batch: np.ndarray) -> np.ndarray:
        if kind == "bicubic":
            return bicubic(batch, 4, clip=False)
        n, c, h, w = batch.shape
        out = np.empty((n, c, 4 * h, 4 * w), dtype=np.float32)
        for i in range(n):
            for j in range(c):
                im = Image.fromarray(np.ascontiguousarray(batch[i, j], dtype=np.float32), mode="F")
                out[i, j] = np.asarray(im.resize((4 * w, 4 * h), flt), dtype=np.float32)
        return out

    net.model_name = kind  # type: ignore[attr-defined]
    net.tile = 512  # type: ignore[attr-defined]
    return net


@dataclass
class _Method:
    label: str
    kind: str  # "model" or "baseline"
    net: Callable
    protect: bool = False
    flux: str = "off"


@dataclass
class _Collect:
    """Per-method accumulators for the figures."""

    prof_sr: list = field(default_factory=list)
    prof_sr_sigma: list = field(default_factory=list)
    prof_lr: list = field(default_factory=list)
    prof_lr_sigma: list = field(default_factory=list)
    worst: list = field(default_factory=list)  # (badness, stamp, caption)


def _label_for(model: str) -> str:
    p = Path(model)
    return p.stem if p.suffix else model


def _load_input(path: Path, hdu=None) -> np.ndarray:
    from .io import read_image

    return read_image(path, hdu=hdu).data


def _stamp(img: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """A ``(2 half + 1)^2`` luminance stamp centred on (x, y), NaN outside the image."""
    lum = img.mean(axis=0) if img.ndim == 3 else img
    out = np.full((2 * half + 1, 2 * half + 1), np.nan, dtype=np.float32)
    cx, cy = int(round(x)), int(round(y))
    y0, y1 = max(cy - half, 0), min(cy + half + 1, lum.shape[0])
    x0, x1 = max(cx - half, 0), min(cx + half + 1, lum.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)] = lum[
            y0:y1, x0:x1
        ]
    return out


def run_compare(
    inputs: Sequence[str | os.PathLike],
    models: Sequence[str],
    out: str | os.PathLike,
    *,
    reference_mode: str = "none",
    references: Sequence[str | os.PathLike] | None = None,
    scale: int = 4,
    protect: bool = False,
    conserve: str = "off",
    baselines: Sequence[str] = BASELINES,
    backend: str = "auto",
    device: str = "cpu",
    tile: int | None = None,
    stretch: str = "auto",
    save_outputs: bool = False,
    overwrite: bool = False,
    log: Log = None,
) -> dict:
    """Run models and baselines on inputs and write the star report (see the module notes).

    Parameters
    ----------
    inputs : sequence of path-like
        Linear images (FITS, or any format :func:`~astrosleuth_astro.io.read_image` reads).
    models : sequence of str
        Registry names or weights files (or ready backends).
    out : path-like
        Output directory; created. An existing non-empty one needs ``overwrite``.
    reference_mode : {"none", "downsample"}
    references : sequence of path-like, optional
        HR truth per input (same order); excludes ``reference_mode="downsample"``.
    scale : {2, 3, 4}
    protect : bool
        Also run every model with star protection (label ``MODEL+protect``).
    conserve : {"off", "sources", "all"}
        Also run every model with that flux conservation (label ``MODEL+flux``;
        :mod:`astrosleuth_astro.conserve`).
    baselines : sequence of str
        Subset of :data:`BASELINES`.
    backend, device, tile, stretch
        As for ``upscale``.
    save_outputs : bool
        Also write each upscaled image as ``out/images/INPUT__METHOD.fits``.
    overwrite : bool
    log : callable, optional
        Progress messages.

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    from .api import get_backend
    from .pipeline import upscale_array
    from .sim import area_downsample

    say = log or (lambda m: None)
    out = Path(out)
    if reference_mode not in ("none", "downsample"):
        raise InputError(f"--reference-mode: unknown mode {reference_mode!r} (none or downsample)")
    if references and reference_mode == "downsample":
        raise InputError("--references: cannot be combined with --reference-mode downsample")
    if references and len(references) != len(inputs):
        raise InputError(f"--references: {len(references)} given for {len(inputs)} inputs")
    if scale not in (2, 3, 4):
        raise InputError(f"--scale: {scale} is not supported by compare (choose 2, 3 or 4)")
    if not models:
        raise InputError("--models: at least one model is needed")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: directory is not empty (use --overwrite)")
    baselines = [b.strip().lower() for b in baselines]
    methods = [_Method(b, "baseline", interpolation_net(b)) for b in baselines]

    # Read everything first: a bad input fails before any model is built.
    data = []
    for i, p in enumerate(paths):
        img = _load_input(p)
        if reference_mode == "downsample":
            h, w = (img.shape[1] // scale) * scale, (img.shape[2] // scale) * scale
            if h == 0 or w == 0:
                raise InputError(f"{p}: smaller than the scale {scale}")
            hr = np.ascontiguousarray(img[:, :h, :w])
            lr = area_downsample(hr, scale).astype(np.float32)
        elif references:
            lr, hr = img, _load_input(Path(references[i]))
            if hr.shape != (lr.shape[0], scale * lr.shape[1], scale * lr.shape[2]):
                raise InputError(
                    f"{references[i]}: shape {hr.shape} is not {scale} x the input's {lr.shape}"
                )
        else:
            lr, hr = img, None
        data.append((p.stem, lr, hr))
    from .conserve import resolve_mode

    conserve = resolve_mode(conserve)
    for m in models:
        net = get_backend(m, backend=backend, device=device)
        label = getattr(net, "model_name", None) or _label_for(str(m))
        if isinstance(m, str | os.PathLike) and Path(str(m)).suffix:
            label = _label_for(str(m))
        methods.insert(len(methods) - len(baselines), _Method(label, "model", net))
        if protect:
            methods.insert(
                len(methods) - len(baselines), _Method(f"{label}+protect", "model", net, True)
            )
        if conserve != "off":
            methods.insert(
                len(methods) - len(baselines),
                _Method(f"{label}+flux", "model", net, flux=conserve),
            )
    out.mkdir(parents=True, exist_ok=True)
    if save_outputs:
        (out / "images").mkdir(exist_ok=True)

    rows: list[dict] = []
    collect = {m.label: _Collect() for m in methods}
    from .stars import detect_stars

    for name, lr, hr in data:
        det_lr = detect_stars(lr)
        say(f"{name}: {len(det_lr.catalog)} stars, FWHM {det_lr.fwhm:.2f} px")
        for m in methods:
            t0 = time.perf_counter()
            res = upscale_array(
                lr,
                m.net,
                scale=scale,
                stretch=stretch,
                tile=tile or getattr(m.net, "tile", 256),
                protect_stars=m.protect,
                conserve_flux=m.flux,
            )
            secs = time.perf_counter() - t0
            sr = res.data
            met = measure(lr, sr, scale=scale, reference=hr, lr_detection=det_lr)
            row = {
                "input": name,
                "method": m.label,
                "kind": m.kind,
                "protect": m.protect,
                "conserve_flux": m.flux,
            }
            row.update({k: met.summary.get(k) for k in METRIC_KEYS})
            if hr is not None:
                row.update({k: met.summary.get(k) for k in REFERENCE_KEYS})
            row["seconds"] = round(secs, 3)
            rows.append(row)
            say(
                f"  {m.label:24s} shadow {_fmt(row['shadow_depth_sigma_median'])}/"
                f"{_fmt(row['shadow_depth_sigma_p90'])} split {_fmt(row['split_fraction'])} "
                f"flux {_fmt(row['flux_ratio_median'])}"
                + (f" PSNR(str) {_fmt(row['psnr_stretched'])}" if hr is not None else "")
            )
            _gather(collect[m.label], met, lr, sr, scale, name)
            if save_outputs:
                from .io import write_fits

                write_fits(out / "images" / f"{name}__{m.label}.fits", sr, None, overwrite=True)

    labels = [m.label for m in methods]
    summary = _means(rows, labels)
    result = {
        "version": __version__,
        "scale": scale,
        "reference_mode": "references" if references else reference_mode,
        "inputs": [str(p) for p in paths],
        "methods": [
            {"label": m.label, "kind": m.kind, "protect": m.protect, "conserve_flux": m.flux}
            for m in methods
        ],
        "results": rows,
        "mean": summary,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    _write_csv(out / "metrics.csv", rows)
    figs = _figures(out, collect, summary, labels, hr_known=any(d[2] is not None for d in data))
    _write_report(out / "report.md", result, figs)
    return result


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.3g}"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _gather(col: _Collect, met, lr: np.ndarray, sr: np.ndarray, s: int, name: str) -> None:
    """Profiles and worst-star stamps of one output."""
    st = met.stars
    if len(st) == 0:
        return
    ok = ~np.asarray(st["saturated"]) & (np.asarray(st["snr"]) >= PROFILE_MIN_SNR)
    peak = np.asarray(st["peak"], dtype=float)[:, None]
    for key, dest, dest_sig, rms_key in (
        ("profile_sr", col.prof_sr, col.prof_sr_sigma, "rms_sr"),
        ("profile_lr", col.prof_lr, col.prof_lr_sigma, "rms_lr"),
    ):
        prof = np.asarray(st[key], dtype=float)
        dest.extend(prof[ok])
        rms = np.asarray(st[rms_key], dtype=float)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            dest_sig.extend((prof * peak / rms)[ok])
    depth = np.nan_to_num(np.asarray(st["shadow_depth"], dtype=float), nan=-1.0)
    badness = depth + 100.0 * np.asarray(st["split"], dtype=float)
    half = int(np.ceil(3.0 * met.lr_detection.fwhm * s))
    for i in np.argsort(-badness)[:WORST_N]:
        if badness[i] <= 0 and not st["split"][i]:
            continue
        cap = (
            f"{name} ({st['x'][i]:.0f},{st['y'][i]:.0f})\n"
            + ("split, " if st["split"][i] else "")
            + f"shadow {depth[i]:.1f}σ"
        )
        col.worst.append((float(badness[i]), _stamp(sr, st["x_sr"][i], st["y_sr"][i], half), cap))
    col.worst = sorted(col.worst, key=lambda t: -t[0])[:WORST_N]


def _means(rows: list[dict], labels: list[str]) -> dict:
    """Mean of every numeric metric over inputs, per method (None where undefined)."""
    keys = METRIC_KEYS + REFERENCE_KEYS + ("seconds",)
    out = {}
    for lab in labels:
        sel = [r for r in rows if r["method"] == lab]
        out[lab] = {}
        for k in keys:
            vals = [r[k] for r in sel if r.get(k) is not None]
            out[lab][k] = float(np.mean(vals)) if vals else None
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = ["input", "method", "kind", "protect", "conserve_flux", *METRIC_KEYS]
    if any("psnr_linear" in r for r in rows):
        keys += list(REFERENCE_KEYS)
    keys.append("seconds")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def _figures(out: Path, collect: dict, summary: dict, labels: list[str], hr_known: bool) -> dict:
    """Write the three PNG figures; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    r = PROFILE_RADII_FWHM

    # 1. Mean radial profiles.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    first = next((c for c in collect.values() if c.prof_lr), None)
    lows = []
    for ax, attr_sr, attr_lr, ylabel in (
        (axes[0], "prof_sr", "prof_lr", "profile / star peak"),
        (axes[1], "prof_sr_sigma", "prof_lr_sigma", "profile / background RMS (σ)"),
    ):
        if first is not None:
            ax.plot(r, _mean_profile(getattr(first, attr_lr)), "k--", lw=2, label="input")
        for i, lab in enumerate(labels):
            vals = getattr(collect[lab], attr_sr)
            if vals:
                mean = _mean_profile(vals)
                ax.plot(r, mean, color=colours[i % len(colours)], label=lab)
                if attr_sr == "prof_sr_sigma":
                    zone = mean[(r >= 1.0) & (r <= 4.0)]
                    if np.isfinite(zone).any():
                        lows.append(float(np.nanmin(zone)))
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axvspan(1.0, 4.0, color="grey", alpha=0.08)
        ax.set_xlabel("radius (FWHM)")
        ax.set_ylabel(ylabel)
    axes[0].set_xlim(0, 5)
    axes[1].set_xlim(0.5, 5)
    axes[1].set_ylim(min([-1.0] + [1.3 * v for v in lows]), 8.0)
    if first is not None:
        axes[0].legend(fontsize=8)
    else:
        axes[0].text(0.5, 0.5, f"no unsaturated star with S/N >= {PROFILE_MIN_SNR:g}", ha="center")
    axes[1].set_title("shadow zone 1-4 FWHM shaded; dips below 0 are shadows", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "profiles.png", dpi=90)
    plt.close(fig)
    files["profiles"] = "profiles.png"

    # 2. Worst stars: each stamp on its own asinh stretch around its local background (mid
    # grey), so shadows show dark and split cores as separate blobs.
    n_rows = len(labels)
    fig, axes = plt.subplots(n_rows, WORST_N, figsize=(1.9 * WORST_N, 2.1 * n_rows), squeeze=False)
    for i, lab in enumerate(labels):
        worst = collect[lab].worst
        for j in range(WORST_N):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(worst):
                _, stamp, cap = worst[j]
                ax.imshow(_display(stamp), cmap="gray", vmin=-0.35, vmax=1.0, origin="lower")
                ax.set_title(cap, fontsize=6)
            if j == 0:
                ax.set_ylabel(lab, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "worst_stars.png", dpi=80)
    plt.close(fig)
    files["worst_stars"] = "worst_stars.png"

    # 3. Bar charts.
    keys = [
        "shadow_depth_sigma_median",
        "shadow_depth_sigma_p90",
        "split_fraction",
        "flux_ratio_median",
        "fwhm_ratio_median",
        "centroid_error_px_median",
        "n_hallucinated",
        "n_missed",
        "background_noise_ratio",
    ]
    if hr_known:
        keys += ["psnr_stretched", "ssim_stretched", "psnr_linear"]
    ncol = 3
    nrow = -(-len(keys) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.6 * nrow), squeeze=False)
    for k, ax in zip(keys, axes.ravel(), strict=False):
        vals = [summary[lab][k] for lab in labels]
        ax.bar(
            range(len(labels)),
            [np.nan if v is None else v for v in vals],
            color=[colours[i % len(colours)] for i in range(len(labels))],
        )
        ax.set_title(k, fontsize=9)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        if k in ("flux_ratio_median", "fwhm_ratio_median", "background_noise_ratio"):
            ax.axhline(1.0, color="grey", lw=0.8)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=80)
    plt.close(fig)
    files["metrics"] = "metrics.png"
    return files


def _mean_profile(profiles: list) -> np.ndarray:
    """Mean over stars of per-star profiles, NaN where no star has a value."""
    arr = np.asarray(profiles, dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0:
        return np.full(PROFILE_RADII_FWHM.size, np.nan)
    n = np.sum(np.isfinite(arr), axis=0)
    tot = np.nansum(arr, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, tot / np.maximum(n, 1), np.nan)


def _display(stamp: np.ndarray) -> np.ndarray:
    """asinh display of a star stamp: background at 0, noise-scaled, peak at 1."""
    border = np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])
    border = border[np.isfinite(border)]
    if border.size == 0:
        return np.zeros_like(stamp)
    bkg = float(np.median(border))
    rms = float(1.4826 * np.median(np.abs(border - bkg))) or 1e-12
    peak = max(float(np.nanmax(stamp)) - bkg, 10 * rms)
    soft = 2.0 * rms
    out = np.arcsinh((stamp - bkg) / soft) / np.arcsinh(peak / soft)
    return np.nan_to_num(out, nan=0.0)


def _write_report(path: Path, result: dict, figs: dict) -> None:
    keys = list(METRIC_KEYS)
    if any("psnr_linear" in r for r in result["results"]):
        keys += list(REFERENCE_KEYS)
    keys.append("seconds")
    lines = [
        "# Star report",
        "",
        f"astrosleuth-astro {result['version']}, scale {result['scale']}, "
        f"reference: {result['reference_mode']}.",
        "",
        "Inputs: " + ", ".join(f"`{Path(p).name}`" for p in result["inputs"]) + ".",
        "",
        "Metric definitions: `astrosleuth_astro.metrics` (shadow depths in background sigmas,",
        "flux ratio = output flux / scale² over input flux, FWHM ratio = output FWHM / scale",
        "over input FWHM, centroid error in input pixels).",
        "",
        "## Mean over inputs",
        "",
    ]
    lines += _table(
        [{"method": lab, **vals} for lab, vals in result["mean"].items()], ["method", *keys]
    )
    for name in dict.fromkeys(r["input"] for r in result["results"]):
        lines += ["", f"## {name}", ""]
        lines += _table([r for r in result["results"] if r["input"] == name], ["method", *keys])
    lines += [
        "",
        "## Figures",
        "",
        f"![mean radial star profiles]({figs['profiles']})",
        "",
        f"![worst stars per method]({figs['worst_stars']})",
        "",
        f"![metrics per method]({figs['metrics']})",
        "",
    ]
    path.write_text("\n".join(lines))


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    head = "| " + " | ".join(keys) + " |"
    sep = "| " + " | ".join("---" for _ in keys) + " |"
    body = [
        "| " + " | ".join(_fmt(r.get(k)) if k != "method" else str(r.get(k)) for k in keys) + " |"
        for r in rows
    ]
    return [head, sep, *body]
