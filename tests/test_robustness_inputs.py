"""Bad input through the CLI: exit code 1, one error line naming the value and the fix, no traceback.

Every case here is a row of the table in docs/robustness.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import invoke, sentiment_corpus

DATA = ["--text-column", "review", "--label-column", "sentiment"]


def error_line(result, expected: str) -> str:
    """Assert exit code 1 and a single `Error:` line containing `expected`; return that line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert expected in errors[0], errors[0]
    print(f"MESSAGE| {errors[0]}")
    return errors[0]


def write_csv(path: Path, texts, labels) -> Path:
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False)
    return path


def finetune(tmp_path: Path, model: Path, dataset, *extra):
    return invoke("finetune", "--run-dir", tmp_path / "run", "--model", model, "--dataset", dataset, *DATA, "--epochs", "1", *extra)


def reviews(n: int = 60):
    texts, labels = sentiment_corpus(n, seed=5)
    return texts, ["pos" if y else "neg" for y in labels]


# ----- data files -------------------------------------------------------------


def test_missing_dataset_file(tmp_path, tiny_gpt2_dir):
    error_line(finetune(tmp_path, tiny_gpt2_dir, tmp_path / "nope.csv"), "nope.csv' not found")


def test_unreadable_dataset_file(tmp_path, tiny_gpt2_dir):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not a parquet file")
    error_line(finetune(tmp_path, tiny_gpt2_dir, path), "cannot be read as parquet")


def test_csv_without_named_column(tmp_path, tiny_gpt2_dir):
    path = write_csv(tmp_path / "data.csv", *reviews())
    result = invoke("finetune", "--run-dir", tmp_path / "run", "--model", tiny_gpt2_dir, "--dataset", path, "--text-column", "body", "--label-column", "sentiment")
    error_line(result, "column 'body' not found; the file has columns [review, sentiment]")


def test_missing_label(tmp_path, tiny_gpt2_dir):
    texts, labels = reviews()
    labels[3] = None
    error_line(finetune(tmp_path, tiny_gpt2_dir, write_csv(tmp_path / "data.csv", texts, labels)), "1 missing labels at data rows 4")


def test_label_unseen_in_training(tmp_path, tiny_gpt2_dir):
    directory = tmp_path / "data"
    directory.mkdir()
    write_csv(directory / "train.csv", *reviews())
    texts, labels = reviews(20)
    labels[0] = "meh"
    write_csv(directory / "test.csv", texts, labels)
    error_line(finetune(tmp_path, tiny_gpt2_dir, directory), "label 'meh' at data rows 1")


def test_single_class(tmp_path, tiny_gpt2_dir):
    texts, _ = reviews()
    error_line(finetune(tmp_path, tiny_gpt2_dir, write_csv(tmp_path / "data.csv", texts, ["pos"] * len(texts))), "at least two classes")


def test_empty_texts_rejected_on_request(tmp_path, tiny_gpt2_dir):
    texts, labels = reviews()
    texts[1], texts[7] = "", "   "
    path = write_csv(tmp_path / "data.csv", texts, labels)
    error_line(finetune(tmp_path, tiny_gpt2_dir, path, "--empty", "error"), "2 empty or whitespace-only texts at data rows 2, 8")


def test_dataset_not_utf8(tmp_path, tiny_gpt2_dir):
    path = tmp_path / "latin1.csv"
    path.write_bytes("review,sentiment\ncaf\xe9 movie,pos\nbad,neg\n".encode("latin-1"))
    error_line(finetune(tmp_path, tiny_gpt2_dir, path), "not valid UTF-8")


# ----- model and options ------------------------------------------------------


def test_exits_outside_model(tmp_path, tiny_gpt2_dir, csv_dataset):
    error_line(finetune(tmp_path, tiny_gpt2_dir, csv_dataset, "--exits", "2,9"), "exits [9] are outside the model's layers 1..5")


def test_exits_not_increasing(tmp_path, tiny_gpt2_dir, csv_dataset):
    error_line(finetune(tmp_path, tiny_gpt2_dir, csv_dataset, "--exits", "3,2"), "exits [3, 2] are not strictly increasing")


def test_max_drop_out_of_range(trained_run):
    error_line(invoke("train-gates", "--run-dir", trained_run, "--max-drop", "150"), "--max-drop 150.0 is outside [0, 100) accuracy points")


# ----- infer input ------------------------------------------------------------


def test_infer_input_not_utf8(trained_run, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("caf\xe9 movie\n".encode("latin-1"))
    error_line(invoke("infer", "--run-dir", trained_run, "--input", path), "is not UTF-8 (byte 3)")


def test_infer_empty_text_rejected_on_request(trained_run):
    result = invoke("infer", "--run-dir", trained_run, "--text", "good movie", "--text", "  ", "--empty", "error")
    error_line(result, "1 empty or whitespace-only texts (texts [2]")


def test_infer_missing_input_file(trained_run, tmp_path):
    error_line(invoke("infer", "--run-dir", trained_run, "--input", tmp_path / "nope.txt"), "nope.txt does not exist")


def test_long_text_truncated_with_warning(trained_run):
    result = invoke("infer", "--run-dir", trained_run, "--text", "good movie " * 200)
    assert result.exit_code == 0, result.output
    assert "texts truncated to the model's max length: 1" in result.output


# ----- artifacts from other runs ----------------------------------------------


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, tiny_llama_dir, csv_dataset) -> Path:
    """A second run on another model (tiny Llama), with heads, cache and an MLP gate."""
    run = tmp_path_factory.mktemp("llama") / "run"
    common = ["--run-dir", run]
    result = invoke("finetune", *common, "--model", tiny_llama_dir, "--dataset", csv_dataset, *DATA, "--exits", "2,4", "--epochs", "2", "--limit", "24")
    assert result.exit_code == 0, result.output
    result = invoke("extract", *common, "--chunk-size", "16")
    assert result.exit_code == 0, result.output
    result = invoke("train-gates", *common, "--kind", "maxprob")
    assert result.exit_code == 0, result.output
    return run


def copy_gate(source: Path, target: Path, kind: str) -> None:
    for path in (source / "gates").glob(f"{kind}.*"):
        shutil.copy(path, target / "gates" / path.name)


def test_gate_from_another_cache(llama_run, trained_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    copy_gate(trained_run, run, "mlp")
    line = error_line(invoke("simulate", "--run-dir", run), "was trained on a cache with model_fingerprint=")
    assert str(run / "cache.zarr") in line


def test_heads_from_another_model(llama_run, trained_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    shutil.rmtree(run / "heads")
    shutil.copytree(trained_run / "heads", run / "heads")
    error_line(invoke("infer", "--run-dir", run, "--gate", "maxprob", "--text", "good movie"), "were trained on a model with fingerprint")
    error_line(invoke("simulate", "--run-dir", run), "were trained on a model with fingerprint")


def test_cache_logits_from_other_heads(llama_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    result = invoke("finetune", "--run-dir", run, "--epochs", "3")
    assert result.exit_code == 0, result.output
    error_line(invoke("train-gates", "--run-dir", run, "--kind", "maxprob"), "rerun `python cli.py extract --run-dir")


def test_gate_threshold_not_a_number(llama_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    path = run / "gates" / "maxprob.json"
    payload = json.loads(path.read_text())
    payload["threshold"] = "nan"
    path.write_text(json.dumps(payload))
    error_line(invoke("simulate", "--run-dir", run), "has threshold NaN")


def test_gate_file_pointing_outside_run(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    path = run / "gates" / "mlp.json"
    payload = json.loads(path.read_text())
    payload["weights"]["file"] = "../../outside.safetensors"
    path.write_text(json.dumps(payload))
    error_line(invoke("simulate", "--run-dir", run), "is not a plain file name in the gate's directory")


def test_run_config_with_unknown_cache_format(llama_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    config = json.loads((run / "run.json").read_text())
    config["cache_format"] = "../../elsewhere"
    (run / "run.json").write_text(json.dumps(config))
    error_line(invoke("simulate", "--run-dir", run), "cache_format '../../elsewhere' is not one of zarr, hdf5")


# ----- missing stages ---------------------------------------------------------


def test_extract_before_finetune(tmp_path, tiny_gpt2_dir, csv_dataset):
    result = invoke("extract", "--run-dir", tmp_path / "run", "--model", tiny_gpt2_dir, "--dataset", csv_dataset, *DATA, "--limit", "8")
    error_line(result, "run `python cli.py finetune --run-dir")


def test_infer_before_train_gates(llama_run, tmp_path):
    run = Path(shutil.copytree(llama_run, tmp_path / "run"))
    shutil.rmtree(run / "gates")
    error_line(invoke("infer", "--run-dir", run, "--text", "good movie"), "run `python cli.py train-gates --kind mlp --run-dir")
