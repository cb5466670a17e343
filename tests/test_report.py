"""The run report: sections, tables and PNG files of every stage, and "not run yet" lines."""

import json
import shutil

import pytest

from gates import GATE_KINDS
from replay.report import write_report
from replay.rundir import RunDir
from tests.conftest import invoke

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the session's trained run, so this file's outputs do not leak into other tests."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    for name in ("simulate.json", "pareto.png", "infer.json", "report.md"):
        (copy / name).unlink(missing_ok=True)
    shutil.rmtree(copy / "baselines", ignore_errors=True)
    return copy


def section(text: str, title: str) -> str:
    """The Markdown of one `## title` section."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def assert_png(path):
    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_report_before_simulate(run_copy):
    path = write_report(RunDir(run_copy))
    text = path.read_text()

    assert path == run_copy / "report.md"
    heads = section(text, "Exit heads (finetune)")
    assert "| exit layer | validation accuracy |" in heads
    for layer in (1, 3, 5):
        assert f"\n| {layer} | 0." in heads
    assert f"not run yet: `python cli.py simulate --run-dir {run_copy}`" in heads
    gates = section(text, "Gates (train-gates)")
    for kind in GATE_KINDS:
        assert f"\n| {kind} | {kind} | agreement | empirical |" in gates
    assert "not run yet: `python cli.py simulate" in section(text, "Simulated early exit (simulate)")
    assert "not run yet: `python cli.py infer" in section(text, "Real early exit (infer)")
    assert "not run yet: `python cli.py baseline" in section(text, "Encoder baselines")
    assert_png(run_copy / "heads.png")
    assert_png(run_copy / "calibration.png")
    assert not (run_copy / "exit_histograms.png").exists()
    assert not list(run_copy.glob("*.tmp*")), "temporary files were left behind"


def test_report_after_simulate(run_copy):
    result = invoke("simulate", "--run-dir", run_copy)
    assert result.exit_code == 0, result.output
    simulate = json.loads((run_copy / "simulate.json").read_text())

    text = write_report(RunDir(run_copy)).read_text()

    table = section(text, "Simulated early exit (simulate)")
    header = ("| policy | accuracy | drop (points) | average exit layer | layer speedup | estimated GFLOPs | "
              "estimated FLOPs speedup | oracle share |")
    assert header in table
    assert "measured wall-clock speedup |" not in table
    for row in simulate["policies"]:
        line = f"| {row['policy']} | {row['accuracy']:.4f} | {row['drop_points']:.2f} | {row['average_exit_layer']:.2f} |"
        assert line in table
    assert {"full depth", "oracle (agreement)", "oracle (correct)", *GATE_KINDS} <= {r["policy"] for r in simulate["policies"]}
    assert "![accuracy against average exit layer](pareto.png)" in table
    heads = section(text, "Exit heads (finetune)")
    for layer, accuracy in zip(simulate["exits"], simulate["per_exit_accuracy"]):
        assert f"| {layer} | " in heads
        assert f" | {accuracy:.4f} |" in heads
    assert "not run yet" not in heads
    for name in ("pareto.png", "exit_histograms.png", "calibration.png", "heads.png"):
        assert_png(run_copy / name)
        assert f"({name})" in text


def test_report_reads_infer_and_baselines(run_copy):
    assert invoke("simulate", "--run-dir", run_copy).exit_code == 0
    (run_copy / "infer.json").write_text(json.dumps({"gate": "mlp", "examples": 72, "accuracy": 0.75,
                                                     "average_exit_layer": 2.5, "wall_clock_speedup": 1.87}))
    baselines = run_copy / "baselines"
    baselines.mkdir()
    (baselines / "minilm-l6.json").write_text(json.dumps({
        "model": "minilm-l6", "test_accuracy": 0.8123,
        "timings": [{"batch_size": 1, "ms_per_example": 6.25, "examples_per_second": 160.0}, "not a timing"],
    }))
    (baselines / "flat.json").write_text(json.dumps({"model": "tiny-bert", "accuracy": 0.7, "ms_per_example": 1.5,
                                                     "examples_per_second": 666.7}))
    (baselines / "unknown-shape.json").write_text(json.dumps([1, 2, 3]))
    (baselines / "no-model.json").write_text(json.dumps({"accuracy": 0.5}))
    (baselines / "broken.json").write_text("{not json")

    text = write_report(RunDir(run_copy)).read_text()

    table = section(text, "Simulated early exit (simulate)")
    assert "| measured wall-clock speedup |" in table
    mlp_row = next(line for line in table.splitlines() if line.startswith("| mlp |"))
    assert mlp_row.endswith("| 1.87x |")
    xgboost_row = next(line for line in table.splitlines() if line.startswith("| xgboost |"))
    assert xgboost_row.endswith("| - |")
    infer = section(text, "Real early exit (infer)")
    assert "| measured wall-clock speedup | 1.8700 |" in infer
    assert "| average exit layer | 2.5000 |" in infer
    baseline = section(text, "Encoder baselines")
    assert "| minilm-l6 | 0.8123 | 1 | 6.25 | 160.0 |" in baseline
    assert "| tiny-bert | 0.7000 | - | 1.50 | 666.7 |" in baseline
    body = [line for line in baseline.splitlines() if line.startswith("| ") and not line.startswith(("| model", "| ---"))]
    assert len(body) == 2, f"expected the two valid baseline rows, got {body}"


def test_report_on_empty_run_dir(tmp_path):
    text = write_report(RunDir(tmp_path)).read_text()

    for title, command in [("Run", "finetune"), ("Exit heads (finetune)", "finetune"),
                           ("Gates (train-gates)", "train-gates"), ("Simulated early exit (simulate)", "simulate"),
                           ("Confidence calibration", "extract"), ("Real early exit (infer)", "infer"),
                           ("Encoder baselines", "baseline")]:
        assert f"not run yet: `python cli.py {command} --run-dir {tmp_path}" in section(text, title)
    assert not list(tmp_path.glob("*.png"))


def test_report_missing_run_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-run"):
        write_report(RunDir(tmp_path / "missing-run"))


def test_report_compares_baselines_and_exits(run_copy):
    assert invoke("simulate", "--run-dir", run_copy).exit_code == 0
    assert invoke("infer", "--run-dir", run_copy, "--split", "test", "--compare-full", "--output", run_copy / "p.jsonl").exit_code == 0
    baselines = run_copy / "baselines"
    baselines.mkdir()
    (baselines / "minilm-l6.json").write_text(json.dumps({
        "model": "minilm-l6", "test_accuracy": 0.8123, "timings": [{"batch_size": 32, "ms_per_example": 6.25, "examples_per_second": 160.0}],
    }))

    text = write_report(RunDir(run_copy)).read_text()

    table = section(text, "Comparison on the test split")
    lines = table.splitlines()
    assert any("mlp gate (infer)" in line for line in lines)
    assert any("full depth (infer)" in line for line in lines)
    assert any("oracle (agreement) (simulated)" in line for line in lines)
    assert "| minilm-l6 (encoder, batch size 32) | 0.8123 | all | 6.25 | 160.0 |" in table
