"""UpscaleOptions: one object, checked once, errors named as each front-end spells them."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

import astrosleuth_astro as asa
from astrosleuth_astro.cli import main
from astrosleuth_astro.errors import InputError, OptionError
from astrosleuth_astro.pipeline import UpscaleOptions, upscale_array
from astrosleuth_astro.stretch import fit_stretch

from ..conftest import write_sim_fits

BAD = [
    ("scale", 5, "not supported"),
    ("scale", 2.5, "integer"),
    ("scale", True, "integer"),
    ("stretch", "log", "unknown stretch"),
    ("backend", "tensorrt", "unknown backend"),
    ("precision", "int8", "unknown precision"),
    ("tile", 0, "at least 1"),
    ("pad", -1, "at least 0"),
    ("batch_size", 0, "at least 1"),
    ("protect_strength", 1.5, "between 0 and 1"),
    ("protect_strength", float("nan"), "between 0 and 1"),
    ("protect_strength", "strong", "between 0 and 1"),
    ("conserve_flux", "stars", "not a mode"),
]


def _net(batch: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(batch, 4, axis=2), 4, axis=3)


@pytest.mark.parametrize(("keyword", "value", "problem"), BAD)
def test_bad_values_name_the_keyword(keyword, value, problem):
    with pytest.raises(OptionError) as info:
        UpscaleOptions(**{keyword: value})
    exc = info.value
    assert exc.keyword == keyword and exc.exit_code == 2 and isinstance(exc, InputError)
    assert str(exc).startswith(f"{keyword}={value!r}: ") and problem in str(exc)
    assert "--" not in str(exc)


def test_values_are_normalised_once():
    opts = UpscaleOptions(
        scale="2", tile=64.0, conserve_flux=True, protect_strength=1, model_options={"b": 1, "a": 2}
    )
    assert opts.scale == 2 and isinstance(opts.scale, int) and opts.tile == 64
    assert opts.conserve_flux == "sources" and opts.protect_strength == 1.0
    assert opts.model_options == (("a", 2), ("b", 1))
    assert UpscaleOptions(conserve_flux=False).conserve_flux == "off"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.scale = 4  # type: ignore[misc]
    # replace() checks again; the options travel to worker processes.
    with pytest.raises(OptionError, match="scale=7"):
        opts.replace(scale=7)
    assert pickle.loads(pickle.dumps(opts)) == opts


def test_from_kwargs_splits_model_options():
    opts = UpscaleOptions.from_kwargs(scale=3, star_strength=0.5, stretch="mtf")
    assert opts.scale == 3 and opts.stretch == "mtf"
    assert opts.model_options == (("star_strength", 0.5),)
    assert opts.backend_kwargs() == dict(
        backend="auto", device="cpu", precision="auto", star_strength=0.5
    )


def test_tiling_takes_the_options_then_the_plan():
    class Plan:
        tile, pad, batch_size = 96, 12, 8

    class Net:
        tiling = Plan()

    assert UpscaleOptions().tiling(Net()) == (96, 12, 8)
    assert UpscaleOptions(tile=40, pad=0, batch_size=1).tiling(Net()) == (40, 0, 1)
    assert UpscaleOptions().tiling(_net) == (256, None, 4)


def test_a_fitted_stretch_is_an_option():
    data = np.random.default_rng(0).normal(100, 5, (24, 20)).astype(np.float32)
    st = fit_stretch(data, "asinh")
    a = upscale_array(data, _net, UpscaleOptions(stretch=st, scale=2)).data
    b = upscale_array(data, _net, scale=2, stretch=st).data
    assert a.tobytes() == b.tobytes() and a.shape == (48, 40)
    # Keywords given with an options object change it.
    c = upscale_array(data, _net, UpscaleOptions(stretch=st), scale=2).data
    assert c.tobytes() == a.tobytes()


def test_api_errors_name_the_keyword_before_any_work(tmp_path):
    src = write_sim_fits(tmp_path / "in.fits", shape=(16, 16))
    before = src.read_bytes()
    data = np.ones((8, 8), np.float32)
    with pytest.raises(OptionError, match=r"^stretch='log': unknown stretch"):
        asa.upscale(data, model=_net_backend(), stretch="log")
    with pytest.raises(OptionError, match=r"^conserve_flux='every': not a mode"):
        asa.upscale_file(src, tmp_path / "out.fits", conserve_flux="every")
    with pytest.raises(OptionError, match=r"^scale=8"):
        asa.upscale_file(src, tmp_path / "out.fits", scale=8)
    assert not (tmp_path / "out.fits").exists() and src.read_bytes() == before


def _net_backend():
    class Backend:
        model_name = "nearest"

        def __call__(self, batch):
            return _net(batch)

    return Backend()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--scale", "5"], "--scale 5: not supported"),
        (["--stretch", "log"], "--stretch log: unknown stretch"),
        (["--tile", "0"], "--tile 0: must be an integer of at least 1"),
        (["--precision", "int8"], "--precision int8: unknown precision"),
        (["--protect-strength", "2"], "--protect-strength 2.0: must be between 0 and 1"),
        (["--conserve-flux", "stars"], "--conserve-flux stars: not a mode"),
    ],
)
def test_cli_names_the_flag(tmp_path, capsys, argv, expected):
    src = write_sim_fits(tmp_path / "in.fits", shape=(16, 16))
    before = src.read_bytes()
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.fits"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "=" not in err[0]
    assert not (tmp_path / "out.fits").exists() and src.read_bytes() == before


def test_no_signature_probing_in_the_package():
    root = Path(asa.__file__).parent
    offenders = [p for p in root.rglob("*.py") if "inspect.signature" in p.read_text()]
    assert offenders == []
