"""The two ways runtime threads hand items over a bounded queue (design.md: no unbounded queue anywhere)."""
from __future__ import annotations

import queue
import threading


def put_until_stopped(target: queue.Queue, item, stop: threading.Event, poll: float = 0.1) -> bool:
    """Lossless: wait for room, but give up when `stop` is set. True when the item was put."""
    while not stop.is_set():
        try:
            target.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False


def put_newest(target: queue.Queue, item) -> None:
    """Latest wins: make room by dropping the oldest untaken item, never block."""
    while True:
        try:
            target.put_nowait(item)
            return
        except queue.Full:
            try:
                target.get_nowait()
            except queue.Empty:
                pass
