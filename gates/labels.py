"""Gate training labels and oracle exits."""

from __future__ import annotations

import numpy as np

from gates.base import check_label_mode


def exit_predictions(logits) -> np.ndarray:
    """Argmax class per example and exit: (N, E, K) -> (N, E) int64."""
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (N, E, K), got shape {logits.shape}")
    return logits.argmax(axis=-1).astype(np.int64)


def gate_labels(logits, labels, mode: str) -> np.ndarray:
    """Whether each exit is a good place to stop (N, E) bool.

    "agreement": the exit's argmax equals the last exit's argmax, so no gold labels are needed.
    "correct": the exit's argmax equals the gold label.
    """
    check_label_mode(mode)
    predictions = exit_predictions(logits)
    if mode == "agreement":
        return predictions == predictions[:, -1:]
    if labels is None:
        raise ValueError('label mode "correct" needs gold labels, got labels=None')
    return predictions == np.asarray(labels)[:, None]


def oracle_exits(logits, labels, mode: str) -> np.ndarray:
    """Exit index (N,) that an oracle gate would pick.

    "agreement": the earliest exit after which the argmax never changes, so
    the prediction equals the final one. "correct": the earliest exit whose
    argmax equals the gold label, or the last exit when none does.
    """
    ready = gate_labels(logits, labels, mode)  # (N, E)
    num_exits = ready.shape[1]
    if mode == "agreement":
        # Count the trailing run of exits that agree with the last exit.
        trailing = np.cumprod(ready[:, ::-1], axis=1).sum(axis=1)
        return (num_exits - trailing).astype(np.int64)
    first = ready.argmax(axis=1)
    return np.where(ready.any(axis=1), first, num_exits - 1).astype(np.int64)
