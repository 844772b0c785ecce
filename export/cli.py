"""Command-line plumbing shared by `python -m export`, `export.verify` and `export.random_checkpoint`."""
from __future__ import annotations

import argparse
import logging
import sys

from export.config import ConfigError
from export.errors import CheckpointError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def add_model_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, help="configs/models/<name>.yaml, e.g. pe-core-l14-336")
    parser.add_argument("--weights", help="PE-Core weights, Meta's layout (.pt) or timm's (.safetensors/.pth); "
                                          "default: timm's pretrained weights (needs the network)")
    parser.add_argument("--adapters", help="thesis-layout adapter dir: adapter_model.safetensors, "
                                           "adapter_config.json, custom_layers.pt")
    parser.add_argument("--heads", help="head weights laid out like custom_layers.pt's prediction_layers")


def run_main(main, argv=None) -> int:
    """Run `main(argv)`; input errors become one clear line and exit code 2, Ctrl-C exit code 130."""
    from runtime.faces import FacesError
    try:
        return main(argv) or 0
    except (CheckpointError, ConfigError, FacesError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
