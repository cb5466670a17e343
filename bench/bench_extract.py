"""Benchmark `extract` against a plain `output_hidden_states` loop, and bucketing against shuffled order.

Both sides run in one process on the same texts and the same batches. Rounds
alternate, so drift in machine load hits both sides. The printed figures are
ratios of median throughputs.

    python bench/bench_extract.py --texts 512 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.heads import exits_every  # noqa: E402
from backbone.loading import load_backbone  # noqa: E402
from backbone.runner import encode, token_lengths  # noqa: E402
from data import load_splits  # noqa: E402
from features import CacheMeta, FeatureCache  # noqa: E402
from features.extract import extract_split, token_batches  # noqa: E402

logger = logging.getLogger("bench_extract")


def plain_loop(backbone, texts: list[str], exits: list[int], batch_size: int, sort: bool) -> float:
    """Time a user's loop: HF forward with output_hidden_states over the same batches, pooling the last token."""
    lengths = np.asarray(token_lengths(backbone, texts))
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(texts))
    start = time.perf_counter()
    with torch.no_grad():
        for rows in token_batches(lengths[order], batch_size, None):
            encoded = encode(backbone, [texts[i] for i in order[rows]])
            out = backbone.model.base_model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, output_hidden_states=True)
            index = torch.arange(len(encoded.lengths))
            # Final norm on every exit but the last, whose hidden_states entry already has it.
            pooled = [backbone.final_norm(out.hidden_states[e][index, encoded.lengths - 1]) for e in exits[:-1]]
            pooled.append(out.hidden_states[-1][index, encoded.lengths - 1])
            torch.stack(pooled, dim=1).numpy()
    return time.perf_counter() - start


def project_extract(backbone, texts, labels, exits, batch_size: int, sort: bool, label_names, directory: Path) -> float:
    meta = CacheMeta("bench", backbone.fingerprint, backbone.num_layers, backbone.hidden_size, exits, label_names, "bench", "bench", extra={})
    path = directory / f"cache-{time.perf_counter_ns()}.zarr"
    cache = FeatureCache.create(path, meta)
    start = time.perf_counter()
    extract_split(cache, "train", texts, labels, backbone, exits, batch_size=batch_size, sort_by_length=sort)
    seconds = time.perf_counter() - start
    cache.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="rt-critics")
    parser.add_argument("--texts", type=int, default=512, help="texts from the train split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    backbone = load_backbone(args.model)
    splits = load_splits(args.dataset, limit=args.texts)
    texts, labels = splits.train.texts, splits.train.labels
    exits = exits_every(3, backbone.num_layers)
    times = {"plain sorted": [], "extract sorted": [], "plain shuffled": [], "extract shuffled": []}

    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up: one small batch through each path.
        plain_loop(backbone, texts[:8], exits, 8, True)
        project_extract(backbone, texts[:8], labels[:8], exits, 8, True, splits.label_names, Path(tmp))
        for round_index in range(args.rounds):
            times["plain sorted"].append(plain_loop(backbone, texts, exits, args.batch_size, True))
            times["extract sorted"].append(project_extract(backbone, texts, labels, exits, args.batch_size, True, splits.label_names, Path(tmp)))
            times["plain shuffled"].append(plain_loop(backbone, texts, exits, args.batch_size, False))
            times["extract shuffled"].append(project_extract(backbone, texts, labels, exits, args.batch_size, False, splits.label_names, Path(tmp)))
            logger.warning("round %d: %s", round_index + 1, {k: round(v[-1], 2) for k, v in times.items()})

    median = {name: statistics.median(values) for name, values in times.items()}
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "model": args.model,
        "texts": len(texts),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "seconds_median": median,
        "extract_over_plain_throughput": median["plain sorted"] / median["extract sorted"],
        "bucketing_speedup_extract": median["extract shuffled"] / median["extract sorted"],
        "bucketing_speedup_plain": median["plain shuffled"] / median["plain sorted"],
    }
    print(f"texts {len(texts)}, batch size {args.batch_size}, {args.rounds} rounds, median seconds:")
    for name, seconds in median.items():
        print(f"  {name:<17} {seconds:7.2f} s  {len(texts) / seconds:7.1f} texts/s")
    print(f"extract throughput / plain loop throughput (both length-sorted): {results['extract_over_plain_throughput']:.3f}")
    print(f"length bucketing speedup for extract (shuffled time / sorted time): {results['bucketing_speedup_extract']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
