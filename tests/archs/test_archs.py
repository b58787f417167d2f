"""Architectures: upstream parameter layout, forward behaviour and state-dict detection.

The expected names, shapes and counts below are written out from the upstream AstroSleuth
layout (``modules/realesr.py``, ``modules/fast.py``, ``modules/next.py``), not derived from
our own modules, so any drift from the release files' layout fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from astrosleuth_astro.archs import (  # noqa: E402
    ARCH_NAMES,
    build_arch,
    detect_arch,
    unwrap_state_dict,
)
from astrosleuth_astro.archs.next_options import (  # noqa: E402
    DEFAULT_COND_STRENGTH,
    VECTORS_ENV,
    VECTORS_FILENAME,
    NextOptions,
    condition_vectors,
    conditioning_requested,
    next_options,
)
from astrosleuth_astro.errors import InputError, ModelError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convs on a shared 2-core box: extra OpenMP threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_vectors(seed: int = 7) -> np.ndarray:
    """Synthetic stand-ins for NEXT's conditioning vectors (not upstream's values)."""
    return np.random.default_rng(seed).normal(0.0, 0.7, (4, 512)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vectors") / "vectors.npy"
    np.save(path, random_vectors())
    return path


@pytest.fixture(autouse=True)
def _vectors(vectors_file, tmp_path, monkeypatch):
    """Every test sees the synthetic vectors through the env var and an empty cache."""
    monkeypatch.setenv("ASTROSLEUTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(VECTORS_ENV, str(vectors_file))


@pytest.fixture
def no_vectors(monkeypatch):
    """Neither the env var nor a cached file: conditioning is unavailable."""
    monkeypatch.delenv(VECTORS_ENV, raising=False)


# --- the upstream layout, written out -------------------------------------------------------
def rrdb_trunk_keys(num_block: int = 6, with_next: bool = False) -> list[str]:
    """Upstream key order: conv_first, body.i.[block, l1,] rdb1..3.conv1..5, tail convs."""
    keys = ["conv_first.weight", "conv_first.bias"]
    for i in range(num_block):
        if with_next:
            for name in ("block.dwconv", "block.norm", "block.pwconv1"):
                keys += [f"body.{i}.{name}.weight", f"body.{i}.{name}.bias"]
            keys += [f"body.{i}.block.grn.gamma", f"body.{i}.block.grn.beta"]
            keys += [f"body.{i}.block.pwconv2.weight", f"body.{i}.block.pwconv2.bias"]
            keys += [f"body.{i}.l1.weight", f"body.{i}.l1.bias"]
        for r in (1, 2, 3):
            for c in range(1, 6):
                keys += [f"body.{i}.rdb{r}.conv{c}.weight", f"body.{i}.rdb{r}.conv{c}.bias"]
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        keys += [f"{name}.weight", f"{name}.bias"]
    if with_next:
        keys += ["l1.weight", "l1.bias"]
    return keys


def fast_keys(num_conv: int = 32) -> list[str]:
    keys = []
    for j in range(num_conv + 1):
        keys += [f"body.{2 * j}.weight", f"body.{2 * j}.bias", f"body.{2 * j + 1}.weight"]
    return keys + ["conv_up1.weight", "conv_up1.bias", "conv_up2.weight", "conv_up2.bias"]


EXPECTED = {
    # arch: (keys, parameter count, {key: shape})
    "rrdb": (
        rrdb_trunk_keys(),
        4_467_779,
        {
            "conv_first.weight": (64, 3, 3, 3),
            "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
            "body.5.rdb3.conv2.weight": (32, 96, 3, 3),
            "body.2.rdb2.conv4.weight": (32, 160, 3, 3),
            "body.5.rdb3.conv5.weight": (64, 192, 3, 3),
            "conv_up2.weight": (64, 64, 3, 3),
            "conv_last.weight": (3, 64, 3, 3),
            "conv_last.bias": (3,),
        },
    ),
    "fast": (
        fast_keys(),
        1_204_931,
        {
            "body.0.weight": (64, 3, 3, 3),
            "body.1.weight": (64,),
            "body.64.weight": (64, 64, 3, 3),
            "body.65.weight": (64,),
            "conv_up1.weight": (32, 64, 3, 3),
            "conv_up2.weight": (3, 32, 3, 3),
        },
    ),
    "next": (
        rrdb_trunk_keys(with_next=True),
        4_747_139,
        {
            "body.0.block.dwconv.weight": (64, 1, 7, 7),
            "body.0.block.norm.weight": (64,),
            "body.0.block.pwconv1.weight": (256, 64),
            "body.0.block.grn.gamma": (1, 1, 1, 256),
            "body.5.block.grn.beta": (1, 1, 1, 256),
            "body.3.block.pwconv2.weight": (64, 256),
            "body.4.l1.weight": (64, 64),
            "l1.weight": (64, 512),
            "conv_first.weight": (64, 3, 3, 3),
        },
    ),
}


@pytest.mark.parametrize("arch", ["rrdb", "fast", "next"])
def test_upstream_parameter_layout(arch):
    keys, count, shapes = EXPECTED[arch]
    net = build_arch(arch)
    sd = net.state_dict()
    assert list(sd) == keys  # same names, same order as upstream
    assert sum(p.numel() for p in net.parameters()) == count
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key


def test_next_condition_vectors_are_not_in_the_state_dict():
    net = build_arch("next")
    assert "cond_average" not in net.state_dict()
    assert dict(net.named_buffers())["cond_directions"].shape == (3, 512)


def test_condition_vectors_come_from_the_env_file(vectors_file):
    vec = condition_vectors()
    assert vec.shape == (4, 512) and vec.dtype == np.float32
    np.testing.assert_array_equal(vec, random_vectors())
    assert not vec.flags.writeable
    net = build_arch("next", num_block=1, num_feat=8, num_grow_ch=4)
    assert net.cond_vectors_available
    np.testing.assert_array_equal(net.cond_average.numpy(), vec[0])
    np.testing.assert_array_equal(net.cond_directions.numpy(), vec[1:])


def test_condition_vectors_from_the_cache(no_vectors, tmp_path):
    assert condition_vectors(required=False) is None
    with pytest.raises(ModelError, match="models download AstroSleuthNEXT") as err:
        condition_vectors()
    assert "\n" not in str(err.value)
    (tmp_path / "cache").mkdir()
    np.save(tmp_path / "cache" / VECTORS_FILENAME, random_vectors(3))
    np.testing.assert_array_equal(condition_vectors(), random_vectors(3))
    np.save(tmp_path / "cache" / VECTORS_FILENAME, np.zeros((4, 511), np.float32))
    with pytest.raises(ModelError, match=r"shape \(4, 511\).*--force"):
        condition_vectors(required=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (np.zeros((3, 512), np.float32), "shape"),
        (np.full((4, 512), np.nan, np.float32), "NaN"),
        (b"not a numpy file", "not a readable .npy"),
    ],
)
def test_bad_vectors_file_named_by_env(tmp_path, monkeypatch, content, message):
    path = tmp_path / "v.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    monkeypatch.setenv(VECTORS_ENV, str(path))
    with pytest.raises(ModelError, match=message) as err:
        condition_vectors(required=False)
    assert str(path) in str(err.value)
    # the network still builds and runs unconditioned; conditioning reports the file
    net = build_arch("next", num_block=1, num_feat=8, num_grow_ch=4).eval()
    assert not net.cond_vectors_available
    with torch.no_grad():
        assert net(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(ModelError, match=message):
        net.set_options(cond_strength=1.0)


# --- forward behaviour --------------------------------------------------------------------------
def _identity_conv(conv, n: int = 3) -> None:
    """Zero a conv, then pass its first ``n`` input channels straight through."""
    conv.weight.zero_()
    conv.bias.zero_()
    k = conv.weight.shape[-1] // 2
    for c in range(n):
        conv.weight[c, c, k, k] = 1.0


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("rrdb", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4}),
        ("fast", {"num_feat": 8, "num_conv": 1}),
        ("next", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4}),
    ],
)
@pytest.mark.parametrize("hw", [(5, 7), (9, 4), (1, 1)])
def test_output_shape_and_odd_sizes(arch, kwargs, hw):
    net = build_arch(arch, **kwargs).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *hw))
    assert out.shape == (2, 3, 4 * hw[0], 4 * hw[1])
    assert out.dtype == torch.float32


def _up(x, mode, factor=2):
    if mode == "nearest":
        return F.interpolate(x, scale_factor=factor, mode="nearest")
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


@torch.no_grad()
def test_rrdb_upsamples_nearest():
    net = build_arch("rrdb", num_block=1, num_feat=8, num_grow_ch=4).eval()
    for conv in (net.conv_first, net.conv_up1, net.conv_up2, net.conv_hr, net.conv_last):
        _identity_conv(conv)
    net.conv_body.weight.zero_()  # the trunk then adds exactly zero
    net.conv_body.bias.zero_()
    x = torch.rand(1, 3, 5, 6)
    out = net(x)
    torch.testing.assert_close(out, _up(x, "nearest", 4), rtol=0, atol=1e-6)
    assert not torch.allclose(out, _up(_up(x, "bilinear"), "bilinear"), atol=1e-3)


@torch.no_grad()
def test_fast_upsamples_bilinear_align_corners_false():
    net = build_arch("fast", num_feat=8, num_conv=1).eval()
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    for conv in (*convs, net.conv_up1, net.conv_up2):
        conv.weight.zero_()
        conv.bias.zero_()
    x = torch.rand(1, 3, 5, 6)
    # all convs zero: only the bilinear x4 skip of the input is left
    torch.testing.assert_close(net(x), _up(x, "bilinear", 4), rtol=0, atol=1e-6)
    aligned = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=True)
    assert not torch.allclose(net(x), aligned, atol=1e-3)
    # identity convs and PReLU slope 1: body passes x, each up stage is bilinear x2
    for conv in (*convs, net.conv_up1, net.conv_up2):
        _identity_conv(conv)
    for act in net.body:
        if isinstance(act, torch.nn.PReLU):
            act.weight.fill_(1.0)
    expected = _up(_up(x, "bilinear"), "bilinear") + _up(x, "bilinear", 4)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_next_upsamples_bilinear_align_corners_false():
    net = build_arch("next", num_block=1, num_feat=8, num_grow_ch=4).eval()
    for conv in (net.conv_first, net.conv_up1, net.conv_up2, net.conv_hr, net.conv_last):
        _identity_conv(conv)
    net.conv_body.weight.zero_()
    net.conv_body.bias.zero_()
    x = torch.rand(1, 3, 5, 6)
    out = net(x)
    torch.testing.assert_close(out, _up(_up(x, "bilinear"), "bilinear"), rtol=0, atol=1e-6)
    assert not torch.allclose(out, _up(x, "nearest", 4), atol=1e-3)


def _random_next(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    net = build_arch("next", num_block=2, num_feat=8, num_grow_ch=4, **kwargs).eval()
    with torch.no_grad():  # GRN/LayerNorm start at zero/identity: perturb so they matter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


@torch.no_grad()
def test_next_without_conditioning_ignores_the_convnext_blocks():
    net = _random_next()
    x = torch.rand(1, 3, 6, 5)
    ref = net(x)
    for block in net.body:
        for p in (*block.block.parameters(), *block.l1.parameters()):
            p.normal_()
    net.l1.weight.normal_()
    torch.testing.assert_close(net(x), ref, rtol=0, atol=0)
    net.set_options(cond_strength=1.0)
    assert not torch.allclose(net(x), ref, atol=1e-4)


@torch.no_grad()
def test_next_conditioning_follows_the_strengths():
    net = _random_next()
    x = torch.rand(1, 3, 6, 5)
    outs = {}
    for name in ("star_strength", "detail_strength", "spikes_strength"):
        net.options = NextOptions()
        outs[name] = net.set_options(cond_strength=2.0, **{name: 1.0})(x)
    net.options = NextOptions()
    neutral = net.set_options(cond_strength=2.0)(x)
    for out in outs.values():
        assert not torch.allclose(out, neutral, atol=1e-5)
    assert not torch.allclose(outs["star_strength"], outs["detail_strength"], atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cond_strength": 0.7},
        {
            "star_strength": -0.4,
            "detail_strength": 0.9,
            "spikes_strength": 0.2,
            "cond_strength": 3.0,
        },
        {"color_matching": True},
        {"spikes_strength": 1.0, "color_matching": True},
    ],
)
def test_next_graph_forward_equals_forward(options):
    net = _random_next().set_options(**options)
    x = torch.rand(2, 3, 6, 5)
    feeds = {k: torch.from_numpy(v) for k, v in net.options.onnx_feeds().items()}
    out = net.forward_graph(x, feeds["strengths"], feeds["cond_strength"], feeds["color_match"])
    torch.testing.assert_close(out, net(x), rtol=0, atol=1e-6)


@torch.no_grad()
def test_next_chroma_matching_takes_chroma_from_bilinear_input():
    from astrosleuth_astro.archs.next import rgb_to_ycbcr

    net = build_arch("next", num_block=1, num_feat=8, num_grow_ch=4).eval()
    for conv in (net.conv_first, net.conv_up1, net.conv_up2, net.conv_hr, net.conv_last):
        _identity_conv(conv)
    net.conv_body.weight.zero_()
    net.conv_body.bias.zero_()
    # rotate the colour channels: the raw output has the input's detail but other chroma
    net.conv_last.weight.copy_(net.conv_last.weight[[1, 2, 0]])
    x = torch.rand(2, 3, 6, 5) * 0.5 + 0.25
    raw = net(x)
    matched = net.set_options(color_matching=True)(x)
    assert matched.shape == raw.shape == (2, 3, 24, 20)
    assert matched.min() >= 0 and matched.max() <= 1
    _, cb_in, cr_in = rgb_to_ycbcr(x)
    chroma_up = _up(torch.stack([cb_in, cr_in], 1), "bilinear", 4)
    y_raw, cb_raw, _ = rgb_to_ycbcr(raw)
    y, cb, cr = rgb_to_ycbcr(matched)
    inside = ((matched > 0) & (matched < 1)).all(dim=1)  # unclipped pixels
    assert inside.float().mean() > 0.9
    assert (cb_raw - chroma_up[:, 0]).abs().max() > 0.05  # chroma really changed
    # the YCbCr coefficients are rounded upstream, so the round trip is close, not exact
    torch.testing.assert_close(cb[inside], chroma_up[:, 0][inside], rtol=0, atol=3e-3)
    torch.testing.assert_close(cr[inside], chroma_up[:, 1][inside], rtol=0, atol=3e-3)
    torch.testing.assert_close(y[inside], y_raw[inside], rtol=0, atol=3e-3)


@torch.no_grad()
def test_next_without_vectors_runs_unconditioned(no_vectors, vectors_file, monkeypatch):
    net = _random_next()
    assert not net.cond_vectors_available
    assert not net.cond_average.any() and not net.cond_directions.any()  # zero placeholders
    x = torch.rand(2, 3, 6, 5)
    out = net(x)
    color = net.set_options(color_matching=True)(x)
    zeros = torch.zeros(3)
    off = torch.zeros(1)
    # the traced graph, zeros in place of the vectors and cond_strength 0: the same output
    torch.testing.assert_close(net.forward_graph(x, zeros, off, off), out, rtol=0, atol=0)
    torch.testing.assert_close(
        net.forward_graph(x, zeros, off, torch.ones(1)), color, rtol=0, atol=0
    )
    # upstream's use_cond=False adds exact zeros before every dense block
    ref = net.conv_first(x)
    body = ref
    for block in net.body:
        y = block.rdb1(body + torch.zeros_like(body))
        y = block.rdb2(y + torch.zeros_like(y))
        y = block.rdb3(y + torch.zeros_like(y))
        body = y * 0.2 + body
    feat = ref + net.conv_body(body)
    feat = net.lrelu(net.conv_up1(F.interpolate(feat, scale_factor=2, mode="bilinear")))
    feat = net.lrelu(net.conv_up2(F.interpolate(feat, scale_factor=2, mode="bilinear")))
    torch.testing.assert_close(out, net.conv_last(net.lrelu(net.conv_hr(feat))), rtol=0, atol=0)
    # the same weights with the vectors loaded give the same unconditioned output
    monkeypatch.setenv(VECTORS_ENV, str(vectors_file))
    with_vectors = _random_next()
    assert with_vectors.cond_vectors_available
    torch.testing.assert_close(with_vectors(x), out, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize(
    "options",
    [
        {"cond_strength": 1.0},
        {"star_strength": 0.5},  # switches conditioning on at the default strength
        {"detail_strength": -0.2, "cond_strength": 0.0},  # a style strength is a request too
    ],
)
def test_next_conditioning_without_vectors_raises(no_vectors, options):
    net = _random_next()
    with pytest.raises(ModelError, match="models download AstroSleuthNEXT") as err:
        net.set_options(**options)
    assert "\n" not in str(err.value) and "conditioning vectors" in str(err.value)
    assert net.options == NextOptions()  # unchanged
    net.options = next_options(**options)  # set behind set_options' back: forward refuses
    with pytest.raises(ModelError, match="conditioning vectors"):
        net(torch.rand(1, 3, 4, 4))


@torch.no_grad()
def test_next_picks_up_vectors_provided_later(no_vectors, vectors_file, monkeypatch):
    net = _random_next()
    assert not net.cond_vectors_available
    monkeypatch.setenv(VECTORS_ENV, str(vectors_file))
    out = net.set_options(cond_strength=1.0, spikes_strength=0.3)(torch.rand(1, 3, 5, 4))
    assert net.cond_vectors_available and torch.isfinite(out).all()
    np.testing.assert_array_equal(net.cond_average.numpy(), random_vectors()[0])


def test_conditioning_requested():
    assert not conditioning_requested(NextOptions())
    assert not conditioning_requested(NextOptions(color_matching=True))
    assert conditioning_requested(NextOptions(cond_strength=0.1))
    assert conditioning_requested(NextOptions(spikes_strength=-0.1))


def test_next_options_validation():
    assert next_options(star_strength=0.3).cond_strength == DEFAULT_COND_STRENGTH
    assert next_options(star_strength=0.3, cond_strength=0).cond_strength == 0.0
    assert next_options(cond_strength=None).cond_strength == 0.0
    opts = next_options(next_options(cond_strength=2), detail_strength=-1)
    assert opts.cond_strength == 2 and opts.strengths == (0.0, -1.0, 0.0)
    with pytest.raises(InputError, match="star_strength"):
        next_options(star_strength=1.5)
    with pytest.raises(InputError, match="cond_strength"):
        next_options(cond_strength=-1)
    with pytest.raises(InputError, match="cond_strength"):
        next_options(cond_strength=float("nan"))
    with pytest.raises(InputError, match="unknown model option"):
        next_options(stars=1)
    with pytest.raises(InputError, match="color_matching"):
        next_options(color_matching="yes")


# --- detection -----------------------------------------------------------------------------------
SMALL = {
    "rrdb": {"num_block": 2, "num_feat": 16, "num_grow_ch": 8},
    "fast": {"num_feat": 16, "num_conv": 3, "num_up_feat": 12},
    "next": {"num_block": 2, "num_feat": 16, "num_grow_ch": 8},
}


@pytest.mark.parametrize("arch", ["rrdb", "fast", "next"])
def test_detect_full_size(arch):
    name, kwargs = detect_arch(build_arch(arch).state_dict())
    assert name == arch
    assert build_arch(name, **kwargs).state_dict().keys() == build_arch(arch).state_dict().keys()


@pytest.mark.parametrize("arch", ["rrdb", "fast", "next"])
def test_detect_variants_round_trip(arch):
    sd = build_arch(arch, **SMALL[arch]).state_dict()
    name, kwargs = detect_arch(sd)
    assert name == arch
    for key, value in SMALL[arch].items():
        assert kwargs[key] == value
    build_arch(name, **kwargs).load_state_dict(sd, strict=True)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()},
        lambda sd: {"params_ema": sd},
        lambda sd: {"params": {"x": torch.zeros(1)}, "params_ema": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
    ],
    ids=["module", "compile+module", "params_ema", "ema-preferred", "state_dict"],
)
def test_detect_wrapped_and_prefixed(wrap):
    sd = build_arch("fast", **SMALL["fast"]).state_dict()
    assert detect_arch(wrap(sd))[0] == "fast"
    assert list(unwrap_state_dict(wrap(sd))) == list(sd)


def test_detect_unknown_layouts():
    with pytest.raises(ModelError, match="unknown network layout"):
        detect_arch({"encoder.weight": torch.zeros(3, 3)})
    with pytest.raises(ModelError, match="empty"):
        detect_arch({})
    with pytest.raises(ModelError, match="non-tensor"):
        detect_arch({"conv_first.weight": torch.zeros(1), "step": 5})
    with pytest.raises(ModelError, match="not a state dict"):
        detect_arch([1, 2])
    sd = build_arch("rrdb", **SMALL["rrdb"]).state_dict()
    sd["conv_first.weight"] = torch.zeros(16, 12, 3, 3)  # Real-ESRGAN x2 layout
    with pytest.raises(ModelError, match="x4"):
        detect_arch(sd)


def test_build_arch_errors():
    with pytest.raises(ModelError, match="unknown architecture"):
        build_arch("swinir")
    with pytest.raises(ModelError, match="cannot build"):
        build_arch("rrdb", upscale=2)
    assert set(ARCH_NAMES) == {"rrdb", "fast", "next"}


# --------------------------------------------------------------------------- folding


@pytest.mark.parametrize(
    "kwargs", [{}, {"num_feat": 24, "num_conv": 3, "num_up_feat": 7}, {"num_in_ch": 1}]
)
def test_folded_fast_equals_fast_away_from_the_border(kwargs):
    from astrosleuth_astro.archs.compact import CompactSR, FoldedCompactSR, fold_upsampling

    torch.manual_seed(0)
    kw = {"num_feat": 16, "num_conv": 2, **kwargs}
    net = CompactSR(**kw).eval()
    # Trained-like weights: random biases and slopes, so no term is trivially zero.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folded = fold_upsampling(net)
    assert isinstance(folded, FoldedCompactSR)
    assert folded.body is net.body  # shared, not copied
    x = torch.rand(2, net.body[0].in_channels, 19, 23)
    with torch.inference_mode():
        a, b = net(x), folded(x)
    assert a.shape == b.shape == (2, 3, 76, 92)
    inner = (..., slice(6, -6), slice(6, -6))
    assert torch.allclose(a[inner], b[inner], atol=2e-6, rtol=0)
    # Only the 6-px border ring (1.5 LR px) differs.
    assert (a - b).abs().max() > 1e-4


def test_fold_leaves_other_architectures_alone():
    from astrosleuth_astro.archs.compact import fold_upsampling
    from astrosleuth_astro.archs.rrdb import RRDBNet

    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    assert fold_upsampling(net) is net
