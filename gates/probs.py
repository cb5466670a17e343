"""Row-wise probability summaries of exit logits.

Every function reduces each row on its own, so a row's result does not depend
on which other rows share the batch. step() on row subsets relies on this.
"""

from __future__ import annotations

import numpy as np

# FLOPs of softmax over K classes (shift, exp, sum, divide), an estimate per class.
SOFTMAX_FLOPS_PER_CLASS = 4


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis in float64: (B, K) -> (B, K)."""
    scaled = logits.astype(np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy divided by log K, in [0, 1]: (B, K) -> (B,)."""
    num_classes = probs.shape[-1]
    safe = np.where(probs > 0, probs, 1.0)
    return -(probs * np.log(safe)).sum(axis=-1) / np.log(num_classes)


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability: (B, K) -> (B,)."""
    top2 = np.sort(probs, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def rowwise_matmul(inputs: np.ndarray, weights: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """Compute inputs @ weights.T, (B, F) x (H, F) -> (B, H), with a fixed summation order per row.

    BLAS may pick a different kernel (and summation order) for a different
    batch size, so a matmul would make a row's score depend on its batch.
    Multiplying then summing the contiguous last axis keeps rows independent.
    """
    inputs = inputs.astype(np.float64, copy=False)
    weights = weights.astype(np.float64, copy=False)
    out = np.empty((inputs.shape[0], weights.shape[0]), dtype=np.float64)
    for start in range(0, inputs.shape[0], chunk_rows):
        block = inputs[start : start + chunk_rows]
        # (b, 1, F) * (1, H, F) -> (b, H, F), summed over F.
        out[start : start + chunk_rows] = (block[:, None, :] * weights[None, :, :]).sum(axis=-1)
    return out


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
