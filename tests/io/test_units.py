"""One meaning for display-referred data (issue 24): an 8-bit picture keeps its units
(0-255) through every route: the CLI to FITS, the CLI to PNG, the API, batch."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

import astrosleuth_astro as asa
from astrosleuth_astro.cli import main
from astrosleuth_astro.io import read_image


@pytest.fixture
def jpeg(tmp_path):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:40, :48]
    sky = 40 + 0.8 * xx + 0.5 * yy
    star = 200 * np.exp(-((xx - 20) ** 2 + (yy - 17) ** 2) / 4.0)
    rgb = np.clip(sky[..., None] + star[..., None] + rng.normal(0, 3, (40, 48, 3)), 0, 255)
    path = tmp_path / "pic.jpg"
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=95, subsampling=0)
    return path


def test_a_jpeg_gives_the_same_numbers_on_every_route(tmp_path, jpeg, tiny_fast_model):
    model = str(tiny_fast_model)
    common = ["--model", model, "--scale", "2", "--quiet"]
    assert main(["upscale", str(jpeg), "-o", str(tmp_path / "cli.fits"), *common]) == 0
    assert main(["upscale", str(jpeg), "-o", str(tmp_path / "cli.png"), *common]) == 0
    batch_in, batch_out = tmp_path / "in", tmp_path / "out"
    batch_in.mkdir()
    batch_out.mkdir()
    (batch_in / "pic.jpg").write_bytes(jpeg.read_bytes())
    assert (
        main(["upscale", str(batch_in), "-o", str(batch_out), "--name", "{stem}.fits", *common])
        == 0
    )
    asa.upscale_file(jpeg, tmp_path / "api.fits", model=model, scale=2)
    with Image.open(jpeg) as im:
        picture = np.moveaxis(np.asarray(im), -1, 0)  # (3, H, W) uint8, as decoded
    from_array = asa.upscale(picture, model=model, scale=2)

    cli = fits.getdata(tmp_path / "cli.fits")
    assert cli.shape == (3, 80, 96)
    assert 0 <= np.nanmin(cli) and 100 < np.nanmax(cli) <= 255.5  # 0-255, not [0, 1]
    # binned back, the output is the picture's own numbers (within the network's residual)
    binned = cli.reshape(3, 40, 2, 48, 2).mean(axis=(2, 4))
    assert np.median(np.abs(binned - read_image(jpeg).data)) < 3
    for other in (
        fits.getdata(batch_out / "pic.fits"),
        fits.getdata(tmp_path / "api.fits"),
        from_array,
    ):
        np.testing.assert_allclose(other, cli, rtol=0, atol=1e-3)
    with Image.open(tmp_path / "cli.png") as im:
        png = np.moveaxis(np.asarray(im), -1, 0).astype(np.float32)
    np.testing.assert_array_equal(png, np.clip(np.rint(cli), 0, 255))
