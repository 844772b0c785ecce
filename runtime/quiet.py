"""Silencing what native libraries write straight to file descriptor 2 (not Python's sys.stderr).

MediaPipe/LiteRT (glog/absl), OpenCV and its bundled FFmpeg print diagnostics from C++ that Python's logging
cannot filter (today: FFmpeg's lines when the recorder probes an H.264 encoder that is not there).
`native_stderr_silenced()` points fd 2 at /dev/null around such a call; `set_verbose(True)` turns it off.
The project's own warnings go through Python's logging and are never hidden.
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
