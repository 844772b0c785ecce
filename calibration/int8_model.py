"""`make_int8_model`: FP32 facecue model + face crops → INT8 QDQ model, calibration table and report.

Everything is written in a staging folder beside the output and moved into place at the end (the
model last), so a failure leaves nothing behind. The crops are split once: the calibration crops and
the held-out crops the report compares on are distinct.
"""
from __future__ import annotations

import logging
import resource
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from calibration.compare import agreement, measure_speed, run_batches
from calibration.config import Int8Config
from calibration.errors import CalibrationError
from calibration.graph import QuantizationPlan, plan_quantization
from calibration.int8 import calibrate_ranges, quantize_qdq, write_trt_table
from calibration.modelfile import (has_external_data, model_info, publish, read_header, require_float, set_document,
                                   staging_dir)
from calibration.report import Int8Report, write_report
from runtime.metadata import ModelInfo
from facecue import interrupts
from facecue.progress import Progress

log = logging.getLogger(__name__)
PRECISION = "int8-qdq"


def output_paths(out: Path) -> tuple[Path, Path]:
    """The calibration table folder and the report beside `out` (`model.int8.onnx` → `model.int8.trt-table/`,
    `model.int8.report.json`)."""
    stem = out.name[:-len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".trt-table"), out.with_name(stem + ".report.json")


def split_crops(crops: np.ndarray, config: Int8Config) -> tuple[np.ndarray, np.ndarray]:
    """Held-out crops are every k-th crop (spread over the folder), the rest calibrate."""
    n = len(crops)
    held = min(config.held_out_crops, n // 3)
    if n - held < config.min_calibration_crops or held < config.min_held_out_crops:
        raise CalibrationError(
            f"only {n} face crops found; INT8 needs at least {config.min_calibration_crops} for calibration and "
            f"{config.min_held_out_crops} held out for the report (int8.min_calibration_crops, "
            "int8.min_held_out_crops): give a folder with more faces")
    step = n / held
    held_index = np.unique((np.arange(held) * step).astype(int))
    mask = np.zeros(n, bool)
    mask[held_index] = True
    return crops[~mask][:config.calibration_crops], crops[mask]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def read_plan(model_path: Path, config: Int8Config) -> tuple[ModelInfo, QuantizationPlan, bool]:
    """The model's document, what to quantize, and whether its weights are external. The ModelProto is
    not returned: a model without external data holds all its weights, which would stay in memory
    through calibration and the comparison (1.3 GB for L14-336)."""
    header = read_header(model_path)
    info = model_info(header, str(model_path))
    require_float(header, info, str(model_path))
    plan = plan_quantization(header, config)
    if not plan.nodes:
        raise CalibrationError(f"{model_path}: no {config.op_types} node with a weight is left to quantize "
                               f"(kept float: {plan.kept_float}); check int8.op_types / exclude_scopes")
    return info, plan, has_external_data(header)


def make_int8_model(model_path: Path, out_path: Path, crops: np.ndarray, config: Int8Config) -> Int8Report:
    if out_path.resolve() == model_path.resolve():
        raise CalibrationError(f"--out {out_path} is the FP32 model itself; give a new file name")
    info, plan, external_data = read_plan(model_path, config)
    calibration, held_out = split_crops(crops, config)
    log.info("INT8: %d nodes to quantize (%d activations), %d calibration crops, %d held out",
             len(plan.nodes), len(plan.activations), len(calibration), len(held_out))
    table_dir, report_path = output_paths(out_path)
    with staging_dir(out_path) as tmp:
        work = tmp / "work"
        work.mkdir()
        ranges = calibrate_ranges(model_path, info.input_name, calibration, plan, config, work)
        staged = tmp / out_path.name
        with Progress("INT8: quantizing to QDQ", log, unit=None):
            quantize_qdq(model_path, staged, plan, ranges, config, work, external_data)
        table = write_trt_table(ranges, tmp / table_dir.name)
        shutil.rmtree(work)  # the augmented model copy; frees disk before the comparison
        quantized = onnx.load(str(staged), load_external_data=False)
        document = dict(info.document, precision=PRECISION,
                        quantization={"calibrator": config.calibrator, "op_types": list(config.op_types),
                                      "nodes": len(plan.nodes), "per_channel": config.per_channel,
                                      "calibration_crops": int(len(calibration))})
        set_document(quantized, document)
        onnx.save(quantized, str(staged))
        del quantized  # its weights would stay in memory beside both sessions of the comparison
        report = compare(model_path, staged, info, calibration, held_out, plan, config)
        report.model, report.calibration_table = out_path.name, [str(table_dir / p.name) for p in table]
        write_report(report, tmp / report_path.name)
        interrupts.check()
        for name in (table_dir, report_path):  # the sidecars first, the model last
            if name.exists():
                shutil.rmtree(name) if name.is_dir() else name.unlink()
            (tmp / name.name).replace(name)
        publish(staged, out_path)
    return report


def compare(fp32_path: Path, int8_path: Path, info, calibration: np.ndarray, held_out: np.ndarray, plan,
            config: Int8Config) -> Int8Report:
    fp32, int8 = session(fp32_path), session(int8_path)
    with Progress("INT8 against FP32 on the held-out crops", log, total=2 * len(held_out), unit="crops") as bar:
        want = run_batches(fp32, info.input_name, held_out, bar=bar)
        got = run_batches(int8, info.input_name, held_out, bar=bar)
    rows = [agreement(task, got[task], want[task], config.margin_tolerance) for task in info.task_names]
    speed = []
    batches = ", ".join(map(str, config.speed_batches))
    with Progress(f"timing FP32 and INT8 (batch {batches}, interleaved)", log,
                  total=len(config.speed_batches) * config.speed_repeats, unit="runs") as bar:
        for batch in config.speed_batches:
            speed.append(measure_speed(fp32, int8, info.input_name, held_out, batch, config.speed_repeats, bar))
    return Int8Report(model=int8_path.name, fp32_model=fp32_path.name, calibrator=config.calibrator,
                      calibration_crops=len(calibration), held_out_crops=len(held_out), quantized_nodes=len(plan.nodes),
                      kept_float=plan.kept_float, agreement=rows, speed=speed,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      min_agreement=config.min_agreement, random_weights=info.random_weights)
