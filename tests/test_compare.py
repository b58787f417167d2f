"""``astrosleuth-astro compare``: models and baselines scored, report and figures written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from astrosleuth_astro.cli import main
from astrosleuth_astro.compare import interpolation_net
from astrosleuth_astro.metrics import METRIC_KEYS, REFERENCE_KEYS
from astrosleuth_astro.sim import simulate, to_hdu

pytest.importorskip("matplotlib")


@pytest.fixture
def fields(tmp_path):
    paths = []
    for i in range(2):
        res = simulate(
            (160, 160), seed=30 + i, n_stars=40, flux_range=(2e4, 1e6), fwhm=9.0, nebulosity=0.0
        )
        p = tmp_path / f"field{i}.fits"
        to_hdu(res, "lr").writeto(p)
        paths.append(p)
    return paths


def test_interpolation_baselines_are_4x_and_keep_levels():
    x = np.full((1, 3, 8, 10), 0.4, dtype=np.float32)
    for kind in ("bicubic", "lanczos"):
        y = interpolation_net(kind)(x)
        assert y.shape == (1, 3, 32, 40)
        np.testing.assert_allclose(y, 0.4, atol=1e-6)


def test_compare_writes_report_and_figures(tiny_fast_model, fields, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(
        [
            "compare",
            "--models",
            str(tiny_fast_model),
            *map(str, fields),
            "--reference-mode",
            "downsample",
            "--protect-stars",
            "--conserve-flux",
            "--backend",
            "torch",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    for name in (
        "report.md",
        "metrics.csv",
        "metrics.json",
        "profiles.png",
        "worst_stars.png",
        "metrics.png",
    ):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "metrics.json").read_text())
    labels = [m["label"] for m in res["methods"]]
    assert labels == ["tiny_fast", "tiny_fast+protect", "tiny_fast+flux", "bicubic", "lanczos"]
    flux_rows = [r for r in res["results"] if r["method"] == "tiny_fast+flux"]
    assert {r["conserve_flux"] for r in flux_rows} == {"sources"}
    assert len(res["results"]) == 2 * len(labels)
    for row in res["results"]:
        assert set(METRIC_KEYS) | set(REFERENCE_KEYS) <= set(row)
        assert row["n_stars"] > 0 and row["psnr_stretched"] is not None
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(labels) and rows[0]["method"] == "tiny_fast"
    report = (out / "report.md").read_text()
    assert "![mean radial star profiles](profiles.png)" in report and "| bicubic |" in report
    # An existing, non-empty output directory is refused without --overwrite.
    assert (
        main(["compare", "--models", str(tiny_fast_model), str(fields[0]), "--out", str(out)]) == 2
    )
