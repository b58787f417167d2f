"""Imports flow one way: the core never pulls in the CLI, Siril, trainer or batch layers."""

import subprocess
import sys

CORE = [
    "astrosleuth_astro",
    "astrosleuth_astro.io",
    "astrosleuth_astro.stretch",
    "astrosleuth_astro.models",
    "astrosleuth_astro.engine.tiles",
    "astrosleuth_astro.engine.backends",
    "astrosleuth_astro.resample",
    "astrosleuth_astro.pipeline",
    "astrosleuth_astro.api",
]
OUTER = ["cli", "siril", "train", "batch", "distributed", "compare"]


def test_core_imports_no_outer_layer_and_no_torch():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "mods = sorted(sys.modules)\n"
        + f"outer = [m for m in mods if m.startswith('astrosleuth_astro.') and m.split('.')[1] in {OUTER!r}]\n"
        + "print(outer)\n"
        + "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outer, torch_loaded = proc.stdout.strip().splitlines()
    assert outer == "[]"
    assert torch_loaded == "False"
