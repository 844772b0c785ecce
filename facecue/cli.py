"""The `facecue` command: one entry point whose subcommands are the project's own modules.

    facecue run --source 0 --model build/model.onnx     # = python run_camera.py ...
    facecue export ...                                   # = python -m export ...
    facecue --version

Each subcommand is a module with `main(argv) -> int`; it is imported only when asked for, so `facecue run`
never imports torch, and a subcommand whose optional extra is missing says which extra to install.
"""
from __future__ import annotations

import importlib
import os
import sys

from facecue import __version__, interrupts

# subcommand → (module with main(argv), what it does, the pip extra its imports need or None)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "run": ("runtime.run", "run the pipeline on a camera, file or stream", None),
    "export": ("export.__main__", "export PE-Core + adapters to a facecue ONNX model", "export"),
    "verify": ("export.verify", "check an exported model against PyTorch", "export"),
    "fp16": ("export.fp16", "convert a facecue ONNX model to FP16", "export"),
    "engine": ("export.tensorrt_build", "build a TensorRT engine from an ONNX model", "tensorrt"),
    "calibrate": ("calibration.__main__", "INT8 quantisation and temperature calibration", None),
    "train": ("training.__main__", "fine-tune with one of the thesis recipes", "export"),
    "evaluate": ("training.evaluate", "score a model or checkpoint on labelled faces", "export"),
    "bench": ("runtime.bench", "benchmark the live pipeline on a clip", None),
    "fetch": ("export.fetch", "download, export and verify the thesis model (thesis-dora, thesis-mtlora)", "export"),
    "check-thesis": ("export.check_thesis", "check a model against the thesis' published predictions", None),
}
# third-party packages that only an optional extra installs
EXTRA_PACKAGES = {"torch", "torchvision", "timm", "peft", "safetensors", "onnxscript", "onnxconverter_common",
                  "tensorrt", "cuda", "openvino", "nncf", "cyclonedds", "mcap", "mcap_ros2", "rosbags"}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: facecue COMMAND [ARGS...]   (facecue COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text, _) in COMMANDS.items()]
    lines += ["", "example: facecue run --source samples/walking-and-pause-demo.mp4 --headless"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `facecue run ... | head`: the reader has gone, which is not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        return 141  # what a shell reports for SIGPIPE


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"facecue {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, extra = COMMANDS[name]
    return run_module(module_name, f"facecue {name}", extra, rest)


def run_module(module_name: str, prog: str, extra: str | None, argv: list[str] | None = None) -> int:
    """Import `module_name` and run its `main(argv)`; a package of a missing extra (at import, or imported later
    by the command) is one line naming the extra (exit 2), not a traceback. A module that `python -m` runs
    calls this first, before its own imports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    interrupts.install()
    try:
        module = importlib.import_module(module_name)
        sys.argv[0] = prog
        # export's commands turn their input errors into exit 2 in export.cli.run_main (their __main__ does too)
        run_main = getattr(module, "run_main", None)
        code = int((run_main(module.main, argv) if run_main else module.main(argv)) or 0)
        if code != 130:  # 130: the command caught Ctrl-C and said so; else one Python swallowed still counts
            interrupts.check()
        return code
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in EXTRA_PACKAGES:
            raise
        hint = f' (pip install "facecue[{extra}]")' if extra else ""
        print(f"error: {prog} needs the package {error.name!r}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while importing torch or in a command without its own handler
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        if not interrupts.interrupted():
            raise
        print("interrupted", file=sys.stderr)  # Ctrl-C inside a native module's import surfaces as its ImportError
        return 130
