"""JSON Lines output: one object per line, for logging, bridging (e.g. to ROS 2) and offline scoring.

Records (`type` says which):
- `run`: first line; source, model, whether it has random weights, and the clock pair
  (`monotonic`, `unix`) that maps the monotonic timestamps of the other records to wall time;
- `event`: every FaceEvent (`event`, `track_id`, `timestamp`, `media_time`, `box`, `attributes`, `changes`,
  `reason`: why a track `disappeared` — "removed", "cut", "shutdown" — else null);
- `frame`: per processed frame its `index`, `timestamp`, `media_time` and `tracks` (`id`, `box`, `state`:
  confirmed or lost — tentative only with `tracker.report_tentative` —, `detected`: the box was detected in
  this frame rather than predicted, `attributes`);
`timestamp` is the monotonic capture time (latency); `media_time` the stream's own clock (a file's position
in seconds, a live source's capture time), which offline scoring should use.
- `stats`: last line; the run's statistics.
A regular file is written under a temporary name and renamed when closed, so a reader never finds half a
run under the final name. `-` is standard output and a FIFO, a character device or /dev/stdout is written
directly (never replaced by a file), each line flushed as written, so another process can follow the run
through a pipe (`facecue run ... --jsonl - | reader`).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runtime.types import Attributes, FaceEvent, FrameResult

RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS — not real cues"
log = logging.getLogger("facecue.jsonl")


def is_stream(path: str | Path) -> bool:
    """`-`, /dev/stdout (/dev/fd/N ...) or an existing FIFO / character device: written directly, not renamed."""
    text = str(path)
    if text == "-" or text.startswith("/dev/"):
        return True
    try:
        mode = os.stat(text).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def attributes_record(attributes: Attributes) -> dict[str, Any]:
    return {
        "age_years": None if attributes.age_years is None else round(attributes.age_years, 2),
        "observations": attributes.observations,
        "tasks": {
            name: {
                "label": task.label,
                "confidence": round(task.confidence, 4),
                "stable": task.stable,
                "observations": task.observations,
                "probs": [round(float(p), 4) for p in task.probs],
            }
            for name, task in attributes.tasks.items()
        },
    }


def event_record(event: FaceEvent) -> dict[str, Any]:
    return {
        "type": "event",
        "event": event.kind.value,
        "track_id": event.track_id,
        "timestamp": event.timestamp,
        "media_time": event.media_time,
        "box": [round(v, 1) for v in event.box],
        "attributes": attributes_record(event.attributes),
        "changes": {task: list(change) for task, change in event.changes.items()},
        "reason": event.reason,
    }


def frame_record(result: FrameResult) -> dict[str, Any]:
    return {
        "type": "frame",
        "index": result.frame.index,
        "timestamp": result.frame.timestamp,
        "media_time": result.frame.stream_time,
        "tracks": [
            {
                "id": item.track.id,
                "box": [round(v, 1) for v in item.track.box],
                "state": item.track.state.value,
                "detected": item.track.detected,
                "attributes": attributes_record(item.attributes),
            }
            for item in result.tracks
        ],
        "latency_ms": {stage: round(seconds * 1000.0, 3) for stage, seconds in result.latencies.items()},
    }


class JsonlWriter:
    """Thread-safe line writer (events come from the event thread, frames from the main thread)."""

    def __init__(self, path: str | Path, random_weights: bool = False):
        self.path = Path(path)
        self.random_weights = random_weights  # then every record carries the warning
        self.stream = is_stream(path)
        self.to_stdout = str(path) in ("-", "/dev/stdout")  # then nothing else may print to stdout
        self.temporary = None if self.stream else self.path.with_name(f".{self.path.name}.partial")
        self._lock = threading.Lock()
        try:
            if str(path) == "-":
                self._file = sys.stdout
            elif self.stream:  # append: a /dev/stdout redirected to a file keeps what is there
                self._file = open(path, "a", encoding="utf-8", buffering=1)
            else:
                self._file = open(self.temporary, "w", encoding="utf-8", buffering=1)  # line-buffered: a crash loses no line
        except OSError as error:
            raise OSError(f"cannot write JSON lines to {self.path}: {error.strerror}") from error

    def write(self, record: dict[str, Any]) -> None:
        if self.random_weights:
            record = {**record, "warning": RANDOM_WEIGHTS_WARNING}
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line + "\n")
                if self.stream:
                    self._file.flush()
            except BrokenPipeError:  # the reader went away: say so once, keep the run going
                log.warning("JSON lines reader closed %s: no more lines written", self.path)
                self._file = None

    def write_run(self, source: str, model: str | None, extra: dict[str, Any] | None = None) -> None:
        self.write({"type": "run", "source": source, "model": model, "random_weights": self.random_weights,
                    "monotonic": time.monotonic(), "unix": time.time(), **(extra or {})})

    def write_stats(self, stats: dict[str, Any]) -> None:
        self.write({"type": "stats", **stats})

    def write_event(self, event: FaceEvent) -> None:
        self.write(event_record(event))

    def write_frame(self, result: FrameResult) -> None:
        self.write(frame_record(result))

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            file, self._file = self._file, None
            if file is sys.stdout:
                try:
                    file.flush()
                except BrokenPipeError:
                    pass
                return
            file.close()
            if self.temporary is not None:
                os.replace(self.temporary, self.path)
