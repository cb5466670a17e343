"""Gate input features per exit, computed the same way on whole caches and during inference."""

from __future__ import annotations

import numpy as np

from gates.probs import SOFTMAX_FLOPS_PER_CLASS, normalized_entropy, rowwise_matmul, softmax, top2_margin

# Scalar features after the K class probabilities, in column order.
SCALAR_FEATURES = ("max_prob", "margin", "entropy", "agrees_with_previous", "run_length", "depth")


def init_argmax_state(batch_size: int) -> dict[str, np.ndarray]:
    """State before the first exit: previous argmax -1 (none) and run length 0."""
    return {
        "prev_argmax": np.full(batch_size, -1, dtype=np.int64),
        "run_length": np.zeros(batch_size, dtype=np.int64),
    }


def advance_argmax_state(argmax: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
    """Return whether each row's argmax (B,) equals the previous exit's, and the next state."""
    prev_argmax = state["prev_argmax"]
    if prev_argmax.shape != argmax.shape:
        raise ValueError(f"state has {prev_argmax.shape[0]} rows but the exit has {argmax.shape[0]}. Use select_rows")
    agrees = argmax == prev_argmax
    run_length = np.where(agrees, state["run_length"] + 1, 1)
    return agrees, {"prev_argmax": argmax.astype(np.int64), "run_length": run_length}


class GateFeaturizer:
    """Turn one exit's logits and pooled hidden state into gate features.

    Features per exit, F = K + 6 + c columns: class probabilities (K), max
    probability, top-1 minus top-2 margin, entropy / log K, whether the argmax
    equals the previous exit's, the argmax run length (including this exit)
    divided by E, the depth exits[e] / L, then the hidden state projected on
    its exit's first c principal components (c = 0 without hidden states).
    """

    def __init__(self, n_components: int = 8):
        self.n_components = n_components

    def fit(self, hidden, *, exits, num_layers, num_classes) -> "GateFeaturizer":
        """Fit one PCA per exit on hidden (N, E, D) with numpy SVD. With hidden=None the projection is skipped."""
        if int(self.n_components) != self.n_components or self.n_components < 0:
            raise ValueError(f"n_components must be a non-negative integer, got {self.n_components!r}")
        self.exits_ = tuple(int(layer) for layer in exits)
        self.num_layers_ = int(num_layers)
        self.num_classes_ = int(num_classes)
        num_exits = len(self.exits_)
        if hidden is None or self.n_components == 0:
            self.pca_mean_ = np.zeros((num_exits, 0), dtype=np.float64)
            self.pca_components_ = np.zeros((num_exits, 0, 0), dtype=np.float64)
            return self

        hidden = np.asarray(hidden, dtype=np.float64)
        num_examples, _, hidden_size = hidden.shape
        components = min(int(self.n_components), num_examples, hidden_size)
        self.pca_mean_ = hidden.mean(axis=0)  # (E, D)
        self.pca_components_ = np.stack(
            [_principal_axes(hidden[:, e] - self.pca_mean_[e], components) for e in range(num_exits)]
        )  # (E, c, D)
        return self

    @property
    def num_components_(self) -> int:
        return self.pca_components_.shape[1]

    @property
    def num_features_(self) -> int:
        return self.num_classes_ + len(SCALAR_FEATURES) + self.num_components_

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        return init_argmax_state(batch_size)

    def step(self, exit_index: int, logits_e, hidden_e, state) -> tuple[np.ndarray, dict]:
        """Features of one exit for the rows still running: (B, K) logits -> (B, F) float64."""
        probs = softmax(np.asarray(logits_e, dtype=np.float32))
        argmax = probs.argmax(axis=-1)
        agrees, state = advance_argmax_state(argmax, state)
        batch_size = probs.shape[0]
        scalars = np.stack(
            [
                probs.max(axis=-1),
                top2_margin(probs),
                normalized_entropy(probs),
                agrees.astype(np.float64),
                state["run_length"] / len(self.exits_),
                np.full(batch_size, self.exits_[exit_index] / self.num_layers_),
            ],
            axis=1,
        )
        columns = [probs, scalars]
        if self.num_components_:
            columns.append(self._project(exit_index, hidden_e))
        return np.concatenate(columns, axis=1), state

    def _project(self, exit_index: int, hidden_e) -> np.ndarray:
        if hidden_e is None:
            raise ValueError("this featurizer was fitted with hidden states, so step() needs hidden_e of shape (B, D)")
        hidden_e = np.asarray(hidden_e, dtype=np.float64)
        expected = self.pca_mean_.shape[1]
        if hidden_e.ndim != 2 or hidden_e.shape[1] != expected:
            raise ValueError(f"hidden_e must have shape (B, {expected}), got {hidden_e.shape}")
        return rowwise_matmul(hidden_e - self.pca_mean_[exit_index], self.pca_components_[exit_index])

    def transform(self, logits, hidden) -> np.ndarray:
        """Features of every exit (N, E, F), computed by looping `step` over exits."""
        logits = np.asarray(logits, dtype=np.float32)
        state = self.init_state(logits.shape[0])
        columns = []
        for exit_index in range(logits.shape[1]):
            hidden_e = None if hidden is None else hidden[:, exit_index]
            features, state = self.step(exit_index, logits[:, exit_index], hidden_e, state)
            columns.append(features)
        return np.stack(columns, axis=1)

    def cost_flops(self) -> int:
        """Estimate the FLOPs of one example's features at one exit (softmax, summaries, PCA)."""
        softmax_and_summaries = SOFTMAX_FLOPS_PER_CLASS * self.num_classes_ + 4 * self.num_classes_
        hidden_size = self.pca_mean_.shape[1]
        projection = hidden_size + 2 * hidden_size * self.num_components_
        return softmax_and_summaries + projection

    def to_arrays(self, prefix: str = "featurizer.") -> dict[str, np.ndarray]:
        return {
            f"{prefix}exits": np.asarray(self.exits_, dtype=np.int64),
            f"{prefix}num_layers": np.asarray([self.num_layers_], dtype=np.int64),
            f"{prefix}num_classes": np.asarray([self.num_classes_], dtype=np.int64),
            f"{prefix}n_components": np.asarray([self.n_components], dtype=np.int64),
            f"{prefix}pca_mean": self.pca_mean_,
            f"{prefix}pca_components": self.pca_components_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "featurizer.") -> "GateFeaturizer":
        missing = [name for name in ("exits", "pca_mean", "pca_components") if f"{prefix}{name}" not in arrays]
        if missing:
            raise ValueError(f"saved gate arrays lack featurizer entries {missing}. Save the gate again")
        featurizer = cls(n_components=int(arrays[f"{prefix}n_components"][0]))
        featurizer.exits_ = tuple(int(layer) for layer in arrays[f"{prefix}exits"])
        featurizer.num_layers_ = int(arrays[f"{prefix}num_layers"][0])
        featurizer.num_classes_ = int(arrays[f"{prefix}num_classes"][0])
        featurizer.pca_mean_ = arrays[f"{prefix}pca_mean"]
        featurizer.pca_components_ = arrays[f"{prefix}pca_components"]
        return featurizer


def _principal_axes(centered: np.ndarray, components: int) -> np.ndarray:
    """First principal axes (c, D) of centered rows (N, D), signs fixed so each axis's largest entry is positive."""
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    axes = vt[:components]
    largest = np.abs(axes).argmax(axis=1)
    signs = np.sign(axes[np.arange(axes.shape[0]), largest])
    signs[signs == 0] = 1.0
    return axes * signs[:, None]
