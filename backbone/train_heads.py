"""Train exit heads on a frozen backbone from cached pooled states."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .heads import ExitHeads

logger = logging.getLogger(__name__)


@dataclass
class HeadTrainingConfig:
    """Optimiser settings for frozen-backbone head training."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0


@dataclass
class HeadTrainingResult:
    """Per-exit validation accuracy of the chosen epoch, and which epoch each exit kept."""

    validation_accuracy: list[float]
    best_epoch: list[int]
    history: list[list[float]] = field(default_factory=list)  # epoch -> per-exit validation accuracy


def exit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy per exit of `(N, E, K)` logits against `(N,)` labels."""
    predictions = logits.argmax(dim=-1)  # (N, E)
    return (predictions == labels[:, None]).float().mean(dim=0).tolist()


def train_frozen_heads(
    heads: ExitHeads,
    train_hidden: np.ndarray,
    train_labels: np.ndarray,
    val_hidden: np.ndarray,
    val_labels: np.ndarray,
    config: HeadTrainingConfig,
) -> HeadTrainingResult:
    """Fit every head on `(N, E, D)` train states; keep each head's best epoch on validation.

    The heads are independent, so one loop over the summed loss trains them all,
    and each head keeps the weights of its own best validation epoch (ties keep
    the earlier epoch). The test split is never seen here.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_train = torch.from_numpy(np.ascontiguousarray(train_hidden, dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    x_val = torch.from_numpy(np.ascontiguousarray(val_hidden, dtype=np.float32))
    y_val = torch.from_numpy(np.asarray(val_labels, dtype=np.int64))
    N, E, _ = x_train.shape

    optimizer = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best_acc = [-1.0] * E
    best_epoch = [0] * E
    best_state = [copy.deepcopy(h.state_dict()) for h in heads.heads]
    history = []

    for epoch in tqdm(range(config.epochs), desc="heads", unit="epoch"):
        heads.train()
        order = torch.randperm(N, generator=generator)
        for start in range(0, N, config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = heads(x_train[rows])  # (b, E, K)
            loss = sum(loss_fn(logits[:, e], y_train[rows]) for e in range(E))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        heads.eval()
        with torch.no_grad():
            accuracy = exit_accuracy(heads(x_val), y_val)
        history.append(accuracy)
        for e in range(E):
            if accuracy[e] > best_acc[e]:
                best_acc[e], best_epoch[e] = accuracy[e], epoch
                best_state[e] = copy.deepcopy(heads.heads[e].state_dict())

    for e in range(E):
        heads.heads[e].load_state_dict(best_state[e])
    heads.eval()
    logger.info("head validation accuracy per exit %s", " ".join(f"{a:.3f}" for a in best_acc))
    return HeadTrainingResult(best_acc, best_epoch, history)
