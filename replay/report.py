"""The run report: report.md with tables and PNG plots of every stage that has run in a run directory.

Each section reads only what its stage wrote (run.json, heads/, the cache,
gates/, simulate.json, infer.json, baselines/*.json). A stage that has not
run gets the line "not run yet: <command>". Files written by other versions
are read defensively: fields that are missing or of an unknown shape are
skipped with a warning, never guessed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gates import load_gate

from . import report_plots
from .rundir import RunDir

logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"


@dataclass
class Section:
    """One report section: a title and its Markdown lines."""

    title: str
    lines: list[str] = field(default_factory=list)


def not_run(command: str, run: RunDir, extra: str = "") -> str:
    return f"not run yet: `python cli.py {command} --run-dir {run.root}{extra}`"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def format_number(value, digits: int = 4, suffix: str = "") -> str:
    """Format a number for a table cell; anything that is not a finite number becomes a dash."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def read_json_file(path: Path) -> dict | None:
    """Read a JSON object, or return None with a warning when the file is unreadable or not an object."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("skipping %s: %s", path, error)
        return None
    if not isinstance(payload, dict):
        logger.warning("skipping %s: expected a JSON object, found %s", path, type(payload).__name__)
        return None
    return payload


def open_cache(run: RunDir):
    """Return the run's feature cache, or None when run.json or the cache is missing."""
    from features import FeatureCache

    if not run.config_path.is_file():
        return None
    path = run.cache_path(run.load_config().cache_format)
    if not path.exists():
        return None
    return FeatureCache.open(path)


def split_logits(cache, split: str):
    """Logits (N, E, K) and labels (N,) of a complete split with logits, else None."""
    if cache is None or split not in cache.splits() or not cache.is_complete(split) or not cache.has_logits(split):
        return None
    features = cache.read(split, with_hidden=False)
    return features.logits, features.labels


def per_exit_accuracy(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    return [float(a) for a in (logits.argmax(-1) == labels[:, None]).mean(axis=0)]  # (N, E) -> (E,)


def run_section(run: RunDir) -> Section:
    section = Section("Run")
    if not run.config_path.is_file():
        section.lines.append(not_run("finetune", run))
        return section
    config = run.load_config()
    section.lines += markdown_table(
        ["setting", "value"],
        [["model", f"`{config.model}`"], ["dataset", f"`{config.dataset}`"], ["limit per split", str(config.limit)],
         ["exits", str(config.exits)], ["seed", str(config.seed)], ["cache format", config.cache_format],
         ["backbone fine-tuned", str(config.train_backbone)], ["zero-shot logit lens", str(config.zero_shot)]],
    )
    return section


def heads_section(run: RunDir, cache, simulate: dict | None) -> Section:
    section = Section("Exit heads (finetune)")
    heads_config = read_json_file(run.heads_dir / "config.json") if (run.heads_dir / "config.json").is_file() else None
    if heads_config is None and not (cache is not None and run.load_config().zero_shot):
        section.lines.append(not_run("finetune", run))
        return section
    if heads_config is not None:
        section.lines.append(
            f"Heads in `{run.heads_dir.name}/`: exits {heads_config.get('exits')}, "
            f"{heads_config.get('num_classes')} classes, fingerprint `{heads_config.get('fingerprint')}`."
        )
        section.lines.append("")

    validation = split_logits(cache, "validation")
    test_accuracy = (simulate or {}).get("per_exit_accuracy")
    exits = (simulate or {}).get("exits") or (heads_config or {}).get("exits") or []
    if validation is None:
        section.lines.append("Per-exit validation accuracy: " + not_run("extract", run))
        return section
    validation_accuracy = per_exit_accuracy(*validation)
    exits = exits if len(exits) == len(validation_accuracy) else list(cache.meta.exits)
    if not isinstance(test_accuracy, list) or len(test_accuracy) != len(exits):
        test_accuracy = None
    rows = [[str(layer), format_number(validation_accuracy[e]), format_number(test_accuracy[e]) if test_accuracy else "-"]
            for e, layer in enumerate(exits)]
    section.lines += markdown_table(["exit layer", "validation accuracy", "test accuracy (simulate.json)"], rows)
    if test_accuracy is None:
        section.lines.append("Per-exit test accuracy: " + not_run("simulate", run))
        section.lines.append("")
    path = run.root / "heads.png"
    report_plots.plot_per_exit_accuracy(path, exits, validation_accuracy, test_accuracy)
    section.lines.append(f"![per-exit accuracy]({path.name})")
    return section


def gates_section(run: RunDir) -> Section:
    section = Section("Gates (train-gates)")
    names = sorted(p.stem for p in run.gates_dir.glob("*.json") if not p.name.endswith(".xgb.json")) if run.gates_dir.is_dir() else []
    if not names:
        section.lines.append(not_run("train-gates", run, " --kind all"))
        return section
    rows = []
    for name in names:
        try:
            gate = load_gate(run.gate_path(name))
        except (ValueError, FileNotFoundError, KeyError) as error:
            logger.warning("skipping gate %s: %s", name, error)
            continue
        calibration = gate.meta_.get("calibration") or {}
        bound = calibration.get("certified_bound")
        rows.append([
            name, gate.kind, gate.label_mode_, str(calibration.get("method", "-")),
            format_number(getattr(gate, "threshold_", None)), format_number(calibration.get("accuracy")),
            format_number(calibration.get("full_accuracy")), format_number(calibration.get("mean_layers"), 2),
            "-" if bound is None else f"{100 * bound:.2f} pts (delta {calibration.get('delta')})",
        ])
    section.lines.append("Thresholds are calibrated on validation; the figures below are validation figures.")
    section.lines.append("")
    section.lines += markdown_table(
        ["gate", "kind", "label", "calibration", "threshold", "val accuracy", "val full depth", "val average exit layer",
         "certified drop bound"], rows)
    return section


def measured_speedups(infer: dict | None) -> dict[str, float]:
    """Gate name -> measured wall-clock speedup, from infer.json when --compare-full recorded one."""
    if infer is None:
        return {}
    speedup, gate = infer.get("wall_clock_speedup"), infer.get("gate")
    if isinstance(speedup, (int, float)) and isinstance(gate, str):
        return {gate: float(speedup)}
    return {}


def simulate_section(run: RunDir, simulate: dict | None, infer: dict | None) -> Section:
    section = Section("Simulated early exit (simulate)")
    if simulate is None:
        section.lines.append(not_run("simulate", run))
        return section
    policies = [row for row in simulate.get("policies", []) if isinstance(row, dict) and "policy" in row]
    measured = measured_speedups(infer)
    section.lines.append(
        f"Replayed on the {simulate.get('split')} split ({simulate.get('examples')} examples, "
        f"{simulate.get('num_layers')} layers, exits {simulate.get('exits')}). Cost is given four ways: average exit "
        "layer, layer speedup (L / average exit layer), estimated FLOPs (heads and gates included), and measured "
        "wall-clock speedup, which only `infer --compare-full` measures."
    )
    section.lines.append("")
    header = ["policy", "accuracy", "drop (points)", "average exit layer", "layer speedup", "estimated GFLOPs",
              "estimated FLOPs speedup", "oracle share"]
    if measured:
        header.append("measured wall-clock speedup")
    rows = []
    for row in policies:
        share = row.get("oracle_share")
        cells = [
            row["policy"], format_number(row.get("accuracy")), format_number(row.get("drop_points"), 2),
            format_number(row.get("average_exit_layer"), 2), format_number(row.get("layer_speedup"), 2, "x"),
            format_number(row.get("estimated_gflops"), 3), format_number(row.get("estimated_flops_speedup"), 2, "x"),
            "-" if share is None else format_number(100 * share, 0, "%"),
        ]
        if measured:
            cells.append(format_number(measured.get(row["policy"]), 2, "x"))
        rows.append(cells)
    section.lines += markdown_table(header, rows)
    if (run.root / "pareto.png").is_file():
        section.lines += ["![accuracy against average exit layer](pareto.png)", ""]

    histograms = {row["policy"]: row.get("histogram") or {} for row in policies if row["policy"] != "full depth"}
    path = run.root / "exit_histograms.png"
    report_plots.plot_exit_histograms(path, histograms, simulate.get("exits") or [])
    section.lines.append(f"![exit layer histograms]({path.name})")
    return section


def calibration_section(run: RunDir, cache) -> Section:
    section = Section("Confidence calibration")
    test = split_logits(cache, "test")
    if test is None:
        section.lines.append("Reliability of exit confidence on test: " + not_run("extract", run))
        return section
    path = run.root / "calibration.png"
    errors = report_plots.plot_reliability(path, *test, list(cache.meta.exits))
    section.lines.append(
        "Reliability diagram of each exit's max softmax probability on the test split (no temperature scaling), "
        "with the expected calibration error (10 equal-width bins) per exit."
    )
    section.lines.append("")
    section.lines += markdown_table(["exit layer", "expected calibration error"],
                                    [[str(layer), format_number(error)] for layer, error in zip(cache.meta.exits, errors)])
    section.lines.append(f"![reliability diagrams]({path.name})")
    return section


def infer_section(run: RunDir, infer: dict | None) -> Section:
    section = Section("Real early exit (infer)")
    if infer is None:
        section.lines.append(not_run("infer", run, " --split test --compare-full"))
        return section
    labels = {
        "gate": "gate", "examples": "examples", "accuracy": "accuracy", "average_exit_layer": "average exit layer",
        "early_exit_seconds": "early-exit seconds (measured)", "examples_per_second": "examples per second (measured)",
        "full_depth_seconds": "full-depth seconds (measured)", "full_depth_accuracy": "full-depth accuracy",
        "wall_clock_speedup": "measured wall-clock speedup", "agreement_with_full": "same label as full depth",
        "simulate_exit_agreement": "same exit as simulate", "simulate_label_agreement": "same label as simulate",
    }
    rows = []
    for key, label in labels.items():
        value = infer.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            rows.append([label, str(value)])
        elif value is not None:
            rows.append([label, format_number(value)])
    section.lines += markdown_table(["measure", "value"], rows) if rows else ["infer.json has none of the known fields", ""]
    return section


def baseline_rows(path: Path, payload: dict) -> list[list[str]]:
    """Table rows of one baseline JSON: one per timed batch size, or one row without timings."""
    model = payload.get("model")
    accuracy = payload.get("test_accuracy", payload.get("accuracy"))
    if not isinstance(model, str) or not isinstance(accuracy, (int, float)):
        logger.warning("skipping %s: expected a 'model' string and a 'test_accuracy' or 'accuracy' number", path)
        return []
    timings = payload.get("timings")
    if not isinstance(timings, list) or not timings:
        timings = [payload]
    rows = []
    for timing in timings:
        if not isinstance(timing, dict):
            logger.warning("skipping a timing entry of %s: expected an object, found %r", path, timing)
            continue
        rows.append([model, format_number(accuracy), str(timing.get("batch_size", "-")),
                     format_number(timing.get("ms_per_example"), 2), format_number(timing.get("examples_per_second"), 1)])
    return rows


def baselines_section(run: RunDir) -> Section:
    section = Section("Encoder baselines")
    paths = sorted((run.root / "baselines").glob("*.json")) if (run.root / "baselines").is_dir() else []
    rows = []
    for path in paths:
        payload = read_json_file(path)
        if payload is not None:
            rows += baseline_rows(path, payload)
    if not rows:
        section.lines.append(not_run("baseline", run))
        return section
    section.lines.append("Measured on this machine by the baseline command; test split.")
    section.lines.append("")
    section.lines += markdown_table(["model", "test accuracy", "batch size", "ms per example", "examples per second"], rows)
    return section


def comparison_section(run: RunDir, simulate: dict | None, infer: dict | None) -> Section:
    """Build one table of every baseline and every early-exit operating point on the test split."""
    section = Section("Comparison on the test split")
    model = run.load_config().model if run.config_path.is_file() else "?"
    rows = []
    if infer is not None and infer.get("examples") and infer.get("extra", {}).get("split") == "test":
        examples = infer["examples"]
        rows.append([f"{model} + {infer.get('gate')} gate (infer)", format_number(infer.get("accuracy")), format_number(infer.get("average_exit_layer"), 2),
                     format_number(1000 * infer["early_exit_seconds"] / examples, 2), format_number(infer.get("examples_per_second"), 1)])
        if infer.get("full_depth_seconds"):
            rows.append([f"{model} full depth (infer)", format_number(infer.get("full_depth_accuracy")), str(infer.get("num_layers", "-")),
                         format_number(1000 * infer["full_depth_seconds"] / examples, 2), format_number(examples / infer["full_depth_seconds"], 1)])
    if simulate is not None and simulate.get("split") == "test":
        for row in simulate.get("policies", []):
            rows.append([f"{model} {row['policy']} (simulated)", format_number(row.get("accuracy")), format_number(row.get("average_exit_layer"), 2), "-", "-"])
    paths = sorted((run.root / "baselines").glob("*.json")) if (run.root / "baselines").is_dir() else []
    for path in paths:
        payload = read_json_file(path)
        for baseline in baseline_rows(path, payload) if payload is not None else []:
            name, accuracy, batch_size, ms, per_second = baseline
            rows.append([f"{name} (encoder, batch size {batch_size})", accuracy, "all", ms, per_second])
    if not rows:
        section.lines.append("nothing to compare yet: run simulate, infer --split test and baseline first")
        return section
    section.lines.append("Wall-clock figures are measured; simulated rows have layer counts only.")
    section.lines.append("")
    section.lines += markdown_table(["model", "accuracy", "mean layers", "ms per example", "examples per second"], rows)
    return section


def write_report(run: RunDir) -> Path:
    """Write run_dir/report.md and its PNG plots from what the run's stages left; return the report path."""
    if not run.root.is_dir():
        raise FileNotFoundError(f"run directory {run.root} not found. Pass the --run-dir of an existing run")
    simulate = read_json_file(run.root / "simulate.json") if (run.root / "simulate.json").is_file() else None
    infer = read_json_file(run.root / "infer.json") if (run.root / "infer.json").is_file() else None
    cache = open_cache(run)
    try:
        sections = [
            run_section(run),
            heads_section(run, cache, simulate),
            gates_section(run),
            simulate_section(run, simulate, infer),
            calibration_section(run, cache),
            infer_section(run, infer),
            baselines_section(run),
            comparison_section(run, simulate, infer),
        ]
    finally:
        if cache is not None:
            cache.close()

    lines = [f"# Run report: `{run.root}`", ""]
    for section in sections:
        lines += [f"## {section.title}", "", *section.lines, ""]
    path = run.root / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, path)
    logger.info("wrote %s", path)
    return path
