"""`finetune --train-backbone` saves a checkpoint per epoch and `--resume` continues from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from tests.conftest import invoke


def joint_finetune(run: Path, model: Path, dataset: Path, epochs: int, *extra: str):
    return invoke(
        "finetune", "--run-dir", run, "--model", model, "--dataset", dataset, "--text-column", "review",
        "--label-column", "sentiment", "--exits", "2,5", "--limit", "16", "--train-backbone",
        "--epochs", epochs, "--batch-size", "8", *extra,
    )


def checkpoint_state(run: Path) -> dict:
    return json.loads((run / "checkpoint" / "state.json").read_text())


def test_joint_resume_equals_uninterrupted(tmp_path, tiny_gpt2_dir, csv_dataset, caplog):
    resumed = tmp_path / "resumed"
    result = joint_finetune(resumed, tiny_gpt2_dir, csv_dataset, 1)
    assert result.exit_code == 0, result.output
    state = checkpoint_state(resumed)
    assert state["epochs_done"] == 1
    assert len(state["history"]) == 1
    for part in ("last", "best"):
        assert (resumed / "checkpoint" / part / "model.safetensors").is_file()
        assert (resumed / "checkpoint" / part / "heads" / "model.safetensors").is_file()
    assert (resumed / "checkpoint" / "last" / "optimizer.safetensors").is_file()
    assert not list((resumed / "checkpoint").rglob("*.bin"))
    assert not list((resumed / "checkpoint").rglob("*.pt"))

    # A second run over an existing checkpoint must be asked for explicitly.
    result = joint_finetune(resumed, tiny_gpt2_dir, csv_dataset, 2)
    assert result.exit_code == 1
    assert "pass --resume to continue" in result.output

    with caplog.at_level(logging.INFO, logger="backbone.finetune"):
        result = joint_finetune(resumed, tiny_gpt2_dir, csv_dataset, 2, "--resume")
    assert result.exit_code == 0, result.output
    assert "after epoch 1" in caplog.text
    state = checkpoint_state(resumed)
    assert state["epochs_done"] == 2
    assert len(state["history"]) == 2

    straight = tmp_path / "straight"
    result = joint_finetune(straight, tiny_gpt2_dir, csv_dataset, 2)
    assert result.exit_code == 0, result.output
    assert checkpoint_state(straight)["history"] == state["history"]
    for name in ("model/model.safetensors", "heads/model.safetensors"):
        got, expected = load_file(str(resumed / name)), load_file(str(straight / name))
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert np.array_equal(got[key], expected[key]), f"{name}:{key}"


def test_resume_rejects_other_settings(tmp_path, tiny_gpt2_dir, csv_dataset):
    run = tmp_path / "run"
    result = joint_finetune(run, tiny_gpt2_dir, csv_dataset, 1)
    assert result.exit_code == 0, result.output
    result = joint_finetune(run, tiny_gpt2_dir, csv_dataset, 2, "--resume", "--lr", "0.5")
    assert result.exit_code == 1
    assert "was written with other settings (lr: checkpoint 1e-05, now 0.5)" in result.output
    assert "Traceback" not in result.output
