"""Fill a feature cache by running a backbone over a split, chunk by chunk.

Rows of a split are stored sorted by token length (`order` maps each cache row
back to the split's example index), so every batch contains texts of similar
length and padding costs little. A chunk is written, then marked done, on a
background thread while the next chunk runs, so the write is hidden behind
compute; a killed run resumes from the first chunk not marked done.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from backbone.heads import ExitHeads
from backbone.loading import Backbone
from backbone.runner import LayerRunner, encode, token_lengths

logger = logging.getLogger(__name__)


@dataclass
class ExtractStats:
    """Counts from one split's extraction."""

    split: str
    examples: int
    chunks_written: int
    truncated: int


def length_order(backbone: Backbone, texts: list[str]) -> np.ndarray:
    """Return example indices sorted by token length (stable, so ties keep split order)."""
    return np.argsort(np.asarray(token_lengths(backbone, texts)), kind="stable").astype(np.int64)


def token_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> list[slice]:
    """Cut consecutive length-sorted rows into batches bounded by count and padded tokens."""
    batches, start = [], 0
    n = len(lengths)
    while start < n:
        stop = start + 1
        while stop < n and stop - start < batch_size:
            # Padded tokens of a right-padded batch = rows * longest row.
            if max_batch_tokens and (stop + 1 - start) * int(lengths[start : stop + 1].max()) > max_batch_tokens:
                break
            stop += 1
        batches.append(slice(start, stop))
        start = stop
    return batches


@torch.no_grad()
def pooled_exits(runner: LayerRunner, texts: list[str], exits: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run texts through the exits; return `(B, E, D)` pooled states, `(B,)` lengths, truncated count."""
    encoded = encode(runner.backbone, texts)
    state = runner.start(encoded)
    pooled = []
    for layer in exits:
        runner.advance(state, layer)
        pooled.append(runner.pooled(state))
    return torch.stack(pooled, dim=1), encoded.lengths, encoded.truncated


def prepare_split(cache, split: str, texts: list[str], backbone: Backbone, *, chunk_size: int = 256, sort_by_length: bool = True) -> np.ndarray:
    """Create a split's arrays (or check the existing ones) and return its row order."""
    order = length_order(backbone, texts) if sort_by_length else np.arange(len(texts), dtype=np.int64)
    cache.create_split(split, len(texts), len(cache.meta.label_names), chunk_size=chunk_size, order=order)
    return order


def extract_split(
    cache,
    split: str,
    texts: list[str],
    labels: np.ndarray,
    backbone: Backbone,
    exits: list[int],
    *,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    chunk_size: int = 256,
    shard_index: int = 0,
    num_shards: int = 1,
    sort_by_length: bool = True,
) -> ExtractStats:
    """Write the pooled states of one split; `fill_logits` adds head logits afterwards.

    `sort_by_length=False` keeps the split's own order, which pads more; it exists
    so benchmarks can measure what bucketing saves.
    """
    order = prepare_split(cache, split, texts, backbone, chunk_size=chunk_size, sort_by_length=sort_by_length)
    pending = cache.pending_chunks(split, shard_index=shard_index, num_shards=num_shards)
    runner = LayerRunner(backbone)
    sorted_labels = np.asarray(labels, dtype=np.int64)[order]
    lengths = np.asarray(token_lengths(backbone, [texts[i] for i in order]))
    truncated = 0

    with ThreadPoolExecutor(max_workers=1) as writer:
        write: Future | None = None
        for start, stop in tqdm(pending, desc=f"extract {split}", unit="chunk"):
            hidden_parts, length_parts = [], []
            for rows in token_batches(lengths[start:stop], batch_size, max_batch_tokens):
                ids = order[start + rows.start : start + rows.stop]
                pooled, token_counts, cut = pooled_exits(runner, [texts[i] for i in ids], exits)
                truncated += cut
                hidden_parts.append(pooled.float().cpu().numpy())
                length_parts.append(token_counts.cpu().numpy())

            # Wait for the previous chunk's write before queueing this one, so at most
            # one chunk is in flight and errors surface at the next chunk.
            if write is not None:
                write.result()
            write = writer.submit(
                cache.write_chunk,
                split,
                start,
                np.concatenate(hidden_parts),
                np.concatenate(length_parts).astype(np.int32),
                sorted_labels[start:stop],
            )
        if write is not None:
            write.result()

    if truncated:
        logger.warning("%s: %d texts were longer than %d tokens and were truncated", split, truncated, backbone.max_length)
    return ExtractStats(split, len(texts), len(pending), truncated)


def fill_logits(cache, split: str, heads: ExitHeads) -> None:
    """Compute head logits from a split's cached pooled states, without running the model."""
    features = cache.read(split, require_logits=False)
    with torch.no_grad():
        logits = heads(torch.from_numpy(features.hidden)).numpy()  # (N, E, D) -> (N, E, K)
    cache.write_logits(split, logits.astype(np.float32), heads.fingerprint())
