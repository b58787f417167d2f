# AstroSleuth_Upscale.py - AI super-resolution of the loaded image with astrosleuth-astro
#
# (c) 2026 the astrosleuth-astro developers
# SPDX-License-Identifier: BSD-3-Clause
# Contact: the astrosleuth-astro developers, through the issue tracker of the
#          astrosleuth-astro project (please attach the Siril log).
#
# Version history
# 1.0.0  First release: dialog (Scripts menu) and pyscript options; registry models or a
#        weights file; scales 1-4; auto/mtf/asinh/none stretch with an exact inverse;
#        star protection; luminance only; NEXT conditioning; CPU or GPU; the WCS and the
#        pixel size of a plate-solved image are rescaled; 16-bit images stay 16-bit.
# 1.1.0  Installs astrosleuth-astro from a local wheel or checkout (-install_from=PATH or
#        ASTROSLEUTH_INSTALL_FROM); an error names the one-line pip install into Siril's
#        venv; every error is one "AstroSleuth: ERROR:" line (red), and under siril-cli
#        the image is closed so that the script file's next command fails.

"""
AstroSleuth upscale for Siril >= 1.4
====================================

Upscales the image loaded in Siril with the AstroSleuth networks (V1, V2, NEXT, FAST or the
default model of astrosleuth-astro), the way astronomers need it:

* linear data is stretched with an invertible stretch before the network and mapped back
  exactly, so the background level and the units stay what they were;
* mono and colour images, 16-bit and 32-bit (the bit depth is kept);
* a plate-solved image stays plate-solved: the WCS (including SIP distortion) and the
  pixel size are rescaled exactly;
* one Undo restores the original image.

The work is done by the astrosleuth-astro package, which has to be installed into
Siril's own Python environment (the venv sirilpy runs in, ``$XDG_DATA_HOME/siril/venv``,
e.g. ``~/.local/share/siril/venv`` on Linux) once
(``astrosleuth_astro.siril.upscale_current_image``). The package is not on the public
package index, so give the script a local wheel or source checkout:

* ``pyscript AstroSleuth_Upscale.py -install_from=/path/to/astrosleuth-astro ...`` (a
  ``astrosleuth_astro-*.whl`` file, a folder of wheels, or a source checkout), or
* the environment variable ``ASTROSLEUTH_INSTALL_FROM=/path/to/astrosleuth-astro`` (also
  for the Scripts menu, which passes no options), or
* one line in a terminal, with the Python that the error message names::

      "<Siril's venv>/bin/python" -m pip install /path/to/astrosleuth-astro

The path is used only while the package is missing or older than this script needs.

Use from the Scripts menu
-------------------------
A dialog asks for the model, the scale, the stretch, star protection, luminance only,
NEXT's conditioning (shown for NEXT models) and CPU or GPU.

Use with pyscript (scripts, siril-cli)
--------------------------------------
::

    pyscript AstroSleuth_Upscale.py [-model=NAME|FILE] [-scale=1|2|3|4]
        [-stretch=auto|mtf|asinh|none] [-protect_stars] [-protect_strength=X]
        [-conserve_flux[=consistent|sources|all|off]]
        [-luminance_only] [-device=cpu|gpu] [-tile=N]
        [-star_strength=X] [-detail_strength=X] [-spikes_strength=X]
        [-cond_strength=X] [-color_matching] [-install_from=PATH]

Defaults: ``-model=default -scale=4 -stretch=auto -conserve_flux=consistent -device=cpu``
(a bare ``-conserve_flux`` means ``sources``).

Errors
------
Every error is one line starting with ``AstroSleuth: ERROR:``, red in Siril's log (and a
``log: AstroSleuth: ERROR: ...`` line on ``siril-cli``'s output); the image is not changed.
Siril 1.4 does not stop a script file when a Python script fails (``pyscript`` always
succeeds), so under ``siril-cli`` the script then also closes the image: the script
file's next image command (``save``...) fails and ``siril-cli`` exits with status 1,
instead of saving the unchanged image as if it were the result.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import sirilpy as s

VERSION = "1.1.0"
#: The Python package that does the work, and the versions this script works with.
PACKAGE = "astrosleuth-astro"
PACKAGE_VERSION = "~=0.1.0"
REQUIRED_SIRIL = "1.4.0"
#: Where a wheel, a folder of wheels or a source checkout of the package is (the option
#: ``-install_from=PATH`` says the same and wins).
INSTALL_ENV = "ASTROSLEUTH_INSTALL_FROM"
#: Every error line starts with this (red in Siril; grep it in siril-cli's output).
ERROR_PREFIX = "AstroSleuth: ERROR:"

SCALES = (1, 2, 3, 4)
STRETCHES = ("auto", "mtf", "asinh", "none")
#: Consistency with the data (astrosleuth_astro.conserve.CONSERVE_MODES), default first.
CONSERVE_MODES = ("consistent", "sources", "all", "off")
DEVICES = ("cpu", "gpu")


class UsageError(Exception):
    """A bad pyscript argument (reported in the Siril log)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The pyscript options (single dash, ``-name=value``, as Siril scripts use them)."""
    p = _Parser(prog="AstroSleuth_Upscale.py", add_help=False)
    p.add_argument("-model", default="default", help="registry name or weights/ONNX file")
    p.add_argument("-scale", type=int, default=4, choices=SCALES)
    p.add_argument("-stretch", default="auto", choices=STRETCHES)
    p.add_argument("-protect_stars", action="store_true")
    p.add_argument("-protect_strength", type=float, default=None)
    p.add_argument(
        "-conserve_flux", nargs="?", const="sources", default=None, choices=CONSERVE_MODES
    )
    p.add_argument("-luminance_only", action="store_true")
    p.add_argument("-device", default="cpu", type=str.lower, choices=DEVICES)
    p.add_argument("-tile", type=int, default=None)
    p.add_argument("-star_strength", type=float, default=None)
    p.add_argument("-detail_strength", type=float, default=None)
    p.add_argument("-spikes_strength", type=float, default=None)
    p.add_argument("-cond_strength", type=float, default=None)
    p.add_argument("-color_matching", action="store_true", default=None)
    p.add_argument("-install_from", default=None, metavar="PATH")
    return p


def parse_options(argv: list[str]) -> dict:
    """pyscript arguments -> options of :func:`run_upscale` (``device`` is "cpu" or "gpu")
    and ``install_from`` (for :func:`install_package`)."""
    return vars(build_parser().parse_args(argv))


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def report_error(siril, message: str) -> str:
    """Log one unmistakable error line: ``AstroSleuth: ERROR: message``, in red.

    On siril-cli the line is ``log: AstroSleuth: ERROR: ...`` on stdout. If the log call
    itself fails (connection lost), the line goes to stderr, which Siril also logs.
    """
    line = message if message.startswith(ERROR_PREFIX) else f"{ERROR_PREFIX} {message}"
    try:
        siril.log(line, s.LogColor.RED)
    except Exception:  # noqa: BLE001 - the error must be seen somewhere
        print(line, file=sys.stderr, flush=True)
    return line


def stop_siril_script(siril) -> None:
    """Under siril-cli, make the failure stop the script file.

    Siril 1.4 runs ``pyscript`` to completion whatever the Python script does (the exit
    status is not looked at), and the next ``save`` would write the unchanged image. With
    the image closed, the next image command fails, Siril stops the script there and
    siril-cli exits with status 1. In the GUI nothing is closed.
    """
    try:
        if not siril.is_cli():
            return
        if siril.is_image_loaded():
            siril.cmd("close")
            siril.log(
                f"{ERROR_PREFIX} the image was closed so that this script file stops "
                "here (siril-cli exits with status 1 at its next image command)",
                s.LogColor.RED,
            )
    except Exception:  # noqa: BLE001 - the error line is already out
        pass


# --------------------------------------------------------------------------------------
# Installing the package into Siril's Python
# --------------------------------------------------------------------------------------


class InstallError(Exception):
    """astrosleuth-astro is missing and could not be installed (the message says the fix)."""


def pip_command(*args: str) -> list[str]:
    """``pip install`` with the Python this script runs in: the one of Siril's venv."""
    return [sys.executable, "-m", "pip", "install", *args]


def fix_hint(args: list[str] | None = None) -> str:
    """The fix, as the error message gives it: a one-line pip install (of ``args``, the
    pip arguments of a known source), or the option."""
    where = " ".join(f'"{a}"' for a in (args or ["/path/to/astrosleuth-astro"]))
    return (
        f'Fix: run  "{sys.executable}" -m pip install {where}  in a terminal (an '
        "astrosleuth_astro-*.whl wheel or a source checkout of astrosleuth-astro), or run "
        f"the script with -install_from=PATH (or set {INSTALL_ENV}=PATH before starting "
        "Siril); then run the script again"
    )


def installed_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def version_ok(version: str | None) -> bool:
    """``version`` meets :data:`PACKAGE_VERSION` (``~=0.1.0``: 0.1.x from 0.1.0 on)."""
    if version is None:
        return False
    try:
        from packaging.specifiers import SpecifierSet  # a dependency of sirilpy
    except ImportError:  # pragma: no cover - sirilpy always has it
        return version.split(".")[:2] == PACKAGE_VERSION.lstrip("~=").split(".")[:2]
    return SpecifierSet(PACKAGE_VERSION).contains(version, prereleases=True)


def install_args(source: str) -> list[str]:
    """pip arguments for a local ``source``: a wheel, a folder of wheels or a checkout."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InstallError(f"-install_from / {INSTALL_ENV}: {source} does not exist. {fix_hint()}")
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".whl":
            raise InstallError(
                f"-install_from / {INSTALL_ENV}: {path} is not a wheel (.whl) or a folder. "
                f"{fix_hint()}"
            )
        return [str(path)]
    if (path / "pyproject.toml").is_file():  # a source checkout
        return [str(path)]
    if any(path.glob("astrosleuth_astro-*.whl")):  # a folder of wheels (offline installs)
        return ["--find-links", str(path), f"{PACKAGE}{PACKAGE_VERSION}"]
    raise InstallError(
        f"-install_from / {INSTALL_ENV}: {path} holds neither a checkout (pyproject.toml) "
        f"nor an astrosleuth_astro-*.whl wheel. {fix_hint()}"
    )


def run_pip(args: list[str]) -> int:
    """Run pip; its output goes to this script's stdout, which Siril shows in its log."""
    sys.stdout.flush()
    return subprocess.run(pip_command(*args), stdin=subprocess.DEVNULL, check=False).returncode


def install_package(siril, install_from: str | None = None) -> None:
    """Make sure a usable astrosleuth-astro is importable in Siril's Python.

    Nothing is done when a matching version is there. Otherwise it is installed from
    ``install_from`` (or :data:`INSTALL_ENV`) with pip, or, without a path, tried from the
    package index through sirilpy's ``ensure_installed``.

    Raises
    ------
    InstallError
        With the reason and the fix (the exact pip command for Siril's Python).
    """
    installed = installed_version()
    source = install_from or os.environ.get(INSTALL_ENV) or None
    args: list[str] | None = None
    if not version_ok(installed):
        have = f"{PACKAGE} {installed} is installed" if installed else f"{PACKAGE} is not installed"
        if source:
            args = install_args(source)
            siril.log(
                f"AstroSleuth: {have} in Siril's Python ({sys.executable}); installing it "
                f"from {source} (this can take a few minutes)"
            )
            code = run_pip(args)
            if code != 0:
                raise InstallError(
                    f"pip could not install {PACKAGE} from {source} (exit status {code}; "
                    f"pip's output is above). {fix_hint(args)}"
                )
        else:
            siril.log(
                f"AstroSleuth: {have} in Siril's Python; trying the package index (first run only)"
            )
            try:
                s.ensure_installed(PACKAGE, version_constraints=PACKAGE_VERSION)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - one clear line
                raise InstallError(
                    f"{have} in Siril's Python ({sys.executable}) and could not be "
                    f"installed from the package index ({type(exc).__name__}: {exc}). "
                    f"{fix_hint()}"
                ) from None
        importlib.invalidate_caches()
        installed = installed_version()
        if not version_ok(installed):
            raise InstallError(
                f"{PACKAGE}{PACKAGE_VERSION} is needed, Siril's Python has "
                f"{installed or 'none'} after the install. {fix_hint(args)}"
            )
    try:
        importlib.import_module("astrosleuth_astro.siril")
    except Exception as exc:  # noqa: BLE001 - a broken install is an install problem
        raise InstallError(
            f"{PACKAGE} {installed} is installed in Siril's Python but cannot be imported "
            f"({type(exc).__name__}: {exc}). {fix_hint(args)}"
        ) from None


def prepare_runtime(siril, options: dict) -> tuple[str, str]:
    """Install PyTorch when the model needs it, and pick the backend and device."""
    from astrosleuth_astro.siril import choose_device, model_needs_torch

    model = options["model"]
    torch_helper = s.TorchHelper()
    if model_needs_torch(model) and not torch_helper.is_torch_installed():
        siril.log(f"AstroSleuth: {model} needs PyTorch; installing it (first use only)")
        if not torch_helper.ensure_torch():
            raise RuntimeError("PyTorch could not be installed; choose the default model")
    if str(model).lower().endswith(".safetensors"):
        s.ensure_installed("safetensors")
    use_gpu = options["device"] == "gpu"
    onnx_helper = s.ONNXHelper() if use_gpu and not model_needs_torch(model) else None
    backend, device, note = choose_device(
        use_gpu, model, torch_helper=torch_helper if use_gpu else None, onnx_helper=onnx_helper
    )
    siril.log(f"AstroSleuth: {note}")
    return backend, device


def run_upscale(siril, options: dict) -> int:
    """Upscale the loaded image with ``options``; 0 on success, 1 on failure (logged)."""
    from astrosleuth_astro.siril import SirilUpscaleError, upscale_current_image

    try:
        backend, device = prepare_runtime(siril, options)
    except Exception as exc:  # noqa: BLE001
        report_error(siril, f"{exc}. The image was not changed.")
        return 1
    kwargs = {k: v for k, v in options.items() if k not in ("device", "install_from")}
    try:
        upscale_current_image(siril, backend=backend, device=device, **kwargs)
    except SirilUpscaleError:
        return 1  # already in the Siril log (an "AstroSleuth: ERROR:" line), image unchanged
    return 0


# --------------------------------------------------------------------------------------
# Dialog (Scripts menu)
# --------------------------------------------------------------------------------------


def run_dialog(siril) -> int:
    """Show the options dialog; the Apply button upscales the loaded image."""
    import threading
    import tkinter as tk
    from tkinter import ttk

    from astrosleuth_astro.models import list_models
    from astrosleuth_astro.siril import model_arch, star_protection_available

    try:
        from sirilpy import tksiril  # part of sirilpy throughout Siril 1.4
    except ImportError:
        tksiril = None
    root = None
    try:
        s.ensure_installed("ttkthemes")
        from ttkthemes import ThemedTk

        root = ThemedTk()
    except Exception:  # noqa: BLE001 - a plain Tk window still works
        root = tk.Tk()
    root.title(f"AstroSleuth upscale - v{VERSION}")
    root.resizable(False, False)
    if tksiril is not None:
        try:
            tksiril.standard_style()
            tksiril.match_theme_to_siril(root, siril)
        except Exception:  # noqa: BLE001 - cosmetic
            pass

    def shown(var):
        # A slider's value with two decimals, for the label next to it.
        text = tk.StringVar(value=f"{var.get():.2f}")
        var.trace_add("write", lambda *_: text.set(f"{var.get():.2f}"))
        return text

    def tip(widget, text: str) -> None:
        if tksiril is not None:
            tksiril.create_tooltip(widget, text)

    v = {
        "model": tk.StringVar(value="default"),
        "scale": tk.IntVar(value=4),
        "stretch": tk.StringVar(value="auto"),
        "protect_stars": tk.BooleanVar(value=False),
        "conserve_flux": tk.StringVar(value=CONSERVE_MODES[0]),
        "protect_strength": tk.DoubleVar(value=1.0),
        "luminance_only": tk.BooleanVar(value=False),
        "device": tk.StringVar(value="cpu"),
        "star_strength": tk.DoubleVar(value=0.0),
        "detail_strength": tk.DoubleVar(value=0.0),
        "spikes_strength": tk.DoubleVar(value=0.0),
        "cond_strength": tk.DoubleVar(value=0.0),
        "color_matching": tk.BooleanVar(value=False),
    }
    main = ttk.Frame(root, padding=10)
    main.pack(fill=tk.BOTH, expand=True)
    ttk.Label(main, text="AstroSleuth upscale", style="Header.TLabel").pack(pady=(0, 10))

    opts = ttk.LabelFrame(main, text="Options", padding=8)
    opts.pack(fill=tk.X)
    row = 0

    def labelled(text: str, widget, help_text: str) -> None:
        nonlocal row
        ttk.Label(opts, text=text).grid(row=row, column=0, sticky="w", pady=2)
        widget.grid(row=row, column=1, sticky="ew", pady=2)
        tip(widget, help_text)
        row += 1

    models = [m.name for m in list_models()]
    model_box = ttk.Combobox(opts, textvariable=v["model"], values=models, width=28)
    labelled(
        "Model:",
        model_box,
        "A model of the registry, or the path of a weights file "
        "(.pth, .safetensors, .onnx). Models other than 'default' are downloaded on "
        "first use and need PyTorch, which is then installed.",
    )

    def browse() -> None:
        from tkinter import filedialog

        path = filedialog.askopenfilename(
            parent=root,
            title="AstroSleuth model file",
            filetypes=[("Model weights", "*.pth *.pt *.safetensors *.onnx"), ("All files", "*")],
        )
        if path:
            v["model"].set(path)

    ttk.Button(opts, text="File...", command=browse).grid(row=row - 1, column=2, padx=(4, 0))
    scale_box = ttk.Combobox(
        opts, textvariable=v["scale"], values=SCALES, state="readonly", width=6
    )
    labelled(
        "Scale:",
        scale_box,
        "4 is the networks' native scale; 2 and 3 are resampled from "
        "4x; 1 enhances at the same size.",
    )
    stretch_box = ttk.Combobox(
        opts, textvariable=v["stretch"], values=STRETCHES, state="readonly", width=8
    )
    labelled(
        "Stretch:",
        stretch_box,
        "How linear data is shown to the network (inverted "
        "exactly afterwards). auto: mtf for linear data, none for stretched images.",
    )

    star_ok = star_protection_available()
    protect = ttk.Checkbutton(opts, text="Protect stars", variable=v["protect_stars"])
    protect.grid(row=row, column=0, sticky="w", pady=2)
    strength = ttk.Scale(
        opts, from_=0.0, to=1.0, variable=v["protect_strength"], orient=tk.HORIZONTAL
    )
    strength.grid(row=row, column=1, sticky="ew", pady=2)
    ttk.Label(opts, textvariable=shown(v["protect_strength"]), width=5).grid(row=row, column=2)
    row += 1
    if star_ok:
        tip(
            protect,
            "Repair what the network does to stars (dark rings, lost flux, split "
            "cores) inside star footprints; nothing changes outside them.",
        )
        tip(strength, "Star protection strength")
    else:
        protect.state(["disabled"])
        strength.state(["disabled"])
        tip(protect, "Star protection needs a newer astrosleuth-astro.")
    keep = ttk.Combobox(
        opts, textvariable=v["conserve_flux"], values=CONSERVE_MODES, state="readonly", width=10
    )
    ttk.Label(opts, text="Consistency:").grid(row=row, column=0, sticky="w", pady=2)
    keep.grid(row=row, column=1, sticky="w", pady=2)
    tip(
        keep,
        "consistent: binning the result back to the original size gives the original "
        "pixels on stars and sources, and the sky within its noise (no offset). "
        "sources: the same with one constant sky offset. all: exact at every pixel. "
        "off: the network as it is.",
    )
    row += 1
    lum = ttk.Checkbutton(opts, text="Luminance only (colour images)", variable=v["luminance_only"])
    lum.grid(row=row, column=0, columnspan=2, sticky="w", pady=2)
    tip(lum, "Take the luminance from the network and the colour from the input.")
    row += 1
    dev = ttk.Frame(opts)
    ttk.Radiobutton(dev, text="CPU", value="cpu", variable=v["device"]).pack(side=tk.LEFT)
    ttk.Radiobutton(dev, text="GPU", value="gpu", variable=v["device"]).pack(side=tk.LEFT, padx=8)
    labelled(
        "Device:",
        dev,
        "GPU uses PyTorch (CUDA, Apple MPS) or onnxruntime (CUDA) when available, else the CPU.",
    )

    nxt = ttk.LabelFrame(main, text="NEXT conditioning", padding=8)
    for i, (key, text, lo, hi) in enumerate(
        (
            ("star_strength", "Stars", -1.0, 1.0),
            ("detail_strength", "Detail", -1.0, 1.0),
            ("spikes_strength", "Spikes", -1.0, 1.0),
            ("cond_strength", "Strength (0 = off)", 0.0, 5.0),
        )
    ):
        ttk.Label(nxt, text=text).grid(row=i, column=0, sticky="w")
        ttk.Scale(nxt, from_=lo, to=hi, variable=v[key], orient=tk.HORIZONTAL, length=180).grid(
            row=i, column=1, sticky="ew"
        )
        ttk.Label(nxt, textvariable=shown(v[key]), width=5).grid(row=i, column=2)
    ttk.Checkbutton(nxt, text="Colour matching", variable=v["color_matching"]).grid(
        row=4, column=0, columnspan=3, sticky="w"
    )

    buttons = ttk.Frame(main)
    status = ttk.Label(main, text="Ready")

    def show_next(*_args) -> None:
        # NEXT's sliders only mean something for NEXT models.
        if model_arch(v["model"].get().strip()) == "next":
            nxt.pack(fill=tk.X, pady=(8, 0), before=buttons)
        else:
            nxt.pack_forget()

    v["model"].trace_add("write", show_next)
    buttons.pack(fill=tk.X, pady=(10, 0))
    status.pack(fill=tk.X, pady=(6, 0))
    show_next()

    def collect() -> dict:
        options = {
            "model": v["model"].get().strip() or "default",
            "scale": int(v["scale"].get()),
            "stretch": v["stretch"].get(),
            "protect_stars": bool(v["protect_stars"].get()) and star_ok,
            "protect_strength": round(float(v["protect_strength"].get()), 3)
            if v["protect_stars"].get() and star_ok
            else None,
            "conserve_flux": v["conserve_flux"].get(),
            "luminance_only": bool(v["luminance_only"].get()),
            "device": v["device"].get(),
            "tile": None,
        }
        for key in ("star_strength", "detail_strength", "spikes_strength", "cond_strength"):
            value = round(float(v[key].get()), 3) if model_arch(options["model"]) == "next" else 0.0
            options[key] = value if value != 0.0 else None
        matching = model_arch(options["model"]) == "next" and bool(v["color_matching"].get())
        options["color_matching"] = True if matching else None
        return options

    state = {"thread": None, "rc": None}

    def work(options: dict) -> None:
        try:
            state["rc"] = run_upscale(siril, options)
        except Exception as exc:  # noqa: BLE001
            report_error(siril, f"unexpected error: {type(exc).__name__}: {exc}")
            state["rc"] = 1

    def poll() -> None:
        if state["thread"] is not None and state["thread"].is_alive():
            root.after(200, poll)
            return
        apply_button.state(["!disabled"])
        status.configure(text="Done" if state["rc"] == 0 else "Failed: see the Siril log")

    def apply() -> None:
        apply_button.state(["disabled"])
        status.configure(text="Upscaling... (progress in Siril's bar)")
        # Work off the Tk thread so the dialog stays responsive.
        state["thread"] = threading.Thread(target=work, args=(collect(),), daemon=True)
        state["thread"].start()
        root.after(200, poll)

    def close() -> None:
        if state["thread"] is not None and state["thread"].is_alive():
            status.configure(text="Please wait for the upscale to finish")
            return
        root.destroy()

    apply_button = ttk.Button(buttons, text="Apply", command=apply)
    apply_button.pack(side=tk.RIGHT, padx=4)
    ttk.Button(buttons, text="Close", command=close).pack(side=tk.RIGHT, padx=4)
    root.protocol("WM_DELETE_WINDOW", close)
    root.mainloop()
    return 0 if state["rc"] in (None, 0) else 1


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the script: the dialog from the Scripts menu, options under pyscript.

    Returns 0 on success, 1 on a failure, 2 on a bad option. Every failure is one
    ``AstroSleuth: ERROR:`` line in the log; under siril-cli the image is then closed
    (:func:`stop_siril_script`) so that the script file stops at its next image command.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    siril = s.SirilInterface()
    try:
        siril.connect()
    except s.SirilConnectionError as exc:
        print(f"{ERROR_PREFIX} could not connect to Siril ({exc})", file=sys.stderr, flush=True)
        return 1
    try:
        rc = _main(siril, args)
    except Exception as exc:  # noqa: BLE001 - never a bare traceback without the error line
        report_error(siril, f"unexpected error: {type(exc).__name__}: {exc}")
        rc = 1
    if rc != 0:
        stop_siril_script(siril)
    try:
        siril.disconnect()
    except Exception:  # noqa: BLE001
        pass
    return rc


def _main(siril, args: list[str]) -> int:
    try:
        siril.cmd("requires", REQUIRED_SIRIL)
    except s.CommandError:
        report_error(siril, f"this script needs Siril {REQUIRED_SIRIL} or newer")
        return 1
    if not s.check_module_version(">=1.0.8"):
        report_error(siril, "this script needs sirilpy 1.0.8 or newer (Siril 1.4.0 or newer)")
        return 1
    headless = bool(getattr(siril, "is_cli", lambda: False)())
    if args or headless:
        try:
            options = parse_options(args)
        except UsageError as exc:
            report_error(siril, f"bad option: {exc}. The image was not changed.")
            return 2
        try:
            install_package(siril, options["install_from"])
        except InstallError as exc:
            report_error(siril, f"{exc}. The image was not changed.")
            return 1
        return run_upscale(siril, options)
    if not siril.is_image_loaded():
        siril.error_messagebox("AstroSleuth: open an image first (sequences are not supported)")
        return 1
    try:
        install_package(siril)
    except InstallError as exc:
        line = report_error(siril, str(exc))
        try:
            siril.error_messagebox(line)
        except Exception:  # noqa: BLE001 - the log line is there
            pass
        return 1
    return run_dialog(siril)


if __name__ == "__main__":
    sys.exit(main())
