"""MLP gate: a small torch network trained on gate features, scored in numpy."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from gates.learned import LearnedGate, TrainingRows, count_classes, positive_weight
from gates.probs import rowwise_matmul, sigmoid

logger = logging.getLogger(__name__)


def _build_network(num_features: int, hidden_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(num_features, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, 1)
    )


def _held_out_mask(example_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Hold out whole examples, so no example has exits on both sides of the split."""
    examples = np.unique(example_index)
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(examples))))
    held_examples = rng.choice(examples, size=count, replace=False)
    return np.isin(example_index, held_examples)


class MLPGate(LearnedGate):
    """One hidden layer MLP (ReLU, dropout) with a sigmoid output, trained with AdamW.

    shared=True trains one network over all exits (depth is one of the
    features); shared=False trains one network per exit. Positive labels are
    weighted by n_neg / n_pos (per exit when per-exit). Training stops early
    when the loss on a held-out 10% of the fit examples has not improved for
    `patience` epochs, and the best weights are kept.
    """

    kind = "mlp"

    def __init__(
        self,
        n_components: int = 8,
        trajectory: bool = False,
        shared: bool = True,
        hidden_size: int = 64,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        epochs: int = 200,
        batch_size: int = 256,
        patience: int = 20,
        held_out_fraction: float = 0.1,
    ):
        super().__init__(n_components, trajectory)
        self.shared = shared
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.held_out_fraction = held_out_fraction

    def _param_dict(self) -> dict:
        return {
            **super()._param_dict(),
            "shared": self.shared,
            "hidden_size": self.hidden_size,
            "dropout": self.dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "held_out_fraction": self.held_out_fraction,
        }

    def _fit_model(self, rows: TrainingRows, inputs: np.ndarray, seed: int) -> None:
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must lie in (0, 1), got {self.held_out_fraction!r}")
        held_out = _held_out_mask(rows.example_index, self.held_out_fraction, seed)
        groups = [np.ones(len(rows.labels), dtype=bool)] if self.shared else [
            rows.exit_index == e for e in range(len(self.exits_) - 1)
        ]
        self.networks_ = []
        for group_index, group in enumerate(groups):
            fit_rows, held_rows = group & ~held_out, group & held_out
            negatives, positives = count_classes(rows.labels[fit_rows])
            if not self.shared and (negatives == 0 or positives == 0):
                # One class at this exit: a network would learn a constant anyway.
                constant = 1.0 if negatives == 0 else 0.0
                logger.warning("mlp gate: exit %d has only %s labels, so it scores %.0f", group_index,
                               "positive" if negatives == 0 else "negative", constant)
                self.networks_.append({"constant": np.array([constant])})
                continue
            where = "over all exits" if self.shared else f"at exit {group_index}"
            weight = positive_weight(rows.labels[fit_rows], where)
            self.networks_.append(
                self._train_network(inputs, rows.labels, fit_rows, held_rows, weight, seed + group_index)
            )

    def _train_network(self, inputs, labels, fit_rows, held_rows, pos_weight: float, seed: int) -> dict:
        """Train one network and return its weights as float32 numpy arrays."""
        # A 64-unit network gains nothing from intra-op threads, and spinning threads
        # slow it down many times over on a busy machine.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._train_network_single_thread(inputs, labels, fit_rows, held_rows, pos_weight, seed)
        finally:
            torch.set_num_threads(threads)

    def _train_network_single_thread(self, inputs, labels, fit_rows, held_rows, pos_weight: float, seed: int) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _build_network(inputs.shape[1], self.hidden_size, self.dropout)
            optimizer = torch.optim.AdamW(network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
            fit_x = torch.as_tensor(inputs[fit_rows], dtype=torch.float32)
            fit_y = torch.as_tensor(labels[fit_rows], dtype=torch.float32)
            if not held_rows.any():
                # Too few examples to hold any out: stop on the fit loss instead.
                held_rows = fit_rows
            held_x = torch.as_tensor(inputs[held_rows], dtype=torch.float32)
            held_y = torch.as_tensor(labels[held_rows], dtype=torch.float32)

            best_loss, best_state, stale = np.inf, None, 0
            for epoch in range(self.epochs):
                self._train_epoch(network, optimizer, loss_fn, fit_x, fit_y)
                network.eval()
                with torch.no_grad():
                    held_loss = float(loss_fn(network(held_x).squeeze(-1), held_y))
                if held_loss < best_loss - 1e-6:
                    best_loss, stale = held_loss, 0
                    best_state = {name: value.clone() for name, value in network.state_dict().items()}
                else:
                    stale += 1
                if stale >= self.patience:
                    break
            logger.info("mlp gate stopped after %d epochs, held-out loss %.4f", epoch + 1, best_loss)
            network.load_state_dict(best_state)
        return {name: value.detach().numpy().astype(np.float32) for name, value in network.state_dict().items()}

    def _train_epoch(self, network, optimizer, loss_fn, fit_x, fit_y) -> None:
        network.train()
        order = torch.randperm(len(fit_y))
        for start in range(0, len(fit_y), self.batch_size):
            batch = order[start : start + self.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(network(fit_x[batch]).squeeze(-1), fit_y[batch])
            loss.backward()
            optimizer.step()

    def _predict(self, exit_index: int, inputs: np.ndarray) -> np.ndarray:
        weights = self.networks_[0 if self.shared else exit_index]
        if "constant" in weights:
            return np.full(inputs.shape[0], float(weights["constant"][0]))
        # Same layers as _build_network; dropout is off at inference.
        hidden = np.maximum(rowwise_matmul(inputs, weights["0.weight"]) + weights["0.bias"], 0.0)
        logits = rowwise_matmul(hidden, weights["3.weight"])[:, 0] + weights["3.bias"][0]
        return sigmoid(logits)

    def _model_cost_flops(self) -> int:
        num_features = self.featurizer_.num_features_
        return 2 * (num_features * self.hidden_size + self.hidden_size)

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = self._base_arrays()
        for index, weights in enumerate(self.networks_):
            for name, value in weights.items():
                arrays[f"mlp.{index}.{name}"] = value
        return arrays

    def _config(self) -> dict:
        return {"num_networks": len(self.networks_)}

    def _restore(self, config, arrays, directory, name) -> None:
        self._restore_base(arrays)
        self.networks_ = []
        for index in range(int(config["num_networks"])):
            prefix = f"mlp.{index}."
            self.networks_.append(
                {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
            )
