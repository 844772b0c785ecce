"""`--jsonl -`, FIFOs and /dev/stdout: JSON lines written directly and flushed per line, read by another
process while the run goes (real subprocesses and pipes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"


def test_jsonl_dash_streams_into_a_reader_while_running(tmp_path):
    reader_code = ("import json, sys, time\n"
                   "for line in sys.stdin:\n"
                   "    record = json.loads(line)\n"
                   "    print(record['type'], time.monotonic(), flush=True)\n")
    producer = subprocess.Popen([sys.executable, "run_camera.py", "--source", CLIP, "--headless", "--set",
                                 "source.loop=true", "--max-seconds", "5", "--jsonl", "-"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    consumer = subprocess.Popen([sys.executable, "-c", reader_code], stdin=producer.stdout, stdout=subprocess.PIPE,
                                text=True)
    producer.stdout.close()
    first = consumer.stdout.readline().split()
    assert first[0] == "run"
    second = consumer.stdout.readline().split()
    assert second[0] == "frame"
    assert producer.poll() is None, "the first lines arrive while the run is still going"
    rest = consumer.communicate(timeout=120)[0].splitlines()
    stderr = producer.communicate(timeout=60)[1].decode()
    assert producer.returncode == 0 and consumer.returncode == 0, stderr
    assert rest[-1].split()[0] == "stats" and "end-to-end" in stderr  # the statistics table goes to stderr


def test_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    producer = subprocess.Popen([sys.executable, "run_camera.py", "--source", CLIP, "--headless", "--jsonl", str(fifo)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, encoding="utf-8") as stream:
        lines = [json.loads(line) for line in stream]
    assert producer.wait(timeout=120) == 0
    assert lines[0]["type"] == "run" and lines[-1]["type"] == "stats"
    assert fifo.is_fifo() and not (tmp_path / ".results.fifo.partial").exists()
    assert b"end-to-end" in producer.stdout.read()  # a FIFO is not stdout: the statistics stay there


def test_dev_stdout_is_written_directly_not_replaced():
    done = subprocess.run([sys.executable, "run_camera.py", "--source", CLIP, "--headless", "--mode", "fast", "--jsonl",
                           "/dev/stdout"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]  # only JSON on stdout
    assert records[0]["type"] == "run" and records[-1]["type"] == "stats" and "end-to-end" in done.stderr
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")
