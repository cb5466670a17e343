"""Replay every exit policy over the cached test split: accuracy against depth and cost."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from features import FeatureCache, SplitFeatures
from gates import exits_from_scores, load_gate, oracle_exits

from .checks import check_run_heads_match_cache
from .costs import ModelCost, estimated_flops, full_depth_flops
from .rundir import RunDir, write_json

logger = logging.getLogger(__name__)


@dataclass
class PolicyResult:
    """One exit policy on one split; cost is reported four ways, each under its own name."""

    policy: str
    accuracy: float
    drop_points: float  # full-depth accuracy minus this accuracy, in percentage points
    average_exit_layer: float
    layer_speedup: float  # L / average exit layer
    estimated_gflops: float  # per example, heads and gates included
    estimated_flops_speedup: float  # full-depth estimated FLOPs / this policy's
    oracle_share: float | None  # share of the agreement oracle's saved layers that this policy saves
    threshold: float | None
    histogram: dict[int, int] = field(default_factory=dict)  # exit layer -> examples


@dataclass
class CurvePoint:
    threshold: float
    accuracy: float
    average_exit_layer: float


def model_cost(cache: FeatureCache) -> ModelCost:
    meta = cache.meta
    return ModelCost(meta.num_layers, meta.hidden_size, len(meta.label_names), int(meta.extra["layer_matmul_flops"]))


def evaluate_exits(
    name: str,
    exit_index: np.ndarray,
    features: SplitFeatures,
    exits: list[int],
    cost: ModelCost,
    *,
    gate_flops: int = 0,
    threshold: float | None = None,
    oracle_layer: float | None = None,
) -> PolicyResult:
    """Score the predictions taken at `exit_index` `(N,)` against labels and full depth."""
    N = len(features.labels)
    predictions = features.logits[np.arange(N), exit_index].argmax(-1)  # (N, E, K) -> (N,)
    accuracy = float((predictions == features.labels).mean())
    full_accuracy = float((features.logits[:, -1].argmax(-1) == features.labels).mean())
    layers = np.asarray(exits)[exit_index]
    mean_layer = float(layers.mean())
    flops = estimated_flops(cost, exits, exit_index, features.lengths, gate_flops).mean()
    full = full_depth_flops(cost, features.lengths).mean()

    share = None
    if oracle_layer is not None and cost.num_layers > oracle_layer:
        share = (cost.num_layers - mean_layer) / (cost.num_layers - oracle_layer)
    values, counts = np.unique(layers, return_counts=True)
    return PolicyResult(
        policy=name,
        accuracy=accuracy,
        drop_points=100.0 * (full_accuracy - accuracy),
        average_exit_layer=mean_layer,
        layer_speedup=cost.num_layers / mean_layer,
        estimated_gflops=float(flops) / 1e9,
        estimated_flops_speedup=float(full / flops),
        oracle_share=share,
        threshold=threshold,
        histogram={int(v): int(c) for v, c in zip(values, counts)},
    )


def sweep(scores: np.ndarray, features: SplitFeatures, exits: list[int], points: int = 40) -> list[CurvePoint]:
    """Accuracy against average exit layer over a range of thresholds (for plots only)."""
    candidates = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, points)))
    curve = []
    N = len(features.labels)
    for threshold in candidates:
        index = exits_from_scores(scores, float(threshold))
        predictions = features.logits[np.arange(N), index].argmax(-1)
        curve.append(CurvePoint(float(threshold), float((predictions == features.labels).mean()), float(np.asarray(exits)[index].mean())))
    return curve


def gate_names(run: RunDir) -> list[str]:
    return sorted(p.stem for p in run.gates_dir.glob("*.json") if not p.name.endswith(".xgb.json"))


def run_simulate(run: RunDir, split: str = "test") -> dict:
    """Replay every trained gate and both oracles over `split`; write simulate.json and pareto.png."""
    config = run.load_config()
    cache = FeatureCache.open(run.require(run.cache_path(config.cache_format), "extract"))
    features = cache.read(split)
    check_run_heads_match_cache(run, cache, features, split)
    exits = cache.meta.exits
    cost = model_cost(cache)

    agreement = oracle_exits(features.logits, None, "agreement")
    correct = oracle_exits(features.logits, features.labels, "correct")
    oracle_layer = float(np.asarray(exits)[agreement].mean())
    E = len(exits)
    results = [
        evaluate_exits("full depth", np.full(len(features.labels), E - 1), features, exits, cost),
        evaluate_exits("oracle (agreement)", agreement, features, exits, cost, oracle_layer=oracle_layer),
        evaluate_exits("oracle (correct)", correct, features, exits, cost, oracle_layer=oracle_layer),
    ]

    names = gate_names(run)
    if not names:
        raise FileNotFoundError(f"no gates in {run.gates_dir}; run `python cli.py train-gates --run-dir {run.root} --kind mlp` first")
    curves = {}
    for name in names:
        gate = load_gate(run.gate_path(name))
        check_gate_matches(gate, cache, run.gate_path(name), features.heads_fingerprint)
        scores = gate.scores(features.logits, features.hidden)
        index = exits_from_scores(scores, gate.threshold_)
        results.append(
            evaluate_exits(name, index, features, exits, cost, gate_flops=gate.cost_flops_per_example_, threshold=gate.threshold_, oracle_layer=oracle_layer)
        )
        curves[name] = [asdict(p) for p in sweep(scores, features, exits)]

    per_exit = [float((features.logits[:, e].argmax(-1) == features.labels).mean()) for e in range(E)]
    payload = {
        "split": split,
        "num_layers": cost.num_layers,
        "exits": exits,
        "examples": int(len(features.labels)),
        "per_exit_accuracy": per_exit,
        "policies": [asdict(r) for r in results],
        "curves": curves,
    }
    write_json(run.root / "simulate.json", payload)
    plot_pareto(run.root / "pareto.png", payload)
    return payload


def check_gate_matches(gate, cache: FeatureCache, path, heads_fingerprint: str | None = None) -> None:
    """Reject a gate trained on another cache: its recorded fingerprints must match.

    `heads_fingerprint` is that of the split's logits being replayed; None skips that check.
    """
    expected = {"model_fingerprint": cache.meta.model_fingerprint, "dataset_fingerprint": cache.meta.dataset_fingerprint, "exits": cache.meta.exits}
    if heads_fingerprint is not None:
        expected["heads_fingerprint"] = heads_fingerprint
    for key, value in expected.items():
        found = gate.meta_.get(key)
        if found is not None and found != value:
            raise ValueError(
                f"gate {path} was trained on a cache with {key}={found!r}, but {cache.path} has {key}={value!r}; "
                f"retrain it with `python cli.py train-gates --run-dir {Path(cache.path).parent}`"
            )


def plot_pareto(path, payload: dict) -> None:
    """Draw every gate's accuracy-against-depth curve with its operating point and the oracles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, curve in payload["curves"].items():
        axes.plot([p["average_exit_layer"] for p in curve], [p["accuracy"] for p in curve], label=name, linewidth=1.2)
    for row in payload["policies"]:
        marker = "o"
        if row["policy"].startswith("oracle"):
            marker = "*"
        elif row["policy"] == "full depth":
            marker = "s"
        axes.scatter(row["average_exit_layer"], row["accuracy"], marker=marker, s=50, zorder=3)
        axes.annotate(row["policy"], (row["average_exit_layer"], row["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("average exit layer")
    axes.set_ylabel(f"accuracy ({payload['split']} split)")
    axes.set_title("Accuracy against depth; markers are the validation-calibrated operating points")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)


def format_table(payload: dict) -> str:
    """Render the simulate results as a fixed-width text table."""
    header = f"{'policy':<20} {'accuracy':>8} {'drop pts':>8} {'avg exit layer':>14} {'layer speedup':>13} {'est. GFLOPs':>11} {'est. FLOPs speedup':>18} {'oracle share':>12}"
    lines = [f"simulated on the {payload['split']} split ({payload['examples']} examples, {payload['num_layers']} layers, exits {payload['exits']})", header, "-" * len(header)]
    for row in payload["policies"]:
        share = "" if row["oracle_share"] is None else f"{100 * row['oracle_share']:.0f}%"
        lines.append(
            f"{row['policy']:<20} {row['accuracy']:>8.4f} {row['drop_points']:>8.2f} {row['average_exit_layer']:>14.2f} "
            f"{row['layer_speedup']:>12.2f}x {row['estimated_gflops']:>11.3f} {row['estimated_flops_speedup']:>17.2f}x {share:>12}"
        )
    return "\n".join(lines)
