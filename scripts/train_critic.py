"""Train the prompt-alignment critic (engine/rewards/critic.py) and measure it on held-out data.

    nice -n 10 .venv/bin/python scripts/train_critic.py [--seed 0] [--out engine/rewards/weights/critic.safetensors]

Data (see engine/training/critic.py), all rendered by the differentiable volume renderer with
random azimuth and +-15 degree elevation jitter around 20 degrees:

* train: ``--gt-seeds`` procedural objects for each of the 192 shape x colour x size prompts
  (2 views, 64 px; 25 % clean, 35 % autoencoder round trip, 15 % blurred, 25 % noisy) and
  ``--sample-seeds`` embedded-model samples per prompt (2 views, labelled by the geometric judge);
* held out: one fresh ground-truth object per prompt (4 views, 64 px and 32 px, clean; and 2
  views through the autoencoder), and the embedded model's samples for the 48 colour x shape
  prompts with seeds 1000.. (the seeds of scripts/evaluate_embedded.py; 4 views, 64 and 32 px).

Rendered sets are cached as tensors in ``--cache-dir`` (default /tmp), never in the repository.
Writes ``critic.safetensors`` and ``critic.json`` (architecture, recipe, figures) atomically, and
with ``--report`` a Markdown report. Same seed and thread count give the same weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.confusion import UNKNOWN, confusion_matrix, format_confusion_matrix  # noqa: E402
from engine.fileio import write_bytes  # noqa: E402
from engine.models.embedded.grammar import COLOURS, SHAPES, all_colour_shape_prompts  # noqa: E402
from engine.models.embedded.shape_judge import ground_truth_prompts  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.rewards.critic import WEIGHTS_PATH, CriticConfig, save_critic  # noqa: E402
from engine.training.critic import (  # noqa: E402
    CriticTrainConfig,
    GroundTruthConfig,
    RenderSet,
    SampleConfig,
    cached_set,
    config_dict,
    evaluate_critic,
    ground_truth_set,
    model_sample_set,
    train_critic,
)

TRAIN_DEGRADATIONS = (0.25, 0.35, 0.15, 0.25)  # clean, autoencoder, blur, noise
TEST_SAMPLE_FIRST_SEED = 1000  # scripts/evaluate_embedded.py's held-out sampler seeds


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/nabla_r2d3_critic_cache"))
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--gt-seeds", type=int, default=8, help="training objects per prompt (192 prompts)")
    parser.add_argument("--sample-seeds", type=int, default=2, help="training model samples per prompt (192 prompts)")
    parser.add_argument("--test-sample-seeds", type=int, default=4, help="held-out model samples per colour x shape prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", type=Path, default=None, help="also write the figures as Markdown")
    for f in dataclasses.fields(CriticTrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_cfg = CriticTrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CriticTrainConfig)})
    cache = None if args.no_cache else args.cache_dir
    log = lambda m: print(m, flush=True)  # noqa: E731

    t_start, cpu_start = time.perf_counter(), time.process_time()
    model = load_model("embedded")
    sized = tuple(p.text for p in ground_truth_prompts(sizes=True))
    plain = tuple(p.text for p in all_colour_shape_prompts())
    seed = train_cfg.seed

    def gt(name: str, cfg: GroundTruthConfig) -> RenderSet:
        return cached_set(cache, name, config_dict(cfg), lambda: ground_truth_set(cfg, model.autoencoder, log), log)

    def samples(name: str, cfg: SampleConfig) -> RenderSet:
        return cached_set(cache, name, config_dict(cfg), lambda: model_sample_set(model, cfg, log), log)

    train_gt = gt("train-gt", GroundTruthConfig(sized, args.gt_seeds, first_seed=seed * 100_000, views=2, degradations=TRAIN_DEGRADATIONS))
    train_samples = samples(
        "train-samples", SampleConfig(sized, tuple(seed * 100 + i for i in range(args.sample_seeds)), views=2, camera_seed=seed + 1)
    )
    test_first = 50_000_000 + seed
    tests = {
        "ground truth, clean, 64 px": gt("test-gt-64", GroundTruthConfig(sized, 1, first_seed=test_first, views=4, resolution=64)),
        "ground truth, clean, 32 px": gt("test-gt-32", GroundTruthConfig(sized, 1, first_seed=test_first, views=4, resolution=32)),
        "ground truth, autoencoder round trip, 64 px": gt(
            "test-gt-ae", GroundTruthConfig(sized, 1, first_seed=test_first + 1_000_000, views=2, degradations=(0.0, 1.0, 0.0, 0.0))
        ),
    }
    test_seeds = tuple(range(TEST_SAMPLE_FIRST_SEED, TEST_SAMPLE_FIRST_SEED + args.test_sample_seeds))
    sample_tests = {
        f"embedded-model samples, {r} px": samples(f"test-samples-{r}", SampleConfig(plain, test_seeds, views=4, resolution=r, camera_seed=12345))
        for r in (64, 32)
    }
    data_s, data_cpu = time.perf_counter() - t_start, time.process_time() - cpu_start

    train = RenderSet.cat([train_gt, train_samples])
    log(
        f"training on {len(train_gt)} ground-truth objects and {len(train_samples)} model samples "
        f"({len(train) * train.views} views); data ready after {data_s:.0f} s"
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    net, history = train_critic(train, train_cfg, CriticConfig(), log)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0

    metrics = {name: evaluate_critic(net, data) for name, data in {**tests, **sample_tests}.items()}
    lines = [
        "| held-out set | objects x views | shape | colour | shape, single view | colour, single view |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        if name in tests:
            lines.append(f"| {name} | {m.objects} x {m.views} | {_pct(m.shape)} | {_pct(m.colour)} | {_pct(m.shape_per_view)} | {_pct(m.colour_per_view)} |")
    lines += [
        "",
        "Embedded-model samples (48 colour x shape prompts, seeds "
        f"{test_seeds[0]}-{test_seeds[-1]}): critic against the prompt and against the geometric judge's verdicts.",
        "",
        "| set | critic = prompt, shape | critic = prompt, colour | critic = judge, shape | critic = judge, colour "
        "| judge = prompt, shape | judge = prompt, colour |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        if name in sample_tests:
            lines.append(
                f"| {name} | {_pct(m.shape_vs_prompt)} | {_pct(m.colour_vs_prompt)} | {_pct(m.shape)} | {_pct(m.colour)} "
                f"| {_pct(m.judge_shape_vs_prompt)} | {_pct(m.judge_colour_vs_prompt)} |"
            )
    key = "embedded-model samples, 64 px"
    data, m = sample_tests[key], metrics[key]
    judge_shape = [SHAPES[i] if i >= 0 else UNKNOWN for i in data.shape.tolist()]
    judge_colour = [list(COLOURS)[i] if i >= 0 else UNKNOWN for i in data.colour.tolist()]
    lines += [
        "",
        f"Shape, {key}: rows the judge's verdict, columns the critic's",
        "",
        format_confusion_matrix(confusion_matrix(zip(judge_shape, m.shape_predictions), labels=SHAPES)),
        "",
        f"Colour, {key}: rows the judge's verdict, columns the critic's",
        "",
        format_confusion_matrix(confusion_matrix(zip(judge_colour, m.colour_predictions), labels=tuple(COLOURS))),
    ]
    report = "\n".join(lines)
    print(report)

    out = save_critic(
        net,
        args.out,
        extra={
            "training": {
                "command": "scripts/train_critic.py " + " ".join(sys.argv[1:]),
                "train": config_dict(train_cfg),
                "train_objects": {"ground_truth": len(train_gt), "model_samples": len(train_samples), "views": train.views},
                "data_seconds": round(data_s, 1),
                "data_cpu_seconds": round(data_cpu, 1),
                "train_seconds": round(train_s, 1),
                "train_cpu_seconds": round(train_cpu, 1),
                "threads": args.threads,
                "torch": torch.__version__,
                "final_epoch": history[-1],
            },
            "metrics": {name: m.to_dict() for name, m in metrics.items()},
        },
    )
    size = out.stat().st_size
    summary = (
        f"data {data_s:.0f} s wall / {data_cpu:.0f} s CPU (little when read from the cache), "
        f"training {train_s:.0f} s wall / {train_cpu:.0f} s CPU; wrote {out} ({size / 1e6:.2f} MB)"
    )
    print(summary)
    if args.report:
        write_bytes(args.report, (report + "\n\n" + summary + "\n").encode())


if __name__ == "__main__":
    main()
