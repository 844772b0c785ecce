"""`python -m calibration int8 …` and `python -m calibration temperature …` (see README, "Calibration").

  int8         --model M.onnx (--images DIR | --crops DIR) [--out M.int8.onnx] [--calibrator entropy|percentile|minmax]
               [--engine ort|nncf]  (nncf: an OpenVINO IR M.nncf.xml for classifier.backend openvino)
  temperature  --model M.onnx --labels L.csv (--images ROOT | --crops ROOT) [--out F | --in-place]

Bad input (missing file, no faces, labels that do not fit the model, a model already quantized) is
one line on stderr and exit code 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from calibration.config import CALIBRATORS, load_config
from calibration.errors import CalibrationError
from runtime.faces import add_face_arguments

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "calibration.yaml"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m calibration", description=__doc__, epilog=(
        "example: facecue calibrate temperature --model build/model.onnx --labels labels.csv --crops ROOT"),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    main.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
                      help="calibration YAML (default: configs/calibration.yaml)")
    commands = main.add_subparsers(dest="command", required=True)
    int8 = commands.add_parser("int8", help="INT8 QDQ model + ORT TensorRT calibration table + report")
    int8.add_argument("--model", required=True, help="the FP32 facecue model from `python -m export`")
    add_face_arguments(int8)
    int8.add_argument("--out", help="the INT8 model (default: <model>.int8.onnx)")
    int8.add_argument("--calibrator", choices=CALIBRATORS, help="overrides int8.calibrator")
    int8.add_argument("--calibration-crops", type=int, help="overrides int8.calibration_crops")
    int8.add_argument("--engine", choices=("ort", "nncf"), default="ort",
                      help="ort: the QDQ model (default: one file for ONNX Runtime, OpenVINO and TensorRT; on "
                           "OpenVINO as fast as nncf and closer to FP32, BENCHMARKS.md \"Classifier engines on this "
                           "CPU\"); nncf: NNCF transformer preset + SmoothQuant, an OpenVINO IR (.xml) for "
                           "classifier.backend openvino (needs the openvino extra)")
    temperature = commands.add_parser("temperature", help="fit one temperature per task on labelled faces")
    temperature.add_argument("--model", required=True, help="a facecue model (FP32 or INT8)")
    temperature.add_argument("--labels", required=True, help="label CSV: the thesis layout, path,task,label, or per-image named columns (README, Labels)")
    add_face_arguments(temperature, what="the root of the labelled ")
    where = temperature.add_mutually_exclusive_group()
    where.add_argument("--out", help="the calibrated model (default: <model>.calibrated.onnx)")
    where.add_argument("--in-place", action="store_true", help="rewrite the model's metadata in place")
    temperature.add_argument("--plots", help="folder for the reliability diagrams (default: beside the output)")
    return main


def with_suffix(model: Path, suffix: str) -> Path:
    stem = model.name[:-len(".onnx")] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.{suffix}.onnx")


def run_int8(args, config) -> int:
    from calibration.faces import folder_crops
    from calibration.int8_model import make_int8_model
    from calibration.modelfile import model_info, read_header

    model = Path(args.model)
    int8 = config.int8
    if args.calibrator:
        int8 = dataclasses.replace(int8, calibrator=args.calibrator)
    if args.calibration_crops:
        int8 = dataclasses.replace(int8, calibration_crops=args.calibration_crops)
    info = model_info(read_header(model), str(model))
    crops = folder_crops(info, args.images, args.crops, int8.calibration_crops + int8.held_out_crops)
    if args.engine == "nncf":
        try:
            from calibration.nncf_model import make_nncf_model
        except ImportError as error:
            raise CalibrationError(f"--engine nncf needs nncf and openvino (pip install -e \".[openvino]\"): {error}")
        out = Path(args.out) if args.out else with_suffix(model, "nncf").with_suffix(".xml")
        report = make_nncf_model(model, out, crops, int8)
    else:
        report = make_int8_model(model, Path(args.out) if args.out else with_suffix(model, "int8"), crops, int8)
    print(report.table())
    return 0


def run_temperature(args, config) -> int:
    from calibration.temperature_model import calibrate_temperatures

    model = Path(args.model)
    out = model if args.in_place else Path(args.out) if args.out else with_suffix(model, "calibrated")
    root = Path(args.images or args.crops)
    result = calibrate_temperatures(model, Path(args.labels), root, detect=bool(args.images), out_path=out,
                                    plots_dir=Path(args.plots) if args.plots else None, config=config.temperature)
    print(result.table())
    return 0


def main(argv=None) -> int:
    from runtime.faces import FacesError
    args = parser().parse_args(argv)
    # onnxruntime.quantization logs whole range tables and generic advice on the root logger: root shows
    # errors only, our own loggers show progress.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("calibration", "runtime"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        config = load_config(args.config)
        return run_int8(args, config) if args.command == "int8" else run_temperature(args, config)
    except (CalibrationError, FileNotFoundError, FacesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # through facecue.cli like every command: Ctrl-C handling, missing extras
    from facecue.cli import run_module

    sys.exit(run_module("calibration.__main__", "python -m calibration", None))
