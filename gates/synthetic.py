"""A synthetic feature cache for tests and examples: noisy early exits, accurate late exits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticCache:
    """Cache arrays in the shapes the gates take: logits (N, E, K), hidden (N, E, D), labels (N,)."""

    logits: np.ndarray
    hidden: np.ndarray
    labels: np.ndarray
    exits: list[int]
    num_layers: int


def synthetic_cache(num_examples: int = 600, num_exits: int = 6, num_classes: int = 2, hidden_size: int = 16,
                    num_layers: int = 12, early_accuracy: float = 0.55, late_accuracy: float = 0.95,
                    signal: float = 1.0, seed: int = 0) -> SyntheticCache:
    """Build a cache whose exit accuracy rises linearly from early_accuracy to late_accuracy, before flips.

    Each example has a difficulty u ~ U(0, 1) and exit e is right when
    u < accuracy_e, so an example that becomes right tends to stay right. 5%
    of (example, exit) pairs flip at random on top. Right predictions get
    larger logit margins than wrong ones, and the hidden state carries the
    true class and the difficulty, so confidence and hidden features predict
    correctness but not perfectly. `signal` scales both cues (0 removes them).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_examples).astype(np.int64)
    accuracy = np.linspace(early_accuracy, late_accuracy, num_exits)  # (E,)
    difficulty = rng.uniform(size=(num_examples, 1))
    correct = difficulty < accuracy[None, :]  # (N, E)
    flips = rng.uniform(size=correct.shape) < 0.05
    correct = np.where(flips, ~correct, correct)

    # A wrong exit predicts a random class other than the label.
    offsets = rng.integers(1, num_classes, size=correct.shape)
    predicted = np.where(correct, labels[:, None], (labels[:, None] + offsets) % num_classes)  # (N, E)

    margin = np.where(correct, rng.normal(0.7 + 1.3 * signal, 1.0, correct.shape), rng.normal(0.7, 0.8, correct.shape))
    logits = rng.normal(0.0, 0.5, size=(num_examples, num_exits, num_classes))
    # The predicted class beats the largest logit by the margin, so the argmax is `predicted`.
    top = logits.max(axis=-1, keepdims=True)
    np.put_along_axis(logits, predicted[..., None], top + 0.05 + np.abs(margin)[..., None], -1)

    class_means = rng.normal(size=(num_classes, hidden_size))
    depth = np.linspace(0.3, 1.0, num_exits)[None, :, None]  # (1, E, 1)
    hidden = depth * class_means[labels][:, None, :] + rng.normal(0.0, 1.0, (num_examples, num_exits, hidden_size))
    hidden[:, :, 0] += 3.0 * signal * (difficulty - 0.5)

    exits = [int(layer) for layer in np.linspace(num_layers / num_exits, num_layers, num_exits).round()]
    return SyntheticCache(logits.astype(np.float32), hidden.astype(np.float32), labels, exits, num_layers)
