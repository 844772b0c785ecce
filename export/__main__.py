"""`python -m export --backbone NAME (--adapters DIR | --heads FILE) [--weights FILE] --out model.onnx`."""
from __future__ import annotations

import sys

if __name__ == "__main__":  # first: without the export extra, one line instead of an import traceback
    from facecue.cli import run_module

    sys.exit(run_module("export.__main__", "python -m export", "export"))

import argparse

from export.build import build_model, model_document
from export.cli import add_model_inputs, run_main, setup_logging
from export.onnx_export import DEFAULT_EXTERNAL_DATA_THRESHOLD, DEFAULT_OPSET, export_onnx
from export.tensorrt_build import add_engine_arguments


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__, epilog=(
        "example: facecue export --backbone pe-core-t16-384 --weights build/random/RANDOM-PE-Core-T16-384.pt "
        "--adapters build/random/RANDOM-T16-384-dora-adapters --out build/model.onnx"))
    add_model_inputs(parser)
    parser.add_argument("--out", required=True, help="the ONNX model to write, e.g. build/model.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--external-data-threshold", type=int, default=DEFAULT_EXTERNAL_DATA_THRESHOLD,
                        help="bytes of weights above which they go to <out>.data (default 2 GB)")
    parser.add_argument("--crop-margin", type=float, default=0.0, help="crop margin stored in the metadata")
    parser.add_argument("--fp16", action="store_true", help="also write <out>.fp16.onnx, verified against FP32")
    parser.add_argument("--engine", help="also build a TensorRT engine here from the FP16 model (implies --fp16)")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    model = build_model(args.backbone, weights=args.weights, adapters=args.adapters, heads=args.heads)
    document = model_document(model, weights=args.weights, adapters=args.adapters, heads=args.heads,
                              crop_margin=args.crop_margin)
    export_onnx(model, args.out, document, opset=args.opset, external_data_threshold=args.external_data_threshold)
    print(f"wrote {args.out}: tasks {model.task_names}, input {model.config.image_size}px uint8 NHWC"
          + ("  [RANDOM WEIGHTS: plumbing only]" if model.random_weights else ""))
    if args.fp16 or args.engine:
        return fast_path(args)
    return 0


def fast_path(args) -> int:
    """--fp16 / --engine: the FP16 model, then the TensorRT engine built from it."""
    from export.fp16 import Fp16ParityError, export_fp16, format_parity
    from export.tensorrt_build import EngineBuildError, build_engine
    from runtime.backends import BackendError

    try:
        fp16_path, parity = export_fp16(args.out)
        print(format_parity(parity) + f"\nwrote {fp16_path}")
        if args.engine:
            build_engine(fp16_path, args.engine, args.max_batch, args.opt_batch, args.timing_cache, args.workspace_mb)
            print(f"wrote {args.engine} and {args.engine}.json")
    except (Fp16ParityError, BackendError, EngineBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

