"""Threshold calibration, exit decisions and train_gate with cross-fitting."""

import numpy as np
import pytest

from gates import Calibration, calibrate, calibrate_scores, exits_from_scores, make_gate, train_gate
from gates.synthetic import synthetic_cache
from gates.train import cross_fitted_scores


@pytest.fixture(scope="module")
def cache():
    return synthetic_cache(num_examples=600, num_exits=6, num_classes=2, hidden_size=16, seed=1)


def evaluate(scores, cache, threshold):
    """Accuracy and mean exit layer of exiting at the first score >= threshold."""
    exits = exits_from_scores(scores, threshold)
    predictions = cache.logits[np.arange(len(exits)), exits].argmax(-1)
    return (predictions == cache.labels).mean(), np.asarray(cache.exits)[exits].mean()


def test_exits_from_scores_forces_last_exit():
    scores = np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.0], [0.1, 0.95, 0.0], [0.0, 0.0, 0.0]])

    assert exits_from_scores(scores, 0.9).tolist() == [2, 0, 1, 2]
    assert exits_from_scores(scores, np.inf).tolist() == [2, 2, 2, 2]
    assert exits_from_scores(scores, -np.inf).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("max_drop", [0.0, 0.01, 0.05])
def test_calibrate_respects_budget_and_minimises_layers(cache, max_drop):
    gate = make_gate("maxprob").fit(cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                                    num_layers=cache.num_layers)
    result = calibrate(gate, cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                       num_layers=cache.num_layers, max_drop=max_drop)
    scores = gate.scores(cache.logits, cache.hidden)
    accuracy, mean_layers = evaluate(scores, cache, gate.threshold_)

    assert gate.threshold_ == result.threshold
    assert accuracy >= result.full_accuracy - max_drop
    assert accuracy == pytest.approx(result.accuracy)
    assert mean_layers == pytest.approx(result.mean_layers)
    assert result.layer_speedup == pytest.approx(cache.num_layers / mean_layers)
    assert result.certified_bound is None
    assert result.method == "empirical"

    # No other candidate threshold inside the budget exits earlier on average.
    for threshold in np.append(np.unique(scores), np.inf):
        other_accuracy, other_layers = evaluate(scores, cache, threshold)
        if other_accuracy >= result.full_accuracy - max_drop:
            assert other_layers >= result.mean_layers - 1e-9


def test_calibrate_scores_hand_built():
    # E=2, exits at layers 1 and 2 of 2; the last exit is always right.
    logits = np.zeros((4, 2, 2), dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    logits[:, 1, :] = np.eye(2)[labels]
    early_predictions = np.array([0, 1, 1, 0])  # rows 0 and 1 right at exit 0
    logits[:, 0, :] = np.eye(2)[early_predictions]
    scores = np.array([[0.9, 1.0], [0.8, 1.0], [0.7, 1.0], [0.95, 1.0]])

    strict = calibrate_scores(scores, logits, labels, exits=[1, 2], num_layers=2, max_drop=0.0)
    loose = calibrate_scores(scores, logits, labels, exits=[1, 2], num_layers=2, max_drop=0.3)

    assert strict.threshold == np.inf
    assert strict.mean_layers == 2.0
    # Dropping one example of four costs 0.25, within 0.3: exit rows 0, 1 and 3 early.
    assert loose.threshold == 0.8
    assert loose.accuracy == 0.75
    assert loose.mean_layers == 1.25
    assert isinstance(loose, Calibration)


@pytest.mark.parametrize("max_drop", [-0.1, 1.0, 1.5])
def test_max_drop_outside_range_raises(cache, max_drop):
    scores = np.zeros(cache.logits.shape[:2])
    with pytest.raises(ValueError, match=f"max_drop {max_drop!r}"):
        calibrate_scores(scores, cache.logits, cache.labels, exits=cache.exits, num_layers=cache.num_layers,
                         max_drop=max_drop)
    with pytest.raises(ValueError, match=f"max_drop {max_drop!r}"):
        train_gate("entropy", cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                   num_layers=cache.num_layers, max_drop=max_drop)


def test_train_gate_rejects_bad_kind_and_label_mode(cache):
    with pytest.raises(ValueError, match="'forest'"):
        train_gate("forest", cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers)
    with pytest.raises(ValueError, match="'gold'"):
        train_gate("mlp", cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers,
                   label_mode="gold")


def test_calibrate_rejects_unknown_method(cache):
    scores = np.zeros(cache.logits.shape[:2])
    with pytest.raises(ValueError, match="'conformal'"):
        calibrate_scores(scores, cache.logits, cache.labels, exits=cache.exits, num_layers=cache.num_layers,
                         method="conformal")


def test_train_gate_calibrates_on_out_of_fold_scores(cache):
    gate, result = train_gate("logistic", cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                              num_layers=cache.num_layers, max_drop=0.02, seed=4)
    out_of_fold = cross_fitted_scores("logistic", cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                                      num_layers=cache.num_layers, label_mode="agreement", seed=4)
    in_sample = gate.scores(cache.logits, cache.hidden)
    accuracy, mean_layers = evaluate(out_of_fold, cache, result.threshold)

    assert gate.threshold_ == result.threshold
    assert accuracy == pytest.approx(result.accuracy)
    assert accuracy >= result.full_accuracy - 0.02
    assert mean_layers == pytest.approx(result.mean_layers)
    assert not np.array_equal(out_of_fold[:, :-1], in_sample[:, :-1])


def test_train_gate_rule_kind_saves_depth(cache):
    gate, result = train_gate("patience", cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                              num_layers=cache.num_layers, max_drop=0.05)

    assert float(result.threshold).is_integer() or result.threshold == np.inf
    assert result.mean_layers <= cache.num_layers
    assert result.accuracy >= result.full_accuracy - 0.05


def test_train_gate_mlp_beats_full_depth_cost(cache):
    gate, result = train_gate("mlp", cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                              num_layers=cache.num_layers, max_drop=0.02, epochs=40)

    assert gate.threshold_ == result.threshold
    assert result.layer_speedup > 1.2
