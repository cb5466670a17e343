"""Every gate kind: fit, step on row subsets, save and load bit for bit, imbalance, load checks."""

import json

import numpy as np
import pytest
import xgboost

from gates import GATE_KINDS, exits_from_scores, load_gate, make_gate, select_rows
from gates.calibrate import calibrate
from gates.synthetic import synthetic_cache

LEARNED_KINDS = ("mlp", "xgboost", "logistic")
# XGBoost's OpenMP threads spin when the CPUs are shared, which made single fits
# take 5-14 s instead of 0.5 s with n_jobs=2 on a busy 2-core machine.
BASE_PARAMS = {"xgboost": {"n_jobs": 1}}
# Smaller models for tests where the default sizes do not matter, to keep the file fast.
LIGHT_PARAMS = {"mlp": {"epochs": 30}, "xgboost": {"n_jobs": 1, "n_estimators": 40}}


@pytest.fixture(scope="module", params=[2, 4], ids=["K2", "K4"])
def cache(request):
    return synthetic_cache(num_examples=600, num_exits=6, num_classes=request.param, hidden_size=16, seed=request.param)


def fit_gate(kind, cache, **params):
    gate = make_gate(kind, **{**BASE_PARAMS.get(kind, {}), **params})
    return gate.fit(cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers)


def stepped_scores(gate, cache, rng):
    """Run step() exit by exit, dropping a random 30% of the remaining rows after each exit."""
    num_examples, num_exits = cache.logits.shape[:2]
    rows = np.arange(num_examples)
    state = gate.init_state(num_examples)
    stepped = np.full((num_examples, num_exits), np.nan)
    for exit_index in range(num_exits):
        scores, state = gate.step(exit_index, cache.logits[rows, exit_index], cache.hidden[rows, exit_index], state)
        stepped[rows, exit_index] = scores
        keep = rng.uniform(size=len(rows)) < 0.7
        rows = rows[keep]
        state = select_rows(state, keep)
    return stepped


@pytest.mark.parametrize("kind", GATE_KINDS)
def test_gate_save_load_bit_for_bit(kind, cache, tmp_path):
    gate = fit_gate(kind, cache)
    calibrate(gate, cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers)
    gate.meta_["cache_fingerprint"] = "abc123"
    scores = gate.scores(cache.logits, cache.hidden)

    gate.save(tmp_path / f"{kind}.json")
    loaded = load_gate(tmp_path / f"{kind}.json")
    loaded_scores = loaded.scores(cache.logits, cache.hidden)

    assert loaded.kind == kind
    assert scores.shape == cache.logits.shape[:2]
    assert scores.dtype == np.float64
    assert np.array_equal(loaded_scores, scores)
    assert loaded.threshold_ == gate.threshold_
    assert np.array_equal(exits_from_scores(loaded_scores, loaded.threshold_), exits_from_scores(scores, gate.threshold_))
    assert loaded.meta_ == {"cache_fingerprint": "abc123"}
    assert loaded.cost_flops_per_example_ == gate.cost_flops_per_example_ > 0
    assert not list(tmp_path.glob(".*")), "temporary files were left behind"


@pytest.mark.parametrize("kind", GATE_KINDS)
def test_gate_step_on_row_subsets(kind, cache):
    gate = fit_gate(kind, cache, **LIGHT_PARAMS.get(kind, {}))
    scores = gate.scores(cache.logits, cache.hidden)
    stepped = stepped_scores(gate, cache, np.random.default_rng(7))

    ran = ~np.isnan(stepped)
    assert ran[:, -1].sum() < ran[:, 0].sum()
    assert np.array_equal(stepped[ran], scores[ran])


@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_learned_gate_last_exit_scores_one(kind, cache):
    scores = fit_gate(kind, cache, **LIGHT_PARAMS.get(kind, {})).scores(cache.logits, cache.hidden)

    assert np.all(scores[:, -1] == 1.0)
    assert np.all((scores[:, :-1] >= 0) & (scores[:, :-1] <= 1))


@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_trajectory_gate_subsets_and_reload(kind, cache, tmp_path):
    gate = fit_gate(kind, cache, trajectory=True, **LIGHT_PARAMS.get(kind, {}))
    scores = gate.scores(cache.logits, cache.hidden)
    stepped = stepped_scores(gate, cache, np.random.default_rng(3))
    gate.save(tmp_path / "gate.json")
    loaded = load_gate(tmp_path / "gate.json")

    ran = ~np.isnan(stepped)
    assert gate.featurizer_.num_features_ == cache.logits.shape[2] + 6 + 7 + 8
    assert np.array_equal(stepped[ran], scores[ran])
    assert loaded.trajectory is True
    assert np.array_equal(loaded.scores(cache.logits, cache.hidden), scores)


def test_mlp_per_exit_save_load(cache, tmp_path):
    gate = fit_gate("mlp", cache, shared=False, epochs=30)
    gate.save(tmp_path / "per_exit.json")
    loaded = load_gate(tmp_path / "per_exit.json")

    assert len(gate.networks_) == len(cache.exits) - 1
    assert loaded.shared is False
    assert np.array_equal(loaded.scores(cache.logits, cache.hidden), gate.scores(cache.logits, cache.hidden))


def test_mlp_deterministic_with_seed(cache):
    def fit(seed):
        gate = make_gate("mlp", epochs=20)
        gate.fit(cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers, seed=seed)
        return gate.scores(cache.logits, cache.hidden)

    first = fit(0)
    assert np.array_equal(fit(0), first)
    assert not np.array_equal(fit(1), first)


@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_learned_gate_without_hidden(kind, cache, tmp_path):
    gate = make_gate(kind, **LIGHT_PARAMS.get(kind, {}))
    gate.fit(cache.logits, None, cache.labels, exits=cache.exits, num_layers=cache.num_layers)
    gate.save(tmp_path / "gate.json")
    loaded = load_gate(tmp_path / "gate.json")

    assert gate.featurizer_.num_components_ == 0
    assert np.array_equal(loaded.scores(cache.logits, None), gate.scores(cache.logits, None))


@pytest.mark.parametrize("kind", LEARNED_KINDS)
def test_gate_balances_55_percent_labels(kind):
    # Exit 0 is right for about 55% of examples and later exits nearly always,
    # so about 70% of gate labels are positive and the cues are weak. Without
    # class weights, logistic regression here flags 77% of exit-0 rows as
    # ready and keeps only 30% of the wrong ones running.
    cache = synthetic_cache(num_examples=600, num_classes=2, early_accuracy=0.55, late_accuracy=1.0, signal=0.2,
                            seed=3)
    gate = make_gate(kind, **BASE_PARAMS.get(kind, {}))
    gate.fit(cache.logits, cache.hidden, cache.labels, exits=cache.exits, num_layers=cache.num_layers,
             label_mode="correct")
    scores = gate.scores(cache.logits, cache.hidden)
    right = cache.logits[:, 0].argmax(-1) == cache.labels
    says_exit = scores[:, 0] >= 0.5

    assert 0.5 < right.mean() < 0.62
    assert says_exit.mean() < 0.6
    assert (~says_exit[~right]).mean() > 0.75, "the gate exits most wrong examples at exit 0"


def test_maxprob_temperatures_saved(cache, tmp_path):
    gate = fit_gate("maxprob", cache)
    gate.save(tmp_path / "maxprob.json")
    saved = json.loads((tmp_path / "maxprob.json").read_text())

    assert saved["config"]["temperatures"] == gate.temperatures_.tolist()
    assert np.all(gate.temperatures_ > 0)
    assert gate.temperatures_[-1] == 1.0  # agreement mode leaves the last exit unscaled


def test_patience_scores_count_run(cache):
    gate = fit_gate("patience", cache)
    scores = gate.scores(cache.logits, cache.hidden)
    predictions = cache.logits.argmax(-1)

    assert np.all(scores[:, 0] == 1)
    same = predictions[:, 1:] == predictions[:, :-1]
    assert np.array_equal(scores[:, 1:], np.where(same, scores[:, :-1] + 1, 1))


def test_load_rejects_other_kind_in_xgboost_file(cache, tmp_path):
    fit_gate("xgboost", cache, n_estimators=10).save(tmp_path / "gate.json")
    model_path = tmp_path / "gate.xgb.json"
    booster = xgboost.Booster()
    booster.load_model(str(model_path))
    booster.set_attr(gate_kind="logistic")
    booster.save_model(str(model_path))
    payload = json.loads((tmp_path / "gate.json").read_text())
    from gates.io import file_sha256

    payload["config"]["xgboost_model"]["sha256"] = file_sha256(model_path)
    (tmp_path / "gate.json").write_text(json.dumps(payload))

    with pytest.raises(ValueError, match="expecting xgboost gate, got 'logistic'"):
        load_gate(tmp_path / "gate.json")


def test_load_rejects_changed_weights(cache, tmp_path):
    fit_gate("logistic", cache).save(tmp_path / "gate.json")
    other = synthetic_cache(num_examples=300, num_classes=cache.logits.shape[2], seed=11)
    fit_gate("logistic", other).save(tmp_path / "other.json")
    (tmp_path / "other.safetensors").replace(tmp_path / "gate.safetensors")

    with pytest.raises(ValueError, match="SHA-256"):
        load_gate(tmp_path / "gate.json")


def test_load_rejects_wrong_kind_and_format(cache, tmp_path):
    fit_gate("entropy", cache).save(tmp_path / "gate.json")
    payload = json.loads((tmp_path / "gate.json").read_text())

    (tmp_path / "kind.json").write_text(json.dumps({**payload, "kind": "forest"}))
    with pytest.raises(ValueError, match="'forest'"):
        load_gate(tmp_path / "kind.json")

    (tmp_path / "format.json").write_text(json.dumps({**payload, "format": "other"}))
    with pytest.raises(ValueError, match="expected format 'early-exit-gate', found 'other'"):
        load_gate(tmp_path / "format.json")

    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_gate(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="must end with .json"):
        load_gate(tmp_path / "gate.safetensors")


def test_unfitted_gate_raises():
    gate = make_gate("margin")
    with pytest.raises(ValueError, match="not fitted"):
        gate.scores(np.zeros((2, 3, 2), dtype=np.float32), None)


def test_make_gate_rejects_bad_kind_and_params():
    with pytest.raises(ValueError, match="'forest'"):
        make_gate("forest")
    with pytest.raises(ValueError, match="bogus"):
        make_gate("mlp", bogus=1)
