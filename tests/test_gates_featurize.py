"""GateFeaturizer: feature values, PCA fitting rows, row subsets, saving."""

import numpy as np
import pytest

from gates import GateFeaturizer, select_rows
from gates.synthetic import synthetic_cache


@pytest.fixture(scope="module")
def cache():
    return synthetic_cache(num_examples=200, num_exits=5, num_classes=4, hidden_size=16, num_layers=10, seed=5)


def fitted(cache, hidden, n_components=8):
    return GateFeaturizer(n_components).fit(
        hidden, exits=cache.exits, num_layers=cache.num_layers, num_classes=cache.logits.shape[2]
    )


def test_feature_columns_hand_built():
    # One example, E=3, K=2: argmax 0, 1, 1; exits at layers 2, 4, 8 of L=8.
    logits = np.array([[[np.log(3.0), 0.0], [0.0, 0.0 + np.log(9.0)], [0.0, np.log(9.0)]]], dtype=np.float32)
    featurizer = GateFeaturizer(0).fit(None, exits=[2, 4, 8], num_layers=8, num_classes=2)

    features = featurizer.transform(logits, None)  # (1, 3, K + 6 + 7)

    assert features.shape == (1, 3, 15)
    np.testing.assert_allclose(features[0, 0, :2], [0.75, 0.25], rtol=1e-6)
    np.testing.assert_allclose(features[0, 0, 2:4], [0.75, 0.5], rtol=1e-6)  # max prob, margin
    entropy = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(2)
    np.testing.assert_allclose(features[0, 0, 4], entropy, rtol=1e-6)
    assert features[0, :, 5].tolist() == [0.0, 0.0, 1.0]  # argmax agrees with previous exit
    np.testing.assert_allclose(features[0, :, 6], [1 / 3, 1 / 3, 2 / 3])  # run length / E
    np.testing.assert_allclose(features[0, :, 7], [0.25, 0.5, 1.0])  # depth exits[e] / L

    # Trajectory: max prob change, previous prob of argmax, running min and max of max prob,
    # vote share, mean prob of argmax, argmax of mean probs agrees.
    np.testing.assert_allclose(features[0, 0, 8:], [0.0, 0.75, 0.75, 0.75, 1.0, 0.75, 1.0], rtol=1e-6)
    np.testing.assert_allclose(features[0, 1, 8:], [0.15, 0.25, 0.75, 0.9, 0.5, 0.575, 1.0], rtol=1e-6)
    np.testing.assert_allclose(features[0, 2, 8:], [0.0, 0.9, 0.75, 0.9, 2 / 3, 2.05 / 3, 1.0], rtol=1e-6)


def test_feature_columns_without_trajectory():
    logits = np.array([[[np.log(3.0), 0.0], [0.0, np.log(9.0)]]], dtype=np.float32)
    plain = GateFeaturizer(0, trajectory=False).fit(None, exits=[2, 8], num_layers=8, num_classes=2)
    full = GateFeaturizer(0).fit(None, exits=[2, 8], num_layers=8, num_classes=2)

    assert plain.num_features_ == 8
    assert np.array_equal(plain.transform(logits, None), full.transform(logits, None)[..., :8])


def test_pca_fitted_on_given_rows_only(cache):
    first_half = fitted(cache, cache.hidden[:100])
    all_rows = fitted(cache, cache.hidden)

    expected_mean = cache.hidden[:100].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(first_half.pca_mean_, expected_mean)
    assert not np.allclose(first_half.pca_mean_, all_rows.pca_mean_)
    assert first_half.pca_components_.shape == (5, 8, 16)
    gram = first_half.pca_components_[0] @ first_half.pca_components_[0].T
    np.testing.assert_allclose(gram, np.eye(8), atol=1e-10)


def test_step_on_subsets_matches_transform(cache):
    featurizer = fitted(cache, cache.hidden)
    full = featurizer.transform(cache.logits, cache.hidden)
    rng = np.random.default_rng(0)
    rows = np.arange(200)
    state = featurizer.init_state(200)

    for exit_index in range(5):
        features, state = featurizer.step(exit_index, cache.logits[rows, exit_index], cache.hidden[rows, exit_index], state)
        assert np.array_equal(features, full[rows, exit_index])
        keep = rng.permutation(len(rows))[: len(rows) // 2]
        rows = rows[keep]
        state = select_rows(state, keep)


def test_arrays_round_trip(cache):
    featurizer = fitted(cache, cache.hidden, n_components=3)
    restored = GateFeaturizer.from_arrays(featurizer.to_arrays())

    assert restored.num_features_ == featurizer.num_features_ == 4 + 6 + 7 + 3
    assert restored.trajectory
    assert np.array_equal(restored.transform(cache.logits, cache.hidden), featurizer.transform(cache.logits, cache.hidden))


def test_hidden_missing_at_step_raises(cache):
    featurizer = fitted(cache, cache.hidden)
    state = featurizer.init_state(3)

    with pytest.raises(ValueError, match="needs hidden_e"):
        featurizer.step(0, cache.logits[:3, 0], None, state)


def test_state_row_mismatch_raises(cache):
    featurizer = fitted(cache, None)
    state = featurizer.init_state(5)

    with pytest.raises(ValueError, match="select_rows"):
        featurizer.step(0, cache.logits[:3, 0], None, state)
    with pytest.raises(ValueError, match="mask has 2 rows"):
        select_rows(state, np.array([True, False]))
