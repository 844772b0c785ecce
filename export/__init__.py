"""PE-Core + LoRA/DoRA adapters + heads → one verified, self-describing ONNX model (needs torch)."""
