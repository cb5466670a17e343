"""The infer stage: load a run's model, heads and gate, predict texts, compare with full depth."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backbone.heads import ExitHeads
from data import format_prompt
from features import FeatureCache
from gates import exits_from_scores, load_gate

from .infer import InferOptions, Predictions, compare_in_blocks, run_early_exit, warm_up
from .prepare import load_data, load_run_backbone
from .checks import check_gate_matches_heads, check_heads_match_model
from .rundir import RunDir, write_json
from .simulate import check_gate_matches

logger = logging.getLogger(__name__)


@dataclass
class InferReport:
    """Figures of one `infer` run; every speed figure here is measured wall-clock time."""

    examples: int
    gate: str
    average_exit_layer: float
    num_layers: int
    early_exit_seconds: float
    examples_per_second: float
    accuracy: float | None = None
    full_depth_seconds: float | None = None
    full_depth_accuracy: float | None = None
    wall_clock_speedup: float | None = None
    agreement_with_full: float | None = None
    simulate_exit_agreement: float | None = None
    simulate_label_agreement: float | None = None
    truncated: int = 0
    timing_warning: str | None = None
    extra: dict = field(default_factory=dict)


def implausible_speedup(measured: float, layer_speedup: float) -> str | None:
    """Flag a measured speedup far from the layer speedup, which points at other load on the machine."""
    # Early exit saves layers and adds head and gate work, so on an idle machine the
    # measured speedup stays near or a little under the layer speedup.
    if 0.5 * layer_speedup <= measured <= 1.25 * layer_speedup:
        return None
    message = (
        f"measured speedup {measured:.2f}x is far from the layer speedup {layer_speedup:.2f}x; other load on the "
        f"machine probably disturbed the timing, so rerun on an idle machine or use bench/bench_infer.py --rounds 3"
    )
    logger.warning("%s", message)
    return message


def read_texts(input_path: str | None, texts: list[str], *, empty: str = "skip") -> list[str]:
    """Collect texts from --text values and an --input file ('-' reads stdin), one text per line.

    Empty or whitespace-only texts are dropped with a warning (`empty="skip"`)
    or raise ValueError naming them (`empty="error"`).
    """
    collected = list(texts)
    if input_path is not None:
        if input_path == "-":
            raw = sys.stdin.buffer.read()
            source = "standard input"
        else:
            path = Path(input_path)
            if not path.is_file():
                raise FileNotFoundError(f"--input {path} does not exist; give a text file with one text per line, or '-' for stdin")
            raw = path.read_bytes()
            source = str(path)
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{source} is not UTF-8 (byte {error.start}); convert it, e.g. `iconv -t utf-8`") from None
        collected.extend(lines)
    kept = [t for t in collected if t.strip()]
    if empty == "error" and len(kept) < len(collected):
        positions = [i + 1 for i, t in enumerate(collected) if not t.strip()]
        raise ValueError(
            f"{len(positions)} empty or whitespace-only texts (texts {positions[:5]}, counting --text values first, from 1); "
            "remove them, or pass --empty skip to drop them"
        )
    if len(kept) < len(collected):
        logger.warning("skipped %d empty lines", len(collected) - len(kept))
    if not kept:
        source = f"--input {input_path} has no non-empty lines" if input_path is not None else "no texts to classify"
        raise ValueError(f"{source}; pass --text, --input FILE with one text per line, or --split test")
    return kept


def load_inference(run: RunDir, gate_name: str, device: str):
    config = run.load_config()
    gate_path = run.gate_path(gate_name)
    if not gate_path.is_file():
        trained = sorted(p.stem for p in run.gates_dir.glob("*.json") if not p.name.endswith(".xgb.json")) if run.gates_dir.is_dir() else []
        if trained:
            raise FileNotFoundError(f"gate {gate_name!r} not found in {run.gates_dir}; trained gates: {', '.join(trained)}")
        run.require(gate_path, "train-gates --kind mlp")
    gate = load_gate(gate_path)
    backbone = load_run_backbone(run, config, device)
    heads = ExitHeads.from_pretrained(run.require(run.heads_dir, "finetune")).to(device)
    check_heads_match_model(heads, run.heads_dir, backbone.fingerprint, backbone.model_id, run.root)
    check_gate_matches_heads(gate, run.gate_path(gate_name), heads, run.heads_dir)
    return config, backbone, heads, gate


def simulated_exits(run: RunDir, config, gate, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exit index and label that simulate gives each example of `split`, in split order."""
    cache = FeatureCache.open(run.require(run.cache_path(config.cache_format), "extract"))
    features = cache.read(split)
    check_gate_matches(gate, cache, "gate", features.heads_fingerprint)
    index = exits_from_scores(gate.scores(features.logits, features.hidden), gate.threshold_)
    labels = features.logits[np.arange(len(index)), index].argmax(-1)
    exit_by_example = np.empty(n, dtype=np.int64)
    label_by_example = np.empty(n, dtype=np.int64)
    # Cache rows are sorted by token length; `order` maps each row to its example.
    exit_by_example[features.order] = index
    label_by_example[features.order] = labels
    return exit_by_example, label_by_example


def run_infer(
    run: RunDir,
    *,
    texts: list[str] | None = None,
    split: str | None = None,
    gate_name: str = "mlp",
    options: InferOptions | None = None,
    compare_full: bool = False,
    output: str | None = None,
    device: str = "cpu",
) -> tuple[InferReport, Predictions, list[str]]:
    """Classify texts (or a split of the run's dataset) with real early exit."""
    options = options or InferOptions()
    config, backbone, heads, gate = load_inference(run, gate_name, device)
    gold = None
    if split is not None:
        data = load_data(config).split(split)
        texts, gold = data.texts, data.labels
    elif config.prompt is not None:
        # Heads and gates were fitted on prompted texts (load_data applies the prompt to splits).
        texts = [format_prompt(config.prompt, text) for text in texts]
    label_names = heads.meta.get("label_names") or [str(k) for k in range(heads.num_classes)]

    if compare_full:
        warm_up(backbone, heads, gate, texts, options)
        predictions, timing, full, full_timing = compare_in_blocks(backbone, heads, gate, texts, options)
    else:
        predictions, timing = run_early_exit(backbone, heads, gate, texts, options)
    report = InferReport(
        examples=len(texts),
        gate=gate_name,
        average_exit_layer=float(predictions.exit_layer.mean()),
        num_layers=backbone.num_layers,
        early_exit_seconds=timing.seconds,
        examples_per_second=timing.examples_per_second,
        truncated=predictions.truncated,
    )
    if gold is not None:
        report.accuracy = float((predictions.labels == gold).mean())
        simulated_exit, simulated_label = simulated_exits(run, config, gate, split, len(texts))
        report.simulate_exit_agreement = float((simulated_exit == predictions.exit_index).mean())
        report.simulate_label_agreement = float((simulated_label == predictions.labels).mean())

    if compare_full:
        report.full_depth_seconds = full_timing.seconds
        report.wall_clock_speedup = full_timing.seconds / timing.seconds
        report.timing_warning = implausible_speedup(report.wall_clock_speedup, backbone.num_layers / report.average_exit_layer)
        report.agreement_with_full = float((full.labels == predictions.labels).mean())
        if gold is not None:
            report.full_depth_accuracy = float((full.labels == gold).mean())

    if output is not None:
        write_jsonl(Path(output), predictions, label_names)
    if split is not None or compare_full:
        # The report command reads the latest measured figures from here.
        report.extra = {"split": split, "batch_size": options.batch_size, "schedule": options.schedule, "device": device}
        write_json(run.root / "infer.json", asdict(report))
    return report, predictions, label_names


def prediction_rows(predictions: Predictions, label_names: list[str]):
    for i in range(len(predictions.labels)):
        yield {
            "index": i,
            "label": label_names[int(predictions.labels[i])],
            "probability": round(float(predictions.probabilities[i]), 6),
            "exit_layer": int(predictions.exit_layer[i]),
        }


def write_jsonl(path: Path, predictions: Predictions, label_names: list[str]) -> None:
    """Write one JSON object per text to a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in prediction_rows(predictions, label_names):
            handle.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
