"""Confidence-rule gates: max probability, entropy, margin and patience."""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar

from gates.base import CacheArrays, Gate
from gates.featurize import advance_argmax_state, init_argmax_state
from gates.labels import exit_predictions
from gates.probs import SOFTMAX_FLOPS_PER_CLASS, normalized_entropy, softmax, top2_margin

logger = logging.getLogger(__name__)

# Temperatures are searched over exp([-5, 5]), about 0.007 to 148.
LOG_TEMPERATURE_BOUNDS = (-5.0, 5.0)


class MaxProbGate(Gate):
    """Max softmax probability after per-exit temperature scaling fitted by NLL.

    With label_mode="correct" the temperatures fit the gold labels. With
    "agreement" they fit the last exit's argmax, so no gold labels are needed.
    """

    kind = "maxprob"

    def _fit(self, cache: CacheArrays, label_mode: str, seed: int) -> None:
        if label_mode == "correct":
            targets = cache.labels
        else:
            targets = exit_predictions(cache.logits)[:, -1]
        temperatures = [_fit_temperature(cache.logits[:, e], targets) for e in range(cache.num_exits - 1)]
        if label_mode == "correct":
            temperatures.append(_fit_temperature(cache.logits[:, -1], targets))
        else:
            # The last exit's own argmax is its target, so the NLL would push T to 0; it always exits anyway.
            temperatures.append(1.0)
        self.temperatures_ = np.asarray(temperatures, dtype=np.float64)
        logger.info("maxprob temperatures per exit: %s", np.round(self.temperatures_, 3).tolist())

    def _step(self, exit_index, logits_e, hidden_e, state):
        probs = softmax(logits_e, self.temperatures_[exit_index])
        return probs.max(axis=-1), state

    def _estimate_cost_flops(self) -> int:
        # Temperature divide plus softmax and max.
        return (SOFTMAX_FLOPS_PER_CLASS + 2) * self.num_classes_

    def _config(self) -> dict:
        # repr() of a float round-trips exactly through JSON.
        return {"temperatures": [float(t) for t in self.temperatures_]}

    def _restore(self, config, arrays, directory, name) -> None:
        self.temperatures_ = np.asarray(config["temperatures"], dtype=np.float64)


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-300, None)).mean())


def _fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature minimising the NLL of targets (N,) under logits (N, K), a bounded 1-D search on log T."""
    result = minimize_scalar(
        lambda log_t: _nll(logits, targets, float(np.exp(log_t))),
        bounds=LOG_TEMPERATURE_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


class EntropyGate(Gate):
    """1 - entropy / log K of the exit's softmax (DeeBERT, FastBERT)."""

    kind = "entropy"

    def _fit(self, cache, label_mode, seed) -> None:
        pass

    def _step(self, exit_index, logits_e, hidden_e, state):
        return 1.0 - normalized_entropy(softmax(logits_e)), state

    def _estimate_cost_flops(self) -> int:
        return (SOFTMAX_FLOPS_PER_CLASS + 3) * self.num_classes_


class MarginGate(Gate):
    """Top-1 minus top-2 softmax probability."""

    kind = "margin"

    def _fit(self, cache, label_mode, seed) -> None:
        pass

    def _step(self, exit_index, logits_e, hidden_e, state):
        return top2_margin(softmax(logits_e)), state

    def _estimate_cost_flops(self) -> int:
        return (SOFTMAX_FLOPS_PER_CLASS + 2) * self.num_classes_


class PatienceGate(Gate):
    """Number of consecutive exits, including this one, with the same argmax (PABEE).

    Scores are whole numbers, so the calibrated threshold is an integer patience.
    """

    kind = "patience"

    def _fit(self, cache, label_mode, seed) -> None:
        pass

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        return init_argmax_state(batch_size)

    def _step(self, exit_index, logits_e, hidden_e, state):
        _, state = advance_argmax_state(logits_e.argmax(axis=-1), state)
        return state["run_length"].astype(np.float64), state

    def _estimate_cost_flops(self) -> int:
        # Argmax comparisons plus one compare and one add.
        return self.num_classes_ + 2
