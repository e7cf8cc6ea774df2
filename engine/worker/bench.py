"""Measure the worker as a client sees it: start-up to ``ready``, then generate jobs end to end.

    python -m engine.worker.bench [--count 4] [--steps 20] [--repeats 3] [--baseline] [--threads N]

Prints JSON: ``ready_s`` (process start to the ``ready`` message: interpreter, torch and engine
imports), ``first_job`` (submit to result of the first job: model load included), the median
wall time of the following ``repeats`` identical jobs (model cached) and, as the baseline, the
median of the same job function run in this process (``--baseline``, interleaved with the worker
runs so both see the same machine load): the difference is what the process boundary costs.
``cancel_to_cancelled_s``: from ``cancel()`` to the ``cancelled`` message, three jobs cancelled
while sampling.
Outputs go to a temporary folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .client import WorkerClient, run_job_sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker.bench")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", help="default: the embedded model's first example prompt")
    parser.add_argument("--baseline", action="store_true", help="also run the job in this process")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads, worker and baseline (0: torch's default)")
    args = parser.parse_args(argv)
    if args.prompt is None:
        from ..models import model_spec

        args.prompt = model_spec("embedded").example_prompts[0]

    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads > 0 else {}
    if args.baseline and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    client = WorkerClient(env=env).start()
    try:
        t0 = time.perf_counter()
        while client.info is None:
            if not client.alive:
                print(client.stderr_tail(), file=sys.stderr)
                return 1
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0
        runs, local = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(1 + args.repeats):
                params = {"prompt": args.prompt, "count": args.count, "steps": args.steps, "out_dir": str(Path(tmp) / f"run{i}")}
                t1 = time.perf_counter()
                data = run_job_sync(client, "generate", params)
                runs.append({"wall_s": round(time.perf_counter() - t1, 3), "timings": data["timings"]})
                if args.baseline:
                    from .jobs import JobContext, run_generate

                    t1 = time.perf_counter()
                    run_generate({**params, "out_dir": params["out_dir"] + "_local"}, JobContext("local", lambda m: None))
                    local.append(time.perf_counter() - t1)
            # Cancellation latency: client.cancel() to the ``cancelled`` message, mid-sampling.
            cancel_s = []
            for i in range(3):
                job = client.submit("generate", {"prompt": args.prompt, "steps": 1000, "out_dir": str(Path(tmp) / f"cancel{i}")})
                while True:
                    msg = client.wait_message(60)
                    if msg is None or (msg.get("id") == job and msg["type"] == "progress" and "step" in msg["message"]):
                        break
                t1 = time.perf_counter()
                client.cancel(job)
                while msg is not None and not (msg.get("id") == job and msg["type"] in ("result", "error", "cancelled")):
                    msg = client.wait_message(60)
                cancel_s.append(round(time.perf_counter() - t1, 4))
        report = {
            "threads": client.info.get("threads"),
            "count": args.count,
            "steps": args.steps,
            "ready_s": round(ready_s, 3),
            "first_job": runs[0],
            "cached_model_median_wall_s": round(statistics.median(r["wall_s"] for r in runs[1:]), 3) if args.repeats else None,
            "cached_model_runs": runs[1:],
            "cancel_to_cancelled_s": cancel_s,
        }
        if args.baseline and args.repeats:
            report["in_process_median_wall_s"] = round(statistics.median(local[1:]), 3)
        print(json.dumps(report, indent=2, allow_nan=False))
        return 0
    finally:
        client.stop()


if __name__ == "__main__":
    sys.exit(main())
