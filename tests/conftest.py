"""Shared fixtures: small real models and small real FITS files made by the tests."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="session")
def tiny_fast_model(tmp_path_factory):
    """A small FAST-family network with fixed random weights, saved as .safetensors.

    It is a real network of the shipped architecture, just narrow and shallow, so the tests
    that run the full pipeline stay fast.
    """
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from astrosleuth_astro.archs.compact import CompactSR

    torch.manual_seed(0)
    net = CompactSR(num_feat=8, num_conv=2)
    with torch.no_grad():  # small residual so outputs stay close to bilinear, like a trained net
        net.conv_up2.weight.mul_(0.1)
        net.conv_up2.bias.zero_()
    path = tmp_path_factory.mktemp("models") / "tiny_fast.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_noise_aware_model(tmp_path_factory):
    """A small noise-aware FAST (3 image + 2 conditioning channels in), fixed random
    weights, saved as .safetensors; its conditioning weights are scaled up so that the
    noise map visibly changes the output."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from astrosleuth_astro.archs.compact import CompactSR

    torch.manual_seed(1)
    net = CompactSR(num_in_ch=5, num_feat=8, num_conv=2)
    with torch.no_grad():
        net.body[0].weight[:, 3:].mul_(5.0)
        net.conv_up2.weight.mul_(0.1)
        net.conv_up2.bias.zero_()
    path = tmp_path_factory.mktemp("models") / "tiny_noise_aware.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_fast_onnx(tiny_fast_model, tmp_path_factory):
    """The same tiny network exported to ONNX."""
    from astrosleuth_astro.models import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny_fast.onnx"
    export_onnx(tiny_fast_model, path)
    return path


def write_sim_fits(path, *, shape=(48, 56), channels=1, seed=0, dtype=np.float32, **hdr):
    """A simulated star field with a TAN WCS, written through astropy."""
    from astrosleuth_astro.sim import simulate, to_hdu

    res = simulate(shape, channels=channels, seed=seed)
    hdu = to_hdu(res, which="lr")
    if np.dtype(dtype) == np.uint16:
        hdu = fits.PrimaryHDU(np.clip(hdu.data, 0, 65535).astype(np.uint16), header=hdu.header)
    elif np.dtype(dtype) != np.float32:
        hdu = fits.PrimaryHDU(hdu.data.astype(dtype), header=hdu.header)
    for key, value in hdr.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


@pytest.fixture
def sim_fits(tmp_path):
    return write_sim_fits(tmp_path / "field.fits", XPIXSZ=3.76, YPIXSZ=3.76, OBJECT="sim")


def pytest_configure(config):
    # Two xdist workers share two cores: one torch thread each avoids oversubscription,
    # which made small forwards hundreds of times slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
