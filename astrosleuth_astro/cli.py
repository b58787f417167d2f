"""The ``astrosleuth-astro`` command line.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback, no partial
output); 1 internal error; 130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from ._version import __version__
from .errors import AstroSleuthError, InputError, OptionError

PROG = "astrosleuth-astro"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_conserve_flux(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--conserve-flux [MODE]``: a bare flag means ``sources``; checked by ``resolve_mode``
    (one clear line, exit 2) rather than by argparse ``choices``."""
    p.add_argument(
        "--conserve-flux",
        nargs="?",
        const="sources",
        default="off",
        metavar="MODE",
        help=help_text,
    )


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="upscale images (FITS, TIFF, PNG, JPEG)")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IN",
        help="input image file(s), directories, glob patterns or Siril .seq sequences",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (one input) or directory (several); default: IN_x{scale}.EXT",
    )
    p.add_argument(
        "--model", default="default", help="registry name or weights file (default: default)"
    )
    p.add_argument("--scale", type=int, default=4, help="output scale 1, 2, 3 or 4 (default 4)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    p.add_argument(
        "--precision",
        default="auto",
        help="network precision: auto, fp32, bf16 (CPUs with AVX512-BF16/AMX, CUDA) or fp16 "
        "(CUDA); auto = the fastest one measured within 0.05 dB PSNR of fp32 (default auto)",
    )
    p.add_argument("--tile", type=int, default=None, help="tile size in input pixels")
    p.add_argument("--stretch", default="auto", help="auto, mtf, asinh or none (default auto)")
    p.add_argument("--hdu", default=None, help="FITS HDU index or EXTNAME (default: first image)")
    p.add_argument("--luminance-only", action="store_true", help="colour: upscale luminance only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--protect-stars",
        action="store_true",
        help="repair dark rings, flux and split cores inside star footprints (nothing else changes)",
    )
    p.add_argument(
        "--protect-strength",
        type=float,
        default=1.0,
        metavar="X",
        help="star protection strength, 0..1 (default 1)",
    )
    _add_conserve_flux(
        p,
        "give input pixels their flux back (binning the output by 4 gives the input "
        "there): 'sources' (the default MODE) for stars and other sources above 5 sigma, "
        "'all' for every pixel, 'off' (default: off)",
    )
    nxt = p.add_argument_group("NEXT model options (AstroSleuthNEXT only)")
    nxt.add_argument("--star-strength", type=float, metavar="X", help="star conditioning, -1..1")
    nxt.add_argument(
        "--detail-strength", type=float, metavar="X", help="detail conditioning, -1..1"
    )
    nxt.add_argument(
        "--spikes-strength", type=float, metavar="X", help="diffraction-spike conditioning, -1..1"
    )
    nxt.add_argument(
        "--cond-strength", type=float, metavar="X", help="overall conditioning, 0..5 (0 = off)"
    )
    nxt.add_argument(
        "--chroma-matching",
        action="store_true",
        default=None,
        help="luminance from the network, chroma (YCbCr) from the bilinear-upsampled input",
    )
    bat = p.add_argument_group("batch and cluster (see the README)")
    bat.add_argument(
        "--recursive", action="store_true", help="search input directories (and ** globs) deeply"
    )
    bat.add_argument(
        "--name",
        metavar="PATTERN",
        help="output name in -o DIR: {stem} {name} {ext} {scale} {reldir} {index} {model} "
        "(default {stem}_x{scale}{ext})",
    )
    bat.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="local worker processes (default 1)"
    )
    bat.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run on a Dask cluster (default: $DASK_SCHEDULER_ADDRESS if set)",
    )
    bat.add_argument(
        "--manifest", metavar="FILE", help="batch manifest (default: OUT_DIR/manifest.json)"
    )
    bat.add_argument(
        "--bands",
        type=int,
        default=None,
        metavar="N",
        help="split each image into N bands of tile rows run in parallel "
        "(default: one per worker for a single input, else 1)",
    )
    p.set_defaults(func=_cmd_upscale)


def _output_for(src: Path, output: str | None, n_inputs: int, scale: int) -> Path:
    name = f"{src.stem}_x{scale}{src.suffix}"
    if output is None:
        return src.with_name(name)
    out = Path(output)
    if n_inputs > 1 or out.is_dir():
        if not out.is_dir():
            raise InputError(
                f"{out}: -o must be an existing directory when several inputs are given"
            )
        return out / name
    return out


def _cmd_upscale(args) -> int:
    from .api import backend_for, upscale_image
    from .io import check_not_same, check_output_path, read_image
    from .pipeline import UpscaleOptions
    from .runner import run_from_args, wants_batch

    options = UpscaleOptions(
        model=args.model,
        scale=args.scale,
        stretch=args.stretch,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        luminance_only=args.luminance_only,
        protect_stars=args.protect_stars,
        protect_strength=args.protect_strength,
        conserve_flux=args.conserve_flux,
        model_options=_next_options(args),
    )
    hdu = int(args.hdu) if args.hdu is not None and args.hdu.lstrip("-").isdigit() else args.hdu
    if wants_batch(args):  # several inputs, a directory/glob/.seq, or a batch option
        return run_from_args(args, options, hdu)
    jobs = [
        (Path(s), _output_for(Path(s), args.output, len(args.inputs), args.scale))
        for s in args.inputs
    ]
    # Cheap checks on every job first, so a typo in the last path fails before hours of work.
    for src, dst in jobs:
        check_not_same(src, dst)
        check_output_path(dst, overwrite=args.overwrite)

    net = None
    reports = []
    for src, dst in jobs:
        image = read_image(src, hdu=hdu, memmap=True)
        if net is None:  # built after the first input is known to be readable
            net = backend_for(options)
        with _progress_bar(src.name, args.quiet) as (progress, stage):
            report = upscale_image(
                image, dst, net, options, overwrite=args.overwrite, progress=progress, stage=stage
            )
        reports.append(report)
        if not args.quiet and not args.json:
            print(f"{src} -> {dst} ({report.seconds:.1f} s)", file=sys.stderr)
    if args.json:
        from dataclasses import asdict

        print(
            json.dumps({"version": __version__, "results": [asdict(r) for r in reports]}, indent=2)
        )
    return 0


def _next_options(args) -> dict:
    """NEXT conditioning options given on the command line (others stay unset)."""
    opts = {
        "star_strength": args.star_strength,
        "detail_strength": args.detail_strength,
        "spikes_strength": args.spikes_strength,
        "cond_strength": args.cond_strength,
        "color_matching": args.chroma_matching,
    }
    # The backend refuses them (exit 2) for models that are not NEXT.
    return {k: v for k, v in opts.items() if v is not None}


@contextmanager
def _progress_bar(name: str, quiet: bool):
    """A tqdm bar on stderr: ``(progress, stage)`` callbacks for the pipeline.

    ``progress(done, total)`` moves the bar over the tiles; ``stage(name)`` shows the
    stage in the bar's label, so the star stages of ``--protect-stars`` (which can take
    longer than the network) do not look like a stall.
    """
    if quiet:
        yield None, None
        return
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="tile", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    def stage(label: str) -> None:
        bar.set_description_str(f"{name}: {label}")

    try:
        yield progress, stage
    finally:
        bar.close()


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list, inspect and download models")
    msub = p.add_subparsers(dest="models_cmd", required=True, parser_class=_Parser)
    msub.add_parser("list", help="list the registry").set_defaults(func=_cmd_models_list)
    for name, func, text in (
        ("info", "_cmd_models_info", "show one model"),
        ("path", "_cmd_models_path", "print the local path of a model"),
        ("download", "_cmd_models_download", "download a model into the cache"),
    ):
        q = msub.add_parser(name, help=text)
        q.add_argument("name")
        if name == "download":
            q.add_argument("--force", action="store_true", help="download again even if cached")
        q.set_defaults(func=globals()[func])
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def _entry_dict(entry) -> dict:
    from dataclasses import asdict, is_dataclass

    d = asdict(entry) if is_dataclass(entry) else dict(vars(entry))
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _cmd_models_list(args) -> int:
    from .models import list_models

    for e in list_models():
        print(f"{e.name:18s} {e.arch:5s} x{e.scale}  {e.description}")
    return 0


def _cmd_models_info(args) -> int:
    from .models import get_entry

    print(json.dumps(_entry_dict(get_entry(args.name)), indent=2))
    return 0


def _cmd_models_path(args) -> int:
    from .models import model_path

    print(model_path(args.name))
    return 0


def _cmd_models_download(args) -> int:
    from .models import download

    print(download(args.name, force=args.force))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export-onnx", help="export a model to ONNX (dynamic H and W)")
    p.add_argument("model", metavar="MODEL", help="registry name or weights file")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .models import export_onnx

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: output exists (use --overwrite to replace it)")
    export_onnx(args.model, out, opset=args.opset)
    print(out)
    return 0


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a synthetic star field with known truth")
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE.fits", help="low-resolution observation"
    )
    p.add_argument("--truth", metavar="FILE.fits", help="also write the high-resolution truth")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--scale", type=int, default=4, help="truth/observation scale (default 4)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    p.add_argument("--fwhm", type=float, default=2.5, help="seeing FWHM in observation pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args) -> int:
    from .io import atomic_output
    from .sim import simulate, to_hdu

    if min(args.size) < 1:
        raise InputError(f"--size: must be positive, got {args.size}")
    res = simulate(
        tuple(args.size),
        scale=args.scale,
        channels=args.channels,
        fwhm=args.fwhm,
        seed=args.seed,
    )
    targets = [(Path(args.output), "lr")] + ([(Path(args.truth), "hr")] if args.truth else [])
    for path, which in targets:
        with atomic_output(path, overwrite=args.overwrite) as tmp:
            to_hdu(res, which=which).writeto(tmp)
        print(path)
    return 0


def _add_stars(sub) -> None:
    p = sub.add_parser("stars", help="detect and measure stars; write a star mask and a catalogue")
    p.add_argument("input", metavar="IN", help="input image (linear FITS)")
    p.add_argument(
        "--mask",
        metavar="OUT.fits",
        help="write the dilated star mask (uint8 FITS, input header and WCS)",
    )
    p.add_argument("--catalog", metavar="OUT.ecsv", help="write the star catalogue (ECSV)")
    p.add_argument("--hdu", default=None, help="FITS HDU index or EXTNAME (default: first image)")
    p.add_argument(
        "--dilate", type=float, default=None, metavar="F", help="mask dilation in FWHM (default 2)"
    )
    p.add_argument(
        "--nsigma", type=float, default=None, metavar="N", help="detection threshold (default 5)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.set_defaults(func=_cmd_stars)


def _cmd_stars(args) -> int:
    import numpy as np
    from astropy.io import fits as afits

    from .io import atomic_output, check_not_same, check_output_path, read_image
    from .io.fits_write import output_header
    from .stars import DILATE_FWHM, detect_stars, star_mask

    src = Path(args.input)
    outs = [Path(o) for o in (args.mask, args.catalog) if o]
    for dst in outs:
        check_not_same(src, dst)
        check_output_path(dst, overwrite=args.overwrite)
    if args.mask and args.catalog and Path(args.mask).resolve() == Path(args.catalog).resolve():
        raise InputError(f"{args.mask}: --mask and --catalog name the same file")
    dilate = DILATE_FWHM if args.dilate is None else args.dilate
    if not dilate >= 0:
        raise InputError(f"--dilate: must be >= 0, got {args.dilate}")
    hdu = int(args.hdu) if args.hdu is not None and args.hdu.lstrip("-").isdigit() else args.hdu
    image = read_image(src, hdu=hdu)
    kw = {} if args.nsigma is None else {"nsigma": args.nsigma}
    sat = image.header.get("SATURATE") if image.header is not None else None
    try:
        det = detect_stars(image.data, saturation=float(sat) if sat else None, **kw)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    cat = det.catalog
    cat.meta["input"] = str(src)
    if args.mask:
        mask = star_mask(det, factor=dilate).astype(np.uint8)
        hdr = output_header(image.header, mask.shape)
        hdr["ASTSLMSK"] = (float(dilate), "star mask: footprints dilated by N FWHM")
        hdr["ASTSLFWH"] = (round(det.fwhm, 4), "image FWHM, pixels")
        hdr["HISTORY"] = f"astrosleuth-astro {__version__} stars: {len(cat)} stars, mask 1 = star"
        with atomic_output(Path(args.mask), overwrite=args.overwrite) as tmp:
            afits.PrimaryHDU(data=mask, header=hdr).writeto(tmp)
    if args.catalog:
        with atomic_output(Path(args.catalog), overwrite=args.overwrite) as tmp:
            cat.write(tmp, format="ascii.ecsv", overwrite=True)
    summary = {
        "input": str(src),
        "n_stars": len(cat),
        "n_saturated": int(np.sum(cat["saturated"])),
        "fwhm": round(det.fwhm, 4),
        "background_rms": float(cat.meta["rms"]),
        "mask": args.mask,
        "catalog": args.catalog,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{src}: {len(cat)} stars ({summary['n_saturated']} saturated), FWHM {det.fwhm:.2f} px"
        )
    return 0


def _read_for_metrics(path: str):
    from .io import read_image

    return read_image(Path(path)).data


def _add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="star-aware metrics of an upscaled image against its input")
    p.add_argument("--input", required=True, metavar="LR", help="the low-resolution input")
    p.add_argument("--output", required=True, metavar="SR", help="its upscaled output")
    p.add_argument("--reference", metavar="HR", help="high-resolution truth (adds PSNR/SSIM)")
    p.add_argument("--scale", type=int, default=None, help="scale (default: from the shapes)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_metrics)


def _cmd_metrics(args) -> int:
    from .metrics import METRIC_KEYS, REFERENCE_KEYS, compute_metrics, infer_scale

    lr = _read_for_metrics(args.input)
    sr = _read_for_metrics(args.output)
    hr = _read_for_metrics(args.reference) if args.reference else None
    if lr.shape[0] != sr.shape[0]:
        raise InputError(f"{args.output}: has {sr.shape[0]} channel(s), the input {lr.shape[0]}")
    if args.scale is not None:
        if args.scale < 1 or sr.shape[-2:] != (
            args.scale * lr.shape[-2],
            args.scale * lr.shape[-1],
        ):
            raise InputError(
                f"--scale: {args.scale} does not map the input {lr.shape[-2:]} onto the output {sr.shape[-2:]}"
            )
        scale = args.scale
    else:
        try:
            scale = infer_scale(lr.shape, sr.shape)
        except ValueError as exc:
            raise InputError(f"{args.output}: {exc}") from None
    if hr is not None and hr.shape != sr.shape:
        raise InputError(f"{args.reference}: shape {hr.shape} differs from the output's {sr.shape}")
    try:
        res = compute_metrics(lr, sr, scale=scale, reference=hr)
    except ValueError as exc:
        raise InputError(f"{args.input}: {exc}") from None
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for key in METRIC_KEYS + (REFERENCE_KEYS if hr is not None else ()):
            v = res.get(key)
            print(
                f"{key:28s} {'n/a' if v is None else (f'{v:.4g}' if isinstance(v, float) else v)}"
            )
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="run models and interpolation baselines on inputs; write a star report"
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="input images (linear FITS)")
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="registry names or weights files; image files after them are taken as inputs",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument(
        "--reference-mode",
        choices=["none", "downsample"],
        default="none",
        help="downsample: area-downsample each input by the scale and score against the original",
    )
    p.add_argument("--references", nargs="+", metavar="HR", help="HR truth per input (same order)")
    p.add_argument("--scale", type=int, default=4, help="upscale factor (default 4)")
    p.add_argument(
        "--protect-stars", action="store_true", help="also run every model with --protect-stars"
    )
    _add_conserve_flux(
        p, "also run every model with --conserve-flux MODE (sources, the default MODE, or all)"
    )
    p.add_argument(
        "--baselines", default="bicubic,lanczos", help="comma-separated interpolation baselines"
    )
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile", type=int, default=None, help="tile size in input pixels")
    p.add_argument("--stretch", default="auto", help="auto, mtf, asinh or none (default auto)")
    p.add_argument("--save-outputs", action="store_true", help="also write every upscaled image")
    p.add_argument("--overwrite", action="store_true", help="write into an existing directory")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from .compare import run_compare
    from .io import format_from_name

    # `--models A B in1.fits in2.fits`: argparse gives every name to --models; image files
    # are inputs (weights files are .pth/.pt/.safetensors/.onnx, registry names have none).
    models = [m for m in args.models if format_from_name(m) is None]
    inputs = [m for m in args.models if format_from_name(m) is not None] + list(args.inputs)
    if not models:
        raise InputError("--models: no model given")
    if not inputs:
        raise InputError("compare: no input image given")

    run_compare(
        inputs,
        models,
        args.out,
        reference_mode=args.reference_mode,
        references=args.references,
        scale=args.scale,
        protect=args.protect_stars,
        conserve=args.conserve_flux,
        baselines=[b for b in args.baselines.split(",") if b],
        backend=args.backend,
        device=args.device,
        tile=args.tile,
        stretch=args.stretch,
        save_outputs=args.save_outputs,
        overwrite=args.overwrite,
        log=None if args.quiet else (lambda m: print(m, file=sys.stderr)),
    )
    print(Path(args.out) / "report.md")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure throughput, efficiency, time split, memory and bf16 quality",
        description="Benchmark the upscaler on synthetic star fields (or given files): "
        "throughput per model, backend and precision, efficiency against the bare network, "
        "speed-up over the naive one-tile loop, time split, peak RSS at 1/4/16 MP, "
        "bf16-vs-fp32 PSNR. Writes OUT/bench.json and OUT/bench.md.",
    )
    p.add_argument("-o", "--out", default="bench-results", help="output directory")
    p.add_argument(
        "--models",
        default="default,fast-upstream",
        help="comma-separated registry names or weights files; 'fast-upstream' is a "
        "random-weight upstream-size FAST (64 features, 32 convs) (default: %(default)s)",
    )
    p.add_argument("--inputs", nargs="*", default=None, metavar="FILE", help="images to use")
    p.add_argument("--size", type=float, default=4.0, help="synthetic input size in MP")
    p.add_argument(
        "--rss-sizes", default="1,4,16", help="input MP for the peak-RSS runs (default 1,4,16)"
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (median)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke test")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess runs")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from .bench import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="FITS-faithful super-resolution of astronomical images."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_upscale(sub)
    _add_models(sub)
    _add_export(sub)
    _add_simulate(sub)
    _add_stars(sub)
    _add_metrics(sub)
    _add_compare(sub)
    _add_bench(sub)
    _add_train(sub)
    return parser


def _add_train(sub) -> None:
    from .train.command import add_arguments

    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (the bundled trainer)",
        description="Train an upscaling network from a TOML config or a preset; exports "
        ".safetensors, .onnx, the resolved config and a registry entry to OUT/export.",
    )
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from .train.command import run

    return run(args)


#: Flags whose name is not the API keyword with dashes (``protect_strength`` ->
#: ``--protect-strength``).
_FLAGS = {"color_matching": "--chroma-matching"}


def _flag(keyword: str) -> str:
    """The CLI flag of an API keyword."""
    return _FLAGS.get(keyword, "--" + keyword.replace("_", "-"))


def _on_sigterm(signum, frame):
    # Turn SIGTERM into an exception so atomic writers clean up their temp files.
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("ASTROSLEUTH_DEBUG"))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except OptionError as exc:  # named by its Python keyword: say the flag instead
        print(f"{PROG}: error: {exc.named(_flag(exc.keyword))}", file=sys.stderr)
        return exc.exit_code
    except AstroSleuthError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error; silence the final flush.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
