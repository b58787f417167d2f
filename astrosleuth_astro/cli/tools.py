"""The tools around upscaling: ``simulate``, ``stars``, ``metrics``, ``compare``, ``bench``
and ``train``. Each imports what it runs when it runs, so that ``--help`` and
``upscale`` do not load torch, matplotlib or the trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._version import __version__
from ..errors import InputError
from .common import add_conserve_flux


def add_simulate(sub) -> None:
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
    from ..io import atomic_output
    from ..sim import simulate, to_hdu

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


def add_stars(sub) -> None:
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

    from ..io import atomic_output, check_not_same, check_output_path, read_image
    from ..io.fits_write import output_header
    from ..stars import DILATE_FWHM, detect_stars, star_mask

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
    from ..io import read_image

    return read_image(Path(path)).data


def add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="star-aware metrics of an upscaled image against its input")
    p.add_argument("--input", required=True, metavar="LR", help="the low-resolution input")
    p.add_argument("--output", required=True, metavar="SR", help="its upscaled output")
    p.add_argument("--reference", metavar="HR", help="high-resolution truth (adds PSNR/SSIM)")
    p.add_argument("--scale", type=int, default=None, help="scale (default: from the shapes)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_metrics)


def _cmd_metrics(args) -> int:
    from ..metrics import METRIC_KEYS, REFERENCE_KEYS, compute_metrics, infer_scale

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


def add_compare(sub) -> None:
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
    add_conserve_flux(
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
    from ..compare import run_compare
    from ..io import format_from_name

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


def add_bench(sub) -> None:
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
    from ..bench import run_from_args

    return run_from_args(args)


def add_train(sub) -> None:
    from ..train.command import add_arguments

    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (the bundled trainer)",
        description="Train an upscaling network from a TOML config or a preset; exports "
        ".safetensors, .onnx, the resolved config and a registry entry to OUT/export.",
    )
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from ..train.command import run

    return run(args)
