"""``astrosleuth-astro upscale``: one file, many files (batch) or a Dask cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._version import __version__
from ..conserve import DEFAULT_MODE
from ..errors import InputError
from .common import add_conserve_flux, progress_bar


def add_upscale(sub) -> None:
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
    add_conserve_flux(
        p,
        "consistency with the data (binning the output by the scale gives the input): "
        "'consistent' (default) exact on sources above 5 sigma and unbiased, within the "
        "noise, on the sky; 'sources' (a bare flag) the same with one sky offset per "
        "channel; 'all' exact at every pixel; 'off' the raw network",
        default=DEFAULT_MODE,
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
        "--wait-lock",
        action="store_true",
        help="if another batch is writing to the output directory, wait for it to finish "
        "(default: exit 2 naming it)",
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
    from ..api import backend_for, upscale_image
    from ..io import check_not_same, check_output_path, read_image
    from ..pipeline import UpscaleOptions
    from ..runner import run_from_args, wants_batch

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
        with progress_bar(src.name, args.quiet) as (progress, stage):
            report = upscale_image(
                image, dst, net, options, overwrite=args.overwrite, progress=progress, stage=stage
            )
        reports.append(report)
        if report.stretch_reason and not args.quiet:
            print(f"{src}: {report.stretch_reason}", file=sys.stderr)
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
