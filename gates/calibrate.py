"""Threshold calibration under an accuracy-drop budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gates.base import Gate, check_cache_arrays
from gates.labels import exit_predictions
from gates.ltt import binomial_p_value, check_delta, exit_losses, fixed_sequence_test

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("empirical", "ltt")


@dataclass(frozen=True)
class Calibration:
    """A chosen threshold and what it gives on the data it was chosen on.

    `certified_bound` is the accuracy drop against full depth that the method
    certifies with probability at least 1 - `delta` on new data from the same
    distribution (max_drop for "ltt", 0 when it keeps every example to full
    depth). The empirical method certifies nothing and sets both to None.
    `loss_rate` is the mean LTT loss (`risk`) on the calibration data.
    """

    threshold: float
    accuracy: float
    full_accuracy: float
    mean_layers: float
    layer_speedup: float
    max_drop: float
    method: str
    certified_bound: float | None = None
    delta: float | None = None
    risk: str | None = None
    loss_rate: float | None = None


@dataclass(frozen=True)
class ThresholdSweep:
    """Accuracy, mean exit layer and mean LTT loss (C,) for each candidate threshold (C,), in increasing order."""

    thresholds: np.ndarray
    accuracy: np.ndarray
    mean_layers: np.ndarray
    loss_count: np.ndarray | None = None  # examples with an LTT loss, None when no loss was swept


def check_max_drop(max_drop: float) -> float:
    if not 0.0 <= max_drop < 1.0:
        raise ValueError(f"max_drop {max_drop!r} must lie in [0, 1), e.g. 0.01 for one accuracy point")
    return float(max_drop)


def exits_from_scores(scores, threshold: float) -> np.ndarray:
    """Exit index (N,): the first exit e with scores[:, e] >= threshold, else the last exit E-1."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape (N, E) with E >= 1, got {scores.shape}")
    ready = scores >= threshold
    ready[:, -1] = True
    return ready.argmax(axis=1).astype(np.int64)


def sweep_thresholds(scores: np.ndarray, correct: np.ndarray, layers: np.ndarray,
                     losses: np.ndarray | None = None) -> ThresholdSweep:
    """Evaluate every distinct threshold at once from scores (N, E), correct (N, E) bool and layers (E,).

    With running maxima m_e = max(s_0..s_e), an example exits at the number of
    early exits e < E-1 with m_e < t. So a total over examples is its value at
    exit 0 plus the jumps f(e+1) - f(e) of every (example, e) with m_e < t,
    which a sort and a cumulative sum give for all candidates t in O(NE log NE).
    The candidates are the distinct m_e plus infinity (always run to the end).
    `losses` (N, E), when given, is summed the same way into `loss_count`.
    """
    num_examples, num_exits = scores.shape
    running_max = np.maximum.accumulate(scores[:, : num_exits - 1], axis=1)  # (N, E-1)
    candidates = np.append(np.unique(running_max), np.inf)

    order = np.argsort(running_max.reshape(-1), kind="stable")
    sorted_max = running_max.reshape(-1)[order]
    position = np.searchsorted(sorted_max, candidates, side="left")  # count of m_e < t

    values = {"correct": correct.astype(np.float64), "layers": np.broadcast_to(layers, scores.shape)}
    if losses is not None:
        values["losses"] = losses.astype(np.float64)
    totals = {}
    for name, per_exit in values.items():
        jumps = np.diff(per_exit, axis=1).reshape(-1)[order]  # (N * (E-1),)
        cumulative = np.concatenate([[0.0], np.cumsum(jumps)])
        totals[name] = per_exit[:, 0].sum() + cumulative[position]
    loss_count = None if losses is None else np.rint(totals["losses"]).astype(np.int64)
    return ThresholdSweep(candidates, totals["correct"] / num_examples, totals["layers"] / num_examples, loss_count)


def _choose_empirical(sweep: ThresholdSweep, full_accuracy: float, max_drop: float) -> int:
    """Index of the feasible threshold with the fewest mean layers, ties broken by accuracy then a higher threshold."""
    # Rounding slack, so a drop of exactly max_drop passes.
    feasible = sweep.accuracy >= full_accuracy - max_drop - 1e-12
    candidates = np.flatnonzero(feasible)  # never empty: infinity runs every example to the end
    best = min(candidates, key=lambda i: (round(sweep.mean_layers[i], 12), -sweep.accuracy[i], -i))
    return int(best)


def _choose_ltt(sweep: ThresholdSweep, num_examples: int, max_drop: float, delta: float) -> int:
    """Index of the most aggressive threshold that fixed-sequence testing certifies, see gates.ltt."""
    # Candidates from conservative to aggressive: infinity first, then decreasing thresholds.
    descending = np.arange(len(sweep.thresholds))[::-1]
    p_values = binomial_p_value(sweep.loss_count[descending], num_examples, max_drop)
    # At infinity every example runs to full depth, so the loss is zero and H is false for certain.
    p_values[0] = 0.0
    result = fixed_sequence_test(p_values, delta)
    return int(descending[result.index])


def calibrate_scores(scores, logits, labels, *, exits, num_layers, max_drop=0.01, method="empirical",
                     delta=0.1, risk="lost_correct") -> Calibration:
    """Choose a threshold for precomputed scores (N, E) on labelled data. See `calibrate`."""
    max_drop = check_max_drop(max_drop)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not supported. Expected one of {CALIBRATION_METHODS}")
    cache = check_cache_arrays(logits, None, labels, exits=exits, num_layers=num_layers)
    if cache.labels is None:
        raise ValueError("calibration needs gold labels to measure accuracy, got labels=None")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != cache.logits.shape[:2]:
        raise ValueError(f"scores must have shape (N, E) = {cache.logits.shape[:2]}, got {scores.shape}")

    predictions = exit_predictions(cache.logits)  # (N, E)
    correct = predictions == cache.labels[:, None]
    layers = np.asarray(cache.exits, dtype=np.float64)
    full_accuracy = float(correct[:, -1].mean())
    if method == "ltt":
        delta = check_delta(delta)
        losses = exit_losses(predictions, cache.labels, risk)
        sweep = sweep_thresholds(scores, correct, layers, losses)
        index = _choose_ltt(sweep, cache.num_examples, max_drop, delta)
        threshold = float(sweep.thresholds[index])
        ltt_fields = dict(certified_bound=0.0 if np.isinf(threshold) else max_drop, delta=delta, risk=risk,
                          loss_rate=float(sweep.loss_count[index]) / cache.num_examples)
    else:
        sweep = sweep_thresholds(scores, correct, layers)
        index = _choose_empirical(sweep, full_accuracy, max_drop)
        ltt_fields = {}

    mean_layers = float(sweep.mean_layers[index])
    result = Calibration(
        threshold=float(sweep.thresholds[index]),
        accuracy=float(sweep.accuracy[index]),
        full_accuracy=full_accuracy,
        mean_layers=mean_layers,
        layer_speedup=cache.num_layers / mean_layers,
        max_drop=max_drop,
        method=method,
        **ltt_fields,
    )
    logger.info(
        "%s threshold %.6g: accuracy %.4f (full depth %.4f), mean exit layer %.2f of %d",
        method, result.threshold, result.accuracy, full_accuracy, mean_layers, cache.num_layers,
    )
    return result


def calibrate(gate: Gate, logits, hidden, labels, *, exits, num_layers, max_drop=0.01,
              method="empirical", delta=0.1, risk="lost_correct") -> Calibration:
    """Set gate.threshold_ to the threshold that minimises the mean exit layer on the given data.

    method="empirical": the constraint is accuracy >= full-depth accuracy -
    max_drop on the same data, which should be validation, never test.
    method="ltt": the most aggressive threshold whose risk (`risk`, a loss
    whose mean bounds the drop) Learn-then-Test certifies to be at most
    max_drop with probability 1 - delta. This holds on new data only when
    the gate was not fitted on these rows. The candidates are the distinct
    score values plus infinity, so a threshold always exists.
    """
    scores = gate.scores(logits, hidden)
    result = calibrate_scores(scores, logits, labels, exits=exits, num_layers=num_layers,
                              max_drop=max_drop, method=method, delta=delta, risk=risk)
    gate.threshold_ = result.threshold
    return result
