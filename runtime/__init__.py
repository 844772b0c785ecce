"""facecue runtime: capture → detect → track → classify → smooth → events/overlay.

Imports numpy, OpenCV, MediaPipe and ONNX Runtime (TensorRT optionally); never torch.
"""
from facecue import telemetry as _telemetry  # noqa: F401  (first: no usage reports to library vendors)
