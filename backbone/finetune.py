"""Joint fine-tuning of a decoder and its exit heads with per-exit loss weights."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointState, check_settings, has_checkpoint, load_checkpoint, load_weights, read_state, save_checkpoint
from .heads import ExitHeads
from .loading import Backbone
from .runner import LayerRunner, encode
from .train_heads import exit_accuracy

logger = logging.getLogger(__name__)


@dataclass
class JointTrainingConfig:
    """Optimiser settings for `finetune --train-backbone`."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    exit_weights: list[float] | None = None  # None: weights proportional to exit depth
    seed: int = 0


@dataclass
class JointTrainingResult:
    """Validation accuracy per exit of the kept epoch, and the epoch that was kept."""

    validation_accuracy: list[float]
    best_epoch: int
    history: list[list[float]] = field(default_factory=list)


def default_exit_weights(exits: list[int]) -> list[float]:
    """Weight each exit's loss by its depth, so deep exits are not sacrificed to shallow ones."""
    return [e / exits[-1] for e in exits]


def length_batches(lengths: list[int], batch_size: int, generator: np.random.Generator | None) -> list[np.ndarray]:
    """Group indices of similar length into batches; shuffle batch order when a generator is given."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if generator is not None:
        generator.shuffle(batches)
    return batches


def exit_logits(runner: LayerRunner, heads: ExitHeads, texts: list[str], *, grad: bool) -> torch.Tensor:
    """Run the backbone over `texts` and return `(B, E, K)` logits of every exit."""
    encoded = encode(runner.backbone, texts)
    state = runner.start_with_grad(encoded) if grad else runner.start(encoded)
    logits = []
    for e, layer in enumerate(heads.exits):
        state = runner.advance_with_grad(state, layer) if grad else runner.advance(state, layer)
        logits.append(heads.forward_exit(e, runner.pooled(state)))
    return torch.stack(logits, dim=1)


@torch.no_grad()
def evaluate_exits(runner: LayerRunner, heads: ExitHeads, texts: list[str], labels: np.ndarray, batch_size: int) -> list[float]:
    """Accuracy per exit over `texts`."""
    runner.backbone.model.eval()
    heads.eval()
    lengths = [len(t) for t in texts]
    outputs = np.zeros((len(texts), len(heads.exits), heads.num_classes), dtype=np.float32)
    for rows in length_batches(lengths, batch_size, None):
        outputs[rows] = exit_logits(runner, heads, [texts[i] for i in rows], grad=False).cpu().numpy()
    return exit_accuracy(torch.from_numpy(outputs), torch.tensor(np.asarray(labels), dtype=torch.long))


def train_jointly(
    backbone: Backbone,
    heads: ExitHeads,
    train_texts: list[str],
    train_labels: np.ndarray,
    val_texts: list[str],
    val_labels: np.ndarray,
    config: JointTrainingConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> JointTrainingResult:
    """Fine-tune backbone and heads together; keep the epoch with the best mean validation accuracy.

    The loss is the weighted sum of per-exit cross-entropies. Only validation
    chooses the epoch; the test split is never seen here. With `checkpoint_dir`,
    every finished epoch is saved there, and `resume=True` continues after the
    last saved epoch with the saved optimizer and RNG state.
    """
    weights = config.exit_weights or default_exit_weights(heads.exits)
    if len(weights) != len(heads.exits):
        raise ValueError(f"--exit-weights has {len(weights)} values but there are {len(heads.exits)} exits; give one weight per exit")
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    runner = LayerRunner(backbone)
    device = backbone.device
    heads.to(device)
    labels = torch.tensor(np.asarray(train_labels), dtype=torch.long)  # a copy: cached label arrays are read-only

    optimizer = torch.optim.AdamW(
        [
            {"params": backbone.model.parameters(), "lr": config.lr},
            {"params": heads.parameters(), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss()
    lengths = [len(t) for t in train_texts]
    best = (-1.0, 0, None, None)
    history = []
    settings = training_settings(backbone, heads, config, len(train_texts), weights)
    start_epoch = 0
    if checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        if not resume:
            done = read_state(checkpoint_dir).epochs_done
            raise RuntimeError(
                f"{checkpoint_dir} holds a checkpoint after epoch {done}; pass --resume to continue from it, "
                f"or delete {checkpoint_dir} to train from the start"
            )
        state = load_checkpoint(checkpoint_dir, backbone.model, heads, optimizer)
        check_settings(checkpoint_dir, state, settings)
        generator.bit_generator.state = state.shuffle_rng
        start_epoch, history = state.epochs_done, state.history
        # The best epoch's weights stay on disk in best/ until training ends.
        best = (state.best_mean, state.best_epoch, None, None)
        logger.info("resuming joint training from %s after epoch %d", checkpoint_dir, start_epoch)

    for epoch in range(start_epoch, config.epochs):
        backbone.model.train()
        heads.train()
        batches = length_batches(lengths, config.batch_size, generator)
        for rows in tqdm(batches, desc=f"fine-tune epoch {epoch + 1}/{config.epochs}", unit="batch"):
            logits = exit_logits(runner, heads, [train_texts[i] for i in rows], grad=True)  # (B, E, K)
            target = labels[rows].to(device)
            loss = sum(w * loss_fn(logits[:, e], target) for e, w in enumerate(weights))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        accuracy = evaluate_exits(runner, heads, val_texts, val_labels, config.batch_size * 2)
        history.append(accuracy)
        mean = float(np.mean(accuracy))
        logger.info("epoch %d validation accuracy per exit %s (mean %.4f)", epoch + 1, " ".join(f"{a:.3f}" for a in accuracy), mean)
        improved = mean > best[0]
        if improved:
            best = (mean, epoch, copy.deepcopy(backbone.model.state_dict()), copy.deepcopy(heads.state_dict()))
        if checkpoint_dir is not None:
            state = CheckpointState(epoch + 1, best[1], best[0], history, generator.bit_generator.state, settings)
            save_checkpoint(checkpoint_dir, backbone.model, heads, optimizer, state, improved=improved)

    _, best_epoch, model_state, head_state = best
    if model_state is None:
        load_weights(Path(checkpoint_dir) / "best", backbone.model, heads)
    else:
        backbone.model.load_state_dict(model_state)
        heads.load_state_dict(head_state)
    backbone.model.eval()
    heads.eval()
    return JointTrainingResult(history[best_epoch], best_epoch, history)


def training_settings(backbone: Backbone, heads: ExitHeads, config: JointTrainingConfig, train_examples: int, weights: list[float]) -> dict:
    """Settings a checkpoint must share with the training that resumes it (epochs may differ)."""
    return {
        "model_fingerprint": backbone.fingerprint,
        "exits": list(heads.exits),
        "num_classes": heads.num_classes,
        "train_examples": train_examples,
        "lr": config.lr,
        "head_lr": config.head_lr,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "exit_weights": [float(w) for w in weights],
    }
