"""bench/real_ceiling.py: the band split and the in-sample oracle it bounds gains with."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import real_ceiling as rc  # noqa: E402


def _wave(shape, fy, fx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.cos(2 * np.pi * (fy * yy + fx * xx))


def test_lowpass_keeps_sub_nyquist_and_drops_the_rest():
    shape = (64, 96)
    low = _wave(shape, 4 / 64, 6 / 96)  # 1/16 cycles per px: below 1/8 (scale 4)
    high = _wave(shape, 16 / 64, 24 / 96)  # 1/4 cycles per px: above it
    out = rc.lowpass_nyquist(low + high, 4)
    np.testing.assert_allclose(out, low, atol=1e-9)


def test_insample_residual_removes_what_is_linear_in_the_lr():
    rng = np.random.default_rng(0)
    lr = rng.normal(size=(40, 40))
    # detail that is an exact linear function of the LR neighbourhood: fully explained
    left = np.concatenate([lr[:, :1], lr[:, :-1]], axis=1)  # left neighbour, edge-padded
    linear = np.kron(0.3 * lr + left, np.ones((4, 4)))
    outside = np.ones(linear.shape, bool)
    assert np.max(np.abs(rc.insample_residual(lr, linear, outside))) < 1e-8
    # independent grain: the fit removes about its share of degrees of freedom, no more
    grain = rng.normal(size=linear.shape)
    resid = rc.insample_residual(lr, grain, outside)
    explained = 1 - np.sum(resid**2) / np.sum(grain**2)
    assert 0 <= explained < 0.1
    # pixels inside the granted region come back as zero error
    outside[:8] = False
    assert np.all(rc.insample_residual(lr, grain, outside)[:8] == 0)


def test_error_shares_add_up_and_name_the_band():
    rng = np.random.default_rng(1)
    truth = rng.random((1, 64, 64))
    stars = np.zeros((64, 64), bool)
    stars[:16] = True
    err_low = 0.05 * _wave((64, 64), 2 / 64, 3 / 64)[None]
    mse = float(np.mean(err_low**2))
    s = rc.error_shares(truth + err_low, truth, stars, mse)
    assert abs(s["sub_nyquist"] - 1) < 1e-9 and s["stars"] < 1e-12 and s["rest"] < 1e-12
    err_high = 0.05 * _wave((64, 64), 0.25, 0.25)[None]
    s = rc.error_shares(truth + err_high, truth, stars, float(np.mean(err_high**2)))
    assert s["sub_nyquist"] < 1e-12 and abs(s["stars"] + s["rest"] - 1) < 1e-9
    assert abs(s["stars"] - 0.25) < 1e-9  # a quarter of the rows are star footprints
