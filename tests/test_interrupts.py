"""Ctrl-C that Python swallows (it arrived in a `__del__`) still stops a command before it writes its output."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from facecue import interrupts

    interrupts.install()

    class Finalised:
        def __del__(self):  # a real SIGINT delivered while a finaliser runs: Python reports it as "ignored"
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10**6):
                pass

    Finalised()
    print("still running", flush=True)
    try:
        interrupts.check()
        Path(sys.argv[1]).write_text("written")
    except KeyboardInterrupt:
        print("interrupted")
        sys.exit(130)
""")


def test_an_interrupt_swallowed_in_a_finaliser_is_not_lost(tmp_path):
    out = tmp_path / "out.txt"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 130, result.stdout + result.stderr
    assert "still running" in result.stdout  # Python did swallow it: the script went on
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert not out.exists()
