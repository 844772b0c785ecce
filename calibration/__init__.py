"""INT8 post-training quantisation and per-task temperature calibration of facecue ONNX models (no torch)."""
