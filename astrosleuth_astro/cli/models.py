"""``astrosleuth-astro models`` and ``export-onnx``: the registry, downloads, ONNX export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from .common import Parser


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list, inspect and download models")
    msub = p.add_subparsers(dest="models_cmd", required=True, parser_class=Parser)
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
    from ..models import list_models

    for e in list_models():
        print(f"{e.name:18s} {e.arch:5s} x{e.scale}  {e.description}")
    return 0


def _cmd_models_info(args) -> int:
    from ..models import get_entry

    print(json.dumps(_entry_dict(get_entry(args.name)), indent=2))
    return 0


def _cmd_models_path(args) -> int:
    from ..models import model_path

    print(model_path(args.name))
    return 0


def _cmd_models_download(args) -> int:
    from ..models import download

    print(download(args.name, force=args.force))
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export-onnx", help="export a model to ONNX (dynamic H and W)")
    p.add_argument("model", metavar="MODEL", help="registry name or weights file")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from ..models import export_onnx

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: output exists (use --overwrite to replace it)")
    export_onnx(args.model, out, opset=args.opset)
    print(out)
    return 0
