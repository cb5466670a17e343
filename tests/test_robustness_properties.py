"""Property-based tests of exit selection and replay over random caches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import SplitFeatures
from gates import exits_from_scores, make_gate, oracle_exits
from replay.costs import ModelCost
from replay.simulate import evaluate_exits

NUM_LAYERS = 12
THRESHOLD_GATES = ("maxprob", "entropy", "margin", "patience")
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def random_caches(draw):
    """Logits (N, E, K), labels (N,), lengths (N,) and 2 to 5 increasing exits ending at the last layer."""
    n = draw(st.integers(1, 40))
    k = draw(st.integers(2, 5))
    exits = sorted(draw(st.sets(st.integers(1, NUM_LAYERS - 1), min_size=1, max_size=4))) + [NUM_LAYERS]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    logits = (scale * rng.standard_normal((n, len(exits), k))).astype(np.float32)
    labels = rng.integers(0, k, size=n).astype(np.int64)
    lengths = rng.integers(1, 64, size=n).astype(np.int32)
    features = SplitFeatures(name="test", hidden=None, logits=logits, labels=labels, lengths=lengths, heads_fingerprint=None, order=np.arange(n, dtype=np.int64))
    return features, exits


def fitted_gate(kind: str, features: SplitFeatures, exits: list[int]):
    return make_gate(kind).fit(features.logits, None, features.labels, exits=exits, num_layers=NUM_LAYERS)


def cost(features: SplitFeatures) -> ModelCost:
    return ModelCost(NUM_LAYERS, 48, features.logits.shape[2], 10_000)


@PROPERTY_SETTINGS
@given(random_caches(), st.sampled_from(THRESHOLD_GATES), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_lower_threshold_never_raises_mean_exit(cache, kind, a, b):
    features, exits = cache
    gate = fitted_gate(kind, features, exits)
    scores = gate.scores(features.logits, None)
    scale = len(exits) if kind == "patience" else 1.0
    strict, loose = scale * max(a, b), scale * min(a, b)
    strict_index = exits_from_scores(scores, strict)
    loose_index = exits_from_scores(scores, loose)
    assert np.all(loose_index <= strict_index)
    assert np.asarray(exits)[loose_index].mean() <= np.asarray(exits)[strict_index].mean()


@PROPERTY_SETTINGS
@given(random_caches(), st.sampled_from(THRESHOLD_GATES), st.floats(0.0, 1.0))
def test_every_example_exits_once(cache, kind, threshold):
    features, exits = cache
    N = len(features.labels)
    gate = fitted_gate(kind, features, exits)
    index = exits_from_scores(gate.scores(features.logits, None), threshold)
    assert index.shape == (N,)
    assert index.min() >= 0
    assert index.max() < len(exits)
    result = evaluate_exits(kind, index, features, exits, cost(features), threshold=threshold)
    assert sum(result.histogram.values()) == N
    assert set(result.histogram) <= set(exits)


@PROPERTY_SETTINGS
@given(random_caches())
def test_last_exit_accuracy_is_full_depth(cache):
    features, exits = cache
    N = len(features.labels)
    last = np.full(N, len(exits) - 1)
    result = evaluate_exits("last exit", last, features, exits, cost(features))
    full = float((features.logits[:, -1].argmax(-1) == features.labels).mean())
    assert result.accuracy == full
    assert result.drop_points == 0.0
    assert result.average_exit_layer == NUM_LAYERS
    # An infinite threshold never fires, so every example runs to the last exit.
    never = exits_from_scores(np.zeros((N, len(exits))), float("inf"))
    assert np.array_equal(never, last)


@PROPERTY_SETTINGS
@given(random_caches())
def test_oracles_exit_in_range_and_agree(cache):
    features, exits = cache
    N, E = len(features.labels), len(exits)
    agreement = oracle_exits(features.logits, None, "agreement")
    correct = oracle_exits(features.logits, features.labels, "correct")
    for index in (agreement, correct):
        assert index.shape == (N,)
        assert np.all((0 <= index) & (index < E))
    predictions = features.logits[np.arange(N), agreement].argmax(-1)
    assert np.array_equal(predictions, features.logits[:, -1].argmax(-1))
    result = evaluate_exits("oracle", correct, features, exits, cost(features))
    full = float((features.logits[:, -1].argmax(-1) == features.labels).mean())
    assert result.accuracy >= full


def test_fixed_cache_example():
    logits = np.array([[[2.0, 0.0], [2.0, 0.0]], [[0.0, 0.1], [3.0, 0.0]]], dtype=np.float32)  # (N=2, E=2, K=2)
    features = SplitFeatures("test", None, logits, np.array([0, 0]), np.array([4, 4], dtype=np.int32), None, np.arange(2))
    index = exits_from_scores(fitted_gate("maxprob", features, [6, 12]).scores(logits, None), 0.8)
    assert index.tolist() == [0, 1]
