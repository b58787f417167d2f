"""Downloads against a real HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from astrosleuth_astro.archs.next_options import VECTORS_ENV, VECTORS_FILENAME, condition_vectors
from astrosleuth_astro.errors import ModelError
from astrosleuth_astro.models import download, download_url, get_entry, model_path, resolve
from astrosleuth_astro.models.cond_vectors import parse_vectors_source

# the package re-exports the download() function under the submodule's name
download_mod = importlib.import_module("astrosleuth_astro.models.download")

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()

# --- a synthetic stand-in for upstream's modules/next.py -----------------------------------------
# Same assignment structure as upstream (``self.<name> = self.bytes2torch(b'<base64 float32>')``
# inside a class, an older commented-out value, a different order), synthetic random values.
ROWS = ("average", "stars", "detail", "spikes")
VECTORS = np.random.default_rng(2024).normal(0, 0.7, (4, 512)).astype(np.float32)


def _b64(vec: np.ndarray) -> str:
    return base64.b64encode(vec.astype("<f4").tobytes()).decode()


def next_source(vectors: np.ndarray = VECTORS, prelude: str = "", extra: str = "") -> bytes:
    lines = [
        prelude,
        "from torch import nn as nn",
        "import torch, base64, numpy as np",
        "class Network(nn.Module):",
        "    def __init__(self, num_feat=64):",
        "        super(Network, self).__init__()",
        "        self.l1 = nn.Linear(512, num_feat)",
        f"        #self.average = self.bytes2torch(b'{_b64(vectors[3])}')",
    ]
    for i in (0, 2, 1, 3):  # upstream assigns average, detail, stars, spikes
        lines.append(f"        self.{ROWS[i]} = self.bytes2torch(b'{_b64(vectors[i])}')")
    lines += [
        extra,
        "    def bytes2torch(self, x: bytes):",
        "        x = np.frombuffer(base64.decodebytes(x), dtype=np.float32).copy()",
        "        return torch.from_numpy(x)",
        "",
    ]
    return "\n".join(lines).encode()


NEXT_PY = next_source()
NEXT_PY_SHA = hashlib.sha256(NEXT_PY).hexdigest()
# Code that would run if the file were executed or imported: writes a marker file at the top
# level and, from the class body, when the module is imported.
MARKER_NAME = "ran-upstream-code"
EVIL_PY = next_source(
    prelude=(
        "import pathlib, os\n"
        f"pathlib.Path(os.environ['MARKER_DIR'], '{MARKER_NAME}').write_text('top level')\n"
        f"os.system('touch ' + os.environ['MARKER_DIR'] + '/{MARKER_NAME}-2')"
    ),
    extra=f"        open('{MARKER_NAME}-3', 'w').write('init')",
)
# The vector literal replaced by a call that would run code: refused, not run.
CALL_PY = next_source().replace(
    f"self.stars = self.bytes2torch(b'{_b64(VECTORS[1])}')".encode(),
    b"self.stars = self.bytes2torch(__import__('os').system('touch MARKER'))",
)


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, body: bytes, *, length: int | None = None, delay: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        step = 64 * 1024
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if delay:
                time.sleep(delay)

    def _redirect(self, where: str, code: int = 302) -> None:
        self.send_response(code)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802 (http.server API)
        with self.lock:
            self.hits[self.path] = self.hits.get(self.path, 0) + 1
        path = self.path
        if path == "/good.bin":
            self._send(PAYLOAD)
        elif path == "/slow.bin":
            self._send(PAYLOAD, delay=0.01)
        elif path == "/corrupt.bin":
            self._send(PAYLOAD[:-1] + b"\x00")
        elif path == "/short.bin":
            self._send(PAYLOAD[:1000], length=len(PAYLOAD))
        elif path == "/redirect":
            self._redirect("/hop2", 301)
        elif path == "/hop2":
            self._redirect(f"http://127.0.0.1:{self.server.server_port}/good.bin", 307)
        elif path == "/loop":
            self._redirect("/loop-b")
        elif path == "/loop-b":
            self._redirect("/loop")
        elif path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{n + 1}" if n < 20 else "/good.bin")
        elif path == "/away":
            self._redirect("http://example.com/model.pth")
        elif path == "/ftp":
            self._redirect("ftp://127.0.0.1/model.pth")
        elif path == "/next.py":
            self._send(NEXT_PY)
        elif path == "/evil_next.py":
            self._send(EVIL_PY)
        elif path == "/call_next.py":
            self._send(CALL_PY)
        elif path == "/nospikes.py":
            self._send(next_source().replace(b"self.spikes", b"self.hubble"))
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROSLEUTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(VECTORS_ENV, raising=False)  # vectors come from the cache here
    return tmp_path / "cache"


def leftovers(folder) -> list[str]:
    """Files in the cache other than lock files."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


def test_good_download_with_progress(server, cache):
    seen = []
    dest = download_url(
        f"{server}/good.bin",
        cache / "m.pth",
        sha256=PAYLOAD_SHA,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(cache) == ["m.pth"]
    assert download_mod.sha256_file(dest) == PAYLOAD_SHA


def test_sha_mismatch_leaves_nothing(server, cache):
    with pytest.raises(ModelError, match="sha256 mismatch") as err:
        download_url(f"{server}/corrupt.bin", cache / "m.pth", sha256=PAYLOAD_SHA)
    assert "\n" not in str(err.value)
    assert leftovers(cache) == []


def test_short_body_leaves_nothing(server, cache):
    with pytest.raises(ModelError, match="cut short|cannot download"):
        download_url(f"{server}/short.bin", cache / "m.pth")
    assert leftovers(cache) == []


def test_size_cap(server, cache):
    with pytest.raises(ModelError, match="limit"):
        download_url(f"{server}/good.bin", cache / "m.pth", max_bytes=1000)
    assert leftovers(cache) == []


def test_redirects_are_followed(server, cache):
    dest = download_url(f"{server}/redirect", cache / "m.pth", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    dest = download_url(f"{server}/chain/17", cache / "c.pth", sha256=PAYLOAD_SHA)  # 4 hops
    assert dest.read_bytes() == PAYLOAD


def test_redirect_loop_and_too_many_redirects(server, cache):
    with pytest.raises(ModelError, match="redirect loop"):
        download_url(f"{server}/loop", cache / "m.pth")
    with pytest.raises(ModelError, match="more than 5 redirects"):
        download_url(f"{server}/chain/0", cache / "m.pth")
    assert leftovers(cache) == []


def test_insecure_urls_are_refused(server, cache):
    for url in (
        "http://example.com/model.pth",
        "ftp://example.com/model.pth",
        "file:///etc/passwd",
        "https:///no-host",
    ):
        with pytest.raises(ModelError, match="HTTPS only|no host"):
            download_url(url, cache / "m.pth")
    # every redirect hop is checked too
    with pytest.raises(ModelError, match="HTTPS only"):
        download_url(f"{server}/away", cache / "m.pth")
    with pytest.raises(ModelError, match="HTTPS only"):
        download_url(f"{server}/ftp", cache / "m.pth")
    with pytest.raises(ModelError, match="HTTP 404"):
        download_url(f"{server}/missing.bin", cache / "m.pth")
    assert leftovers(cache) == []


def test_loopback_http_is_not_reachable_through_a_remote_redirect():
    download_mod.check_url("http://localhost:8000/x")
    download_mod.check_url("http://[::1]:8000/x")
    with pytest.raises(ModelError, match="HTTPS only"):
        download_mod.check_url("http://127.0.0.1/x", allow_loopback_http=False)


def test_concurrent_downloads_of_one_file(server, cache):
    _Handler.hits.pop("/slow.bin", None)
    results, errors = [], []

    def worker():
        try:
            results.append(download_url(f"{server}/slow.bin", cache / "m.pth", sha256=PAYLOAD_SHA))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 2
    assert results[0] == results[1] and results[0].read_bytes() == PAYLOAD
    assert _Handler.hits["/slow.bin"] == 1  # the second one waited and reused the file
    assert leftovers(cache) == ["m.pth"]


def test_cached_file_is_reused_or_replaced(server, cache):
    dest = download_url(f"{server}/good.bin", cache / "m.pth", sha256=PAYLOAD_SHA)
    _Handler.hits.pop("/good.bin", None)
    download_url(f"{server}/good.bin", dest, sha256=PAYLOAD_SHA)
    assert "/good.bin" not in _Handler.hits  # reused
    dest.write_bytes(b"tampered")
    download_url(f"{server}/good.bin", dest, sha256=PAYLOAD_SHA)  # fails its check: fetched again
    assert dest.read_bytes() == PAYLOAD and _Handler.hits["/good.bin"] == 1
    download_url(f"{server}/good.bin", dest, sha256=PAYLOAD_SHA, force=True)
    assert _Handler.hits["/good.bin"] == 2


@pytest.fixture
def registry(tmp_path, monkeypatch, server, cache):
    (tmp_path / "shipped.onnx").write_bytes(b"onnx bytes")
    (tmp_path / "registry.toml").write_text(
        f"""
[models.Remote]
arch = "rrdb"
url = "{server}/good.bin"
sha256 = "{PAYLOAD_SHA}"

[models.BadRemote]
arch = "rrdb"
url = "{server}/corrupt.bin"
sha256 = "{PAYLOAD_SHA}"

[models.Shipped]
arch = "fast"
onnx = "shipped.onnx"

[models.Gone]
arch = "fast"
file = "gone.safetensors"
"""
    )
    monkeypatch.setenv("ASTROSLEUTH_REGISTRY", str(tmp_path / "registry.toml"))
    return tmp_path


def test_download_by_name(registry, cache):
    path = download("remote")  # names are case-insensitive
    assert path == cache / "Remote.bin" == model_path("Remote")
    assert path.read_bytes() == PAYLOAD
    assert resolve("Remote", fetch=False) == (path, get_entry("Remote"))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        download("BadRemote")
    assert leftovers(cache) == ["Remote.bin"]
    assert download("Shipped", onnx=True) == registry / "shipped.onnx"
    with pytest.raises(ModelError, match="missing"):
        download("Gone")
    with pytest.raises(ModelError, match="no torch weights file"):
        download("Shipped")


def test_resolve_downloads_on_demand(registry, cache):
    path, entry = resolve("Remote")
    assert entry.name == "Remote" and path.read_bytes() == PAYLOAD


def test_concurrent_downloads_in_two_processes(server, cache):
    _Handler.hits.pop("/slow.bin", None)
    code = (
        "import sys; from astrosleuth_astro.models import download_url; "
        "print(download_url(sys.argv[1], sys.argv[2], sha256=sys.argv[3]))"
    )
    args = [f"{server}/slow.bin", str(cache / "p.pth"), PAYLOAD_SHA]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(cache / "p.pth")] * 2
    assert (cache / "p.pth").read_bytes() == PAYLOAD
    assert _Handler.hits["/slow.bin"] == 1
    assert leftovers(cache) == ["p.pth"]


# --- NEXT's conditioning vectors ---------------------------------------------------------------
@pytest.fixture
def next_registry(tmp_path, monkeypatch, server, cache):
    (tmp_path / "registry.toml").write_text(
        f"""
[models.Next]
arch = "next"
url = "{server}/good.bin"
sha256 = "{PAYLOAD_SHA}"
cond_vectors_url = "{server}/next.py"
cond_vectors_sha256 = "{NEXT_PY_SHA}"

[models.NextNoSha]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "{server}/next.py"

[models.NextBadSha]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "{server}/next.py"
cond_vectors_sha256 = "{PAYLOAD_SHA}"

[models.NextEvil]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "{server}/evil_next.py"

[models.NextCall]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "{server}/call_next.py"

[models.NextNoSpikes]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "{server}/nospikes.py"

[models.NextInsecure]
arch = "next"
url = "{server}/good.bin"
cond_vectors_url = "http://example.com/next.py"
"""
    )
    monkeypatch.setenv("ASTROSLEUTH_REGISTRY", str(tmp_path / "registry.toml"))
    return tmp_path


def test_next_download_fetches_the_vectors(next_registry, cache):
    assert condition_vectors(required=False) is None
    _Handler.hits.pop("/next.py", None)
    path = download("Next")
    assert path == cache / "Next.bin" and path.read_bytes() == PAYLOAD
    assert leftovers(cache) == ["Next.bin", VECTORS_FILENAME]  # the source is not kept
    stored = np.load(cache / VECTORS_FILENAME, allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (4, 512)
    np.testing.assert_array_equal(stored, VECTORS)  # rows average, stars, detail, spikes
    np.testing.assert_array_equal(condition_vectors(), VECTORS)
    assert _Handler.hits["/next.py"] == 1
    download("Next")  # cached: neither file is fetched again
    assert _Handler.hits["/next.py"] == 1
    download("NextNoSha")  # same cache file, unverified source: still not fetched again
    assert _Handler.hits["/next.py"] == 1
    (cache / VECTORS_FILENAME).write_bytes(b"garbage")
    download("Next")  # an unreadable cache file is replaced
    assert _Handler.hits["/next.py"] == 2
    np.testing.assert_array_equal(condition_vectors(), VECTORS)
    download("Next", force=True)
    assert _Handler.hits["/next.py"] == 3
    assert leftovers(cache) == ["Next.bin", "NextNoSha.bin", VECTORS_FILENAME]


def test_next_vectors_sha_mismatch_keeps_nothing(next_registry, cache):
    with pytest.raises(ModelError, match="sha256 mismatch") as err:
        download("NextBadSha")
    assert "\n" not in str(err.value)
    assert leftovers(cache) == ["NextBadSha.bin"]  # the weights, and no vectors
    with pytest.raises(ModelError, match="HTTPS only"):
        download("NextInsecure")
    with pytest.raises(ModelError, match="no assignment of the NEXT conditioning vector.*spikes"):
        download("NextNoSpikes")
    assert VECTORS_FILENAME not in leftovers(cache)


def test_next_vectors_source_is_parsed_not_run(next_registry, cache, tmp_path, monkeypatch):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    monkeypatch.setenv("MARKER_DIR", str(marker_dir))
    monkeypatch.chdir(marker_dir)
    download("NextEvil")
    np.testing.assert_array_equal(condition_vectors(), VECTORS)
    with pytest.raises(ModelError, match="stars.*not assigned a literal"):
        download("NextCall", force=True)
    assert list(marker_dir.iterdir()) == []  # nothing in either file ran
    assert not (tmp_path / "MARKER").exists()
    # control: running the file for real does leave the marker
    (tmp_path / "evil.py").write_bytes(EVIL_PY)
    code = "import sys; sys.modules['torch'] = None; exec(open(sys.argv[1]).read())"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "evil.py")], timeout=60)
    assert (marker_dir / MARKER_NAME).read_text() == "top level"


def test_parse_vectors_source():
    np.testing.assert_array_equal(parse_vectors_source(NEXT_PY), VECTORS)
    # plain names, str literals, the last assignment wins
    text = "\n".join(
        [f"{name} = '{_b64(VECTORS[i] + 1)}'" for i, name in enumerate(ROWS)]
        + [f"{name} = '{_b64(VECTORS[i])}'" for i, name in enumerate(ROWS)]
    )
    np.testing.assert_array_equal(parse_vectors_source(text), VECTORS)
    cases = {
        "average = (": "not readable Python source",
        "x = 1": "no assignment",
        text.replace(f"stars = '{_b64(VECTORS[1])}'", "stars = 'not base64!'"): "not valid base64",
        text.replace(f"stars = '{_b64(VECTORS[1])}'", f"stars = '{_b64(VECTORS[1][:10])}'"): (
            "holds 40 bytes"
        ),
        text.replace(f"detail = '{_b64(VECTORS[2])}'", "detail = f(1, 2)"): "one base64 literal",
        text.replace(f"detail = '{_b64(VECTORS[2])}'", "detail = 3"): "not assigned a base64",
        text.replace(
            f"spikes = '{_b64(VECTORS[3])}'",
            f"spikes = '{_b64(np.full(512, np.inf, np.float32))}'",
        ): "NaN or infinite",
    }
    for source, message in cases.items():
        with pytest.raises(ModelError, match=message) as err:
            parse_vectors_source(source, "next.py")
        assert str(err.value).startswith("next.py: ") and "\n" not in str(err.value)
