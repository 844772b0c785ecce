"""The one error type of calibration/: bad input, named in the message; the CLI prints it and exits 2."""


class CalibrationError(ValueError):
    """Input that calibration cannot use (model, faces, labels, config); the message says which and why."""
