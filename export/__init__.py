"""PE-Core + LoRA/DoRA adapters + heads → one verified, self-describing ONNX model (needs torch)."""
from facecue import telemetry as _telemetry  # noqa: F401  (first: no usage reports to library vendors)
