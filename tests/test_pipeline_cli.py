"""The whole pipeline through the CLI on a tiny random GPT-2 and a local CSV dataset."""

import json

import numpy as np
import pytest

from tests.conftest import invoke


def test_finetune_writes_heads_and_config(trained_run):
    config = json.loads((trained_run / "run.json").read_text())
    assert config["exits"] == [1, 3, 5]
    assert (trained_run / "heads" / "model.safetensors").is_file()
    assert (trained_run / "cache.zarr").is_dir()


def test_every_gate_kind_saved(trained_run):
    names = {p.stem for p in (trained_run / "gates").glob("*.json") if not p.name.endswith(".xgb.json")}
    assert names == {"mlp", "xgboost", "logistic", "maxprob", "entropy", "margin", "patience"}


def test_simulate_table_and_files(trained_run):
    result = invoke("simulate", "--run-dir", trained_run)
    assert result.exit_code == 0, result.output
    assert "oracle (agreement)" in result.output
    assert "layer speedup" in result.output
    payload = json.loads((trained_run / "simulate.json").read_text())
    policies = {row["policy"]: row for row in payload["policies"]}
    assert policies["full depth"]["average_exit_layer"] == 5
    assert policies["oracle (agreement)"]["drop_points"] == pytest.approx(0.0)
    for row in payload["policies"]:
        assert sum(row["histogram"].values()) == payload["examples"], row["policy"]
    assert (trained_run / "pareto.png").stat().st_size > 1000


def test_infer_split_matches_simulate(trained_run, tmp_path):
    out = tmp_path / "preds.jsonl"
    result = invoke("infer", "--run-dir", trained_run, "--split", "test", "--output", out, "--compare-full", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert "agreement with simulate: exit layer 100.00%, label 100.00%" in result.output
    assert "measured wall-clock speedup" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert {r["label"] for r in rows} <= {"neg", "pos"}
    assert all(r["exit_layer"] in (1, 3, 5) for r in rows)


def test_infer_batched_equals_batch_of_one(trained_run):
    from replay.infer import InferOptions
    from replay.predict import run_infer
    from replay.rundir import RunDir

    run = RunDir(trained_run)
    batched = run_infer(run, split="test", gate_name="mlp", options=InferOptions(batch_size=16))[1]
    single = run_infer(run, split="test", gate_name="mlp", options=InferOptions(batch_size=1))[1]
    assert np.array_equal(batched.exit_index, single.exit_index)
    assert np.array_equal(batched.labels, single.labels)


def test_infer_text_and_stdin(trained_run):
    result = invoke("infer", "--run-dir", trained_run, "--text", "good movie", "--text", "awful dull plot")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2
    result = invoke("infer", "--run-dir", trained_run, "--input", "-", input="great fun\n\nboring\n")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["index"] for r in rows] == [0, 1]


def test_missing_stage_names_command(tmp_path):
    result = invoke("simulate", "--run-dir", tmp_path / "empty")
    assert result.exit_code == 1
    assert "python cli.py finetune" in result.output
    assert "Traceback" not in result.output


def test_conflicting_option_rejected(trained_run):
    result = invoke("extract", "--run-dir", trained_run, "--exits", "2,5")
    assert result.exit_code == 1
    assert "differs from" in result.output


def test_bad_exits_leave_no_run_config(tmp_path, tiny_gpt2_dir, csv_dataset):
    run = tmp_path / "typo"
    args = ["--model", tiny_gpt2_dir, "--dataset", csv_dataset, "--text-column", "review", "--label-column", "sentiment"]
    result = invoke("finetune", "--run-dir", run, *args, "--exits", "2,9")
    assert result.exit_code == 1
    assert "outside the model's layers 1..5" in result.output
    assert not (run / "run.json").exists(), "a rejected setting must not be saved"

    result = invoke("finetune", "--run-dir", run, *args, "--exits", "2,5", "--epochs", "1")
    assert result.exit_code == 0, result.output


def test_unknown_gate_lists_trained_gates(trained_run):
    result = invoke("infer", "--run-dir", trained_run, "--gate", "bogus", "--text", "good")
    assert result.exit_code == 1
    assert "gate 'bogus' not found" in result.output
    assert "maxprob" in result.output
