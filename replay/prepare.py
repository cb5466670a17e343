"""Stage one: fine-tune exit heads (or the whole model) and extract the feature cache."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from backbone.heads import ExitHeads, exits_every, validate_exits
from backbone.loading import Backbone, load_backbone, weights_fingerprint
from data import DatasetSplits, SPLIT_NAMES, default_verbalizers, format_prompt, load_splits
from features import CacheMeta, FeatureCache
from features.extract import extract_split, fill_logits, prepare_split

from .costs import layer_matmul_flops
from .rundir import RunConfig, RunDir

logger = logging.getLogger(__name__)


@dataclass
class ExtractOptions:
    """Batching, sharding and device settings of `extract`."""

    batch_size: int = 32
    max_batch_tokens: int | None = None
    chunk_size: int = 256
    shard_index: int = 0
    num_shards: int = 1
    device: str = "cpu"
    shard_wait_s: float = 600.0


def resolve_config(run: RunDir, requested: RunConfig, explicit: set[str]) -> RunConfig:
    """Merge options with the run's saved config; an explicit option that differs is an error."""
    if not run.config_path.is_file():
        # The stage saves it once the model has validated the exits, so a typo leaves no run.json behind.
        return requested
    saved = run.load_config()
    for name in sorted(explicit):
        if getattr(saved, name) != getattr(requested, name):
            raise ValueError(
                f"--{name.replace('_', '-')} {getattr(requested, name)!r} differs from {getattr(saved, name)!r} "
                f"saved in {run.config_path}; use a new --run-dir for different settings"
            )
    return saved


def load_data(config: RunConfig) -> DatasetSplits:
    splits = load_splits(
        config.dataset,
        limit=config.limit,
        seed=config.seed,
        text_column=config.text_column,
        label_column=config.label_column,
        empty=config.empty,
    )
    if config.prompt is None:
        return splits
    # The prompt is part of the text the model reads, so every stage formats the same way.
    def prompted(split):
        return replace(split, texts=[format_prompt(config.prompt, t) for t in split.texts])

    return replace(splits, train=prompted(splits.train), validation=prompted(splits.validation), test=prompted(splits.test))


def load_run_backbone(run: RunDir, config: RunConfig, device: str = "cpu") -> Backbone:
    """Load the fine-tuned model of a `--train-backbone` run, else the configured model."""
    if config.train_backbone:
        source = str(run.require(run.model_dir, "finetune --train-backbone"))
    else:
        source = config.model
    backbone = load_backbone(source, device=device, trust_remote_code=config.trust_remote_code, max_length=config.max_length)
    if config.exits is None:
        config.exits = exits_every(config.exit_every or 3, backbone.num_layers)
    validate_exits(config.exits, backbone.num_layers)
    return backbone


def open_cache(run: RunDir, config: RunConfig, backbone: Backbone, splits: DatasetSplits) -> FeatureCache:
    meta = CacheMeta(
        model_id=config.model,
        model_fingerprint=backbone.fingerprint,
        num_layers=backbone.num_layers,
        hidden_size=backbone.hidden_size,
        exits=list(config.exits),
        label_names=list(splits.label_names),
        dataset=config.dataset,
        dataset_fingerprint=splits.fingerprint(),
        logits_kind="logit-lens" if config.zero_shot else "heads",
        extra={
            "prompt": config.prompt,
            "max_length": backbone.max_length,
            "limit": config.limit,
            "seed": config.seed,
            "layer_matmul_flops": layer_matmul_flops(backbone.layers[0]),
        },
    )
    return FeatureCache.create(run.cache_path(config.cache_format), meta, format=config.cache_format)


def extract_hidden(cache: FeatureCache, splits: DatasetSplits, backbone: Backbone, exits: list[int], names, options: ExtractOptions) -> None:
    for name in names:
        split = splits.split(name)
        extract_split(
            cache,
            name,
            split.texts,
            split.labels,
            backbone,
            exits,
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            chunk_size=options.chunk_size,
            shard_index=options.shard_index,
            num_shards=options.num_shards,
        )


def wait_for_splits(path: Path, names, timeout_s: float) -> None:
    """Wait until shard 0 has created the cache and every split in it (Zarr shards only)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with FeatureCache.open(path) as cache:
                    if all(name in cache.splits() for name in names):
                        return
            except (ValueError, OSError, KeyError):
                pass  # shard 0 is still creating the store
        time.sleep(2.0)
    raise TimeoutError(f"shard 0 did not create {path} with splits {list(names)} within {timeout_s:.0f} s; start shard 0 first")


def run_extract(run: RunDir, config: RunConfig, options: ExtractOptions, *, resume: bool = False) -> FeatureCache:
    """Write the cache for every split; with frozen heads, reuse stored states and only add logits.

    A cache with unfinished chunks (an interrupted run) is only continued with
    `resume=True`, so a user never mixes two runs' chunks by accident.
    """
    splits = load_data(config)
    backbone = load_run_backbone(run, config, options.device)
    run.save_config(config)

    if config.zero_shot:
        from backbone.logit_lens import logit_lens_heads

        verbalizers = config.verbalizers or default_verbalizers(config.dataset, splits.label_names)
        heads = logit_lens_heads(backbone, config.exits, verbalizers, list(splits.label_names))
        heads.save_pretrained(run.heads_dir)
    else:
        heads = ExitHeads.from_pretrained(run.require(run.heads_dir, "finetune"))
        if heads.exits != config.exits:
            raise ValueError(f"heads in {run.heads_dir} have exits {heads.exits}, the run has {config.exits}; rerun finetune")

    cache_path = run.cache_path(config.cache_format)
    if options.shard_index > 0:
        wait_for_splits(cache_path, SPLIT_NAMES, options.shard_wait_s)
    cache = open_cache(run, config, backbone, splits)
    if options.shard_index == 0:
        # Shard 0 creates every split before any chunk is written, so other shards never create arrays.
        for name in SPLIT_NAMES:
            prepare_split(cache, name, splits.split(name).texts, backbone, chunk_size=options.chunk_size)
    missing = [name for name in SPLIT_NAMES if name not in cache.splits() or not cache.is_complete(name)]
    started = [name for name in missing if name in cache.splits() and len(cache.pending_chunks(name)) < cache.num_chunks(name)]
    if started and not resume and options.num_shards == 1:
        raise RuntimeError(
            f"{cache.path} has partly written splits {started} from an interrupted run; "
            f"pass --resume to continue them, or delete {cache.path} to start over"
        )
    extract_hidden(cache, splits, backbone, config.exits, missing, options)
    if options.num_shards > 1:
        logger.info("shard %d of %d done; logits are filled once every shard has finished", options.shard_index, options.num_shards)
        return cache

    for name in SPLIT_NAMES:
        if not cache.is_complete(name):
            raise RuntimeError(f"split {name!r} is still incomplete after extraction; rerun `python cli.py extract --run-dir {run.root}`")
        if cache.logits_fingerprint(name) != heads.fingerprint():
            fill_logits(cache, name, heads)
    return cache


def run_finetune(run: RunDir, config: RunConfig, options: ExtractOptions, training, *, resume: bool = False) -> dict:
    """Train exit heads on the frozen backbone from the cache, or the whole model with heads.

    Joint training saves a checkpoint after every epoch in `<run>/checkpoint`;
    `resume=True` continues from it. Frozen-head training always continues an
    interrupted extraction of train and validation.
    """
    splits = load_data(config)
    # The model being fine-tuned is the configured one, not an earlier run's output.
    base_config = replace(config, train_backbone=False)
    backbone = load_run_backbone(run, base_config, options.device)
    config.exits = base_config.exits
    run.save_config(config)
    # Seed the heads' initial weights, so a rerun (or a resumed run) trains the same heads.
    torch.manual_seed(config.seed)
    heads = ExitHeads(
        config.exits,
        backbone.hidden_size,
        len(splits.label_names),
        meta={"model_id": config.model, "label_names": list(splits.label_names), "dataset": config.dataset},
    )

    if config.train_backbone:
        from backbone.finetune import train_jointly

        warn_truncated(backbone, splits, ("train", "validation"))
        result = train_jointly(
            backbone, heads, splits.train.texts, splits.train.labels, splits.validation.texts, splits.validation.labels, training,
            checkpoint_dir=run.checkpoint_dir, resume=resume,
        )
        save_model(backbone, run.model_dir)
        heads.meta["model_fingerprint"] = backbone.fingerprint
    else:
        from backbone.train_heads import train_frozen_heads

        # States of train and validation come from the cache, extracted first where missing.
        cache = open_cache(run, config, backbone, splits)
        pending = [name for name in ("train", "validation") if name not in cache.splits() or not cache.is_complete(name)]
        extract_hidden(cache, splits, backbone, config.exits, pending, options)
        train = cache.read("train", require_logits=False)
        validation = cache.read("validation", require_logits=False)
        result = train_frozen_heads(heads, train.hidden, train.labels, validation.hidden, validation.labels, training)
        heads.meta["model_fingerprint"] = backbone.fingerprint

    heads.save_pretrained(run.heads_dir)
    summary = {"exits": config.exits, "validation_accuracy": result.validation_accuracy, "best_epoch": result.best_epoch}
    logger.info("saved heads to %s", run.heads_dir)
    return summary


def warn_truncated(backbone: Backbone, splits: DatasetSplits, names) -> None:
    """Log a warning with the number of texts longer than the model's max length."""
    for name in names:
        ids = backbone.tokenizer(splits.split(name).texts, add_special_tokens=True, truncation=False)["input_ids"]
        truncated = sum(len(seq) > backbone.max_length for seq in ids)
        if truncated:
            logger.warning("%s: %d texts were longer than %d tokens and were truncated", name, truncated, backbone.max_length)


def save_model(backbone: Backbone, directory: Path) -> None:
    """Save the fine-tuned model and tokenizer next to a temporary name, then swap it in."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    backbone.model.save_pretrained(tmp)
    backbone.tokenizer.save_pretrained(tmp)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    backbone.fingerprint = weights_fingerprint(backbone.model)
