"""INT8 post-training quantisation and per-task temperature calibration of facecue ONNX models (no torch)."""
from facecue import telemetry as _telemetry  # noqa: F401  (first: no usage reports to library vendors)
