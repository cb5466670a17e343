"""Shared machinery of the learned gates (mlp, xgboost, logistic): features, labels, scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gates.base import CacheArrays, Gate
from gates.featurize import GateFeaturizer
from gates.labels import gate_labels


@dataclass(frozen=True)
class TrainingRows:
    """One row per (example, exit) for exits before the last: features (M, F), labels (M,), exit and example index (M,)."""

    features: np.ndarray
    labels: np.ndarray
    exit_index: np.ndarray
    example_index: np.ndarray


def count_classes(labels: np.ndarray) -> tuple[int, int]:
    positives = int(labels.sum())
    return len(labels) - positives, positives


def positive_weight(labels: np.ndarray, where: str) -> float:
    """n_neg / n_pos, the weight that balances positive and negative gate labels."""
    negatives, positives = count_classes(labels)
    if negatives == 0 or positives == 0:
        raise ValueError(
            f"gate labels {where} are all {'positive' if negatives == 0 else 'negative'} "
            f"({len(labels)} rows), so a learned gate has nothing to separate. "
            "Use more validation examples, another label_mode or a rule gate"
        )
    return negatives / positives


class LearnedGate(Gate):
    """A gate that scores GateFeaturizer features with a trained model.

    The last exit always exits, so it is not trained on and scores 1.0.
    Subclasses implement `_fit_model` and `_predict`, which receive standardised inputs.
    """

    learned = True

    def __init__(self, n_components: int = 8, trajectory: bool = False):
        self.n_components = n_components
        self.trajectory = trajectory

    def _param_dict(self) -> dict:
        return {"n_components": self.n_components, "trajectory": self.trajectory}

    def _fit(self, cache: CacheArrays, label_mode: str, seed: int) -> None:
        self.featurizer_ = GateFeaturizer(self.n_components, self.trajectory).fit(
            cache.hidden, exits=cache.exits, num_layers=cache.num_layers, num_classes=cache.num_classes
        )
        rows = self._training_rows(cache, label_mode)
        self.feature_mean_ = rows.features.mean(axis=0)
        std = rows.features.std(axis=0)
        # Constant columns (depth for a per-exit model) would divide by zero.
        self.feature_std_ = np.where(std > 0, std, 1.0)
        self._fit_model(rows, self._standardize(rows.features), seed)

    def _training_rows(self, cache: CacheArrays, label_mode: str) -> TrainingRows:
        features = self.featurizer_.transform(cache.logits, cache.hidden)  # (N, E, F)
        ready = gate_labels(cache.logits, cache.labels, label_mode)  # (N, E)
        num_examples, num_exits, num_features = features.shape
        trained = num_exits - 1
        exit_index, example_index = np.meshgrid(np.arange(trained), np.arange(num_examples))
        return TrainingRows(
            # (N, E-1, F) -> (N * (E-1), F), example-major.
            features=features[:, :trained].reshape(-1, num_features),
            labels=ready[:, :trained].reshape(-1).astype(np.float64),
            exit_index=exit_index.reshape(-1),
            example_index=example_index.reshape(-1),
        )

    def _standardize(self, features: np.ndarray) -> np.ndarray:
        return (features - self.feature_mean_) / self.feature_std_

    def _fit_model(self, rows: TrainingRows, inputs: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def _predict(self, exit_index: int, inputs: np.ndarray) -> np.ndarray:
        """Probability of the positive gate label (B,) from standardised inputs (B, F)."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        return self.featurizer_.init_state(batch_size)

    def _step(self, exit_index, logits_e, hidden_e, state):
        features, state = self.featurizer_.step(exit_index, logits_e, hidden_e, state)
        if exit_index == len(self.exits_) - 1:
            return np.ones(features.shape[0], dtype=np.float64), state
        return self._predict(exit_index, self._standardize(features)), state

    def _estimate_cost_flops(self) -> int:
        # Standardisation is one subtract and one divide per feature.
        return self.featurizer_.cost_flops() + 2 * self.featurizer_.num_features_ + self._model_cost_flops()

    def _model_cost_flops(self) -> int:
        raise NotImplementedError

    def _base_arrays(self) -> dict[str, np.ndarray]:
        arrays = self.featurizer_.to_arrays()
        arrays["scaler.mean"] = self.feature_mean_
        arrays["scaler.std"] = self.feature_std_
        return arrays

    def _restore_base(self, arrays: dict[str, np.ndarray]) -> None:
        self.featurizer_ = GateFeaturizer.from_arrays(arrays)
        self.feature_mean_ = arrays["scaler.mean"]
        self.feature_std_ = arrays["scaler.std"]
