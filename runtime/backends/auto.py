"""`classifier.backend: auto`: the fastest engine this machine has for the model file, and why.

In order:
1. a TensorRT engine file (.engine, .plan, .trt) → tensorrt (an engine runs nowhere else);
   an OpenVINO IR (.xml, from `python -m calibration int8 --engine nncf`) → openvino;
2. onnxruntime has the CUDA or TensorRT execution provider and either `classifier.providers` names one or
   an NVIDIA GPU is present (/dev/nvidia0, /proc/driver/nvidia/gpus) → onnxruntime on the GPU;
3. `classifier.providers` changed from its default (CPU only) → onnxruntime as configured;
4. the openvino package imports on an x86 CPU → openvino (bf16 or INT8 kernels ONNX Runtime's CPU path
   does not use; BENCHMARKS.md, "Classifier engines on this CPU");
5. else onnxruntime on the CPU.
The choice and its reason are logged, shown in the exit statistics and written in the JSONL `run` line.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from runtime.backends.providers import CPU, CUDA, GPU_PROVIDERS
from runtime.config import ClassifierConfig

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class Choice:
    backend: str  # onnxruntime | openvino | tensorrt
    reason: str
    config: ClassifierConfig  # the config to open it with (providers set for a GPU found by auto)


def nvidia_gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or any(Path("/proc/driver/nvidia/gpus").glob("*"))


def onnxruntime_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def openvino_importable() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(model_path: str | Path, config: ClassifierConfig, *, available: list[str] | None = None,
                   gpu: bool | None = None, openvino: bool | None = None, machine: str | None = None) -> Choice:
    """What `auto` opens. The keyword arguments replace what is found on this machine (for the tests' sake);
    nothing is opened or loaded here."""
    suffix = Path(model_path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return Choice("tensorrt", f"{suffix} is a TensorRT engine file", config)
    if suffix == ".xml":
        return Choice("openvino", "an OpenVINO IR", config)
    available = onnxruntime_providers() if available is None else available
    gpu_providers = [name for name in GPU_PROVIDERS if name in available]
    asked = [name for name in config.providers if name in GPU_PROVIDERS]
    if asked and any(name in available for name in asked):
        return Choice("onnxruntime", f"classifier.providers asks for {asked} and onnxruntime has them", config)
    if gpu_providers and (nvidia_gpu_present() if gpu is None else gpu):
        providers = ([CUDA] if CUDA in gpu_providers else gpu_providers[:1]) + [CPU]
        return Choice("onnxruntime", f"an NVIDIA GPU and onnxruntime's {providers[0]}",
                      dataclasses.replace(config, providers=providers))
    if config.providers != ClassifierConfig().providers:
        return Choice("onnxruntime", f"classifier.providers is set ({config.providers})", config)
    machine = (machine or platform.machine()).lower()
    has_openvino = openvino_importable() if openvino is None else openvino
    if has_openvino and machine in X86:
        return Choice("openvino", f"OpenVINO installed on an {machine} CPU", config)
    why = "OpenVINO not installed" if not has_openvino else f"not an x86 CPU ({machine})"
    return Choice("onnxruntime", f"CPU ({why})", config)
