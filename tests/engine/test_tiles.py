"""Tests for the tiled inference engine (astrosleuth_astro.engine.tiles)."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from astrosleuth_astro.engine import tiles
from astrosleuth_astro.engine.tiles import (
    DEFAULT_PAD,
    choose_tile,
    iter_tile_rows,
    reflect_index,
    reflect_pad,
    upscale_tiled,
    upscale_whole,
)
from astrosleuth_astro.errors import InputError, ModelError

SIZES = [(1, 1), (1, 7), (5, 3), (37, 61), (130, 97)]


# --------------------------------------------------------------------------- helpers


def nearest4(x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour x4: an exactly local "network" (receptive field 0)."""
    return np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)


def box_nearest4(x: np.ndarray) -> np.ndarray:
    """3x3 box sum (zero padding, like a conv) then nearest x4: receptive field 1 px."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = x.shape[2:]
    s = sum(p[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return nearest4(s / 9.0)


def star_field(h: int, w: int, seed: int = 0, stars: list[tuple[float, float]] = ()) -> np.ndarray:
    """Sky plus noise plus bright Gaussian stars, (3, h, w) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = 0.1 + 0.02 * rng.standard_normal((3, h, w))
    yy, xx = np.mgrid[:h, :w]
    centres = list(stars) + [
        (rng.uniform(0, h), rng.uniform(0, w)) for _ in range(max(2, h * w // 400))
    ]
    for y, x in centres:
        sigma, peak = rng.uniform(0.8, 2.0), rng.uniform(0.3, 0.9)
        img += peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _fast_net(num_feat: int, num_conv: int, seed: int = 0):
    """Random FAST-like net as a numpy backend.

    Variance-preserving (Kaiming, PReLU slope 0.25) weights: with PyTorch's default init the
    signal dies out within a few layers and any pad would look good enough.
    """
    torch = pytest.importorskip("torch")
    from astrosleuth_astro.archs.compact import CompactSR

    torch.manual_seed(seed)
    model = CompactSR(num_feat=num_feat, num_conv=num_conv).eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, a=0.25, nonlinearity="leaky_relu")
            torch.nn.init.zeros_(mod.bias)

    def net(x: np.ndarray) -> np.ndarray:
        # One thread: these tensors are tiny, and with other tests running in parallel
        # (pytest -n 2) OpenMP threads spinning against each other cost 10x in time.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        finally:
            torch.set_num_threads(threads)

    return net


@pytest.fixture(scope="module")
def small_net():
    return _fast_net(num_feat=16, num_conv=4)


# The small net's receptive field is 7 px: a pad of 12 covers it and keeps the tests fast.
SMALL_PAD = 12


@pytest.fixture(scope="module")
def deep_net():
    # Same depth as FAST (33 body convs), narrow for speed: the receptive field is what
    # matters here.
    return _fast_net(num_feat=8, num_conv=32, seed=1)


def _field_with_boundary_stars(h: int, w: int, tile: int, seed: int = 0) -> np.ndarray:
    th, tw = choose_tile(h, w, tile)
    # Stars straddling a tile edge and a four-tile corner.
    stars = [(th - 0.5, tw * 0.5), (th + 0.3, tw - 0.2), (h * 0.5, 2 * tw - 0.5)]
    return star_field(h, w, seed=seed, stars=stars)


# --------------------------------------------------------------------------- exact bookkeeping


@pytest.mark.parametrize("size", SIZES)
def test_nearest_net_gives_exact_nearest_upsample(size):
    img = np.random.default_rng(1).random((3, *size), dtype=np.float32)
    expected = img.repeat(4, axis=1).repeat(4, axis=2)
    # Tiny tiles on the largest image would only cost time.
    tile_sizes = (1, 2, 3, 7, 16, 300) if img.size < 10_000 else (3, 7, 16, 300)
    for tile in tile_sizes:
        for pad, feather in ((0, 0), (1, None), (5, 2), (None, None)):
            got = upscale_tiled(img, nearest4, tile=tile, pad=pad, feather=feather, batch_size=5)
            assert got.dtype == np.float32
            assert np.array_equal(got, expected), (size, tile, pad, feather)


@pytest.mark.parametrize("size", [(1, 1), (2, 9), (37, 61)])
def test_local_net_tiled_equals_whole_exactly(size):
    # A 1-px receptive field: any pad >= 1 + feather must reproduce the whole-image
    # result bit for bit, at the borders too (reflect padding identical in both).
    img = np.random.default_rng(2).random((3, *size), dtype=np.float32)
    for tile in (1, 4, 10, 64):
        for pad, feather in ((1, 0), (3, 2), (DEFAULT_PAD, None)):
            whole = upscale_whole(img, box_nearest4, pad=pad)
            got = upscale_tiled(img, box_nearest4, tile=tile, pad=pad, feather=feather)
            assert np.array_equal(got, whole), (size, tile, pad, feather)


def test_blend_band_is_a_smooth_partition_of_unity():
    # Each tile's output is a constant (its index): the result must be 0 and 1 away from
    # the boundary and the raised-cosine ramp across the 2 * 4 * feather wide band.
    calls = []

    def const_net(x):
        out = np.empty((x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3]), np.float32)
        for k in range(x.shape[0]):
            out[k] = len(calls)
            calls.append(k)
        return out

    img = np.zeros((3, 4, 20), np.float32)
    got = upscale_tiled(img, const_net, tile=10, pad=8, feather=2, batch_size=1)
    assert len(calls) == 2
    row = got[0, 0]
    assert np.array_equal(got, np.broadcast_to(row, got.shape))
    cut, band = 4 * 10, 4 * 2
    assert np.all(row[: cut - band] == 0) and np.all(row[cut + band :] == 1)
    ramp = row[cut - band : cut + band]
    assert np.all(np.diff(ramp) > 0)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)


# --------------------------------------------------------------------------- real networks


@pytest.mark.parametrize(
    ("size", "tile_sizes"),
    [
        ((1, 1), (1, 512)),
        ((1, 7), (1, 2, 3, 512)),
        ((5, 3), (1, 2, 4, 512)),
        ((37, 61), (8, 16, 40, 512)),
        ((130, 97), (8, 16, 40, 512)),
    ],
)
def test_tiled_equals_whole_small_net(small_net, size, tile_sizes):
    img = _field_with_boundary_stars(*size, tile=16, seed=3)
    whole = upscale_whole(img, small_net, pad=SMALL_PAD)
    for tile in tile_sizes:
        got = upscale_tiled(img, small_net, tile=tile, pad=SMALL_PAD)
        assert got.shape == (3, 4 * size[0], 4 * size[1])
        assert np.abs(got - whole).max() <= 1e-3, (size, tile)


@pytest.mark.parametrize("size", [(1, 7), (37, 61), (130, 97)])
def test_tiled_equals_whole_fast_depth(deep_net, size):
    img = _field_with_boundary_stars(*size, tile=32, seed=4)
    whole = upscale_whole(img, deep_net)
    for tile in (17, 24, 32, 256):
        got = upscale_tiled(img, deep_net, tile=tile)
        err = np.abs(got - whole).max()
        assert err <= 1e-3, (size, tile, err)


def test_too_small_pad_is_detected(deep_net):
    # Guards the test above: the 33-conv net does see far beyond a small pad, so the
    # default's agreement is not an artefact of a short-sighted random net.
    img = _field_with_boundary_stars(130, 97, tile=32, seed=4)
    whole = upscale_whole(img, deep_net, pad=8)
    got = upscale_tiled(img, deep_net, tile=32, pad=8, feather=0)
    assert np.abs(got - whole).max() > 1e-3


def test_tile_larger_than_image_is_the_whole_result(small_net):
    img = star_field(21, 13, seed=5)
    calls = []

    def counted(x):
        calls.append(x.shape)
        return small_net(x)

    got = upscale_tiled(img, counted, tile=1000)
    assert calls == [(1, 3, 21 + 2 * DEFAULT_PAD, 13 + 2 * DEFAULT_PAD)]
    np.testing.assert_allclose(got, upscale_whole(img, small_net), atol=1e-6, rtol=0)


def test_batched_equals_unbatched(small_net):
    img = star_field(45, 70, seed=6)
    ref = upscale_tiled(img, small_net, tile=16, pad=SMALL_PAD, batch_size=1)
    for bs in (2, 4, 7, 100):
        got = upscale_tiled(img, small_net, tile=16, pad=SMALL_PAD, batch_size=bs)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_batches_have_one_shape_and_at_most_batch_size():
    shapes = []

    def net(x):
        shapes.append(x.shape)
        return nearest4(x)

    upscale_tiled(np.zeros((3, 50, 33), np.float32), net, tile=16, pad=5, batch_size=3)
    # 50 -> 4 tiles of 13, 33 -> 3 tiles of 11: 12 tiles in 4 calls of 3.
    assert shapes == [(3, 3, 13 + 10, 11 + 10)] * 4


def test_wrong_scale_network_raises_model_error():
    def net2(x):
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)

    with pytest.raises(ModelError, match="scale=4"):
        upscale_tiled(np.zeros((3, 8, 8), np.float32), net2, tile=4)


# --------------------------------------------------------------------------- progress, output


def test_progress_counts_up_to_total():
    seen = []
    upscale_tiled(
        np.zeros((3, 40, 25), np.float32),
        nearest4,
        tile=8,
        batch_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    total = 5 * 4
    assert [t for _, t in seen] == [total] * len(seen)
    dones = [d for d, _ in seen]
    assert dones == sorted(set(dones)) and dones[0] > 0 and dones[-1] == total
    assert len(seen) == -(-total // 4)


def test_output_into_big_endian_memmap(tmp_path, small_net):
    img = star_field(37, 61, seed=7)
    ref = upscale_tiled(img, small_net, tile=16, pad=SMALL_PAD)
    mm = np.memmap(tmp_path / "out.dat", dtype=">f4", mode="w+", shape=(3, 4 * 37, 4 * 61))
    got = upscale_tiled(img, small_net, tile=16, pad=SMALL_PAD, out=mm)
    assert got is mm
    mm.flush()
    back = np.memmap(tmp_path / "out.dat", dtype=">f4", mode="r", shape=mm.shape)
    assert np.array_equal(back.astype(np.float32), ref)


def test_big_endian_memmap_input(tmp_path):
    img = np.random.default_rng(8).random((3, 19, 23), dtype=np.float32)
    mm = np.memmap(tmp_path / "in.dat", dtype=">f4", mode="w+", shape=img.shape)
    mm[...] = img
    got = upscale_tiled(mm, box_nearest4, tile=8, pad=4)
    assert got.dtype == np.float32
    assert np.array_equal(got, upscale_tiled(img, box_nearest4, tile=8, pad=4))


class _RecordingOut:
    """Stands in for a streamed file: records which rows are written, and when."""

    def __init__(self, shape, done):
        self.shape = shape
        self.data = np.full(shape, np.nan, np.float32)
        self.writes = []
        self._done = done

    def __setitem__(self, key, value):
        _, rows, _ = key
        self.writes.append((rows.start, rows.stop, self._done[-1] if self._done else 0))
        self.data[key] = value


def test_output_streams_rows_in_order_once_each():
    h, w = 50, 30
    img = np.random.default_rng(9).random((3, h, w), dtype=np.float32)
    done = []
    out = _RecordingOut((3, 4 * h, 4 * w), done)
    upscale_tiled(
        img, nearest4, tile=10, pad=6, batch_size=2, out=out, progress=lambda d, t: done.append(d)
    )
    starts = [a for a, _, _ in out.writes]
    stops = [b for _, b, _ in out.writes]
    assert starts[0] == 0 and stops[-1] == 4 * h and starts[1:] == stops[:-1]
    assert len(out.writes) == 5  # one band per tile row
    # The first band goes out as soon as the first tile row (3 tiles) is done.
    assert out.writes[0][2] < 3 * 5
    assert np.array_equal(out.data, img.repeat(4, 1).repeat(4, 2))


@pytest.mark.parametrize("dtype", [">f4", "<f4"])
def test_in_place_assembly_equals_strip(small_net, tmp_path, dtype):
    """A float32 ``out`` (a big-endian memory map, as for FITS, or native) holds the tile
    rows as they are assembled; the result equals the strip path, which a float64 ``out``
    takes (same float32 arithmetic, then one exact cast)."""
    img = star_field(45, 37, seed=12)
    shape = (3, 4 * 45, 4 * 37)
    mapped = np.memmap(tmp_path / "out.raw", dtype=dtype, mode="w+", shape=shape)
    wide = np.empty(shape, np.float64)
    opts = dict(tile=16, pad=SMALL_PAD, batch_size=3)
    assert upscale_tiled(img, small_net, out=mapped, **opts) is mapped
    upscale_tiled(img, small_net, out=wide, **opts)
    assert np.array_equal(np.asarray(mapped, np.float32), wide.astype(np.float32))
    assert np.array_equal(np.asarray(mapped, np.float32), upscale_tiled(img, small_net, **opts))


def test_iter_tile_rows_matches_upscale_tiled(small_net):
    img = star_field(40, 30, seed=10)
    ref = upscale_tiled(img, small_net, tile=16, pad=SMALL_PAD)
    rows_iter = iter_tile_rows(img, small_net, tile=16, pad=SMALL_PAD)
    bands = [(y0, rows.copy()) for y0, rows in rows_iter]
    assert [y0 for y0, _ in bands] == sorted(y0 for y0, _ in bands)
    assert np.array_equal(np.concatenate([b for _, b in bands], axis=1), ref)


# --------------------------------------------------------------------------- helpers, errors


def test_choose_tile():
    assert choose_tile(1, 1) == (1, 1)
    assert choose_tile(300, 100) == (150, 100)
    assert choose_tile(512, 513, 256) == (256, 171)
    assert choose_tile(10, 10, (3, 20)) == (3, 10)


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_reflect_pad_matches_numpy(length):
    img = np.arange(3 * length * 2, dtype=np.float32).reshape(3, length, 2)
    for pad in (0, 1, 5, 17):
        got = reflect_pad(img, pad)
        mode = "reflect" if length > 1 else "edge"
        rows = np.pad(img, ((0, 0), (pad, pad), (0, 0)), mode=mode)
        expected = np.pad(rows, ((0, 0), (0, 0), (pad, pad)), mode="reflect")
        assert np.array_equal(got, expected)
    assert np.array_equal(reflect_index(np.array([-3, 0, 5]), 1), [0, 0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": 0},
        {"tile": -4},
        {"tile": (8, 0)},
        {"tile": 2.5},
        {"pad": -1},
        {"pad": "8"},
        {"feather": -1},
        {"batch_size": 0},
        {"scale": 0},
    ],
)
def test_bad_arguments_raise_input_error(kwargs):
    img = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(InputError):
        upscale_tiled(img, nearest4, **kwargs)
    with pytest.raises(InputError):  # at the call, not at the first next()
        iter_tile_rows(img, nearest4, **{k: v for k, v in kwargs.items() if k != "out"})


def test_bad_image_or_out_raises_input_error():
    with pytest.raises(InputError):
        upscale_tiled(np.zeros((8, 8), np.float32), nearest4)
    with pytest.raises(InputError):
        upscale_tiled(np.zeros((3, 0, 8), np.float32), nearest4)
    with pytest.raises(InputError, match="out"):
        upscale_tiled(np.zeros((3, 8, 8), np.float32), nearest4, out=np.zeros((3, 32, 31)))


def test_module_does_not_import_torch():
    tree = ast.parse(inspect.getsource(tiles))
    names = [
        alias.name
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    modules = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert not any("torch" in (n or "") for n in names + modules)


def test_iter_tile_rows_computes_only_the_batches_a_band_needs():
    rng = np.random.default_rng(3)
    img = rng.random((3, 70, 40), dtype=np.float32)
    calls = {"all": 0, "band": 0}

    def counting(key):
        def net(batch):
            calls[key] += 1
            return np.repeat(np.repeat(batch, 4, axis=2), 4, axis=3) * 0.5 + 0.1

        return net

    opts = dict(scale=4, tile=16, pad=4, batch_size=2)
    whole = np.concatenate([r.copy() for _, r in iter_tile_rows(img, counting("all"), **opts)], 1)
    r0, r1 = 4 * 30, 4 * 42
    band = np.zeros_like(whole)
    for y0, rows in iter_tile_rows(img, counting("band"), rows=(r0, r1), **opts):
        band[:, y0 : y0 + rows.shape[1]] = rows
    assert band[:, r0:r1].tobytes() == whole[:, r0:r1].tobytes()
    assert 0 < calls["band"] < calls["all"] / 2
