"""Command line: adaptive-depth text classification with early-exit decoder models.

Each command reads what earlier stages left in --run-dir and writes its own outputs there.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

DEFAULT_RUN_DIR = "runs/default"
logger = logging.getLogger("cli")


def parse_exits(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of layer numbers, e.g. 3,6,9") from None


def handle_errors(command):
    """Show expected failures as one line with exit code 1; --debug shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError) as error:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            raise click.ClickException(message) from None

    return wrapper


@click.group()
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="Debug log output on stderr (default: info).")
def main(debug: bool, verbose: int) -> None:
    """Adaptive-depth text classification on decoder language models."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # matplotlib logs every categorical axis at INFO; its warnings still show.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def run_options(command):
    """Options that fix a run's model, data and exits (saved in run.json by the first stage)."""
    options = [
        click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Directory holding this run's config, cache, heads and gates."),
        click.option("--model", default=None, help="Model: smollm2-135m (offline default), a hub id such as gpt2-medium, or a local save_pretrained directory."),
        click.option("--dataset", default=None, help="Dataset: rt-critics (offline default), sst2, rotten_tomatoes, imdb, ag_news, amazon_polarity, dbpedia_14, yahoo_answers_topics, hf:<hub id>, or a CSV/JSONL/Parquet path."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Cap each split at this many examples."),
        click.option("--exits", default=None, help="Exit layers, 1-based and increasing, e.g. 3,6,9,12. Default: every 3 layers plus the last."),
        click.option("--exit-every", type=click.IntRange(min=1), default=None, help="Put an exit every K layers (and at the last layer)."),
        click.option("--text-column", default=None, help="Text column of a local data file (default: text)."),
        click.option("--label-column", default=None, help="Label column of a local data file (default: label)."),
        click.option("--empty", type=click.Choice(["skip", "error"]), default=None, help="Empty or whitespace-only texts: skip them with a count, or stop with an error naming the rows (default skip)."),
        click.option("--max-length", type=click.IntRange(min=2), default=None, help="Truncate texts to this many tokens (default 256)."),
        click.option("--seed", type=int, default=None, help="Seed of the data split, and of head training in finetune (default 0)."),
        click.option("--format", "cache_format", type=click.Choice(["zarr", "hdf5"]), default=None, help="Feature cache format (default zarr)."),
        click.option("--trust-remote-code", is_flag=True, default=None, help="Allow model code from the hub to run (off unless given)."),
        click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_config(run, kwargs: dict, **overrides):
    """Merge command-line options with run.json; return the config and the run directory."""
    from backbone.loading import load_backbone  # noqa: F401  (fail early on a broken install)
    from replay.prepare import resolve_config
    from replay.rundir import RunConfig

    fields = {
        "model": kwargs.get("model"),
        "dataset": kwargs.get("dataset"),
        "limit": kwargs.get("limit"),
        "text_column": kwargs.get("text_column"),
        "label_column": kwargs.get("label_column"),
        "empty": kwargs.get("empty"),
        "max_length": kwargs.get("max_length"),
        "seed": kwargs.get("seed"),
        "cache_format": kwargs.get("cache_format"),
        "trust_remote_code": kwargs.get("trust_remote_code"),
        "exit_every": kwargs.get("exit_every"),
        **overrides,
    }
    exits = parse_exits(kwargs.get("exits"))
    if exits and (min(exits) < 1 or any(b <= a for a, b in zip(exits, exits[1:]))):
        from backbone.heads import validate_exits

        # Order and range are checked before the model loads; depth is checked once it has.
        validate_exits(exits, max(exits))
    if exits is not None and kwargs.get("exit_every") is not None:
        raise click.BadParameter("give either --exits or --exit-every, not both")
    if exits is not None:
        fields["exits"] = exits
    explicit = {name for name, value in fields.items() if value is not None}
    requested = RunConfig(**{name: value for name, value in fields.items() if value is not None})
    config = resolve_config(run, requested, explicit - {"cache_format"})
    if kwargs.get("cache_format"):
        config.cache_format = kwargs["cache_format"]
    return config


@main.command()
@run_options
@click.option("--train-backbone", is_flag=True, help="Fine-tune the whole model with the heads (meant for a GPU); default trains heads on the frozen backbone.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 40 for frozen heads, 3 with --train-backbone).")
@click.option("--lr", type=float, default=None, help="Learning rate (default 2e-3 for frozen heads, 1e-5 for the backbone).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch size in examples (default 64 frozen, 16 joint).")
@click.option("--exit-weights", default=None, help="Per-exit loss weights with --train-backbone, comma-separated (default: proportional to depth).")
@click.option("--resume", is_flag=True, help="Continue interrupted training: --train-backbone from the checkpoint of the last finished epoch (frozen heads always continue an interrupted extraction).")
@handle_errors
def finetune(**kwargs) -> None:
    """Train exit heads on the frozen backbone from the cache (extracting train and validation
    first when missing), or with --train-backbone fine-tune model and heads jointly."""
    from backbone.finetune import JointTrainingConfig
    from backbone.train_heads import HeadTrainingConfig
    from replay.diskfull import disk_full_errors
    from replay.prepare import ExtractOptions, run_finetune
    from replay.rundir import RunDir

    run = RunDir(kwargs["run_dir"])
    overrides = {"train_backbone": True} if kwargs["train_backbone"] else {}
    config = build_config(run, kwargs, **overrides)
    if kwargs["train_backbone"]:
        training = JointTrainingConfig(
            epochs=kwargs["epochs"] or 3,
            lr=kwargs["lr"] or 1e-5,
            batch_size=kwargs["batch_size"] or 16,
            exit_weights=[float(w) for w in kwargs["exit_weights"].split(",")] if kwargs["exit_weights"] else None,
        )
    else:
        training = HeadTrainingConfig(epochs=kwargs["epochs"] or 40, lr=kwargs["lr"] or 2e-3, batch_size=kwargs["batch_size"] or 64)
    with disk_full_errors(f"python cli.py finetune --run-dir {run.root}"):
        summary = run_finetune(run, config, ExtractOptions(device=kwargs["device"]), training, resume=kwargs["resume"])
    click.echo("validation accuracy per exit:")
    for layer, accuracy in zip(summary["exits"], summary["validation_accuracy"]):
        click.echo(f"  layer {layer:>3}: {accuracy:.4f}")


@main.command()
@run_options
@click.option("--zero-shot", is_flag=True, help="Store logit-lens verbalizer logits instead of head logits (zero-shot baseline).")
@click.option("--prompt", default=None, help='Prompt template with {text}, e.g. "Review: {text}\\nSentiment:". Default: the raw text.')
@click.option("--verbalizer", multiple=True, help='Verbalizer words of one label for --zero-shot, e.g. fresh=" fresh, good"; repeat per label.')
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Examples per forward batch.")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=None, help="Cap on padded tokens (examples x longest) per batch; default: no cap, only --batch-size.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=256, show_default=True, help="Examples per cache chunk (the unit of resume and sharding).")
@click.option("--shard-index", type=click.IntRange(min=0), default=0, show_default=True, help="This process's shard (0-based) when several processes fill one Zarr cache.")
@click.option("--num-shards", type=click.IntRange(min=1), default=1, show_default=True, help="Number of processes filling one Zarr cache.")
@click.option("--resume", is_flag=True, help="Continue an interrupted extraction from its last fully written chunk.")
@handle_errors
def extract(**kwargs) -> None:
    """Write the feature cache (pooled states and exit logits) for every split."""
    from data import default_verbalizers, parse_verbalizer_option
    from replay.diskfull import disk_full_errors
    from replay.prepare import ExtractOptions, run_extract
    from replay.rundir import RunDir

    run = RunDir(kwargs["run_dir"])
    overrides = {}
    if kwargs["zero_shot"]:
        overrides["zero_shot"] = True
    if kwargs["prompt"] is not None:
        overrides["prompt"] = kwargs["prompt"].replace("\\n", "\n")
    config = build_config(run, kwargs, **overrides)
    if kwargs["verbalizer"]:
        from data import load_splits

        label_names = load_splits(config.dataset, limit=1, seed=config.seed, text_column=config.text_column, label_column=config.label_column).label_names
        # Labels without a --verbalizer keep the dataset's default words.
        config.verbalizers = {**default_verbalizers(config.dataset, label_names), **parse_verbalizer_option(list(kwargs["verbalizer"]), label_names)}
    shard_index, num_shards, device = kwargs["shard_index"], kwargs["num_shards"], kwargs["device"]
    if num_shards == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Launched by torchrun (or accelerate launch): one shard per process, one GPU per local rank.
        shard_index, num_shards = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device == "cuda":
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if shard_index >= num_shards:
        raise click.BadParameter(f"{shard_index} is not below --num-shards {num_shards}", param_hint="--shard-index")
    options = ExtractOptions(
        batch_size=kwargs["batch_size"],
        max_batch_tokens=kwargs["max_batch_tokens"],
        chunk_size=kwargs["chunk_size"],
        shard_index=shard_index,
        num_shards=num_shards,
        device=device,
    )
    with disk_full_errors(f"python cli.py extract --run-dir {run.root}"):
        cache = run_extract(run, config, options, resume=kwargs["resume"])
    for name in cache.splits():
        click.echo(f"{name}: {cache.split_size(name)} examples, complete={cache.is_complete(name)}")


@main.command("train-gates")
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Run directory with an extracted cache.")
@click.option("--kind", "kinds", multiple=True, default=("mlp",), show_default=True, help="Gate kind: mlp, xgboost, logistic, maxprob, entropy, margin, patience, or all. Repeatable.")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="Accuracy-drop budget against full depth on validation, in accuracy points.")
@click.option("--label", "label_mode", type=click.Choice(["agreement", "correct"]), default="agreement", show_default=True, help="Gate label: the exit agrees with the last exit, or the exit is correct.")
@click.option("--per-exit", is_flag=True, help="MLP gate: one network per exit instead of one shared network.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of gate training.")
@click.option(
    "--calibration",
    "calibration_method",
    type=click.Choice(["empirical", "ltt"]),
    default="empirical",
    show_default=True,
    help="Threshold choice: empirical (budget met on validation) or ltt (Learn-then-Test: the drop is certified with probability 1 - delta; fitted kinds train on half of validation).",
)
@click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True, help="With --calibration ltt: allowed probability that the certified drop bound fails.")
@handle_errors
def train_gates(run_dir: str, kinds: tuple[str, ...], max_drop: float, label_mode: str, per_exit: bool, seed: int, calibration_method: str, delta: float) -> None:
    """Train exit gates on the cache's validation split and calibrate their thresholds there."""
    from gates import GATE_KINDS
    from replay.gating import run_train_gates
    from replay.rundir import RunDir

    if not 0.0 <= max_drop < 100.0:
        raise ValueError(f"--max-drop {max_drop} is outside [0, 100) accuracy points; pass e.g. --max-drop 1 for a one-point budget")
    selected = list(GATE_KINDS) if "all" in kinds else list(kinds)
    params = {"shared": False} if per_exit else {}
    summaries = run_train_gates(
        RunDir(run_dir), selected, max_drop=max_drop / 100.0, label_mode=label_mode, seed=seed, params=params, method=calibration_method, delta=delta
    )
    click.echo(f"{'gate':<10} {'threshold':>10} {'val accuracy':>12} {'val full':>9} {'val avg layer':>13} {'certified drop':>14} {'seconds':>8}")
    for row in summaries:
        bound = "" if row.get("certified_bound") is None else f"{100 * row['certified_bound']:.2f} pts"
        click.echo(
            f"{row['kind']:<10} {row['threshold']:>10.4f} {row['accuracy']:>12.4f} {row['full_accuracy']:>9.4f} {row['mean_layers']:>13.2f} {bound:>14} {row['seconds']:>8.1f}"
        )


@main.command()
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Run directory with a cache and trained gates.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test"]), help="Split to replay. Report test; train and validation only help diagnose the gates.")
@handle_errors
def simulate(run_dir: str, split: str) -> None:
    """Replay every trained gate and the oracles over the cache: table, simulate.json, pareto.png."""
    from replay.rundir import RunDir
    from replay.simulate import format_table, run_simulate

    payload = run_simulate(RunDir(run_dir), split)
    click.echo(format_table(payload))
    click.echo(f"wrote {run_dir}/simulate.json and {run_dir}/pareto.png (simulated: layer counts from the cache, not timed)")


@main.command()
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Run directory with heads and a trained gate.")
@click.option("--input", "input_path", default=None, help="Text file, one text per line; '-' reads standard input.")
@click.option("--text", "texts", multiple=True, help="A text to classify; repeatable.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default=None, help="Classify a split of the run's dataset and report accuracy.")
@click.option("--output", default=None, help="JSONL file for predictions (index, label, probability, exit_layer). Default: stdout.")
@click.option("--gate", "gate_name", default="mlp", show_default=True, help="Which trained gate drives the exits: mlp, xgboost, logistic, maxprob, entropy, margin or patience.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Examples per batch.")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=None, help="Cap on padded tokens (examples x longest) per batch; default: no cap, only --batch-size.")
@click.option("--compare-full", is_flag=True, help="Also run full-depth inference on the same texts and print the measured wall-clock speedup.")
@click.option("--empty", type=click.Choice(["skip", "error"]), default="skip", show_default=True, help="Empty or whitespace-only texts from --text/--input: skip them with a count, or stop with an error naming them.")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
@handle_errors
def infer(run_dir, input_path, texts, split, output, gate_name, batch_size, max_batch_tokens, compare_full, empty, device) -> None:
    """Classify texts with real early exit: each example's forward pass stops at its exit."""
    from replay.infer import InferOptions
    from replay.predict import prediction_rows, read_texts, run_infer
    from replay.rundir import RunDir

    if split is None:
        texts = read_texts(input_path, list(texts), empty=empty)
    elif input_path or texts:
        raise click.BadParameter("give --split or --input/--text, not both")
    options = InferOptions(batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    report, predictions, label_names = run_infer(
        RunDir(run_dir), texts=None if split else texts, split=split, gate_name=gate_name, options=options, compare_full=compare_full, output=output, device=device
    )
    if output is None:
        for row in prediction_rows(predictions, label_names):
            click.echo(json.dumps(row))
    click.echo(format_infer_report(report), err=output is None)


def format_infer_report(report) -> str:
    lines = [
        f"texts: {report.examples}, gate {report.gate}: average exit layer {report.average_exit_layer:.2f} of {report.num_layers}, "
        f"{report.examples_per_second:.1f} examples/s ({report.early_exit_seconds:.2f} s measured)"
    ]
    if report.accuracy is not None:
        lines.append(f"accuracy {report.accuracy:.4f}")
    if report.simulate_exit_agreement is not None:
        lines.append(f"agreement with simulate: exit layer {100 * report.simulate_exit_agreement:.2f}%, label {100 * report.simulate_label_agreement:.2f}%")
    if report.wall_clock_speedup is not None:
        full_acc = f", accuracy {report.full_depth_accuracy:.4f}" if report.full_depth_accuracy is not None else ""
        lines.append(f"full depth: {report.full_depth_seconds:.2f} s measured{full_acc}; same label on {100 * report.agreement_with_full:.2f}% of texts")
        lines.append(f"measured wall-clock speedup: {report.wall_clock_speedup:.2f}x (layer speedup {report.num_layers / report.average_exit_layer:.2f}x)")
    if report.timing_warning:
        lines.append(f"warning: {report.timing_warning}")
    if report.truncated:
        lines.append(f"texts truncated to the model's max length: {report.truncated}")
    return "\n".join(lines)


@main.command()
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Run directory; its run.json, when present, fixes dataset, limit and seed.")
@click.option("--model", default="minilm-l6", show_default=True, help="Encoder: minilm-l6 (offline), a hub id such as bert-base-uncased or roberta-base, or a local save_pretrained directory.")
@click.option("--dataset", default=None, help="Dataset, as for the other commands (default: run.json's, else rt-critics).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Cap each split at this many examples (default: run.json's, else no cap).")
@click.option("--seed", type=int, default=None, help="Seed of the data split and of training (default: run.json's, else 0).")
@click.option("--text-column", default=None, help="Text column of a local data file (default: text).")
@click.option("--label-column", default=None, help="Label column of a local data file (default: label).")
@click.option("--eval-only", is_flag=True, help="Evaluate without training: this run's saved baselines/<model>/ if present, else --model as an already fine-tuned classifier.")
@click.option("--label-map", default=None, help="With --eval-only, map checkpoint labels to dataset labels, e.g. NEGATIVE=rotten,POSITIVE=fresh.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Training epochs; validation accuracy picks the epoch that is kept.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=5e-5, show_default=True, help="Peak AdamW learning rate (linear warm-up, then linear decay).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Training and evaluation batch size in examples.")
@click.option("--max-length", type=click.IntRange(min=2), default=64, show_default=True, help="Truncate texts to this many tokens.")
@click.option("--latency-examples", type=click.IntRange(min=1), default=None, help="Test texts timed one at a time at batch size 1 (default: the whole test split).")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub to run (off unless given).")
@handle_errors
def baseline(**kwargs) -> None:
    """Fine-tune (or evaluate) a BERT-family encoder classifier on the run's splits and time it at batch sizes 1 and 32."""
    from replay.baseline import BaselineConfig, run_baseline
    from replay.rundir import RunDir

    run = RunDir(kwargs.pop("run_dir"))
    result = run_baseline(run, BaselineConfig(**kwargs))
    click.echo(f"{result.model} on {result.dataset} {result.split_sizes}: test accuracy {result.test_accuracy:.4f}, validation accuracy {result.validation_accuracy:.4f}")
    for timing in result.timings:
        click.echo(f"  batch size {timing.batch_size:>2}: {timing.ms_per_example:.2f} ms per example, {timing.examples_per_second:.1f} examples/s, median batch {timing.median_batch_ms:.2f} ms ({timing.examples} texts)")
    click.echo(f"wrote {result.output_path}")


@main.command()
@click.option("--run-dir", default=DEFAULT_RUN_DIR, show_default=True, help="Run directory to summarise.")
@handle_errors
def report(run_dir: str) -> None:
    """Write report.md with tables and PNG plots of every stage that has run in --run-dir."""
    from replay.report import write_report
    from replay.rundir import RunDir

    path = write_report(RunDir(run_dir))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
