"""Learn-then-Test calibration: p-values, fixed-sequence testing, validity over resamplings."""

import numpy as np
import pytest
from scipy.stats import binom

from gates import calibrate_scores, exits_from_scores, make_gate, train_gate
from gates.labels import exit_predictions
from gates.ltt import binomial_p_value, exit_losses, fixed_sequence_test
from gates.synthetic import synthetic_cache


@pytest.fixture(scope="module")
def population():
    """A large synthetic population with fixed entropy-gate scores, standing in for the data distribution."""
    cache = synthetic_cache(num_examples=40000, num_exits=6, num_classes=2, hidden_size=4, seed=11)
    gate = make_gate("entropy").fit(cache.logits, None, cache.labels, exits=cache.exits, num_layers=cache.num_layers)
    scores = gate.scores(cache.logits, None)
    losses = exit_losses(exit_predictions(cache.logits), cache.labels, "lost_correct")  # (N, E)
    return cache, scores, losses


def population_risk(scores, losses, threshold):
    """Mean loss over the population of exiting at the first score >= threshold."""
    exits = exits_from_scores(scores, threshold)
    return losses[np.arange(len(exits)), exits].mean()


def population_drop(cache, scores, threshold):
    exits = exits_from_scores(scores, threshold)
    predictions = cache.logits[np.arange(len(exits)), exits].argmax(-1)
    return (cache.logits[:, -1].argmax(-1) == cache.labels).mean() - (predictions == cache.labels).mean()


def test_binomial_p_value_matches_scipy():
    p_values = binomial_p_value(np.array([0, 3, 10]), 200, 0.02)

    np.testing.assert_allclose(p_values, binom.cdf([0, 3, 10], 200, 0.02))
    assert p_values[0] < p_values[1] < p_values[2]
    assert binomial_p_value(np.array([0]), 200, 0.0).tolist() == [1.0]


def test_fixed_sequence_stops_at_first_failure():
    result = fixed_sequence_test(np.array([0.0, 0.01, 0.05, 0.2, 0.01]), delta=0.1)

    assert result.index == 2, "the procedure must stop at 0.2 and never reach the later 0.01"
    assert result.tested.tolist() == [True, True, True, True, False]
    assert fixed_sequence_test(np.array([0.0, 0.01]), delta=0.1).index == 1


def test_exit_losses_both_risks():
    # Three examples, E=2: the last exit is right for rows 0 and 1 and wrong for row 2.
    predictions = np.array([[1, 0], [1, 1], [0, 1]])
    labels = np.array([0, 1, 0])

    lost = exit_losses(predictions, labels, "lost_correct")
    disagree = exit_losses(predictions, labels, "disagreement")

    assert lost[:, 0].tolist() == [True, False, False]
    assert disagree[:, 0].tolist() == [True, False, True]
    assert not lost[:, 1].any()
    assert not disagree[:, 1].any()
    with pytest.raises(ValueError, match="'squared'"):
        exit_losses(predictions, labels, "squared")


def test_ltt_bound_holds_over_resamplings(population):
    cache, scores, losses = population
    rng = np.random.default_rng(0)
    max_drop, delta, trials, size = 0.03, 0.1, 300, 400
    violations, certified = 0, 0
    for _ in range(trials):
        rows = rng.choice(len(cache.labels), size=size, replace=False)
        result = calibrate_scores(scores[rows], cache.logits[rows], cache.labels[rows], exits=cache.exits,
                                  num_layers=cache.num_layers, max_drop=max_drop, method="ltt", delta=delta)
        risk = population_risk(scores, losses, result.threshold)
        violations += risk > max_drop
        certified += np.isfinite(result.threshold)
        assert population_drop(cache, scores, result.threshold) <= risk + 1e-12
        assert result.certified_bound == (max_drop if np.isfinite(result.threshold) else 0.0)

    # A binomial(300, 0.1) count exceeds 0.1 + 0.05 of the trials with probability below 0.3%.
    assert violations / trials <= delta + 0.05
    assert certified > trials // 2, "LTT should certify an early-exit threshold in most trials"


def test_ltt_more_conservative_than_empirical(population):
    cache, scores, _ = population
    rng = np.random.default_rng(1)
    for _ in range(40):
        rows = rng.choice(len(cache.labels), size=300, replace=False)
        common = dict(exits=cache.exits, num_layers=cache.num_layers, max_drop=0.02)
        empirical = calibrate_scores(scores[rows], cache.logits[rows], cache.labels[rows], **common)
        ltt = calibrate_scores(scores[rows], cache.logits[rows], cache.labels[rows], method="ltt", delta=0.1, **common)

        assert ltt.threshold >= empirical.threshold
        assert ltt.mean_layers >= empirical.mean_layers
        assert ltt.loss_rate <= 0.02


def test_ltt_hand_built():
    # E=2 on 2 layers, 100 examples; the last exit is always right, exit 0 is wrong on rows 0..4.
    labels = np.zeros(100, dtype=np.int64)
    logits = np.zeros((100, 2, 2), dtype=np.float32)
    logits[:, :, 0] = 1.0
    logits[:5, 0] = [0.0, 1.0]
    # The five wrong rows score lowest, so lower thresholds add losses one by one.
    scores = np.ones((100, 2))
    scores[:, 0] = np.linspace(0.0, 0.99, 100)

    result = calibrate_scores(scores, logits, labels, exits=[1, 2], num_layers=2, max_drop=0.05, method="ltt",
                              delta=0.1)

    # binom.cdf(k, 100, 0.05) <= 0.1 holds for k <= 1, so at most one wrong row may exit early.
    assert binom.cdf(1, 100, 0.05) <= 0.1 < binom.cdf(2, 100, 0.05)
    assert result.threshold == pytest.approx(scores[4, 0])
    assert result.loss_rate == pytest.approx(0.01)
    assert result.risk == "lost_correct"
    assert result.delta == 0.1


def test_ltt_without_safe_threshold_keeps_full_depth():
    cache = synthetic_cache(num_examples=60, num_exits=4, seed=2)
    scores = np.zeros(cache.logits.shape[:2])
    result = calibrate_scores(scores, cache.logits, cache.labels, exits=cache.exits, num_layers=cache.num_layers,
                              max_drop=0.01, method="ltt")

    assert result.threshold == np.inf
    assert result.certified_bound == 0.0
    assert result.mean_layers == cache.exits[-1]


@pytest.mark.parametrize("kind", ["logistic", "maxprob", "entropy"])
def test_train_gate_ltt_holds_out_calibration_rows(kind):
    cache = synthetic_cache(num_examples=800, num_exits=6, seed=4)
    gate, result = train_gate(kind, cache.logits, cache.hidden, cache.labels, exits=cache.exits,
                              num_layers=cache.num_layers, max_drop=0.03, method="ltt", delta=0.1, seed=1)

    assert result.method == "ltt"
    assert gate.threshold_ == result.threshold
    assert result.certified_bound in (0.03, 0.0)
    assert result.loss_rate <= 0.03
    if kind == "entropy":
        assert result.full_accuracy == (cache.logits[:, -1].argmax(-1) == cache.labels).mean()
    else:
        # Fitted kinds are certified on the held-out half only, so the full-depth accuracy is the half's.
        assert result.full_accuracy != (cache.logits[:, -1].argmax(-1) == cache.labels).mean()


def test_train_gate_rejects_bad_delta_and_fraction():
    cache = synthetic_cache(num_examples=100, num_exits=4, seed=2)
    common = dict(exits=cache.exits, num_layers=cache.num_layers, method="ltt")
    with pytest.raises(ValueError, match="delta 1.5"):
        train_gate("entropy", cache.logits, cache.hidden, cache.labels, delta=1.5, **common)
    with pytest.raises(ValueError, match="ltt_fit_fraction 1.0"):
        train_gate("logistic", cache.logits, cache.hidden, cache.labels, ltt_fit_fraction=1.0, **common)
