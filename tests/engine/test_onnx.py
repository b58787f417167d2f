"""ONNX export and the onnxruntime path, including a run with torch made unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from safetensors.torch import save_file  # noqa: E402

from astrosleuth_astro.archs import build_arch  # noqa: E402
from astrosleuth_astro.archs.compact import fold_upsampling  # noqa: E402
from astrosleuth_astro.archs.next_options import VECTORS_ENV  # noqa: E402
from astrosleuth_astro.engine.backends import make_backend  # noqa: E402
from astrosleuth_astro.engine.plan import fast_receptive_field  # noqa: E402
from astrosleuth_astro.errors import InputError, ModelError  # noqa: E402
from astrosleuth_astro.models import OnnxModel, export_onnx, load  # noqa: E402

SIZES = {
    "V1/V2 (rrdb)": ("rrdb", {"num_block": 2}),
    "FAST": ("fast", {}),
    "NEXT": ("next", {"num_block": 2}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convs on a shared 2-core box: extra OpenMP threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def vectors_file(tmp_path_factory):
    """Synthetic NEXT conditioning vectors (random, not upstream's), named by the env var.

    Module-scoped so that the module-scoped ``exported`` networks are built with them.
    """
    root = tmp_path_factory.mktemp("vectors")
    path = root / "vectors.npy"
    np.save(path, np.random.default_rng(5).normal(0, 0.7, (4, 512)).astype(np.float32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(VECTORS_ENV, str(path))
        mp.setenv("ASTROSLEUTH_CACHE", str(root / "cache"))
        yield path


def random_net(arch: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    net = build_arch(arch, **kwargs).eval()
    with torch.no_grad():  # GRN / LayerNorm start as no-ops: perturb every parameter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def torch_out(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def exported_form(net, x: np.ndarray) -> np.ndarray:
    """What the default export computes: FAST in its folded inference form."""
    return torch_out(fold_upsampling(net).eval(), x)


#: Output pixels at each border where the folded FAST may differ from the plain one.
FOLD_RING = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vectors_file):
    """Each architecture with random weights, exported once."""
    out = {}
    root = tmp_path_factory.mktemp("onnx")
    for arch, kwargs in SIZES.values():
        net = random_net(arch, **kwargs)
        path = export_onnx(net, root / f"{arch}.onnx")
        out[arch] = (net, path)
    return out


@pytest.mark.parametrize("arch", ["rrdb", "fast", "next"])
def test_parity_with_torch(exported, arch):
    net, path = exported[arch]
    model = OnnxModel(path)
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 24, 20), (2, 3, 13, 9)):  # dynamic batch, height and width
        x = rng.random(shape, dtype=np.float32)
        out = model(x)
        assert out.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
        np.testing.assert_allclose(out, exported_form(net, x), rtol=0, atol=1e-4)
        # The folded FAST equals the trained network away from the outermost ring.
        r = slice(FOLD_RING, -FOLD_RING)
        plain = torch_out(net, x)
        np.testing.assert_allclose(out[..., r, r], plain[..., r, r], rtol=0, atol=1e-4)


def test_fast_export_folded_and_unfolded(tmp_path, exported):
    net, folded_path = exported["fast"]
    plain_path = export_onnx(net, tmp_path / "plain.onnx", fold=False)
    meta = {
        p: {m.key: m.value for m in onnx.load(str(p)).metadata_props}["astrosleuth.folded"]
        for p in (folded_path, plain_path)
    }
    assert meta == {folded_path: "1", plain_path: "0"}
    x = np.random.default_rng(5).random((1, 3, 16, 12), dtype=np.float32)
    plain_out = OnnxModel(plain_path)(x)
    np.testing.assert_allclose(plain_out, torch_out(net, x), rtol=0, atol=1e-4)
    # The forms differ at the image border (different padding), so the check above
    # really tells them apart.
    assert np.abs(OnnxModel(folded_path)(x) - plain_out).max() > 1e-3
    # Both keep the receptive field that sets the tile pad: the same number of 3x3 convs.
    rfs = {make_backend(p, backend="onnx").receptive_field for p in (folded_path, plain_path)}
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert rfs == {fast_receptive_field(n_convs)}


@pytest.mark.parametrize(
    "options",
    [
        {"cond_strength": 1.0},
        {
            "star_strength": 0.8,
            "detail_strength": -0.5,
            "spikes_strength": 0.3,
            "cond_strength": 2.5,
        },
        {"color_matching": True},
        {"detail_strength": 1.0, "color_matching": True},
    ],
)
def test_next_options_flow_through_onnx(exported, options):
    net, path = exported["next"]
    model = OnnxModel(path, **options)
    x = np.random.default_rng(1).random((2, 3, 12, 10), dtype=np.float32)
    ref = torch_out(net.set_options(**options), x)
    net.options = type(net.options)()  # back to the defaults for the other tests
    np.testing.assert_allclose(model(x), ref, rtol=0, atol=1e-4)
    plain = torch_out(net, x)
    assert np.abs(model(x) - plain).max() > 1e-3  # the options really changed something


def test_export_metadata_and_graph(exported):
    _, path = exported["next"]
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in proto.graph.input] == [
        "input",
        "strengths",
        "cond_strength",
        "color_match",
    ]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # N, 3, H, W
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["astrosleuth.arch"] == "next" and meta["astrosleuth.scale"] == "4"
    assert json.loads(meta["astrosleuth.next_options"])["cond_strength"] == 0.0
    assert meta["astrosleuth.next_conditioning"] == "available"
    assert OnnxModel(path).cond_vectors_available
    assert OnnxModel(path).arch == "next"
    _, fast = exported["fast"]
    assert [i.name for i in onnx.load(str(fast)).graph.input] == ["input"]


def _resize_modes(path) -> set[tuple[str, str]]:
    out = set()
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: a.s.decode() for a in node.attribute if a.s}
            mode = attrs["mode"]
            out.add(
                (mode, attrs.get("coordinate_transformation_mode", "") if mode != "nearest" else "")
            )
    return out


def test_exported_graph_ops(exported):
    assert _resize_modes(exported["rrdb"][1]) == {("nearest", "")}
    # bilinear with align_corners=False is ONNX "linear" with half_pixel coordinates
    assert _resize_modes(exported["fast"][1]) == {("linear", "half_pixel")}
    assert _resize_modes(exported["next"][1]) == {("linear", "half_pixel")}
    ops = {n.op_type for n in onnx.load(str(exported["next"][1])).graph.node}
    assert "LayerNormalization" not in ops  # LayerNorm stays elementary ops


def test_export_from_file_with_default_options(tmp_path):
    net = random_net("next", num_block=1, num_feat=16, num_grow_ch=8)
    weights = tmp_path / "next.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    out = export_onnx(weights, tmp_path / "next.onnx", star_strength=0.4)
    model = OnnxModel(out)
    assert model.options.star_strength == 0.4 and model.options.cond_strength == 0.5
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["astrosleuth.source_sha256"] == load(weights).provenance.sha256
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    ref = torch_out(net.set_options(star_strength=0.4), x)
    np.testing.assert_allclose(model(x), ref, rtol=0, atol=1e-4)
    assert model.set_options(star_strength=0.0).options.star_strength == 0.0


def test_export_without_vectors(tmp_path, exported, vectors_file, monkeypatch):
    """No vectors at export: zeros in the graph, conditioning refused, cond-off output exact."""
    monkeypatch.delenv(VECTORS_ENV)
    net = random_net("next", num_block=2)  # the same weights as exported["next"]
    assert not net.cond_vectors_available
    with pytest.raises(ModelError, match="models download AstroSleuthNEXT"):
        export_onnx(net, tmp_path / "cond.onnx", cond_strength=1.0)
    path = export_onnx(net, tmp_path / "plain.onnx", color_matching=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["astrosleuth.next_conditioning"] == "unavailable"
    model = OnnxModel(path)
    assert not model.cond_vectors_available and model.options.color_matching
    x = np.random.default_rng(6).random((2, 3, 11, 9), dtype=np.float32)
    np.testing.assert_allclose(model(x), torch_out(net, x), rtol=0, atol=1e-4)
    # the export with vectors gives the same unconditioned output
    with_vectors = OnnxModel(exported["next"][1], color_matching=True)
    np.testing.assert_allclose(model(x), with_vectors(x), rtol=0, atol=1e-5)
    for options in ({"cond_strength": 0.5}, {"star_strength": 0.3}):
        with pytest.raises(ModelError, match="exported without the conditioning vectors"):
            OnnxModel(path, **options)
        with pytest.raises(ModelError, match="models download AstroSleuthNEXT") as err:
            model.set_options(**options)
        assert "\n" not in str(err.value)
        with pytest.raises(ModelError, match="conditioning vectors"):
            load(path, **options)
    assert model.options.cond_strength == 0.0  # unchanged by the refused updates
    # a network built before the vectors were there picks them up at export
    monkeypatch.setenv(VECTORS_ENV, str(vectors_file))
    later = export_onnx(net, tmp_path / "later.onnx")
    meta = {p.key: p.value for p in onnx.load(str(later)).metadata_props}
    assert meta["astrosleuth.next_conditioning"] == "available"
    cond = OnnxModel(later, cond_strength=1.5, spikes_strength=0.4)
    ref = torch_out(net.set_options(cond_strength=1.5, spikes_strength=0.4), x)
    np.testing.assert_allclose(cond(x), ref, rtol=0, atol=1e-4)


def test_export_is_atomic(tmp_path, exported):
    net, _ = exported["fast"]
    target = tmp_path / "m.onnx"
    export_onnx(net, target)
    with pytest.raises(InputError, match="exists"):
        export_onnx(net, target, overwrite=False)

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("cannot trace this")

    with pytest.raises(ModelError, match="ONNX export failed"):
        export_onnx(Broken(), tmp_path / "broken.onnx", exporter="legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left
    with pytest.raises(InputError, match="exporter"):
        export_onnx(net, target, exporter="tvm")


def _graph(path, rank: int, channels: int = 3, elem=None) -> None:
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT if elem is None else elem
    shape = ["n", channels, "h", "w"][:rank] if rank <= 4 else ["n"] * rank
    x = helper.make_tensor_value_info("x", elem, shape)
    y = helper.make_tensor_value_info("y", elem, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_bad_onnx_files(tmp_path):
    _graph(tmp_path / "rank2.onnx", rank=2)
    with pytest.raises(ModelError, match="has rank 2") as err:
        load(tmp_path / "rank2.onnx")
    assert str(tmp_path / "rank2.onnx") in str(err.value)
    _graph(tmp_path / "gray.onnx", rank=4, channels=1)
    with pytest.raises(ModelError, match="1 channels"):
        load(tmp_path / "gray.onnx")
    _graph(tmp_path / "double.onnx", rank=4, elem=onnx.TensorProto.DOUBLE)
    with pytest.raises(ModelError, match="float32"):
        load(tmp_path / "double.onnx")
    # a rank-4 identity is accepted but is not a x4 network
    _graph(tmp_path / "same.onnx", rank=4)
    with pytest.raises(ModelError, match="not the expected"):
        load(tmp_path / "same.onnx")(np.zeros((1, 3, 4, 4), np.float32))
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load(tmp_path / "junk.onnx")


@pytest.mark.slow
def test_dynamo_exporter(tmp_path, exported):
    net, _ = exported["fast"]
    path = export_onnx(net, tmp_path / "dyn.onnx", exporter="dynamo")
    x = np.random.default_rng(3).random((2, 3, 11, 7), dtype=np.float32)
    np.testing.assert_allclose(OnnxModel(path)(x), exported_form(net, x), rtol=0, atol=1e-4)


_NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # "import torch" now raises ImportError
    import numpy as np
    import astrosleuth_astro.models
    from astrosleuth_astro.engine.backends import OnnxBackend, make_backend

    onnx_path, inp, outp = sys.argv[1:4]
    x = np.load(inp)
    by_path = make_backend(onnx_path)
    by_name = make_backend("shipped")  # registry entry with .safetensors and .onnx
    assert isinstance(by_path, OnnxBackend) and isinstance(by_name, OnnxBackend)
    assert by_name.model_name == "shipped" and by_name.tile == 96, by_name
    np.save(outp, np.stack([by_path(x), by_name(x)]))
    assert sys.modules["torch"] is None
    bad = [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
    assert not bad, bad
    print("ok", by_path.name, by_path.arch)
    """
)


def test_default_path_runs_without_torch(tmp_path, exported):
    net, _ = exported["fast"]
    weights = tmp_path / "shipped.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    onnx_path = export_onnx(net, tmp_path / "shipped.onnx")
    (tmp_path / "registry.toml").write_text(
        '[models.shipped]\narch = "fast"\nfile = "shipped.safetensors"\n'
        'onnx = "shipped.onnx"\ntile = 96\n'
    )
    x = np.random.default_rng(4).random((2, 3, 10, 6), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, ASTROSLEUTH_REGISTRY=str(tmp_path / "registry.toml"))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_TORCH_SCRIPT,
            str(onnx_path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok onnx fast"
    outs = np.load(tmp_path / "y.npy")
    ref = exported_form(net, x)
    for out in outs:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fold", [True, False])
def test_grey_form_equals_mean_of_three_channels(tmp_path, exported, fold):
    """The one-channel FAST graph (what the ONNX backend runs on grey images) equals the
    3-channel graph on three copies of the input, averaged, everywhere."""
    net, folded_path = exported["fast"]
    path = folded_path if fold else export_onnx(net, tmp_path / "plain.onnx", fold=False)
    model = OnnxModel(path)
    grey = model.grey()
    assert grey is not None
    x = np.random.default_rng(7).random((2, 1, 13, 17), dtype=np.float32)
    ref = model(np.repeat(x, 3, axis=1)).mean(axis=1, keepdims=True)
    got = grey(x)
    assert got.shape == ref.shape == (2, 1, 52, 68)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    with pytest.raises(InputError, match=r"\(N, 1, h, w\)"):
        grey(np.zeros((1, 3, 8, 8), np.float32))
    backend = make_backend(path, backend="onnx")
    np.testing.assert_allclose(backend.mono()(x), got, rtol=0, atol=1e-6)


def test_grey_form_for_rrdb_and_refused_where_it_would_be_wrong(tmp_path, exported):
    """RRDB's image enters through conv_first and leaves through conv_last, so its grey
    form is exact too. NEXT exports (extra inputs) get none, and a graph that the edit
    does not suit (a non-linear op after the last conv) fails the built-in check, so the
    backend keeps the generic three-copies path."""
    from onnx import helper

    from astrosleuth_astro.models.onnx_grey import grey_graph

    x = np.random.default_rng(8).random((1, 1, 10, 12), dtype=np.float32)
    _, rrdb_path = exported["rrdb"]
    rrdb = OnnxModel(rrdb_path)
    ref = rrdb(np.repeat(x, 3, axis=1)).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(rrdb.grey()(x), ref, rtol=0, atol=1e-5)
    _, next_path = exported["next"]
    assert OnnxModel(next_path).grey() is None

    _, fast_path = exported["fast"]
    proto = onnx.load(str(fast_path))
    last = proto.graph.node[-1]
    last.output[0] = "pre_tanh"
    proto.graph.node.append(helper.make_node("Tanh", ["pre_tanh"], ["output"]))
    bent_path = tmp_path / "bent.onnx"
    onnx.save(proto, str(bent_path))
    assert grey_graph(onnx.load(str(bent_path))) is not None  # the layout looks right...
    bent = OnnxModel(bent_path)
    assert bent.grey() is None  # ...but the check rejects the edit
    ref = bent(np.repeat(x, 3, axis=1)).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(make_backend(bent).mono()(x), ref, rtol=0, atol=1e-6)
