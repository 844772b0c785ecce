"""facecue runtime: capture → detect → track → classify → smooth → events/overlay.

Imports numpy, OpenCV, MediaPipe and ONNX Runtime (TensorRT optionally); never torch.
"""
