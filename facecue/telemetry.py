"""No usage reports to library vendors: facecue sends nothing over the network unless the user asks.

Two libraries facecue runs on report usage by default:
- ONNX Runtime's official packages for Linux and macOS (1.29 and newer) keep a device id and a queue of usage
  events under ~/.cache/Microsoft/DeveloperTools and upload them to Microsoft: a ProcessInfo event when the
  library starts, then session, model and error events. `ORT_DISABLE_TELEMETRY=1`, set before ONNX Runtime
  starts, turns all of it off: no id, no queue, no upload (github.com/microsoft/onnxruntime/pull/27379).
- NNCF (`python -m calibration int8 --engine nncf`) sends usage events to Google Analytics through
  openvino-telemetry unless the user opted out with its `opt_in_out` tool. `NNCF_CI=1` replaces its sender with a
  stub; NNCF reads the variable for nothing else (nncf/telemetry/wrapper.py).

Every package of the project (runtime, calibration, export, training, facecue) imports this module first, so the
switches are set before either library is imported, in the process and in every subprocess it starts. A value the
user has set is kept: `ORT_DISABLE_TELEMETRY=0` turns ONNX Runtime's reports back on.
"""
from __future__ import annotations

import os

SWITCHES = {"ORT_DISABLE_TELEMETRY": "1", "NNCF_CI": "1"}


def switch_off() -> None:
    for name, value in SWITCHES.items():
        os.environ.setdefault(name, value)


switch_off()
