"""Which arithmetic a network runs in: fp32, bf16 or fp16, by device, CPU features and
architecture (``precision="auto"`` picks reduced precision only where it was measured
safe)."""

from __future__ import annotations

from ..errors import InputError

__all__ = ["BF16_VALIDATED_ARCHS", "PRECISIONS", "cpu_supports_bf16", "resolve_precision"]

#: Accepted ``precision`` values.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


#: Architectures whose reduced-precision output was measured to stay within 0.05 dB PSNR
#: of fp32 (``astrosleuth-astro bench``, docs/performance.md): ``precision="auto"`` only
#: leaves fp32 for these. RRDB and NEXT were not measured (their weights are downloads).
BF16_VALIDATED_ARCHS = frozenset({"fast"})


_CPUINFO = "/proc/cpuinfo"


def _cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        with open(_CPUINFO, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_BF16_SUPPORT: bool | None = None


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX).

    Both the CPU flags (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``) and torch's
    own oneDNN check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``, when this torch has
    it) must agree: without hardware support oneDNN emulates bf16, slower than fp32.
    Decided once per process.

    Returns
    -------
    bool
        False when torch is not installed.
    """
    global _BF16_SUPPORT
    if _BF16_SUPPORT is None:
        ok = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
        try:
            import torch

            check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
            if ok and check is not None:
                ok = bool(check())
        except (ImportError, AttributeError, RuntimeError):
            ok = False
        _BF16_SUPPORT = ok
    return _BF16_SUPPORT


def resolve_precision(precision: str, backend: str, device: str, arch: str = "unknown") -> str:
    """The concrete precision a backend runs at.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        What was asked for.
    backend : {"torch", "onnx"}
        The backend that runs the model.
    device : str
        ``"cpu"``, ``"cuda"``/``"cuda:<i>"`` or ``"mps"``.
    arch : str
        Model architecture (``"fast"``, ``"rrdb"``, ``"next"``, ...).

    Returns
    -------
    str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``. ``"auto"`` gives bf16 on a CPU that supports
        it (:func:`cpu_supports_bf16`) and fp16 on CUDA, but only for architectures in
        :data:`BF16_VALIDATED_ARCHS`; fp32 everywhere else (onnxruntime, MPS, RRDB, NEXT).

    Raises
    ------
    InputError
        An unknown precision, or one the backend/device cannot run (fp16 on CPU, bf16 on a
        CPU without AVX512-BF16/AMX or a GPU without bf16, anything but fp32 on
        onnxruntime or MPS).
    """
    if precision not in PRECISIONS:
        raise InputError(
            f"precision {precision!r}: unknown; expected one of {', '.join(PRECISIONS)}"
        )
    cuda = device.startswith("cuda")
    if backend != "torch" or device == "mps":
        where = "onnxruntime" if backend != "torch" else "device mps"
        if precision in ("auto", "fp32"):
            return "fp32"
        raise InputError(f"precision {precision}: not supported by {where} (use fp32 or auto)")
    if precision == "auto":
        if arch not in BF16_VALIDATED_ARCHS:
            return "fp32"
        if cuda:
            return "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise InputError("precision fp16: only on CUDA; on CPU use bf16 or fp32")
    if precision == "bf16":
        if cuda:
            import torch

            if not torch.cuda.is_bf16_supported():
                raise InputError("precision bf16: this GPU does not support bf16 (use fp16)")
        elif not cpu_supports_bf16():
            raise InputError("precision bf16: this CPU has neither AVX512-BF16 nor AMX (use fp32)")
    return precision
