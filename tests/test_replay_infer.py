"""Real early exit: both batch schedules agree with batch size 1 and with simulate."""

import numpy as np
import pytest

from replay.infer import InferOptions, run_early_exit, run_full_depth
from replay.predict import load_inference, simulated_exits
from replay.prepare import load_data
from replay.rundir import RunDir
from tests.conftest import invoke


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, tiny_llama_dir, csv_dataset):
    run = tmp_path_factory.mktemp("llama-run")
    common = ["--run-dir", run]
    args = ["--model", tiny_llama_dir, "--dataset", csv_dataset, "--text-column", "review", "--label-column", "sentiment", "--exit-every", "1", "--epochs", "5"]
    assert invoke("finetune", *common, *args).exit_code == 0
    assert invoke("extract", *common, "--format", "hdf5", "--chunk-size", "32").exit_code == 0
    assert invoke("train-gates", *common, "--kind", "mlp", "--kind", "maxprob").exit_code == 0
    return run


@pytest.fixture(params=["gpt2", "llama"])
def run_dir(request, trained_run, llama_run):
    return RunDir(trained_run if request.param == "gpt2" else llama_run)


@pytest.mark.parametrize("gate_name", ["mlp", "maxprob"])
def test_schedules_match_batch_of_one(run_dir, gate_name):
    config, backbone, heads, gate = load_inference(run_dir, gate_name, "cpu")
    texts = load_data(config).test.texts
    single, _ = run_early_exit(backbone, heads, gate, texts, InferOptions(batch_size=1, schedule="shrink"))
    for schedule in ("refill", "shrink"):
        for sort in (True, False):
            options = InferOptions(batch_size=7, sort_by_length=sort, schedule=schedule)
            batched, _ = run_early_exit(backbone, heads, gate, texts, options)
            assert np.array_equal(batched.exit_index, single.exit_index), (schedule, sort)
            assert np.array_equal(batched.labels, single.labels), (schedule, sort)
            assert np.allclose(batched.probabilities, single.probabilities, atol=1e-4), (schedule, sort)


def test_early_exit_matches_simulate(run_dir):
    config, backbone, heads, gate = load_inference(run_dir, "mlp", "cpu")
    texts = load_data(config).test.texts
    predictions, _ = run_early_exit(backbone, heads, gate, texts, InferOptions(batch_size=16))
    exit_index, labels = simulated_exits(run_dir, config, gate, "test", len(texts))
    assert np.array_equal(predictions.exit_index, exit_index)
    assert np.array_equal(predictions.labels, labels)


def test_exits_spread_over_layers(run_dir):
    config, backbone, heads, gate = load_inference(run_dir, "maxprob", "cpu")
    texts = load_data(config).test.texts
    predictions, _ = run_early_exit(backbone, heads, gate, texts, InferOptions(batch_size=16))
    assert predictions.exit_index.min() >= 0
    assert predictions.exit_index.max() <= len(heads.exits) - 1
    assert np.array_equal(predictions.exit_layer, np.asarray(heads.exits)[predictions.exit_index])


def test_full_depth_uses_last_exit(run_dir):
    config, backbone, heads, gate = load_inference(run_dir, "mlp", "cpu")
    features_split = load_data(config).test
    full, _ = run_full_depth(backbone, heads, features_split.texts, InferOptions(batch_size=8))
    assert set(full.exit_layer.tolist()) == {heads.exits[-1]}


def test_max_batch_tokens_respected(run_dir):
    from replay.scheduler import RefillScheduler

    config, backbone, heads, gate = load_inference(run_dir, "mlp", "cpu")
    scheduler = RefillScheduler(None, heads, gate, batch_size=8, max_batch_tokens=20)
    assert scheduler.batch_rows([5, 5, 5, 5, 5]) == 4
    assert scheduler.batch_rows([30]) == 1, "one row always fits, however long"
    assert scheduler.batch_rows([1] * 20) == 8


def test_unknown_schedule_rejected(run_dir):
    config, backbone, heads, gate = load_inference(run_dir, "mlp", "cpu")
    with pytest.raises(ValueError, match="schedule 'zigzag'"):
        run_early_exit(backbone, heads, gate, ["good"], InferOptions(schedule="zigzag"))


def test_blocked_comparison_matches_plain_runs(run_dir):
    from replay.infer import compare_in_blocks

    config, backbone, heads, gate = load_inference(run_dir, "mlp", "cpu")
    texts = load_data(config).test.texts
    plain, _ = run_early_exit(backbone, heads, gate, texts, InferOptions(batch_size=8))
    full_plain, _ = run_full_depth(backbone, heads, texts, InferOptions(batch_size=8))
    early, early_timing, full, full_timing = compare_in_blocks(backbone, heads, gate, texts, InferOptions(batch_size=8), block_texts=10)
    assert np.array_equal(early.exit_index, plain.exit_index)
    assert np.array_equal(early.labels, plain.labels)
    assert np.array_equal(full.labels, full_plain.labels)
    assert early_timing.examples == full_timing.examples == len(texts)
    assert early_timing.seconds > 0
    assert full_timing.seconds > 0


def test_implausible_speedup_flagged():
    from replay.predict import implausible_speedup

    assert implausible_speedup(2.3, 2.5) is None
    assert "other load" in implausible_speedup(7.6, 2.5)
    assert "other load" in implausible_speedup(0.6, 2.5)
