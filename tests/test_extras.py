"""Without the export extra (issue 14, item 9): the commands that need it say which extra to install, in one
line with exit 2, instead of a ModuleNotFoundError traceback; the runtime's commands still work. Real
subprocesses in which torch, timm and peft cannot be imported (a sys.modules block, as if not installed)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
NO_EXPORT_EXTRA = "import sys; sys.modules.update(dict.fromkeys(('torch', 'timm', 'peft', 'safetensors')))\n"


def without_export_extra(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_EXPORT_EXTRA + code], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("module", ["export", "export.verify", "export.random_checkpoint", "training.evaluate"])
def test_python_m_without_the_extra_names_it(tmp_path, module):
    code = f"import runpy; sys.argv[1:] = ['--help']; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    done = without_export_extra(code, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(rf"error: python -m {re.escape(module)} needs the package '(torch|timm|peft|safetensors)' "
                        r'\(pip install "facecue\[export\]"\)\n', done.stderr), done.stderr


@pytest.mark.parametrize("command", ["export", "verify", "evaluate"])
def test_facecue_subcommand_without_the_extra_names_it(tmp_path, command):
    done = without_export_extra(f"from facecue.cli import main; sys.exit(main([{command!r}, '--help']))", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(rf"error: facecue {command} needs the package '\w+' \(pip install \"facecue\[export\]\"\)\n",
                        done.stderr), done.stderr


def test_runtime_commands_do_not_need_the_extra(tmp_path):
    done = without_export_extra("from facecue.cli import main; sys.exit(main(['run', '--help']))", tmp_path)
    assert done.returncode == 0 and "--verbose" in done.stdout, done.stderr


def test_a_command_that_imports_the_extra_later_names_it_too(tmp_path):
    """`train --help` needs nothing; a real run imports torch inside main(): still one line."""
    done = without_export_extra("from facecue.cli import main; sys.exit(main(['train', '--config', 'train/lora']))",
                                tmp_path)
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(r"error: facecue train needs the package '(torch|timm|peft|safetensors)' "
                        r'\(pip install "facecue\[export\]"\)\n', done.stderr), done.stderr
    code = ("import runpy; sys.argv[1:] = ['--config', 'train/lora']; "
            "runpy.run_module('training', run_name='__main__', alter_sys=True)")
    done = without_export_extra(code, tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: python -m training needs the package "), done.stderr
    help_done = without_export_extra("from facecue.cli import main; sys.exit(main(['train', '--help']))", tmp_path)
    assert help_done.returncode == 0 and "example: facecue train" in help_done.stdout, help_done.stderr


def test_ctrl_c_inside_an_extensions_import_is_130(tmp_path):
    """SIGINT while torch's (or timm's) import initialises surfaces as ImportError raised from the
    KeyboardInterrupt."""
    code = ("import importlib.abc, importlib.machinery, os, signal, sys, time\n"
            "class InterruptedInit(importlib.abc.Loader):\n"
            "    def create_module(self, spec): return None\n"
            "    def exec_module(self, module):\n"
            "        try:\n"
            "            os.kill(os.getpid(), signal.SIGINT); time.sleep(5)\n"
            "        except KeyboardInterrupt as interrupt:\n"
            "            raise ImportError('initialization failed') from interrupt\n"
            "class Finder(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name in ('torch', 'timm'):\n"
            "            return importlib.machinery.ModuleSpec(name, InterruptedInit())\n"
            "[sys.modules.pop(name, None) for name in ('torch', 'timm')]; sys.meta_path.insert(0, Finder())\n"
            "from facecue.cli import main; sys.exit(main(['export', '--help']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr


def test_runtime_never_imports_torch_or_the_packages_that_need_it():
    """runtime/ installs and runs without torch (Jetson, small devices): no import of torch, timm, peft, or of
    export/ and training/ (which need them), at module level or inside a function."""
    import ast

    forbidden = {"torch", "torchvision", "timm", "peft", "export", "training"}
    found = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] in forbidden]
    assert found == [], found
