"""`make demo`'s job: the shipped sample through the default model, plus a preview."""

import numpy as np
from astropy.io import fits
from PIL import Image

from astrosleuth_astro.demo import main, sample_path


def test_demo_writes_fits_and_preview(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    lr = fits.getdata(sample_path())
    out = fits.getdata(tmp_path / "horsehead_x4.fits")
    assert out.shape == (4 * lr.shape[0], 4 * lr.shape[1]) and out.dtype.kind == "f"
    png = np.asarray(Image.open(tmp_path / "horsehead_preview.png"))
    assert png.shape == (out.shape[0], 2 * out.shape[1], 3)
    # both halves show the same scene: their mean brightness agrees (same stretch)
    left, right = png[:, : out.shape[1]].mean(), png[:, out.shape[1] :].mean()
    assert abs(left - right) < 10
