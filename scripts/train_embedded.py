"""Train the embedded default model from scratch and write its weights.

    .venv/bin/python scripts/train_embedded.py [--seed 0] [--out engine/models/embedded/weights]

Reproduces the committed weights bit for bit (same seed, same thread count) in 74 minutes on 2 idle
CPU cores (docs/training/README.md has the log and the stage times).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.models.embedded.model import WEIGHTS_DIR  # noqa: E402
from engine.training.embedded import TrainConfig, train_embedded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    for f in dataclasses.fields(TrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume-stage2", default=None, help="weights saved after stage 2; runs stages 3-4 only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    train_embedded(cfg, args.out, log=lambda m: print(m, flush=True), resume_stage2=args.resume_stage2)


if __name__ == "__main__":
    main()
