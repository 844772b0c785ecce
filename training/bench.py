"""`python -m training.bench [--backbone pe-core-t16-384] [--batch 8] [--steps 3] [--json FILE]`:
training throughput (samples/s) and peak memory per recipe, RANDOM weights (throughput only, not accuracy).

Each recipe runs in its own subprocess so its peak resident memory (ru_maxrss) is its own. One warm-up
step, then `steps` timed AdamW steps on random uint8 crops with random labels for all three tasks.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

RECIPES = ("linear_probe", "partial", "lora", "dora", "loraplus", "mtlora")


def measure(recipe: str, backbone: str, batch: int, steps: int) -> dict:
    import torch
    from export.config import load_backbone_config
    from training.config import load_config
    from training.losses import MultiTaskLoss
    from training.model import build_training_model, count_parameters
    from training.optim import make_optimizer

    config = load_config(f"configs/train/{recipe}.yaml", [f"model.backbone={backbone}", "model.weights=random"])
    backbone_config = load_backbone_config(backbone)
    model = build_training_model(config, backbone_config).train()
    loss_fn = MultiTaskLoss(config.data.tasks)
    optimizer = make_optimizer(list(model.named_parameters()) + [("log_vars", loss_fn.log_vars)], config.optim)
    size = backbone_config.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
    labels = {"Age": torch.randint(0, 9, (batch,)), "Gender": torch.randint(0, 2, (batch,)),
              "Emotion": torch.randint(0, 7, (batch,))}

    def step():
        loss, _ = loss_fn(dict(zip(config.data.tasks, model(images))), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    trainable, total = count_parameters(model)
    return {"recipe": recipe, "backbone": backbone_config.name, "batch": batch, "steps": steps,
            "samples_per_s": batch * steps / elapsed, "s_per_step": elapsed / steps,
            "trainable_params": trainable, "total_params": total, "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="pe-core-t16-384")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--json", default="build/training_bench.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one recipe, print its JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.backbone, args.batch, args.steps)))
        return 0
    rows = []
    for recipe in args.recipes:
        print(f"measuring {recipe} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", "training.bench", "--one", recipe, "--backbone", args.backbone,
                               "--batch", str(args.batch), "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {recipe}: {rows[-1]['samples_per_s']:.2f} samples/s, peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB",
              file=sys.stderr, flush=True)
    print(f"{'recipe':13} {'samples/s':>9} {'s/step':>7} {'trainable':>10} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['recipe']:13} {r['samples_per_s']:9.2f} {r['s_per_step']:7.2f} {r['trainable_params']:>10,} "
              f"{r['peak_rss_mib']:13.0f}")
    from pathlib import Path
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
