"""Ctrl-C that is never lost, in the commands that write a model, report or checkpoint.

Python raises KeyboardInterrupt in whatever Python code runs when SIGINT arrives. When that code is a
`__del__` or a callback from C (torch.onnx's exporter runs many), the interpreter prints "Exception
ignored ... Traceback" and carries on, so the command would finish and write its output as if nothing
had happened. The handler here also remembers the signal: writers call `check()` just before an output
gets its final name, and `facecue` exits 130 when a command returns after an interrupt.
(runtime.run has its own handlers: there Ctrl-C means "stop and finalise", not "abort".)
"""
from __future__ import annotations

import signal
import sys

_received = False


def install() -> None:
    """Route SIGINT through `_on_sigint` and keep swallowed interrupts off stderr."""
    signal.signal(signal.SIGINT, _on_sigint)
    default_hook = sys.unraisablehook

    def quiet_interrupts(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default_hook(unraisable)

    sys.unraisablehook = quiet_interrupts


def _on_sigint(signum, frame):
    global _received
    _received = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    return _received


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came at any point, even one Python swallowed."""
    if _received:
        raise KeyboardInterrupt
