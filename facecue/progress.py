"""Progress of the long steps (export, verify, FP16, calibration, training, evaluation): a tqdm bar when
stderr is a terminal, a log line every few seconds otherwise.

    for batch in progress(batches, "verifying", log, unit="batch"):
        ...
    with Progress("verifying", log, total=len(images), unit="images") as bar:
        ...
        bar.update(len(chunk))
    with Progress("exporting ONNX", log, unit=None):  # one long call: no count, the bar shows the time it has taken
        torch.onnx.export(...)

A bar drawn into a log file or a pipe is a mess of carriage returns, so without a terminal the same object
writes a line through the caller's logger (the command's logging settings apply) when it starts, every
`interval` seconds while it runs (3; the environment variable FACECUE_PROGRESS_INTERVAL sets another) and when
it ends. A timer thread writes the periodic lines (and redraws the bar), so a step stays visible while one
item, or one native call, takes long. Log lines written while a bar is shown go through tqdm
(`logging_redirect_tqdm`), so they do not break it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

INTERVAL = 3.0  # seconds between log lines without a terminal; FACECUE_PROGRESS_INTERVAL overrides it
REDRAW = 0.5  # seconds between redraws of a bar (the elapsed time moves while nothing is counted)

Item = TypeVar("Item")


def on_terminal() -> bool:
    """stderr is a terminal with a width (tqdm draws nothing into a zero-width one, e.g. some CI ptys)."""
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):  # no stderr, a closed one, or no size
        return False


def _interval_from_environment() -> float:
    try:
        interval = float(os.environ.get("FACECUE_PROGRESS_INTERVAL", INTERVAL))
    except ValueError:  # not a number: the default, rather than failing a long step over a log setting
        return INTERVAL
    return interval if interval > 0 else INTERVAL


class Progress:
    """One step's progress. `total`: how many `unit`s the step has (None: unknown); `unit` None: nothing is
    counted, only the time is shown (a single long call)."""

    def __init__(self, desc: str, log: logging.Logger, total: int | None = None, unit: str | None = "it",
                 interval: float | None = None):
        self.desc, self.log, self.total, self.unit = desc, log, total, unit
        self.done = 0
        self.note = ""  # e.g. the current loss, shown after the count
        self.started = time.monotonic()
        self._exit = contextlib.ExitStack()
        self._bar = self._open_bar() if on_terminal() else None
        if self._bar is None:
            log.info("%s: started%s", desc, f" ({total} {unit})" if total and unit else "")
        self._closed = threading.Event()
        interval = interval or _interval_from_environment()
        self._timer = threading.Thread(target=self._tick, args=(REDRAW if self._bar is not None else interval,),
                                       name=f"progress:{desc}", daemon=True)
        self._timer.start()

    def _open_bar(self):
        try:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm
        except ImportError:  # tqdm missing: log lines on a terminal too
            return None
        self._exit.enter_context(logging_redirect_tqdm())
        style = {"bar_format": "{desc}: {elapsed}"} if self.unit is None else {"unit": f" {self.unit}"}
        return self._exit.enter_context(tqdm(total=self.total, desc=self.desc, **style))

    def update(self, count: int = 1, note: str | None = None) -> None:
        self.done += count
        if note is not None:
            self.set_note(note)
        if self._bar is not None:
            self._bar.update(count)

    def set_note(self, note: str) -> None:
        """Text shown after the count (the loss, the faces found so far)."""
        self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)

    def line(self, ending: str = "") -> str:
        """The log line for now: "verifying: 32/64 images, 12.1 images/s, 3 s, about 3 s left"; with `ending`
        ("done", "stopped") the last one: "verifying: done, 64/64 images, 12.5 images/s, 5 s"."""
        elapsed = time.monotonic() - self.started
        parts = [ending] if ending else []
        if self.unit is not None:
            parts.append(f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}")
            if self.done and elapsed > 0:
                parts.append(f"{self.done / elapsed:.1f} {self.unit}/s")
        parts.append(f"{elapsed:.0f} s")
        if self.total and 0 < self.done < self.total and not ending:
            parts.append(f"about {elapsed / self.done * (self.total - self.done):.0f} s left")
        return f"{self.desc}: {', '.join(parts)}" + (f" ({self.note})" if self.note else "")

    def _tick(self, period: float) -> None:
        while not self._closed.wait(period):
            if self._bar is not None:
                self._bar.refresh()
            else:
                self.log.info("%s", self.line())

    def close(self, ending: str = "done") -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._timer.join()
        self._exit.close()  # the bar's last draw, then logging back to its handlers
        if self._bar is None:
            self.log.info("%s", self.line(ending))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, error_type, *_) -> None:
        finished = error_type is None or issubclass(error_type, GeneratorExit)  # GeneratorExit: a loop's break
        self.close("done" if finished else "stopped")


def progress(items: Iterable[Item], desc: str, log: logging.Logger, total: int | None = None,
             unit: str = "it") -> Iterator[Item]:
    """`items`, one at a time, counted by a Progress (total: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with Progress(desc, log, total, unit) as bar:
        for item in items:
            yield item
            bar.update()
