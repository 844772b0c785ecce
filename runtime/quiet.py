"""Silencing what native libraries write straight to file descriptor 2 (not Python's sys.stderr).

MediaPipe/LiteRT (glog/absl), OpenCV and its bundled FFmpeg print diagnostics from C++ that Python's logging
cannot filter: "Logging before InitGoogle", "Input tensor memory is not aligned", an FFmpeg encoder that is
not there. `native_stderr_silenced()` points fd 2 at /dev/null around such a call (off with --verbose, i.e.
`set_verbose(True)`), and `quiet_native_logs()` sets the libraries' documented log-level variables before they
are imported (OPENCV_LOG_LEVEL, OPENCV_FFMPEG_LOGLEVEL: docs.opencv.org "OpenCV environment variables";
GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL: absl/glog and TensorFlow Lite logging). The project's own warnings
go through Python's logging and are never hidden.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

_verbose = False


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def quiet_native_logs() -> None:
    """Set the native libraries' log levels (only keys the user has not set); call before importing cv2."""
    if _verbose:
        return
    for key, value in (("OPENCV_LOG_LEVEL", "ERROR"), ("OPENCV_FFMPEG_LOGLEVEL", "-8"),
                       ("GLOG_minloglevel", "2"), ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """fd 2 → /dev/null for the duration (Python's own sys.stderr is flushed first and restored after)."""
    if _verbose:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
