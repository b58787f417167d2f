"""Tests of the trainer's [losses]: star-aware, perceptual and adversarial terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from astrosleuth_astro.errors import InputError  # noqa: E402
from astrosleuth_astro.sim import simulate  # noqa: E402
from astrosleuth_astro.stretch import fit_stretch  # noqa: E402
from astrosleuth_astro.train.config import Config, from_dict, load_config  # noqa: E402
from astrosleuth_astro.train.data import (  # noqa: E402
    PairBank,
    stretch_pair,
    stretch_vector,
)
from astrosleuth_astro.train.losses import block_mean_term  # noqa: E402
from astrosleuth_astro.train.starloss import (  # noqa: E402
    StarLoss,
    flux_term,
    forward_stretch,
    inverse_stretch,
    ring_term,
)
from astrosleuth_astro.train.starmask import star_maps  # noqa: E402

SCALE = 4
SKY = 800.0


@pytest.fixture(scope="module")
def field():
    """A stretched pair of a simulated field with a flat sky, its star maps and stretch."""
    res = simulate(
        (48, 48),
        scale=SCALE,
        n_stars=14,
        fwhm=2.2,
        background=SKY,
        gradient=0.0,
        nebulosity=0.0,
        flux_range=(2e3, 3e5),
        hot_pixels=0.0,
        wcs=False,
        seed=11,
    )
    lr, hr, st = stretch_pair(res.lr, res.hr, "mtf")
    maps = star_maps(lr, hr, SCALE, 3.0)
    vec, kind = stretch_vector(st)
    return {
        "res": res,
        "hr": hr,
        "stretch": st,
        "maps": maps,
        "vec": torch.from_numpy(vec[None]),
        "kind": torch.tensor([kind]),
    }


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]


def _rings(field, sign: float) -> np.ndarray:
    """The target with rings (Gaussian annuli) of amplitude 0.08 around the 8 brightest
    catalogued stars, at 1.5 FWHM from their centres: darker for ``sign < 0``.

    The rings are placed from the simulator's catalogue, not from the star maps.
    """
    hr = field["hr"]
    cat = field["res"].catalog
    order = np.argsort(np.asarray(cat["flux"]))[::-1][:8]
    yy, xx = np.mgrid[: hr.shape[1], : hr.shape[2]].astype(np.float64)
    ring = np.zeros(hr.shape[1:])
    radius, width = 1.5 * 2.2 * SCALE, 2.0
    for i in order:
        cx = (float(cat["x"][i]) + 0.5) * SCALE - 0.5
        cy = (float(cat["y"][i]) + 0.5) * SCALE - 0.5
        r = np.hypot(xx - cx, yy - cy)
        ring = np.maximum(ring, np.exp(-0.5 * ((r - radius) / width) ** 2))
    return np.clip(hr + sign * 0.08 * ring[None], 0.0, 1.0).astype(np.float32)


def test_star_maps_find_the_bright_stars(field):
    maps, cat = field["maps"], field["res"].catalog
    assert maps.shape == (2,) + field["hr"].shape[1:]
    bright = np.argsort(np.asarray(cat["flux"]))[::-1][:8]
    for i in bright:  # every bright star's centre lies inside a footprint
        y = int(round((float(cat["y"][i]) + 0.5) * SCALE - 0.5))
        x = int(round((float(cat["x"][i]) + 0.5) * SCALE - 0.5))
        assert maps[0, y, x] == 0 and maps[1, y, x] > 0
    assert (maps[0] == 0).mean() < 0.3  # footprints are stars, not the sky


def test_star_loss_penalises_dark_rings_more_than_noise_of_the_same_energy(field):
    """(a) The pixel L1 ranks spread-out noise *above* rings of the same L2 energy (spread
    perturbations have the larger L1): it cannot tell a star shadow from noise. The star
    loss must rank them the other way, and ignore bright rings of the same shape."""
    hr = field["hr"]
    dark = _rings(field, -1.0)
    bright = _rings(field, +1.0)
    energy = float(np.sum((dark - hr) ** 2))
    noise = np.random.default_rng(0).standard_normal(hr.shape)
    noisy = hr + noise * np.sqrt(energy / np.sum(noise**2))
    assert np.sum((noisy - hr) ** 2) == pytest.approx(energy)
    noisy = noisy.astype(np.float32)  # not clipped: the energy stays exactly equal

    loss = StarLoss(ring=3.0, radius=2.0, ring_weight=1.0, flux_weight=0.1)
    maps = _t(field["maps"])

    def star(pred: np.ndarray) -> float:
        total, _ = loss(_t(pred), _t(hr), maps, field["vec"], field["kind"])
        return float(total)

    def ring(pred: np.ndarray) -> float:
        return float(ring_term(_t(pred), _t(hr), maps[:, :1], 3.0))

    l1 = {k: float(np.abs(v - hr).mean()) for k, v in {"dark": dark, "noise": noisy}.items()}
    assert l1["noise"] > 2 * l1["dark"]  # the pixel loss prefers the rings
    assert star(hr) == 0.0
    assert star(dark) > 3 * star(noisy) > 0
    assert ring(dark) > ring(noisy)
    assert ring(bright) == 0.0 < ring(dark)


def _dim_stars(field, factor: float) -> np.ndarray:
    """The target with the linear flux above the (flat, known) sky scaled by ``factor``
    inside the flux regions (footprints grown by 2 LR pixels)."""
    st, hr, maps = field["stretch"], field["hr"], field["maps"]
    lin = st.inverse(hr, dtype=np.float64)
    region = maps[0] <= 2.0
    out = np.where(region[None], SKY + factor * (lin - SKY), lin)
    return st.forward(out)


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.98])
def test_flux_term_measures_flux_changes_around_stars(field, factor):
    """(b) A 10 % (or 2 %) flux change of every star reads as 0.1 (0.02)."""
    hr, maps = field["hr"], _t(field["maps"])
    pred = _dim_stars(field, factor)
    f = float(flux_term(_t(pred), _t(hr), maps, field["vec"], field["kind"], 2.0, 3.0))
    assert f == pytest.approx(abs(1.0 - factor), rel=0.1)
    same = float(flux_term(_t(hr), _t(hr), maps, field["vec"], field["kind"], 2.0, 3.0))
    assert same == 0.0


@pytest.mark.parametrize("kind", ["mtf", "asinh", "none"])
def test_torch_inverse_stretch_matches_stretch_inverse(field, kind):
    """(c) The differentiable inverse equals Stretch.inverse (clipping included)."""
    lin = field["res"].lr
    colour = np.stack([lin[0], 0.7 * lin[0] + 50.0, 1.3 * lin[0]])
    rng = np.random.default_rng(1)
    for data in (lin, colour):
        st = fit_stretch(data, kind)
        y = rng.uniform(-0.1, 1.1, (3, 20, 20))
        y[:, 0, :3] = [[0.0, 1.0, 0.5]] * 3
        if st.channels == 1:  # a mono stretch is replicated over the three channels
            y = np.repeat(y[:1], 3, axis=0)
        vec, code = stretch_vector(st)
        got = inverse_stretch(
            torch.from_numpy(y)[None], torch.from_numpy(vec[None]), torch.tensor([code])
        )[0].double()
        ref = st.inverse(y if st.channels == 3 else y[:1], dtype=np.float64)
        assert st.channels == data.shape[0]
        span = float(np.max(st.white - st.black))
        np.testing.assert_allclose(got.numpy(), np.broadcast_to(ref, y.shape), atol=2e-6 * span)


def test_inverse_stretch_mixes_kinds_with_finite_gradients(field):
    data = field["res"].lr
    vecs, codes = zip(
        *(stretch_vector(fit_stretch(data, k)) for k in ("mtf", "asinh", "none")), strict=True
    )
    y = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y.requires_grad_(True)
    out = inverse_stretch(y, torch.from_numpy(np.stack(vecs)), torch.tensor(codes))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(y.grad).all()
    assert (y.grad > 0).all()  # every inverse is increasing


@pytest.mark.parametrize("kind", ["mtf", "asinh", "none"])
def test_torch_forward_stretch_matches_stretch_forward(field, kind):
    """The differentiable forward stretch equals Stretch.forward and inverts inverse_stretch."""
    lin = field["res"].lr
    st = fit_stretch(lin, kind)
    v, code = stretch_vector(st)
    vec = torch.from_numpy(v[None])
    x = np.repeat(lin, 3, axis=0)[None].astype(np.float64)
    got = forward_stretch(torch.from_numpy(x), vec, torch.tensor([int(code)]))[0, 0].double()
    np.testing.assert_allclose(got.numpy(), st.forward(lin, dtype=np.float64)[0], atol=2e-6)
    y = torch.linspace(0.0, 1.0, 101, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    back = forward_stretch(
        inverse_stretch(y, vec, torch.tensor([int(code)])), vec, torch.tensor([int(code)])
    )
    np.testing.assert_allclose(back.numpy(), y.numpy(), atol=2e-6)


def test_block_mean_term_sees_a_linear_sky_shift_that_the_pixel_loss_cannot(field):
    """Noise that averages to zero in the stretched domain moves the linear sky (the
    stretch is concave there): the pixel loss cannot tell it from a true sky shift of the
    same size per pixel, the block-mean term does and is 0 only for equal block means."""
    hr = field["hr"]
    vec, kind = field["vec"], field["kind"]
    t = _t(hr)
    assert float(block_mean_term(t, t, vec, kind, 8)) == 0.0
    # the same pixels, shuffled inside each 8x8 block: block means unchanged
    n, c, h, w = t.shape
    blocks = (
        t.reshape(n, c, h // 8, 8, w // 8, 8)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h // 8, w // 8, 64)
    )
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = (
        blocks[..., perm]
        .reshape(n, c, h // 8, w // 8, 8, 8)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h, w)
    )
    assert float(torch.nn.functional.l1_loss(shuffled, t)) > 1e-3
    assert float(block_mean_term(shuffled, t, vec, kind, 8)) < 1e-6
    # +-d in a checkerboard (mean 0 in the stretched domain) against a uniform -d shift
    d = 0.02
    yy, xx = np.mgrid[:h, :w]
    checker = torch.from_numpy(np.where((yy + xx) % 2 == 0, d, -d).astype(np.float32))
    noisy = (t + checker).clamp(0, 1)
    shifted = (t - d).clamp(0, 1)
    l1 = torch.nn.functional.l1_loss
    assert float(l1(noisy, t)) == pytest.approx(float(l1(shifted, t)), rel=0.05)
    shift_term = float(block_mean_term(shifted, t, vec, kind, 8))
    noise_term = float(block_mean_term(noisy, t, vec, kind, 8))
    assert shift_term == pytest.approx(d, rel=0.15)  # stretched units, like the pixel loss
    assert 0 < noise_term < 0.5 * shift_term
    x = shifted.clone().requires_grad_(True)
    block_mean_term(x, t, vec, kind, 8).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


TINY = """
[model]
num_feat = 8
num_conv = 2

[data]
data_dir = ""
data_env = "ASTROSLEUTH_TEST_NO_SUCH_VAR"
hr_crop = 64
region_lr = 32
bank_size = 3
refresh_per_step = 0.5

[train]
seed = 5
steps = 6
batch_size = 2
warmup = 2
threads = 1

[val]
every = 100
sim_fields = 1
sim_colour = 0
sim_shape = [32, 32]
real = false

[output]
checkpoint_every = 3
log_every = 2
"""

ALL_ON = """
[losses]
star = 1.0
block_mean = 0.5
perceptual = 0.2
adversarial = 0.05
perceptual_pretrain_steps = 4
perceptual_widths = [4, 8, 8]
disc_width = 8
gan_start = 2
"""


def _cfg(tmp_path: Path, name: str, extra: str = "") -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY + extra)
    cfg = load_config(path)
    cfg.output.out_dir = (tmp_path / name).as_posix()
    return cfg


def _quiet(_: str) -> None:
    pass


def test_star_maps_follow_the_crops_and_leave_batches_unchanged(tmp_path):
    """Star maps are cropped/flipped/rotated exactly like the HR target, and making them
    draws no random numbers (batches are those of a run without the star loss)."""
    on = PairBank(_cfg(tmp_path, "on", "[losses]\nstar = 1.0\n"), [])
    off = PairBank(_cfg(tmp_path, "off"), [])
    b_on, b_off = on.full_batch(4), off.full_batch(4)
    np.testing.assert_array_equal(b_on.lr, b_off.lr)
    np.testing.assert_array_equal(b_on.hr, b_off.hr)
    assert b_off.stars is None and b_on.stars.shape == (2, 2, 64, 64)
    for item in on.items:  # a recognisable "map": two planes of the HR target itself
        item.stars = item.hr[:2].copy()
    b = on.sample(np.random.default_rng(9), 6)
    np.testing.assert_array_equal(b.stars, b.hr[:, :2])
    assert b.stretch.shape == (6, 3, 3) and b.stretch_kind.tolist() == [1] * 6


def test_all_losses_train_and_resume_exactly(tmp_path):
    """(d) Star + perceptual + adversarial: finite losses, logged terms, exact resume."""
    from astrosleuth_astro.train.loop import train

    full = train(_cfg(tmp_path, "full", ALL_ON), log=_quiet, export=False)
    assert full["step"] == 6 and all(np.isfinite(full["history"]))
    log = (Path(full["out_dir"]) / "train_log.csv").read_text().splitlines()
    assert log[0].endswith(
        "loss_pixel,loss_star_ring,loss_star_flux,loss_block_mean,loss_perceptual,loss_adv,loss_d"
    )
    first = log[1].split(",")
    assert first[-2:] == ["nan", "nan"]  # no GAN before gan_start
    assert all(np.isfinite(float(v)) for v in log[-1].split(","))

    cfg = _cfg(tmp_path, "split", ALL_ON)
    part = train(cfg, stop_after=3, log=_quiet, export=False)
    assert part["step"] == 3
    rest = train(cfg, resume=True, log=_quiet, export=False)
    assert rest["history"] == full["history"]  # bit-identical losses
    a = torch.load(Path(full["out_dir"]) / "last.pt", weights_only=False)
    b = torch.load(Path(rest["out_dir"]) / "last.pt", weights_only=False)
    for key in ("ema", "model"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for key in ("disc", "feature_net"):
        for k in a["objective"][key]:
            assert torch.equal(a["objective"][key][k], b["objective"][key][k]), (key, k)


def test_default_losses_add_no_columns_and_no_state(tmp_path):
    from astrosleuth_astro.train.loop import train

    cfg = _cfg(tmp_path, "plain")
    cfg.train.steps = 2
    res = train(cfg, log=_quiet, export=False)
    header = (Path(res["out_dir"]) / "train_log.csv").read_text().splitlines()[0]
    assert header == "step,loss,grad_norm,lr,steps_per_s,elapsed_s"
    assert "objective" not in torch.load(Path(res["out_dir"]) / "last.pt", weights_only=False)


def test_perceptual_pretraining_learns_and_round_trips(tmp_path):
    """(e) The feature net's own loss falls; a saved net loads with the same features."""
    from torch.nn import functional as F

    from astrosleuth_astro.train.perceptual import (
        PerceptualLoss,
        load_feature_net,
        pretrain_feature_net,
        save_feature_net,
    )

    cfg = _cfg(tmp_path, "perc", "[losses]\nperceptual = 1.0\nperceptual_widths = [8, 8, 8]\n")
    cfg.train.batch_size = 4
    bank = PairBank(cfg, [])
    net, hist = pretrain_feature_net(cfg, bank, steps=30)
    # The same crops, restored by bicubic upsampling alone (the net starts as the identity).
    base = []
    for k in range(30):
        b = bank.sample(np.random.default_rng([cfg.train.seed, 4, k]), 4)
        up = F.interpolate(torch.from_numpy(b.lr), scale_factor=4, mode="bicubic").clamp(0, 1)
        base.append(float(F.l1_loss(up, torch.from_numpy(b.hr))))
    assert len(hist) == 30 and hist[0] == pytest.approx(base[0], rel=1e-4)
    assert np.mean(hist[-10:]) < np.mean(base[-10:])
    path = save_feature_net(net, tmp_path / "feat.safetensors")
    again = load_feature_net(path)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for fa, fb in zip(net.features(x), again.features(x), strict=True):
        assert torch.equal(fa, fb)
    loss = PerceptualLoss(again, [1, 3])
    y = x.clone().requires_grad_(True)
    assert float(loss(x, x)) == 0.0
    val = loss(y + 0.05 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), x)
    val.backward()
    assert float(val.detach()) > 0 and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in again.parameters())


def test_discriminator_losses_separate_real_from_fake():
    from astrosleuth_astro.train.discriminator import PatchDiscriminator, d_loss, g_loss

    d = PatchDiscriminator(8)
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 14, 14)
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    for kind in ("hinge", "bce"):
        assert float(d_loss(real, fake, kind)) < float(d_loss(fake, real, kind))
        assert float(g_loss(real, kind)) < float(g_loss(fake, kind))


def test_losses_config_errors():
    with pytest.raises(InputError, match="unknown key 'stars'"):
        from_dict({"losses": {"stars": 1.0}})
    with pytest.raises(InputError, match="star must be >= 0"):
        from_dict({"losses": {"star": -1.0}})
    with pytest.raises(InputError, match="gan_loss"):
        from_dict({"losses": {"gan_loss": "wgan"}})
    with pytest.raises(InputError, match="perceptual_layers"):
        from_dict({"losses": {"perceptual_layers": [4]}})
    with pytest.raises(InputError, match="block_mean must be >= 0"):
        from_dict({"losses": {"block_mean": -0.1}})
    with pytest.raises(InputError, match="block_mean_size must be >= 1"):
        from_dict({"losses": {"block_mean_size": 0}})
    with pytest.raises(InputError, match="at least one weight"):
        from_dict({"losses": {"pixel": 0.0}})
    cfg = from_dict({"losses": {"star": 0.5}})
    assert cfg.losses.star == 0.5 and cfg.losses.pixel == 1.0 and cfg.to_dict()["losses"]
