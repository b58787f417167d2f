"""Model loading (.pth / .safetensors, strict, safe), the registry and the backends."""

from __future__ import annotations

import hashlib
import importlib
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from astrosleuth_astro.archs import build_arch  # noqa: E402
from astrosleuth_astro.archs.next_options import VECTORS_ENV  # noqa: E402
from astrosleuth_astro.engine.backends import (  # noqa: E402
    OnnxBackend,
    TorchBackend,
    make_backend,
)
from astrosleuth_astro.errors import InputError, ModelError  # noqa: E402
from astrosleuth_astro.models import (  # noqa: E402
    ModelInfo,
    export_onnx,
    get_entry,
    list_models,
    load,
    model_path,
    registry_path,
    resolve,
    sha256_file,
)
from astrosleuth_astro.models import registry as registry_mod  # noqa: E402

SMALL = {
    "rrdb": {"num_block": 1, "num_feat": 16, "num_grow_ch": 8},
    "fast": {"num_feat": 16, "num_conv": 2},
    "next": {"num_block": 1, "num_feat": 16, "num_grow_ch": 8},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convs on a shared 2-core box: extra OpenMP threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory):
    """Synthetic NEXT conditioning vectors (random, not upstream's values)."""
    path = tmp_path_factory.mktemp("vectors") / "vectors.npy"
    np.save(path, np.random.default_rng(11).normal(0, 0.7, (4, 512)).astype(np.float32))
    return path


@pytest.fixture(autouse=True)
def _vectors(vectors_file, tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROSLEUTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(VECTORS_ENV, str(vectors_file))


def small_net(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    net = build_arch(arch, **SMALL[arch]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def save(net, path):
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["rrdb", "fast", "next"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_strict_round_trip(tmp_path, arch, suffix):
    net = small_net(arch)
    path = save(net, tmp_path / f"{arch}{suffix}")
    model = load(path)
    assert type(model) is type(net)
    assert not model.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 3, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    info = model.provenance
    assert isinstance(info, ModelInfo)
    assert (info.name, info.arch, info.sha256) == (arch, arch, digest(path))
    assert info.format == ("safetensors" if suffix == ".safetensors" else "pytorch")
    assert info.scale == 4 and info.tile > 0


def test_load_wrapped_checkpoint_with_explicit_arch(tmp_path):
    net = small_net("fast")
    path = tmp_path / "wrapped.pth"
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"params_ema": sd, "params": {"junk": torch.zeros(1)}, "iter": 5}, path)
    model = load(path, arch="fast")
    with torch.no_grad():
        x = torch.rand(1, 3, 4, 4)
        torch.testing.assert_close(model(x), net(x))


def test_load_half_precision_weights_become_float32(tmp_path):
    net = small_net("fast")
    path = tmp_path / "half.safetensors"
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())


class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_running_pickles_are_refused_and_never_run(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()  # the payload works when unpickled unsafely

    marker = tmp_path / "marker"
    zipped = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "x": _Payload(marker)}, zipped)
    legacy = tmp_path / "evil_legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"x": _Payload(marker)}, fh)
    for path in (zipped, legacy):
        with pytest.raises(ModelError, match="refused") as err:
            load(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files(tmp_path, suffix):
    path = save(small_net("fast"), tmp_path / f"model{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or corrupt") as err:
        load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(b"")
    with pytest.raises(ModelError):
        load(path)


def test_wrong_arch_missing_unexpected_and_misshapen_keys(tmp_path):
    net = small_net("fast")
    path = save(net, tmp_path / "fast.safetensors")
    with pytest.raises(ModelError, match="does not look like a rrdb model"):
        load(path, arch="rrdb")

    sd = dict(small_net("next").state_dict())
    with pytest.raises(ModelError, match=r"weights do not fit the rrdb network: \d+ unexpected"):
        load(save_dict(sd, tmp_path / "next_as_rrdb.pth"), arch="rrdb")

    missing = dict(net.state_dict())
    del missing["conv_up1.bias"]
    with pytest.raises(ModelError, match=r"1 missing \(conv_up1.bias\)"):
        load(save_dict(missing, tmp_path / "missing.pth"))

    extra = dict(net.state_dict())
    extra["conv_up9.weight"] = torch.zeros(3)
    with pytest.raises(ModelError, match=r"1 unexpected \(conv_up9.weight\)"):
        load(save_dict(extra, tmp_path / "extra.pth"))

    bad = dict(small_net("rrdb").state_dict())
    bad["body.0.rdb2.conv3.weight"] = torch.zeros(8, 31, 3, 3)
    with pytest.raises(ModelError, match="wrong shape"):
        load(save_dict(bad, tmp_path / "shape.pth"))

    with pytest.raises(ModelError, match="unknown network layout"):
        load(save_dict({"foo.weight": torch.zeros(2)}, tmp_path / "foo.pth"))


def save_dict(sd, path):
    torch.save(sd, path)
    return path


def test_missing_unknown_and_odd_paths(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        load(tmp_path / "absent.pth")
    with pytest.raises(ModelError, match="unknown model"):
        load("NoSuchModel")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model file type"):
        load(odd)


def test_options_only_for_next(tmp_path):
    path = save(small_net("fast"), tmp_path / "fast.pth")
    with pytest.raises(InputError, match="only apply to NEXT"):
        load(path, star_strength=0.5)
    load(path, star_strength=None)  # unset CLI options are ignored
    nxt = save(small_net("next"), tmp_path / "next.pth")
    model = load(nxt, detail_strength=0.5, color_matching=True)
    assert model.options.cond_strength == 0.5 and model.options.color_matching
    assert model.provenance.options["detail_strength"] == 0.5
    with pytest.raises(InputError, match="outside"):
        load(nxt, cond_strength=9)


def test_next_loads_without_vectors_until_conditioning_is_asked(tmp_path, monkeypatch):
    nxt = save(small_net("next"), tmp_path / "next.safetensors")
    monkeypatch.delenv(VECTORS_ENV)
    model = load(nxt, color_matching=True)
    assert not model.cond_vectors_available
    x = torch.rand(1, 3, 5, 4)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 20, 16)
    for options in ({"cond_strength": 1}, {"star_strength": 0.2}):
        with pytest.raises(ModelError, match="models download AstroSleuthNEXT"):
            load(nxt, **options)
        with pytest.raises(ModelError, match="conditioning vectors"):
            make_backend(nxt, **options)


# --- registry -----------------------------------------------------------------------------------
def test_shipped_registry():
    names = [e.name for e in list_models()]
    assert names == [
        "default",
        "legacy_default",
        "compare_fast",
        "compare_v1",
        "AstroSleuthV1",
        "AstroSleuthV2",
        "AstroSleuthNEXT",
        "AstroSleuthFAST",
    ]
    arches = {e.name: e.arch for e in list_models()}
    assert arches == {
        "default": "fast",
        "legacy_default": "fast",
        "compare_fast": "fast",
        "compare_v1": "rrdb",
        "AstroSleuthV1": "rrdb",
        "AstroSleuthV2": "rrdb",
        "AstroSleuthNEXT": "next",
        "AstroSleuthFAST": "fast",
    }
    for entry in list_models():
        assert entry.scale == 4 and entry.tile > 0 and entry.license and entry.description
        if entry.url:
            assert entry.url.startswith("https://github.com/Aveygo/AstroSleuth/releases/download/")
            assert model_path(entry.name).parent == registry_mod.cache_dir()
    default = get_entry("default")
    assert default.path == registry_path().parent / "default.safetensors"
    assert default.onnx_path == registry_path().parent / "default.onnx"
    assert get_entry("astrosleuthnext").name == "AstroSleuthNEXT"
    assert default.license == "BSD-3-Clause"
    # NEXT's conditioning vectors: upstream's source file, pinned to a full commit hash
    nxt = get_entry("AstroSleuthNEXT")
    assert re.fullmatch(
        r"https://raw\.githubusercontent\.com/Aveygo/AstroSleuth/[0-9a-f]{40}/modules/next\.py",
        nxt.cond_vectors_url,
    )
    assert nxt.cond_vectors_sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", nxt.cond_vectors_sha256)
    assert [e.name for e in list_models() if e.cond_vectors_url] == ["AstroSleuthNEXT"]


@pytest.mark.parametrize("name", ["default", "legacy_default", "compare_fast", "compare_v1"])
def test_trained_models_carry_their_training_record(name):
    """Models made by the bundled trainer: files match their sha256, the recorded config
    exists and describes the architecture that the weights have."""
    from astrosleuth_astro.archs import detect_arch
    from astrosleuth_astro.models import load_state_dict, sha256_file
    from astrosleuth_astro.train.config import load_config

    entry = get_entry(name)
    assert sha256_file(entry.path) == entry.sha256
    assert sha256_file(entry.onnx_path) == entry.onnx_sha256
    tr = entry.training
    cfg = load_config(Path(__file__).resolve().parents[2] / tr["config"])
    assert cfg.model.arch == entry.arch
    assert tr["steps"] == cfg.train.steps
    assert tr["arch_kwargs"] == cfg.model.kwargs()
    assert [s["name"] for s in tr["real_sources"]][-1] == "M6707HH.fits"
    assert tr["real_sources"][-1]["role"] == "validation only"
    arch, kwargs = detect_arch(load_state_dict(entry.path))
    assert arch == entry.arch
    assert all(kwargs[k] == v for k, v in tr["arch_kwargs"].items() if k in kwargs)


def test_registry_is_read_with_the_standard_toml_parser():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    text = registry_path().read_text(encoding="utf-8")
    assert registry_mod._parse_toml(text, registry_path()) == tomllib.loads(text)
    assert not hasattr(registry_mod, "_parse_simple_toml")


def test_cache_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROSLEUTH_CACHE", str(tmp_path / "c"))
    assert registry_mod.cache_dir() == tmp_path / "c"
    assert model_path("AstroSleuthV2") == tmp_path / "c" / "AstroSleuthV2.pth"


@pytest.fixture
def private_registry(tmp_path, monkeypatch):
    """A registry in tmp_path with a shipped FAST model (weights + ONNX)."""
    net = small_net("fast")
    weights = save(net, tmp_path / "tiny.safetensors")
    onnx = export_onnx(net, tmp_path / "tiny.onnx")
    (tmp_path / "registry.toml").write_text(
        f"""
[models.tiny]
arch = "fast"
file = "tiny.safetensors"
onnx = "tiny.onnx"
sha256 = "{digest(weights)}"
onnx_sha256 = "{digest(onnx)}"
license = "test"
description = "tiny test model"
tile = 64

[models.absent]
arch = "fast"
file = "absent.safetensors"
onnx = "absent.onnx"

[models.badsha]
arch = "fast"
file = "tiny.safetensors"
sha256 = "{"0" * 64}"

[models.remote]
arch = "rrdb"
url = "https://127.0.0.1:9/remote.pth"
"""
    )
    monkeypatch.setenv("ASTROSLEUTH_REGISTRY", str(tmp_path / "registry.toml"))
    monkeypatch.setenv("ASTROSLEUTH_CACHE", str(tmp_path / "cache"))
    return net


def test_registry_models_load_and_verify(private_registry, tmp_path):
    model = load("tiny")
    assert model.provenance.name == "tiny" and model.provenance.tile == 64
    assert model.provenance.sha256 == sha256_file(tmp_path / "tiny.safetensors")
    onnx_model = load("tiny", onnx=True)
    assert onnx_model.provenance.format == "onnx" and onnx_model.provenance.name == "tiny"
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load("badsha")
    with pytest.raises(ModelError, match="shipped file .* is missing"):
        load("absent")
    with pytest.raises(ModelError, match="shipped file .* is missing"):
        make_backend("absent")
    with pytest.raises(ModelError, match="not downloaded yet"):
        resolve("remote", fetch=False)
    assert resolve(tmp_path / "tiny.onnx") == (tmp_path / "tiny.onnx", None)
    assert resolve("tiny") == (tmp_path / "tiny.safetensors", get_entry("tiny"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[models.x]\narch = "swin"\nfile = "x.pth"\n', "arch must be"),
        ('[models.x]\narch = "fast"\nfile = "x.pth"\ncolour = "red"\n', "unknown key"),
        ('[models.x]\narch = "fast"\nfile = "x.pth"\nsha256 = "abc"\n', "64 hex"),
        ('[models.x]\narch = "fast"\n', "needs a file"),
        ('[models.x]\narch = "fast"\nfile = "x.pth"\nscale = 2\n', "scale = 4"),
        (
            '[models.x]\narch = "fast"\nfile = "x.pth"\ncond_vectors_url = "https://h/n.py"\n',
            "next models only",
        ),
        ('[models.x]\narch = "next"\nfile = "x.pth"\ncond_vectors_sha256 = "ab"\n', "64 hex"),
        ("[other]\n", "no \\[models"),
        ("[models.x\n", "invalid TOML"),
    ],
)
def test_registry_errors(tmp_path, monkeypatch, body, message):
    (tmp_path / "r.toml").write_text(body)
    monkeypatch.setenv("ASTROSLEUTH_REGISTRY", str(tmp_path / "r.toml"))
    with pytest.raises(ModelError, match=message):
        list_models()


# --- backends -----------------------------------------------------------------------------------
def test_torch_backend(tmp_path):
    net = small_net("next")
    path = save(net, tmp_path / "n.safetensors")
    backend = make_backend(path, star_strength=0.5)
    assert isinstance(backend, TorchBackend)
    assert (backend.name, backend.device, backend.arch, backend.scale) == (
        "torch",
        "cpu",
        "next",
        4,
    )
    assert backend.model_name == "n" and backend.sha256 == digest(path) and backend.tile == 192
    assert backend.options["cond_strength"] == 0.5
    x = np.random.default_rng(0).random((2, 3, 9, 7), dtype=np.float32)
    out = backend(x)
    assert out.shape == (2, 3, 36, 28) and out.dtype == np.float32 and out.flags.c_contiguous
    with torch.no_grad():
        ref = net.set_options(star_strength=0.5)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(InputError, match=r"\(N, 3, h, w\)"):
        backend(x[:, :2])


def test_backend_choice(private_registry, tmp_path):
    assert isinstance(make_backend("tiny"), TorchBackend)
    onnx_backend = make_backend("tiny", backend="onnx")
    assert isinstance(onnx_backend, OnnxBackend)
    assert onnx_backend.tile == 64 and onnx_backend.model_name == "tiny"
    assert isinstance(make_backend(tmp_path / "tiny.onnx"), OnnxBackend)
    x = np.random.default_rng(1).random((1, 3, 8, 6), dtype=np.float32)
    torch_fp32 = make_backend("tiny", precision="fp32")  # "auto" may be bf16 on this CPU
    # The torch backend folds FAST's upsampling, which changes only the outer 6 output px.
    inner = (..., slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(torch_fp32(x)[inner], onnx_backend(x)[inner], atol=1e-4)
    with pytest.raises(InputError, match="needs an .onnx file"):
        make_backend(tmp_path / "tiny.safetensors", backend="onnx")
    with pytest.raises(InputError, match="needs backend 'onnx'"):
        make_backend(tmp_path / "tiny.onnx", backend="torch")
    with pytest.raises(InputError, match="no ONNX file"):
        make_backend("remote", backend="onnx")
    with pytest.raises(InputError, match="only apply to NEXT"):
        make_backend("tiny", backend="onnx", star_strength=1)
    # an already loaded model is wrapped as is
    assert isinstance(make_backend(load("tiny")), TorchBackend)
    assert isinstance(make_backend(load("tiny", onnx=True)), OnnxBackend)


def test_backend_argument_errors(private_registry):
    with pytest.raises(InputError, match="backend 'tensorrt'"):
        make_backend("tiny", backend="tensorrt")
    with pytest.raises(InputError, match="device 'tpu'"):
        make_backend("tiny", device="tpu")
    with pytest.raises(InputError, match="mps"):
        make_backend("tiny", backend="onnx", device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            make_backend("tiny", device="cuda")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="CUDAExecutionProvider"):
            make_backend("tiny", backend="onnx", device="cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(InputError, match="MPS is not available"):
            make_backend("tiny", device="mps")


def test_models_package_does_not_import_torch_eagerly():
    for name in (
        "astrosleuth_astro.models",
        "astrosleuth_astro.models.loader",
        "astrosleuth_astro.models.registry",
        "astrosleuth_astro.models.download",
        "astrosleuth_astro.models.cond_vectors",
        "astrosleuth_astro.models.export",
        "astrosleuth_astro.engine.backends",
        "astrosleuth_astro.archs",
        "astrosleuth_astro.archs.next_options",
    ):
        source = open(importlib.import_module(name).__file__).read()
        top_level = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
        assert not any("torch" in ln and "TYPE_CHECKING" not in ln for ln in top_level), name
