"""Refill scheduling: keep batches full while examples leave at different exits.

The exits cut the decoder into segments (layers 1..exits[0], exits[0]+1..exits[1],
...). Each segment has a pool of examples waiting to run it, stored unpadded at
the layer where they stopped. The scheduler runs the deepest pool that can fill
a batch, else starts new texts from the length-sorted queue, else drains the
deepest pool that has anyone. An example that does not exit moves to the next
segment's pool, so a batch never carries rows that already exited and rarely
runs short of rows while texts are still waiting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from tqdm.auto import tqdm

from backbone.heads import ExitHeads
from backbone.runner import LayerRunner, encode
from gates import select_rows


@dataclass
class Waiting:
    """Examples paused at a segment boundary, in the order they arrived."""

    index: deque  # input position of each example
    hidden: deque  # (T_i, D) tensor of each example, unpadded
    gate_state: deque  # gate state of each example, a dict of arrays with leading dim 1


def exit_step(runner: LayerRunner, heads: ExitHeads, gate, state, exit_index: int, gate_state: dict):
    """Run the layers up to one exit, then its head and gate on the running rows.

    Returns `(B, K)` logits, a `(B,)` mask of rows that exit here (all rows at
    the last exit) and the updated gate state. Both batch schedules call this,
    so they take the same exit decisions.
    """
    runner.advance(state, heads.exits[exit_index])
    pooled = runner.pooled(state)  # (B, D)
    logits = heads.forward_exit(exit_index, pooled).float().cpu().numpy()  # (B, K)
    scores, gate_state = gate.step(exit_index, logits, pooled.float().cpu().numpy(), gate_state)
    if exit_index == len(heads.exits) - 1:
        leaving = np.ones(len(logits), dtype=bool)
    else:
        leaving = scores >= gate.threshold_
    return logits, leaving, gate_state


def concat_states(states: list[dict]) -> dict:
    return {name: np.concatenate([s[name] for s in states]) for name in states[0]}


def split_state(state: dict, rows: int) -> list[dict]:
    return [{name: value[i : i + 1] for name, value in state.items()} for i in range(rows)]


class RefillScheduler:
    """Early-exit inference over many texts with batches refilled between segments."""

    def __init__(self, runner: LayerRunner, heads: ExitHeads, gate, batch_size: int, max_batch_tokens: int | None = None):
        self.runner = runner
        self.heads = heads
        self.gate = gate
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pools = [Waiting(deque(), deque(), deque()) for _ in heads.exits]

    def batch_rows(self, lengths) -> int:
        """Count how many of the next rows (with these token counts) fit one batch."""
        rows, longest = 0, 0
        for length in lengths:
            longest = max(longest, int(length))
            if rows >= self.batch_size or (self.max_batch_tokens and (rows + 1) * longest > self.max_batch_tokens and rows):
                break
            rows += 1
        return rows

    @torch.no_grad()
    def run(self, texts: list[str], order: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Classify `texts` taken in `order`; return `(N, K)` logits at each exit taken, `(N,)` exit index, truncated count."""
        N = len(texts)
        logits_out = np.zeros((N, self.heads.num_classes), dtype=np.float32)
        exit_out = np.zeros(N, dtype=np.int64)
        queue = deque(order.tolist())
        truncated = 0
        self.progress = tqdm(total=N, desc="early exit", unit="text", leave=False)

        while True:
            segment = self.next_segment(bool(queue))
            if segment is None:
                break
            if segment == 0 and not self.pools[0].index:
                take = self.batch_rows(lengths[i] for i in islice(queue, self.batch_size))
                ids = [queue.popleft() for _ in range(take)]
                encoded = encode(self.runner.backbone, [texts[i] for i in ids])
                truncated += encoded.truncated
                state = self.runner.start(encoded)
                gate_state = self.gate.init_state(len(ids))
            else:
                ids, state, gate_state = self.take_pool(segment)
            self.run_segment(segment, np.asarray(ids), state, gate_state, logits_out, exit_out)
        self.progress.close()
        return logits_out, exit_out, truncated

    def next_segment(self, texts_waiting: bool) -> int | None:
        """Pick the deepest full pool, else new texts (segment 0), else the deepest non-empty pool."""
        for segment in reversed(range(1, len(self.pools))):
            if len(self.pools[segment].index) >= self.batch_size:
                return segment
        if texts_waiting:
            return 0
        for segment in reversed(range(len(self.pools))):
            if self.pools[segment].index:
                return segment
        return None

    def take_pool(self, segment: int):
        """Pop up to one batch of paused examples and pad them into a run state."""
        pool = self.pools[segment]
        take = self.batch_rows(h.shape[0] for h in islice(pool.hidden, self.batch_size))
        ids = [pool.index.popleft() for _ in range(take)]
        hidden = [pool.hidden.popleft() for _ in range(take)]
        gate_state = concat_states([pool.gate_state.popleft() for _ in range(take)])
        layer = self.heads.exits[segment - 1]
        state = self.runner.state_from_rows(hidden, layer)
        return ids, state, gate_state

    def run_segment(self, segment: int, ids: np.ndarray, state, gate_state: dict, logits_out: np.ndarray, exit_out: np.ndarray) -> None:
        """Run one segment and its exit; record exits, pause the rest at the next segment."""
        logits, leaving, gate_state = exit_step(self.runner, self.heads, self.gate, state, segment, gate_state)
        last = segment == len(self.heads.exits) - 1
        logits_out[ids[leaving]] = logits[leaving]
        exit_out[ids[leaving]] = segment
        self.progress.update(int(leaving.sum()))
        if last or leaving.all():
            return

        staying = np.flatnonzero(~leaving)
        pool = self.pools[segment + 1]
        kept_state = select_rows(gate_state, staying)
        for row, single in zip(staying, split_state(kept_state, len(staying))):
            pool.index.append(int(ids[row]))
            pool.hidden.append(state.hidden[row, : int(state.lengths[row])])
            pool.gate_state.append(single)
