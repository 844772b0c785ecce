"""`python -m training --config configs/train/<recipe>.yaml [--set key=value ...] [--resume]`.

Fine-tunes PE-Core with one of the thesis' recipes (linear_probe, partial, lora, dora, loraplus, mtlora)
on label CSVs (README, Labels) and writes `<run.out>/best/` in the thesis checkpoint layout, which
`python -m export` takes unchanged (the command is printed at the end and stored in training.json).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # first: without the export extra, one line instead of an import traceback
    from facecue.cli import run_module

    sys.exit(run_module("training.__main__", "python -m training", "export"))

import argparse

from export.cli import setup_logging


def main(argv=None) -> int:
    from runtime.faces import FacesError
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__, epilog=(
        "example: facecue train --config train/lora --set \"data.train=[{csv: kids/train.csv, root: kids}]\" "
        "--set \"data.val=[{csv: kids/val.csv, root: kids}]\" --set run.out=runs/kids"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/train/<recipe>.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set optim.lr=3e-4 --set run.out=runs/kids")
    parser.add_argument("--resume", action="store_true", help="continue from <run.out>/last/state.pt")
    args = parser.parse_args(argv)
    setup_logging()
    from training.config import TrainConfigError, load_config
    from training.data import DataError
    from training.train import train
    from export.config import ConfigError
    from export.errors import CheckpointError

    try:
        config = load_config(args.config, args.set)
        best, state = train(config, resume=args.resume)
    except (TrainConfigError, DataError, ConfigError, CheckpointError, FileNotFoundError, FacesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    import json
    summary = json.loads((best / "training.json").read_text()) if (best / "training.json").is_file() else {}
    print(f"best epoch {state.best_epoch} (val loss {state.best_val_loss:.4f}) in {best}")
    if summary:
        print(f"export: {summary['export_command']}")
    return 0

