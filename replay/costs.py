"""Cost of an exit policy, reported four ways that are never confused with one another.

- average exit layer: mean number of decoder layers run per example;
- layer speedup: `L / average exit layer`;
- estimated FLOPs: decoder layers, final norm, heads and gates actually run, per example;
- measured wall-clock speedup: only from timing real runs (see `replay.timing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCost:
    """Per-token and per-call FLOP counts of one model, recorded in the cache at extraction."""

    num_layers: int  # L
    hidden_size: int  # D
    num_classes: int  # K
    layer_matmul_flops: int  # 2 * weights of one decoder layer's matrices, per token

    def layer_flops(self, tokens: np.ndarray) -> np.ndarray:
        """FLOPs of one decoder layer on texts of `tokens` tokens: projections plus attention scores."""
        tokens = tokens.astype(np.float64)
        # QK^T and attention-weighted V: 2 * T * T * D each, counting multiply and add.
        return tokens * self.layer_matmul_flops + 4.0 * tokens * tokens * self.hidden_size

    def exit_overhead_flops(self, gate_flops: int) -> int:
        """Final norm on one pooled state, one head, and the gate, at one exit."""
        return 5 * self.hidden_size + 2 * self.hidden_size * self.num_classes + gate_flops


def estimated_flops(cost: ModelCost, exits: list[int], exit_index: np.ndarray, lengths: np.ndarray, gate_flops: int) -> np.ndarray:
    """Estimated FLOPs per example `(N,)` when example n leaves at exit `exit_index[n]`."""
    layers_run = np.asarray(exits)[exit_index]
    exits_visited = exit_index + 1
    return layers_run * cost.layer_flops(lengths) + exits_visited * cost.exit_overhead_flops(gate_flops)


def full_depth_flops(cost: ModelCost, lengths: np.ndarray) -> np.ndarray:
    """Estimated FLOPs per example of plain full-depth inference with one head and no gate."""
    return cost.num_layers * cost.layer_flops(lengths) + cost.exit_overhead_flops(0)


def layer_matmul_flops(layer) -> int:
    """Count 2 * weights of the matrices in one decoder layer (a `torch.nn.Module`)."""
    return int(sum(2 * p.numel() for p in layer.parameters() if p.dim() == 2))
