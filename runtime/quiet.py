"""Silencing what native libraries write straight to file descriptor 2 (not Python's sys.stderr).

MediaPipe/LiteRT (glog/absl), OpenCV and its bundled FFmpeg print diagnostics from C++ that Python's logging
cannot filter: "Logging before InitGoogle", "Input tensor memory is not aligned" (the first inference),
"DestroyAccelerator" (closing a detector), OpenCV's and FFmpeg's lines for a camera or file they cannot open,
FFmpeg's lines when the recorder probes an encoder that is not there. Around those calls only (loading and
closing the detector, a webcam's or file's first open, probing an encoder), never around the whole run:

- `native_stderr_silenced()` points fd 2 at /dev/null;
- `native_stderr_captured()` keeps the text (for an error message, and the debug log);
- `native_stderr_filtered()` keeps back only what looks like a native library's log line and passes the rest
  on: it wraps the detector's first inferences, when other threads may be writing too.

`set_verbose(True)` (`--verbose`) lets it all through. The project's own warnings go through Python's logging
and stay visible; a redirection holds a lock, so two threads never interleave their dup2 calls (which could
leave fd 2 pointing at /dev/null for good).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import types
from typing import Iterator

log = logging.getLogger(__name__)
_verbose = False
_redirecting = threading.RLock()
# glog's and absl's line heads ("W0000 00:00:…", "WARNING: Logging before InitGoogle") and TensorFlow Lite's
# "INFO: …"; the project's own log lines read "WARNING runtime.pipeline: …", without the colon.
NATIVE_LINE = re.compile(r"^(?:[IWEF]\d{4} |WARNING: Logging before InitGoogle|INFO: |VERBOSE: )")


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def _fd2_to(target_fd: int) -> Iterator[bool]:
    """fd 2 → `target_fd` for the duration; yields False (and redirects nothing) where there is no fd 2."""
    with _redirecting:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (embedded interpreters): nothing to redirect
            yield False
            return
        os.dup2(target_fd, 2)
        try:
            yield True
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """fd 2 → /dev/null for the duration (Python's own sys.stderr is flushed first and restored after)."""
    if _verbose:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with _fd2_to(devnull):
            yield
    finally:
        os.close(devnull)


@contextlib.contextmanager
def native_stderr_captured(what: str) -> Iterator[types.SimpleNamespace]:
    """Hold back fd 2 for the duration; `.text` has it afterwards (the debug log gets it too, labelled with
    `what`). With set_verbose(True) the text is also written to stderr when the block ends."""
    captured = types.SimpleNamespace(text="")  # filled when the block ends
    with tempfile.TemporaryFile(mode="w+b") as held:
        try:
            with _fd2_to(held.fileno()):
                yield captured
        finally:
            held.seek(0)
            captured.text = held.read().decode("utf-8", "replace")
            if captured.text:
                log.debug("native output while %s:\n%s", what, captured.text)
                if _verbose:
                    sys.stderr.write(captured.text)
                    sys.stderr.flush()


@contextlib.contextmanager
def native_stderr_filtered(what: str) -> Iterator[types.SimpleNamespace]:
    """Like native_stderr_captured (`.text` has it all afterwards), but when the block ends every line that is
    not a native library's log line (NATIVE_LINE), such as a warning another thread logged meanwhile, is written
    on to stderr."""
    with native_stderr_captured(what) as native:
        yield native
    if not _verbose:  # verbose: captured already wrote it all
        foreign = [line for line in native.text.splitlines(keepends=True) if not NATIVE_LINE.match(line)]
        if foreign:
            sys.stderr.write("".join(foreign))
            sys.stderr.flush()
