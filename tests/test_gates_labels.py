"""Gate labels and oracle exits on small hand-built caches."""

import numpy as np
import pytest

from gates import gate_labels, oracle_exits


def logits_from_predictions(predictions, num_classes):
    """Logits (N, E, K) whose argmax is the given predictions (N, E)."""
    predictions = np.asarray(predictions)
    logits = np.zeros(predictions.shape + (num_classes,), dtype=np.float32)
    np.put_along_axis(logits, predictions[..., None], 1.0, axis=-1)
    return logits


# Predictions per exit (N=5, E=4) and gold labels, K=3.
PREDICTIONS = [
    [1, 0, 1, 1],  # flips back at exit 2
    [0, 0, 0, 0],  # never changes, always wrong
    [1, 1, 0, 1],  # changes at the last exit
    [0, 2, 2, 2],  # settles at exit 1
    [2, 2, 0, 0],  # never right, settles at exit 2
]
LABELS = [1, 1, 0, 2, 1]


def test_oracle_agreement_hand_built():
    logits = logits_from_predictions(PREDICTIONS, num_classes=3)

    exits = oracle_exits(logits, None, "agreement")

    assert exits.tolist() == [2, 0, 3, 1, 2]


def test_oracle_correct_hand_built():
    logits = logits_from_predictions(PREDICTIONS, num_classes=3)

    exits = oracle_exits(logits, np.array(LABELS), "correct")

    assert exits.tolist() == [0, 3, 2, 1, 3]


def test_gate_labels_both_modes():
    logits = logits_from_predictions(PREDICTIONS, num_classes=3)

    agreement = gate_labels(logits, None, "agreement")
    correct = gate_labels(logits, np.array(LABELS), "correct")

    assert agreement[0].tolist() == [True, False, True, True]
    assert agreement[:, -1].all()
    assert correct[2].tolist() == [False, False, True, False]
    assert not correct[4].any()


def test_oracle_rejects_bad_mode():
    logits = logits_from_predictions(PREDICTIONS, num_classes=3)

    with pytest.raises(ValueError, match="'gold'"):
        oracle_exits(logits, np.array(LABELS), "gold")
    with pytest.raises(ValueError, match="needs gold labels"):
        oracle_exits(logits, None, "correct")
