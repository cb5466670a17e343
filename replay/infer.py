"""Real early exit: stop each example's forward pass at the exit its gate picks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from backbone.heads import ExitHeads
from backbone.loading import Backbone
from backbone.runner import LayerRunner, encode, token_lengths
from features.extract import token_batches
from gates import select_rows

from .scheduler import RefillScheduler, exit_step
from .timing import Timing, timed

SCHEDULES = ("refill", "shrink")

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-text results in input order."""

    labels: np.ndarray  # (N,) predicted class index
    probabilities: np.ndarray  # (N,) softmax probability of the predicted class
    exit_index: np.ndarray  # (N,) index into exits
    exit_layer: np.ndarray  # (N,) layers run
    truncated: int = 0


@dataclass
class InferOptions:
    """Batching of real inference."""

    batch_size: int = 32
    max_batch_tokens: int | None = None
    sort_by_length: bool = True
    schedule: str = "refill"  # "refill": refill batches between segments; "shrink": rows leave, batch shrinks


def batch_order(backbone: Backbone, texts: list[str], options: InferOptions) -> tuple[np.ndarray, list[slice], np.ndarray]:
    """Return the processing order of texts, the batches over that order, and token counts in input order."""
    lengths = np.asarray(token_lengths(backbone, texts))
    order = np.argsort(lengths, kind="stable") if options.sort_by_length else np.arange(len(texts))
    return order, token_batches(lengths[order], options.batch_size, options.max_batch_tokens), lengths


@torch.no_grad()
def early_exit_batch(runner: LayerRunner, heads: ExitHeads, gate, texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Run one batch with per-example exits; return `(B, K)` logits at each exit taken, `(B,)` exit index, truncated count.

    After each exit, rows whose gate fired leave the batch and only the rest run
    the next layers. Heads and gate features are computed only for running rows.
    """
    encoded = encode(runner.backbone, texts)
    state = runner.start(encoded)
    B = len(texts)
    alive = np.arange(B)  # row of the original batch for each running row
    gate_state = gate.init_state(B)
    out_logits = np.zeros((B, heads.num_classes), dtype=np.float32)
    out_exit = np.zeros(B, dtype=np.int64)

    for e in range(len(heads.exits)):
        logits, leaving, gate_state = exit_step(runner, heads, gate, state, e, gate_state)
        out_logits[alive[leaving]] = logits[leaving]
        out_exit[alive[leaving]] = e
        if leaving.all():
            break
        staying = ~leaving
        runner.keep(state, torch.from_numpy(staying).to(state.hidden.device))
        gate_state = select_rows(gate_state, staying)
        alive = alive[staying]
    return out_logits, out_exit, encoded.truncated


@torch.no_grad()
def full_depth_batch(runner: LayerRunner, heads: ExitHeads, texts: list[str]) -> tuple[np.ndarray, int]:
    """Run every layer and the last exit's head; return `(B, K)` logits."""
    encoded = encode(runner.backbone, texts)
    state = runner.advance(runner.start(encoded), heads.exits[-1])
    return heads.forward_exit(len(heads.exits) - 1, runner.pooled(state)).float().cpu().numpy(), encoded.truncated


def collect(texts: list[str], order: np.ndarray, batches: list[slice], run_batch, desc: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Run `run_batch` over batches of `order` and scatter results back to input order."""
    logits = None
    exit_index = np.zeros(len(texts), dtype=np.int64)
    truncated = 0
    for rows in tqdm(batches, desc=desc, unit="batch", leave=False):
        ids = order[rows]
        batch_logits, batch_exit, cut = run_batch([texts[i] for i in ids])
        if logits is None:
            logits = np.zeros((len(texts), batch_logits.shape[1]), dtype=np.float32)
        logits[ids] = batch_logits
        exit_index[ids] = batch_exit
        truncated += cut
    return logits, exit_index, truncated


def to_predictions(logits: np.ndarray, exit_index: np.ndarray, exits: list[int], truncated: int) -> Predictions:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    labels = probs.argmax(axis=1)
    return Predictions(labels, probs[np.arange(len(labels)), labels], exit_index, np.asarray(exits)[exit_index], truncated)


def run_early_exit(backbone: Backbone, heads: ExitHeads, gate, texts: list[str], options: InferOptions) -> tuple[Predictions, Timing]:
    """Early-exit inference over `texts`, timed from the first batch to the last."""
    if options.schedule not in SCHEDULES:
        raise ValueError(f"schedule {options.schedule!r} is not one of {', '.join(SCHEDULES)}")
    runner = LayerRunner(backbone)
    with timed(backbone.device, len(texts)) as timing:
        order, batches, lengths = batch_order(backbone, texts, options)
        if options.schedule == "refill":
            scheduler = RefillScheduler(runner, heads, gate, options.batch_size, options.max_batch_tokens)
            logits, exit_index, truncated = scheduler.run(texts, order, lengths)
        else:
            logits, exit_index, truncated = collect(texts, order, batches, lambda b: early_exit_batch(runner, heads, gate, b), "early exit")
    return to_predictions(logits, exit_index, heads.exits, truncated), timing


def run_full_depth(backbone: Backbone, heads: ExitHeads, texts: list[str], options: InferOptions) -> tuple[Predictions, Timing]:
    """Full-depth inference through the same runner, batching and head, timed the same way."""
    runner = LayerRunner(backbone)
    last = len(heads.exits) - 1

    def run_batch(batch):
        logits, cut = full_depth_batch(runner, heads, batch)
        return logits, np.full(len(batch), last), cut

    with timed(backbone.device, len(texts)) as timing:
        order, batches, _ = batch_order(backbone, texts, options)
        logits, exit_index, truncated = collect(texts, order, batches, run_batch, "full depth")
    return to_predictions(logits, exit_index, heads.exits, truncated), timing


def merge_predictions(parts: list[tuple[np.ndarray, Predictions]], n: int) -> Predictions:
    """Scatter the predictions of disjoint blocks `(input positions, predictions)` back into one input-ordered result."""
    labels = np.zeros(n, dtype=np.int64)
    probabilities = np.zeros(n, dtype=np.float32)
    exit_index = np.zeros(n, dtype=np.int64)
    exit_layer = np.zeros(n, dtype=np.int64)
    for ids, part in parts:
        labels[ids], probabilities[ids] = part.labels, part.probabilities
        exit_index[ids], exit_layer[ids] = part.exit_index, part.exit_layer
    return Predictions(labels, probabilities, exit_index, exit_layer, sum(part.truncated for _, part in parts))


def compare_in_blocks(backbone: Backbone, heads: ExitHeads, gate, texts: list[str], options: InferOptions, block_texts: int = 256):
    """Time early exit and full depth block by block, alternating, on the same texts.

    Alternating blocks of a few hundred texts puts both paths under the same
    machine load, so a burst of other work slows both rather than one. Blocks
    follow the length order, so each still batches texts of similar length.
    Returns early-exit predictions and timing, then full-depth ones.
    """
    lengths = np.asarray(token_lengths(backbone, texts))
    order = np.argsort(lengths, kind="stable") if options.sort_by_length else np.arange(len(texts))
    early_parts, full_parts = [], []
    early_seconds = full_seconds = 0.0
    for start in range(0, len(texts), block_texts):
        ids = order[start : start + block_texts]
        block = [texts[i] for i in ids]
        early, early_timing = run_early_exit(backbone, heads, gate, block, options)
        full, full_timing = run_full_depth(backbone, heads, block, options)
        early_parts.append((ids, early))
        full_parts.append((ids, full))
        early_seconds += early_timing.seconds
        full_seconds += full_timing.seconds
    n = len(texts)
    return merge_predictions(early_parts, n), Timing(early_seconds, n), merge_predictions(full_parts, n), Timing(full_seconds, n)


def warm_up(backbone: Backbone, heads: ExitHeads, gate, texts: list[str], options: InferOptions) -> None:
    """Run both paths once on a few texts, so one-time costs stay out of the timings."""
    sample = texts[: max(1, min(len(texts), options.batch_size))]
    run_early_exit(backbone, heads, gate, sample, options)
    run_full_depth(backbone, heads, sample, options)
