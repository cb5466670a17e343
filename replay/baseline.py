"""Encoder baseline: fine-tune or evaluate a BERT-family classifier on the run's splits, timed like `infer`."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from backbone.encoders import (
    EncoderClassifier,
    is_sequence_classifier,
    load_encoder_classifier,
    load_training_metadata,
    output_to_dataset_labels,
    parse_label_map,
    resolve_encoder_source,
    safe_model_name,
    save_encoder_classifier,
)
from data import DatasetSplits, Split, load_splits
from features.extract import token_batches

from .rundir import RunDir, write_json
from .timing import Timing, timed

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "rt-critics"
TIMED_BATCH_SIZES = (1, 32)


@dataclass
class BaselineConfig:
    """Settings of one encoder baseline. Data fields left as None come from run.json, else the defaults."""

    model: str = "minilm-l6"
    dataset: str | None = None  # None: run.json's, else rt-critics
    limit: int | None = None
    seed: int | None = None  # None: run.json's, else 0
    text_column: str | None = None
    label_column: str | None = None
    eval_only: bool = False
    label_map: str | None = None  # "MODEL_LABEL=dataset_label,..." for a checkpoint with other label names
    epochs: int = 2
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # share of optimizer steps with a linearly rising learning rate
    batch_size: int = 32  # training and evaluation batch size
    max_length: int = 64  # tokens per text, longer texts are truncated
    latency_examples: int | None = None  # test texts timed one by one at batch size 1; None: all
    device: str = "cpu"
    trust_remote_code: bool = False


@dataclass
class TimingReport:
    """Inference over the test split at one batch size, tokenization included."""

    batch_size: int
    examples: int
    seconds: float
    ms_per_example: float
    examples_per_second: float
    median_batch_ms: float  # median wall time of one batch; at batch size 1 the median latency per example


@dataclass
class BaselineResult:
    """Measurements of one baseline run and the path of its JSON report."""

    model: str
    checkpoint: str  # directory or hub id that was evaluated
    dataset: str
    split_sizes: dict[str, int]
    test_accuracy: float
    validation_accuracy: float
    epochs: int  # epochs trained in this call, 0 with eval_only
    best_epoch: int | None  # 1-based epoch kept by validation accuracy, None with eval_only
    validation_accuracy_per_epoch: list[float]
    truncated_test_texts: int
    timings: list[TimingReport]
    machine: dict
    output_path: str
    eval_only: bool = False
    settings: dict = field(default_factory=dict)


def resolve_data_settings(run: RunDir, config: BaselineConfig) -> dict:
    """Return dataset, limit, seed and columns: the run's own when run.json exists, else the config's or defaults.

    An explicit setting that differs from run.json raises ValueError, so the baseline
    is evaluated on the same splits as the other stages.
    """
    names = ("dataset", "limit", "seed", "text_column", "label_column")
    requested = {name: getattr(config, name) for name in names}
    if not run.config_path.is_file():
        defaults = {"dataset": DEFAULT_DATASET, "seed": 0}
        return {name: requested[name] if requested[name] is not None else defaults.get(name) for name in names}

    stored = asdict(run.load_config())
    for name in names:
        if requested[name] is not None and requested[name] != stored[name]:
            raise ValueError(
                f"--{name.replace('_', '-')} {requested[name]!r} differs from {stored[name]!r} in {run.config_path}; "
                "drop the option to use the run's splits, or use another --run-dir"
            )
    return {name: stored[name] for name in names}


def encode_texts(encoder: EncoderClassifier, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize a batch, padded to its longest text and truncated at `max_length`, on the model's device."""
    encoded = encoder.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {name: tensor.to(encoder.device) for name, tensor in encoded.items()}


def token_counts(encoder: EncoderClassifier, texts: list[str]) -> np.ndarray:
    """Return `(N,)` token counts with special tokens, before truncation."""
    return np.asarray([len(ids) for ids in encoder.tokenizer(texts, truncation=False)["input_ids"]])


@torch.no_grad()
def predict_batches(
    encoder: EncoderClassifier, texts: list[str], batch_size: int, max_length: int, desc: str = "predict"
) -> tuple[np.ndarray, list[float]]:
    """Return `(N, K_model)` logits in input order and the seconds of each length-sorted batch."""
    encoder.model.eval()
    lengths = np.minimum(token_counts(encoder, texts), max_length)
    order = np.argsort(lengths, kind="stable")
    logits = np.zeros((len(texts), encoder.model.config.num_labels), dtype=np.float32)
    batch_seconds = []
    for rows in tqdm(token_batches(lengths[order], batch_size, None), desc=desc, unit="batch", leave=False):
        ids = order[rows]
        with timed(encoder.device, len(ids)) as timing:
            batch = encode_texts(encoder, [texts[i] for i in ids], max_length)
            logits[ids] = encoder.model(**batch).logits.float().cpu().numpy()  # (B, K_model)
        batch_seconds.append(timing.seconds)
    return logits, batch_seconds


def accuracy(logits: np.ndarray, labels: np.ndarray, output_to_label: list[int]) -> float:
    """Return the share of rows whose top output maps to the true dataset label."""
    predicted = np.asarray(output_to_label)[logits.argmax(axis=1)]  # (N,)
    return float((predicted == labels).mean()) if len(labels) else float("nan")


def evaluate(encoder: EncoderClassifier, split: Split, config: BaselineConfig, output_to_label: list[int], desc: str) -> float:
    logits, _ = predict_batches(encoder, split.texts, config.batch_size, config.max_length, desc)
    return accuracy(logits, split.labels, output_to_label)


def make_optimizer(encoder: EncoderClassifier, config: BaselineConfig, total_steps: int):
    """AdamW with weight decay on matrices only, and linear warm-up then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    decayed = [p for p in encoder.model.parameters() if p.requires_grad and p.dim() >= 2]
    others = [p for p in encoder.model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def length_grouped_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator, group_batches: int = 50) -> list[np.ndarray]:
    """Return shuffled training batches of row indices whose texts have similar lengths.

    Rows are shuffled, cut into groups of `group_batches` batches, sorted by length
    inside each group and batched, and the batches are shuffled again. Batches pad
    to fewer tokens than random ones, and every epoch still gets a new order.
    """
    order = torch.randperm(len(lengths), generator=generator).numpy()
    group_size = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group_size):
        group = order[start : start + group_size]
        group = group[np.argsort(lengths[group], kind="stable")]
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_epoch(encoder: EncoderClassifier, split: Split, config: BaselineConfig, optimizer, scheduler, generator: torch.Generator, epoch: int) -> float:
    """Run one shuffled pass over `split`; return the mean training loss."""
    encoder.model.train()
    lengths = np.minimum(token_counts(encoder, split.texts), config.max_length)
    losses = []
    progress = tqdm(length_grouped_batches(lengths, config.batch_size, generator), desc=f"epoch {epoch}", unit="batch", leave=False)
    for ids in progress:
        batch = encode_texts(encoder, [split.texts[i] for i in ids], config.max_length)
        labels = torch.as_tensor(split.labels[ids], device=encoder.device)  # (B,)
        loss = encoder.model(**batch, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return float(np.mean(losses))


def fine_tune(encoder: EncoderClassifier, splits: DatasetSplits, config: BaselineConfig, seed: int) -> tuple[int, list[float]]:
    """Train on `splits.train`, keep the epoch with the best validation accuracy; return it (1-based) and every epoch's accuracy."""
    if len(splits.train) == 0 or len(splits.validation) == 0:
        raise ValueError(f"dataset {splits.name!r} has split sizes {splits.sizes()}; fine-tuning needs train and validation examples")
    steps_per_epoch = -(-len(splits.train) // config.batch_size)
    optimizer, scheduler = make_optimizer(encoder, config, steps_per_epoch * config.epochs)
    generator = torch.Generator().manual_seed(seed)
    identity = list(range(len(splits.label_names)))
    best_epoch, best_state, history = 0, None, []
    for epoch in range(1, config.epochs + 1):
        loss = train_epoch(encoder, splits.train, config, optimizer, scheduler, generator, epoch)
        val_accuracy = evaluate(encoder, splits.validation, config, identity, "validation")
        history.append(val_accuracy)
        logger.info("epoch %d: train loss %.4f, validation accuracy %.4f", epoch, loss, val_accuracy)
        if best_state is None or val_accuracy > history[best_epoch - 1]:
            best_epoch = epoch
            best_state = {name: tensor.detach().cpu().clone() for name, tensor in encoder.model.state_dict().items()}
    encoder.model.load_state_dict(best_state)
    logger.info("kept epoch %d (validation accuracy %.4f)", best_epoch, history[best_epoch - 1])
    return best_epoch, history


def measure_timings(encoder: EncoderClassifier, texts: list[str], config: BaselineConfig) -> list[TimingReport]:
    """Time inference at batch sizes 1 and 32 after a warm-up; batch size 1 times each text separately."""
    warm = texts[: max(TIMED_BATCH_SIZES)]
    predict_batches(encoder, warm, max(TIMED_BATCH_SIZES), config.max_length, "warm-up")
    predict_batches(encoder, warm[:4], 1, config.max_length, "warm-up")

    reports = []
    for batch_size in TIMED_BATCH_SIZES:
        sample = texts if batch_size > 1 or config.latency_examples is None else texts[: config.latency_examples]
        _, batch_seconds = predict_batches(encoder, sample, batch_size, config.max_length, f"timing batch size {batch_size}")
        total = Timing(float(np.sum(batch_seconds)), len(sample))
        reports.append(
            TimingReport(
                batch_size=batch_size,
                examples=len(sample),
                seconds=total.seconds,
                ms_per_example=total.ms_per_example,
                examples_per_second=total.examples_per_second,
                median_batch_ms=1000.0 * float(np.median(batch_seconds)),
            )
        )
        logger.info("batch size %d: %.2f ms per example, %.1f examples/s", batch_size, total.ms_per_example, total.examples_per_second)
    return reports


def machine_info(device: str) -> dict:
    import transformers

    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None,
    }


def checkpoint_source(run: RunDir, config: BaselineConfig, splits: DatasetSplits) -> str:
    """Pick what --eval-only evaluates: this run's fine-tuned save when present, else the model itself."""
    saved = baseline_dir(run, config.model)
    if saved.is_dir():
        metadata = load_training_metadata(saved) or {}
        trained_on = metadata.get("dataset_fingerprint")
        if trained_on is not None and trained_on != splits.fingerprint():
            raise ValueError(
                f"{saved} was fine-tuned on dataset {metadata.get('dataset')!r} with other splits (fingerprint {trained_on[:12]}), "
                f"not this run's {splits.name!r} (fingerprint {splits.fingerprint()[:12]}); its test accuracy would not be comparable. "
                "Fine-tune again without --eval-only"
            )
        return str(saved)
    source = resolve_encoder_source(config.model)
    if not is_sequence_classifier(source, config.trust_remote_code):
        raise ValueError(
            f"--eval-only: {config.model!r} is not a fine-tuned sequence classifier (its config names no *ForSequenceClassification "
            f"architecture) and {saved} does not exist; run without --eval-only to fine-tune it first"
        )
    return config.model


def baseline_dir(run: RunDir, model: str) -> Path:
    return run.root / "baselines" / safe_model_name(model)


def run_baseline(run: RunDir, config: BaselineConfig) -> BaselineResult:
    """Fine-tune (or with eval_only evaluate) an encoder classifier; write baselines/<name>/ and baselines/<name>.json."""
    checks = [("epochs", config.epochs), ("batch_size", config.batch_size), ("max_length", config.max_length), ("lr", config.lr)]
    if config.latency_examples is not None:
        checks.append(("latency_examples", config.latency_examples))
    for name, value in checks:
        if not value > 0:
            raise ValueError(f"{name}={value} is invalid; pass a positive number")
    label_map = parse_label_map(config.label_map)
    settings = resolve_data_settings(run, config)
    splits = load_splits(settings["dataset"], limit=settings["limit"], seed=settings["seed"], text_column=settings["text_column"], label_column=settings["label_column"])
    torch.manual_seed(settings["seed"])

    if config.eval_only:
        source = checkpoint_source(run, config, splits)
        encoder = load_encoder_classifier(source, device=config.device, trust_remote_code=config.trust_remote_code)
        output_to_label = output_to_dataset_labels(encoder.output_labels, splits.label_names, label_map)
        best_epoch, history = None, []
        validation_accuracy = evaluate(encoder, splits.validation, config, output_to_label, "validation")
    else:
        if label_map is not None:
            raise ValueError("--label-map applies only with --eval-only; fine-tuning sets the classifier's labels to the dataset's")
        # NOTE: a checkpoint that already has a head of K outputs keeps it, relabelled by position with the
        # dataset's names, so a head trained on other labels starts fine-tuning from an arbitrary assignment.
        encoder = load_encoder_classifier(config.model, label_names=splits.label_names, device=config.device, trust_remote_code=config.trust_remote_code)
        output_to_label = list(range(len(splits.label_names)))
        best_epoch, history = fine_tune(encoder, splits, config, settings["seed"])
        validation_accuracy = history[best_epoch - 1]
        metadata = {"base_model": config.model, "dataset": splits.name, "dataset_fingerprint": splits.fingerprint(), "label_names": splits.label_names, "best_epoch": best_epoch, "settings": asdict(config)}
        source = str(save_encoder_classifier(encoder, baseline_dir(run, config.model), metadata))

    test_logits, _ = predict_batches(encoder, splits.test.texts, config.batch_size, config.max_length, "test")
    test_accuracy = accuracy(test_logits, splits.test.labels, output_to_label)
    truncated = int((token_counts(encoder, splits.test.texts) > config.max_length).sum())
    if truncated:
        logger.warning("%d of %d test texts are longer than max_length=%d tokens and were truncated", truncated, len(splits.test), config.max_length)
    timings = measure_timings(encoder, splits.test.texts, config)

    output_path = run.root / "baselines" / f"{safe_model_name(config.model)}.json"
    result = BaselineResult(
        model=config.model,
        checkpoint=source,
        dataset=splits.name,
        split_sizes=splits.sizes(),
        test_accuracy=test_accuracy,
        validation_accuracy=validation_accuracy,
        epochs=0 if config.eval_only else config.epochs,
        best_epoch=best_epoch,
        validation_accuracy_per_epoch=history,
        truncated_test_texts=truncated,
        timings=timings,
        machine=machine_info(config.device),
        output_path=str(output_path),
        eval_only=config.eval_only,
        settings={**asdict(config), **settings, "weights_fingerprint": encoder.fingerprint},
    )
    write_json(output_path, asdict(result))
    logger.info("test accuracy %.4f; wrote %s", test_accuracy, output_path)
    return result
