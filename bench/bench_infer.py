"""Benchmark real early exit against full depth, next to the layer speedup `simulate` predicts.

Needs a run directory where finetune, extract and train-gates have run (the
README's main job leaves one in runs/demo). On the same test texts, in one
process, it times early-exit inference with the run's gate and full-depth
inference through the same runner, batching and head, at several batch sizes,
with length bucketing and with shuffled order, and with both batch schedules.

    python bench/bench_infer.py --run-dir runs/demo --texts 256
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.infer import InferOptions, run_early_exit, run_full_depth, warm_up  # noqa: E402
from replay.predict import load_inference, simulated_exits  # noqa: E402
from replay.prepare import load_data  # noqa: E402
from replay.rundir import RunDir  # noqa: E402

logger = logging.getLogger("bench_infer")


def timed_runs(backbone, heads, gate, texts, options: InferOptions, rounds: int):
    """Median seconds of early exit and of full depth, alternating rounds; plus the last predictions."""
    early_times, full_times = [], []
    for _ in range(rounds):
        early, early_timing = run_early_exit(backbone, heads, gate, texts, options)
        full, full_timing = run_full_depth(backbone, heads, texts, options)
        early_times.append(early_timing.seconds)
        full_times.append(full_timing.seconds)
    return statistics.median(early_times), statistics.median(full_times), early, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--gate", default="mlp")
    parser.add_argument("--texts", type=int, default=256, help="first N texts of the test split")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    run = RunDir(args.run_dir)
    config, backbone, heads, gate = load_inference(run, args.gate, "cpu")
    test = load_data(config).test
    n = min(args.texts, len(test.texts))
    texts, gold = test.texts[:n], test.labels[:n]

    # What simulate predicts for this gate on exactly these texts.
    simulated_exit, simulated_label = simulated_exits(run, config, gate, "test", len(test.texts))
    simulated_exit = simulated_exit[:n]
    exits = np.asarray(heads.exits)
    predicted_layer_speedup = backbone.num_layers / exits[simulated_exit].mean()

    rows = []
    reference = None
    warm_up(backbone, heads, gate, texts, InferOptions(batch_size=8))
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        variants = [("bucketed", True, "refill"), ("bucketed", True, "shrink"), ("shuffled", False, "refill")]
        if batch_size == 1:
            variants = [("-", True, "shrink")]
        for order_name, sort, schedule in variants:
            options = InferOptions(batch_size=batch_size, sort_by_length=sort, schedule=schedule)
            early_s, full_s, early, full = timed_runs(backbone, heads, gate, texts, options, args.rounds)
            if reference is None and batch_size == 1:
                reference = early
            same_as_bs1 = None if reference is None else float(np.mean((reference.exit_index == early.exit_index) & (reference.labels == early.labels)))
            speedup = full_s / early_s
            rows.append(
                {
                    "batch_size": batch_size,
                    "order": order_name,
                    "schedule": schedule,
                    "early_exit_s": early_s,
                    "full_depth_s": full_s,
                    "wall_clock_speedup": speedup,
                    "predicted_layer_speedup": predicted_layer_speedup,
                    "realized_over_predicted": speedup / predicted_layer_speedup,
                    "measured_layer_speedup": backbone.num_layers / early.exit_layer.mean(),
                    "accuracy_early": float((early.labels == gold).mean()),
                    "accuracy_full": float((full.labels == gold).mean()),
                    "exit_agreement_with_simulate": float((early.exit_index == simulated_exit).mean()),
                    "same_as_batch_size_1": same_as_bs1,
                }
            )
            logger.warning("%s", rows[-1])

    print(f"{n} test texts, gate {args.gate}, simulate predicts layer speedup {predicted_layer_speedup:.2f}x")
    print(f"{'batch':>5} {'order':>8} {'schedule':>8} {'early s':>8} {'full s':>8} {'wall-clock':>10} {'realized/predicted':>18} {'same as bs1':>11} {'= simulate':>10}")
    for row in rows:
        same = "" if row["same_as_batch_size_1"] is None else f"{100 * row['same_as_batch_size_1']:.1f}%"
        print(
            f"{row['batch_size']:>5} {row['order']:>8} {row['schedule']:>8} {row['early_exit_s']:>8.2f} {row['full_depth_s']:>8.2f} "
            f"{row['wall_clock_speedup']:>9.2f}x {row['realized_over_predicted']:>18.3f} {same:>11} {100 * row['exit_agreement_with_simulate']:>9.1f}%"
        )
    if args.json:
        payload = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads", "texts": n, "gate": args.gate, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
