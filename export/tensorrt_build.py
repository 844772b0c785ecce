"""`python -m export.tensorrt_build model.fp16.onnx --out model.engine [--max-batch 8 --opt-batch 1]`:
a TensorRT 10.x engine from a facecue ONNX model, plus `model.engine.json` (the facecue document with
the TensorRT version, GPU name and compute capability it was built for).

The network is *strongly typed*: precision follows the ONNX types (FP16 from export.fp16, INT8 from a
QDQ model), so no FP16/INT8 builder flags are set and the same code runs on TensorRT 11. One
optimisation profile over the batch axis (min 1, opt, max), a timing cache that is reused across
builds. API facts: TensorRT 10 Python API (Builder, OnnxParser, IBuilderConfig) and the README's "Jetson and
TensorRT" section.
NOT YET RUN ON NVIDIA HARDWARE: written against the documented API; scripts/gpu_check.py exercises it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from runtime.backends import BackendError
from runtime.backends.providers import ProfileShapes, profile_shapes
from runtime.backends.tensorrt import current_target, import_cudart, import_tensorrt, sidecar_document, sidecar_path
from runtime.metadata import ModelMetadataError, read_model_info
from facecue import interrupts

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 1024


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the model or build the engine; nothing was written."""


def default_timing_cache(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".timing")


def build_engine(onnx_path: str | Path, engine_path: str | Path, max_batch: int = 8, opt_batch: int = 1,
                 timing_cache: str | Path | None = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 optimization_level: int = 3) -> Path:
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info = read_model_info(onnx_path)  # a facecue model, or a clear error
    trt = import_tensorrt()
    target = current_target(trt, import_cudart())
    timing_cache = Path(timing_cache) if timing_cache else default_timing_cache(engine_path)
    log.info("building a strongly typed %s engine from %s (TensorRT %s, %s)", info.precision, onnx_path,
             target.tensorrt_version, target.gpu_name)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # the path lets the parser find external weights
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        details = "; ".join(f"{e.node_name()} ({e.node_operator()}): {e.desc()}" for e in errors)
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {details}")

    shapes = profile_shapes(info, max_batch, opt_batch)
    check_network_input(network, shapes, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 1024**2)
    config.builder_optimization_level = optimization_level
    profile = builder.create_optimization_profile()
    profile.set_shape(shapes.input_name, shapes.min, shapes.opt, shapes.max)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"invalid optimisation profile {shapes}")
    cache = attach_timing_cache(config, timing_cache)  # held until the build is done, as TensorRT requires

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    profile_entry = {"min": list(shapes.min), "opt": list(shapes.opt), "max": list(shapes.max)}
    document = sidecar_document(info.document, target, profile_entry)
    write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    write_atomically(engine_path, bytes(plan))
    write_atomically(sidecar_path(engine_path), json.dumps(document, indent=1).encode())
    log.info("wrote %s and %s", engine_path, sidecar_path(engine_path))
    return engine_path


def check_network_input(network, shapes: ProfileShapes, onnx_path: Path) -> None:
    """The parsed network has one input, the metadata's, with a dynamic batch and the fixed dims the profile uses."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [tensor.name for tensor in inputs]
    if names != [shapes.input_name]:
        raise EngineBuildError(f"{onnx_path}: network inputs {names}, the metadata says [{shapes.input_name!r}]")
    dims = tuple(inputs[0].shape)
    if len(dims) != len(shapes.max) or any(d not in (-1, m) for d, m in zip(dims, shapes.max)):
        raise EngineBuildError(f"{onnx_path}: input {shapes.input_name!r} has shape {dims}, the profile needs "
                               f"(-1 or N, {', '.join(map(str, shapes.max[1:]))})")


def attach_timing_cache(config, path: Path):
    """Reuse the timing cache at `path`; one from another GPU or TensorRT version, or an unreadable one, is
    replaced by an empty cache (with a warning) rather than trusted (`ignore_mismatch=False`)."""
    saved = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(saved)
    except Exception:  # corrupt bytes: the binding raises instead of returning None in some versions
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log.warning("timing cache %s is unreadable or from another GPU/TensorRT version: starting an empty one", path)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; an engine is an ordinary file
        interrupts.check()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=int, default=8, help="profile max (the classifier's max_batch)")
    parser.add_argument("--opt-batch", type=int, default=1, help="profile opt: the usual number of faces per round")
    parser.add_argument("--timing-cache", help="default: <engine>.timing; reused across builds on the same GPU")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB)


def main(argv=None) -> int:
    from export.cli import setup_logging

    parser = argparse.ArgumentParser(prog="python -m export.tensorrt_build", description=__doc__.split("\n\n")[0],
                                     epilog="example: facecue engine build/model.fp16.onnx --max-batch 8")
    parser.add_argument("model", help="a facecue ONNX model: model.fp16.onnx, or an INT8 QDQ model")
    parser.add_argument("--out", required=True, help="the engine to write, e.g. build/model.engine")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        build_engine(args.model, args.out, args.max_batch, args.opt_batch, args.timing_cache, args.workspace_mb)
    except (FileNotFoundError, ModelMetadataError, BackendError, EngineBuildError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # through facecue.cli like every command: Ctrl-C handling, missing extras
    from facecue.cli import run_module

    sys.exit(run_module("export.tensorrt_build", "python -m export.tensorrt_build", "tensorrt"))
