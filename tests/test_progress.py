"""Progress of long steps (issue 14, item 6): periodic log lines when stderr is not a terminal (a pipe, a log
file), a tqdm bar on a real terminal (a pty), and a real command's long step (the ONNX export) never silent."""
from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from facecue.progress import Progress, progress

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
log = logging.getLogger("test_progress")


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_counted_step_logs_periodic_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    with Progress("reading", log, total=6, unit="files", interval=0.1) as bar:
        for _ in range(6):
            time.sleep(0.06)
            bar.update(note="loss 0.5")
    lines = messages(caplog)
    assert lines[0] == "reading: started (6 files)"
    assert lines[-1].startswith("reading: done, 6/6 files, ") and lines[-1].endswith("(loss 0.5)")
    pattern = r"reading: (\d)/6 files, .* s(, about \d+ s left)? \(loss 0.5\)"
    periodic = [re.fullmatch(pattern, line) for line in lines[1:-1]]
    assert len(periodic) >= 2 and all(periodic), lines
    counts = [int(m.group(1)) for m in periodic]
    assert counts == sorted(counts) and counts[-1] < 6


def test_one_long_call_is_not_silent(caplog):
    """No count (unit None): the time is what moves, from the timer thread while the call blocks."""
    caplog.set_level(logging.INFO, logger=log.name)
    with Progress("exporting", log, unit=None, interval=0.1):
        time.sleep(0.45)
    lines = messages(caplog)
    assert lines[0] == "exporting: started" and re.fullmatch(r"exporting: done, \d+ s", lines[-1])
    assert len(lines) >= 5 and all(re.fullmatch(r"exporting: \d+ s", line) for line in lines[1:-1]), lines


def test_progress_over_items_closes_when_the_loop_breaks(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    for item in progress(range(10), "tasks", log, unit="tasks"):
        if item == 3:
            break
    assert re.fullmatch(r"tasks: done, 3/10 tasks, \S+ tasks/s, 0 s", messages(caplog)[-1])  # the 4th broke off


BAR_SCRIPT = """
import logging, sys, time
from facecue.progress import progress
logging.basicConfig(level=logging.INFO, format="%(message)s")
log = logging.getLogger("demo")
for i in progress(range(4), "counting", log, unit="items"):
    time.sleep(0.2)
    if i == 1:
        log.info("a line in the middle")
"""


def test_a_terminal_gets_a_tqdm_bar():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal with a size
    process = subprocess.Popen([sys.executable, "-c", BAR_SCRIPT], cwd=REPO, env=ENV, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert re.search(r"\rcounting: 100%\|█+\| 4/4 \[", text), text  # tqdm's bar, redrawn in place
    assert "started" not in text  # no log lines in place of the bar
    assert "a line in the middle\r\n" in text  # a log line through tqdm.write: on a line of its own


@pytest.mark.slow
def test_export_command_with_stderr_to_a_pipe_shows_periodic_lines(tmp_path):
    """The ONNX export is one long call (seconds even for the tiny backbone): started, a line every
    FACECUE_PROGRESS_INTERVAL seconds, done."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from export.random_checkpoint import write_random_checkpoint

    weights, adapters = write_random_checkpoint("pe-core-test-tiny", tmp_path / "rc", rank=4)
    done = subprocess.run([sys.executable, "-m", "export", "--backbone", "pe-core-test-tiny", "--weights", str(weights),
                           "--adapters", str(adapters), "--out", str(tmp_path / "m.onnx")], cwd=tmp_path,
                          env={**ENV, "FACECUE_PROGRESS_INTERVAL": "0.2"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 1)[1] for line in done.stderr.splitlines() if " exporting ONNX: " in line]
    assert lines[0] == "exporting ONNX: started" and re.fullmatch(r"exporting ONNX: done, \d+ s", lines[-1]), lines
    assert len(lines) >= 3 and all(re.fullmatch(r"exporting ONNX: \d+ s", line) for line in lines[1:-1]), lines
    assert "\r" not in done.stderr  # no bar drawn into the pipe


def test_a_step_that_fails_says_stopped_and_a_colon_in_its_name_is_kept(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    with pytest.raises(RuntimeError), Progress("INT8: calibrating", log, total=4, unit="crops") as bar:
        bar.update(2)
        raise RuntimeError("the calibrator failed")
    assert re.fullmatch(r"INT8: calibrating: stopped, 2/4 crops, \S+ crops/s, 0 s", messages(caplog)[-1])
