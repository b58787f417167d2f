"""Peak memory: each size upscaled in a fresh process (``python -m astrosleuth_astro.bench
--rss-child``) that samples its own ``RssAnon`` and reports ``VmHWM``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from .inputs import megapixels, module_or_name, side_length, synthetic_fits


def rss_child(src: str, dst: str, model: str, precision: str) -> None:
    """Run in a fresh process: upscale ``src`` into a memory-mapped FITS ``dst``, print JSON."""
    import resource

    peak = {"anon": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak["anon"] = max(peak["anon"], int(line.split()[1]) * 1024)
                        break
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    from ..api import get_backend, upscale_image
    from ..io import read_image

    net = get_backend(module_or_name(model), precision=precision)
    t0 = time.perf_counter()
    upscale_image(read_image(src, memmap=True), dst, net, overwrite=True, memmap_threshold=0)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    # VmHWM: ru_maxrss is inherited across fork+exec on Linux (it reported the parent's
    # peak), the kernel's high-water mark of this process is not.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                maxrss = int(line.split()[1]) * 1024
    print(
        json.dumps(
            {
                "peak_anon_bytes": peak["anon"],
                "ru_maxrss_bytes": maxrss,
                "seconds": seconds,
                "precision": net.precision,
            }
        )
    )


def measure_rss(model: str, precision: str, sizes: list[float], workdir: Path) -> list[dict]:
    rows = []
    for mp in sizes:
        src = synthetic_fits(workdir / f"rss_{mp:g}.fits", mp, seed=1)
        dst = workdir / f"rss_{mp:g}_x4.fits"
        cmd = [sys.executable, "-m", "astrosleuth_astro.bench", "--rss-child"]
        cmd += [str(src), str(dst), model, precision]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench: peak-RSS run at {mp} MP failed: {proc.stderr.strip()}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        shape = side_length(mp)
        rows.append(
            {
                "input_mp": round(megapixels(shape), 3),
                "output_mp": round(16 * megapixels(shape), 2),
                "peak_rss_anon_mb": round(res["peak_anon_bytes"] / 2**20, 1),
                "ru_maxrss_mb": round(res["ru_maxrss_bytes"] / 2**20, 1),
                "seconds": round(res["seconds"], 2),
                "precision": res["precision"],
            }
        )
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return rows
