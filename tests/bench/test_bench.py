"""``astrosleuth-astro bench`` (issue 6): its results, its units and its arguments.

These tests check results, never timings.
"""

from __future__ import annotations

import json
import math

import pytest

from astrosleuth_astro import api
from astrosleuth_astro.cli import main

torch = pytest.importorskip("torch")

from astrosleuth_astro.engine.precision import cpu_supports_bf16  # noqa: E402


def _walk_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--quick", "-o", str(out), "--models", "default"]
    assert main(argv) == 0
    assert "| model | backend | precision |" in capsys.readouterr().out
    result = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().startswith("Machine:")
    configs = result["configs"]
    seen = {(c["backend"], c["precision"]) for c in configs}
    assert ("torch", "fp32") in seen and ("onnx", "fp32") in seen
    assert (("torch", "bf16") in seen) == cpu_supports_bf16()
    for c in configs:
        for key in (
            "pipeline_mp_per_min",
            "bare_mp_per_min",
            "naive_mp_per_min",
            "efficiency",
            "speedup_vs_naive",
            "input_mp",
            "pipeline_gflops",
            "bare_gflops",
            "naive_gflops",
        ):
            assert math.isfinite(c[key]) and c[key] > 0, (key, c)
        assert c["bare_channels"] == 1  # the simulated inputs are grey
        assert set(c["split_s"]) >= {"read", "stretch", "network", "inverse", "write"}
        assert 0 < c["io_stretch_stars_fraction"] < 1
    assert result["gemm_gflops"] > 0 and "Roofline" in (out / "bench.md").read_text()
    assert "stars" in result["protect_stars_run"]["split_s"]
    assert "onnx_over_torch_fp32" in result["ratios"]["default"]
    rows = result["rss"]["rows"]
    assert len(rows) == 2 and rows[0]["peak_rss_anon_mb"] > 0 and rows[0]["ru_maxrss_mb"] > 0
    if cpu_supports_bf16():
        p = result["bf16_psnr"]["default"]
        assert math.isfinite(p["delta_db"]) and p["psnr_fp32_db"] > 0
    assert all(math.isfinite(x) for x in _walk_numbers(result["configs"]))
    assert {p.name for p in out.iterdir()} == {"bench.json", "bench.md"}  # no scratch left


def test_conv_flops_per_pixel_counts_every_conv():
    """The roofline's unit: 2 FLOPs per multiply-add of every conv, per input pixel. For
    FAST (F features, K body convs, U up features, 3 channels, 4x): the first and body
    convs at 1x, ``conv_up1`` at 2x (4 pixels), ``conv_up2`` at 4x (16 pixels)."""
    from astrosleuth_astro.archs.compact import CompactSR
    from astrosleuth_astro.bench import conv_flops_per_pixel

    f, k, u = 8, 3, 6
    net = CompactSR(num_feat=f, num_conv=k, num_up_feat=u).eval()
    expected = 2 * 9 * (3 * f + k * f * f + 4 * f * u + 16 * u * 3)
    assert conv_flops_per_pixel(net, size=16) == expected
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed


def test_bench_bad_arguments(tmp_path, capsys):
    assert main(["bench", "--quick", "-o", str(tmp_path), "--models", "default@x"]) == 2
    assert main(["bench", "-o", str(tmp_path), "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_core_does_not_import_bench():
    import pathlib

    root = pathlib.Path(api.__file__).parent
    paths = [p for d in ("io", "engine", "pipeline") for p in (root / d).glob("*.py")]
    assert len(paths) > 10
    for path in [*paths, root / "api.py", root / "stretch.py"]:
        text = path.read_text()
        assert "import bench" not in text and ".bench import" not in text, path
