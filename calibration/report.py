"""The INT8 report: a printed table and a JSON file beside the quantized model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from calibration.compare import Speed, TaskAgreement


@dataclass
class Int8Report:
    model: str
    fp32_model: str
    calibrator: str
    calibration_crops: int
    held_out_crops: int
    quantized_nodes: int
    kept_float: dict[str, int]
    agreement: list[TaskAgreement]
    speed: list[Speed]
    peak_rss_mb: float  # ru_maxrss of this process: calibration, quantization and the comparison together
    min_agreement: float
    calibration_table: list[str] = field(default_factory=list)
    random_weights: bool = False

    @property
    def agrees(self) -> bool:
        return all(a.top1_agreement >= self.min_agreement for a in self.agreement)

    @property
    def faster(self) -> bool:
        """INT8 beats FP32 at the largest batch timed (batch 8 by default): the point of quantizing."""
        largest = max(self.speed, key=lambda s: s.batch, default=None)
        return largest is None or largest.ratio > 1.0

    @property
    def passes(self) -> bool:
        return self.agrees and self.faster

    def to_json(self) -> str:
        document = asdict(self)
        document["speed"] = [asdict(s) | {"int8_over_fp32": s.ratio} for s in self.speed]
        document |= {"agreement_pass": self.agrees, "faster_pass": self.faster, "pass": self.passes}
        return json.dumps(document, indent=2)

    def table(self) -> str:
        lines = [f"INT8 {self.model} vs FP32 {self.fp32_model} ({self.calibrator}, {self.calibration_crops} calibration "
                 f"crops, {self.held_out_crops} held out; {self.quantized_nodes} nodes quantized, kept float: "
                 f"{self.kept_float})",
                 f"{'task':8} {'top-1 agree':>12} {'decisive':>9} {'max Δp':>8}"]
        lines += [f"{a.task:8} {a.top1_agreement:12.1%} {a.decisive:>4}/{a.samples:<4} {a.max_prob_diff:8.4f}"
                  for a in self.agreement]
        lines.append(f"{'batch':>5} {'FP32 crops/s':>13} {'INT8 crops/s':>13} {'INT8/FP32':>10}")
        lines += [f"{s.batch:>5} {s.fp32_crops_per_s:13.1f} {s.int8_crops_per_s:13.1f} {s.ratio:9.2f}x"
                  for s in self.speed]
        lines.append(f"peak memory (max RSS) {self.peak_rss_mb:.0f} MB")
        if self.random_weights:
            lines.append("random weights: agreement here says nothing about accuracy with trained weights")
        failures = ([f"top-1 agreement below {self.min_agreement:.0%} for a task"] if not self.agrees else []) + \
                   ([f"INT8 not faster than FP32 at batch {max(s.batch for s in self.speed)}"] if not self.faster else [])
        lines.append("PASS" if self.passes else "FAIL: " + "; ".join(failures))
        return "\n".join(lines)


def write_report(report: Int8Report, path: Path) -> Path:
    path.write_text(report.to_json())
    return path
