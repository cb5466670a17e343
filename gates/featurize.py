"""Gate input features per exit, computed the same way on whole caches and during inference."""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh
from threadpoolctl import threadpool_limits

from gates.probs import SOFTMAX_FLOPS_PER_CLASS, normalized_entropy, rowwise_matmul, softmax, top2_margin

# Scalar features after the K class probabilities, in column order.
SCALAR_FEATURES = ("max_prob", "margin", "entropy", "agrees_with_previous", "run_length", "depth")
# Features of the exits seen so far, after the scalar features when trajectory=True, in column order.
TRAJECTORY_FEATURES = (
    "max_prob_change",  # max probability minus the previous exit's (0 at the first exit)
    "previous_prob_of_argmax",  # the previous exit's probability of this exit's argmax (this exit's at the first)
    "running_min_max_prob",  # minimum of the max probability over exits so far
    "running_max_max_prob",  # maximum of the max probability over exits so far
    "vote_share",  # share of exits so far whose argmax is this exit's argmax
    "mean_prob_of_argmax",  # mean over exits so far of the probability of this exit's argmax
    "mean_argmax_agrees",  # whether the argmax of the mean probabilities is this exit's argmax
)


def init_argmax_state(batch_size: int) -> dict[str, np.ndarray]:
    """State before the first exit: previous argmax -1 (none) and run length 0."""
    return {
        "prev_argmax": np.full(batch_size, -1, dtype=np.int64),
        "run_length": np.zeros(batch_size, dtype=np.int64),
    }


def init_trajectory_state(batch_size: int, num_classes: int) -> dict[str, np.ndarray]:
    """State of the trajectory features before the first exit: sums and extremes over no exits."""
    return {
        "exits_seen": np.zeros(batch_size, dtype=np.int64),
        "prev_probs": np.zeros((batch_size, num_classes), dtype=np.float64),
        "prob_sum": np.zeros((batch_size, num_classes), dtype=np.float64),
        "votes": np.zeros((batch_size, num_classes), dtype=np.int64),
        "min_max_prob": np.full(batch_size, np.inf),
        "max_max_prob": np.full(batch_size, -np.inf),
    }


def trajectory_features(probs: np.ndarray, argmax: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
    """Trajectory features (B, 7) of this exit's probabilities (B, K) given the exits before it, and the next state.

    Every value is a per-row reduction, so a row's features do not depend on its batch.
    """
    rows = np.arange(probs.shape[0])
    max_prob = probs[rows, argmax]
    first = state["exits_seen"] == 0
    prev_max_prob = state["prev_probs"].max(axis=-1)
    prev_prob_of_argmax = np.where(first, max_prob, state["prev_probs"][rows, argmax])

    exits_seen = state["exits_seen"] + 1
    prob_sum = state["prob_sum"] + probs
    votes = state["votes"].copy()
    votes[rows, argmax] += 1
    min_max_prob = np.minimum(state["min_max_prob"], max_prob)
    max_max_prob = np.maximum(state["max_max_prob"], max_prob)
    features = np.stack(
        [
            np.where(first, 0.0, max_prob - prev_max_prob),
            prev_prob_of_argmax,
            min_max_prob,
            max_max_prob,
            votes[rows, argmax] / exits_seen,
            prob_sum[rows, argmax] / exits_seen,
            (prob_sum.argmax(axis=-1) == argmax).astype(np.float64),
        ],
        axis=1,
    )
    next_state = {"exits_seen": exits_seen, "prev_probs": probs, "prob_sum": prob_sum, "votes": votes,
                  "min_max_prob": min_max_prob, "max_max_prob": max_max_prob}
    return features, next_state


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

    Features per exit, F = K + 6 + t + c columns: class probabilities (K), max
    probability, top-1 minus top-2 margin, entropy / log K, whether the argmax
    equals the previous exit's, the argmax run length (including this exit)
    divided by E, the depth exits[e] / L, then with trajectory=True the t = 7
    TRAJECTORY_FEATURES of the exits so far, then the hidden state projected
    on its exit's first c principal components (c = 0 without hidden states).
    """

    def __init__(self, n_components: int = 8, trajectory: bool = True):
        self.n_components = n_components
        self.trajectory = trajectory

    def fit(self, hidden, *, exits, num_layers, num_classes) -> "GateFeaturizer":
        """Fit one PCA per exit on hidden (N, E, D). With hidden=None the projection is skipped."""
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
        trajectory = len(TRAJECTORY_FEATURES) if self.trajectory else 0
        return self.num_classes_ + len(SCALAR_FEATURES) + trajectory + self.num_components_

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        state = init_argmax_state(batch_size)
        if self.trajectory:
            state.update(init_trajectory_state(batch_size, self.num_classes_))
        return state

    def step(self, exit_index: int, logits_e, hidden_e, state) -> tuple[np.ndarray, dict]:
        """Features of one exit for the rows still running: (B, K) logits -> (B, F) float64."""
        probs = softmax(np.asarray(logits_e, dtype=np.float32))
        argmax = probs.argmax(axis=-1)
        agrees, argmax_state = advance_argmax_state(argmax, state)
        batch_size = probs.shape[0]
        scalars = np.stack(
            [
                probs.max(axis=-1),
                top2_margin(probs),
                normalized_entropy(probs),
                agrees.astype(np.float64),
                argmax_state["run_length"] / len(self.exits_),
                np.full(batch_size, self.exits_[exit_index] / self.num_layers_),
            ],
            axis=1,
        )
        columns = [probs, scalars]
        next_state = dict(argmax_state)
        if self.trajectory:
            trajectory, trajectory_state = trajectory_features(probs, argmax, state)
            columns.append(trajectory)
            next_state.update(trajectory_state)
        if self.num_components_:
            columns.append(self._project(exit_index, hidden_e))
        return np.concatenate(columns, axis=1), next_state

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
        # Running sums, votes and extremes: about 3 operations per class plus 10 per row.
        trajectory = 3 * self.num_classes_ + 10 if self.trajectory else 0
        return softmax_and_summaries + trajectory + projection

    def to_arrays(self, prefix: str = "featurizer.") -> dict[str, np.ndarray]:
        return {
            f"{prefix}exits": np.asarray(self.exits_, dtype=np.int64),
            f"{prefix}num_layers": np.asarray([self.num_layers_], dtype=np.int64),
            f"{prefix}num_classes": np.asarray([self.num_classes_], dtype=np.int64),
            f"{prefix}n_components": np.asarray([self.n_components], dtype=np.int64),
            f"{prefix}trajectory": np.asarray([int(self.trajectory)], dtype=np.int64),
            f"{prefix}pca_mean": self.pca_mean_,
            f"{prefix}pca_components": self.pca_components_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "featurizer.") -> "GateFeaturizer":
        missing = [name for name in ("exits", "trajectory", "pca_mean", "pca_components") if f"{prefix}{name}" not in arrays]
        if missing:
            raise ValueError(f"saved gate arrays lack featurizer entries {missing}. Save the gate again")
        featurizer = cls(n_components=int(arrays[f"{prefix}n_components"][0]),
                         trajectory=bool(arrays[f"{prefix}trajectory"][0]))
        featurizer.exits_ = tuple(int(layer) for layer in arrays[f"{prefix}exits"])
        featurizer.num_layers_ = int(arrays[f"{prefix}num_layers"][0])
        featurizer.num_classes_ = int(arrays[f"{prefix}num_classes"][0])
        featurizer.pca_mean_ = arrays[f"{prefix}pca_mean"]
        featurizer.pca_components_ = arrays[f"{prefix}pca_components"]
        return featurizer


def _principal_axes(centered: np.ndarray, components: int) -> np.ndarray:
    """First principal axes (c, D) of centered rows (N, D), signs fixed so each axis's largest entry is positive.

    The axes are the top eigenvectors of the D x D scatter matrix, which costs
    less than an SVD of the rows. BLAS runs on one thread, because its spinning
    threads made one (1275, 576) SVD take 2-4 s instead of 0.2 s on a busy
    2-core machine.
    """
    hidden_size = centered.shape[1]
    with threadpool_limits(limits=1, user_api="blas"):
        scatter = centered.T @ centered  # (D, D)
        _, vectors = eigh(scatter, subset_by_index=(hidden_size - components, hidden_size - 1))
    axes = vectors[:, ::-1].T  # largest eigenvalue first: (c, D)
    largest = np.abs(axes).argmax(axis=1)
    signs = np.sign(axes[np.arange(axes.shape[0]), largest])
    signs[signs == 0] = 1.0
    return axes * signs[:, None]
