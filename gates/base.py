"""The gate contract shared by every kind, and checks on cached arrays."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import NotFittedError

from gates import io

logger = logging.getLogger(__name__)

GATE_KINDS = ("mlp", "xgboost", "logistic", "maxprob", "entropy", "margin", "patience")
LABEL_MODES = ("agreement", "correct")


@dataclass(frozen=True)
class CacheArrays:
    """Checked gate inputs: logits (N, E, K), hidden (N, E, D) or None, labels (N,) or None."""

    logits: np.ndarray
    hidden: np.ndarray | None
    labels: np.ndarray | None
    exits: tuple[int, ...]
    num_layers: int

    @property
    def num_examples(self) -> int:
        return self.logits.shape[0]

    @property
    def num_exits(self) -> int:
        return self.logits.shape[1]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[2]


def check_label_mode(label_mode: str) -> str:
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode {label_mode!r} is not supported. Expected one of {LABEL_MODES}")
    return label_mode


def check_exits(exits, num_layers: int, num_exits: int | None = None) -> tuple[int, ...]:
    """Check that exits are increasing 1-based layer numbers within [1, num_layers]."""
    if int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    exits = tuple(int(layer) for layer in exits)
    if num_exits is not None and len(exits) != num_exits:
        raise ValueError(f"exits {list(exits)} has {len(exits)} entries but the logits have E={num_exits} exits")
    if len(exits) < 2:
        raise ValueError(f"a gate needs at least 2 exits to choose between, got exits {list(exits)}")
    if any(b <= a for a, b in zip(exits, exits[1:])) or exits[0] < 1 or exits[-1] > num_layers:
        raise ValueError(
            f"exits {list(exits)} must be strictly increasing 1-based layer numbers within [1, {num_layers}]"
        )
    return exits


def check_cache_arrays(logits, hidden, labels, *, exits, num_layers) -> CacheArrays:
    """Check shapes and values of cached arrays and return them as float32/int64 numpy arrays."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (N, E, K), got shape {logits.shape}")
    num_examples, num_exits, num_classes = logits.shape
    if num_examples == 0 or num_classes < 2:
        raise ValueError(f"logits of shape {logits.shape} need at least 1 example and 2 classes")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or infinity. Recompute the cache")
    exits = check_exits(exits, num_layers, num_exits)

    if hidden is not None:
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3 or hidden.shape[:2] != (num_examples, num_exits):
            raise ValueError(f"hidden must have shape (N, E, D) = ({num_examples}, {num_exits}, D), got {hidden.shape}")

    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_examples,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers of shape ({num_examples},), got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), found values {labels.min()}..{labels.max()}")
    return CacheArrays(logits, hidden, labels, exits, int(num_layers))


def select_rows(state: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Keep the rows of a gate state given by a boolean mask (B,) or integer indices."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        for name, value in state.items():
            if value.shape[0] != rows.shape[0]:
                raise ValueError(f"mask has {rows.shape[0]} rows but state[{name!r}] has {value.shape[0]}")
    elif not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be a boolean mask or integer indices, got dtype {rows.dtype}")
    return {name: value[rows] for name, value in state.items()}


class Gate:
    """An exit gate: scores how ready each example is to exit at each exit.

    Subclasses set `kind`, store parameters in `__init__` and implement
    `_fit`, `init_state`, `_step`, `_config`/`_arrays` and `_restore`.
    Fitted attributes end with an underscore, as in scikit-learn.
    """

    kind: str = ""
    learned: bool = False

    def _param_dict(self) -> dict:
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{name}={value!r}" for name, value in self._param_dict().items())
        return f"{type(self).__name__}({params})"

    def fit(self, logits, hidden, labels, *, exits, num_layers, label_mode="agreement", seed=0) -> "Gate":
        """Fit the gate on cached arrays. `labels` may be None when label_mode="agreement"."""
        check_label_mode(label_mode)
        cache = check_cache_arrays(logits, hidden, labels, exits=exits, num_layers=num_layers)
        if label_mode == "correct" and cache.labels is None:
            raise ValueError('label_mode="correct" needs gold labels, got labels=None')
        self.exits_ = cache.exits
        self.num_layers_ = cache.num_layers
        self.num_classes_ = cache.num_classes
        self.label_mode_ = label_mode
        self.meta_ = {}
        self._fit(cache, label_mode, int(seed))
        self.cost_flops_per_example_ = int(self._estimate_cost_flops())
        return self

    def _fit(self, cache: CacheArrays, label_mode: str, seed: int) -> None:
        raise NotImplementedError

    def _estimate_cost_flops(self) -> int:
        """Estimate the FLOPs of scoring one example at one exit (an estimate, not a measurement)."""
        raise NotImplementedError

    def check_fitted(self) -> None:
        if not hasattr(self, "exits_"):
            raise NotFittedError(f"this {self.kind} gate is not fitted yet. Call fit() or load a saved gate")

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        """Return the per-example state before the first exit. Every value has leading dim B."""
        return {}

    def step(self, exit_index: int, logits_e, hidden_e, state: dict) -> tuple[np.ndarray, dict]:
        """Score one exit for the rows still running: logits_e (B, K), hidden_e (B, D) or None.

        Returns the scores (B,) float64 and the state to pass to the next exit.
        """
        self.check_fitted()
        num_exits = len(self.exits_)
        if not 0 <= exit_index < num_exits:
            raise ValueError(f"exit_index {exit_index} is out of range [0, {num_exits})")
        logits_e = np.asarray(logits_e, dtype=np.float32)
        if logits_e.ndim != 2 or logits_e.shape[1] != self.num_classes_:
            raise ValueError(f"logits_e must have shape (B, {self.num_classes_}), got {logits_e.shape}")
        if hidden_e is not None:
            hidden_e = np.asarray(hidden_e, dtype=np.float32)
        scores, state = self._step(exit_index, logits_e, hidden_e, state)
        return scores.astype(np.float64, copy=False), state

    def _step(self, exit_index, logits_e, hidden_e, state):
        raise NotImplementedError

    def scores(self, logits, hidden) -> np.ndarray:
        """Score every exit of every example (N, E) float64 by looping `step` over exits."""
        self.check_fitted()
        cache = check_cache_arrays(logits, hidden, None, exits=self.exits_, num_layers=self.num_layers_)
        state = self.init_state(cache.num_examples)
        columns = []
        for exit_index in range(cache.num_exits):
            hidden_e = None if cache.hidden is None else cache.hidden[:, exit_index]
            scores_e, state = self.step(exit_index, cache.logits[:, exit_index], hidden_e, state)
            columns.append(scores_e)
        return np.stack(columns, axis=1)

    # Saving and loading.

    def _config(self) -> dict:
        """Return the kind-specific fitted values that fit in JSON."""
        return {}

    def _arrays(self) -> dict[str, np.ndarray]:
        """Return the kind-specific arrays to store in safetensors. Empty means no weights file."""
        return {}

    def _save_extra(self, directory: Path, name: str) -> dict:
        """Write files other than safetensors and return their entries for the JSON "config"."""
        return {}

    def _restore(self, config: dict, arrays: dict[str, np.ndarray], directory: Path, name: str) -> None:
        """Set the kind-specific fitted attributes from a saved gate."""

    def save(self, path: str | os.PathLike) -> None:
        """Write `<dir>/<name>.json` plus `<name>.safetensors` or `<name>.xgb.json` where the kind has them."""
        self.check_fitted()
        directory, name = io.split_gate_path(path)
        payload = {
            "format": io.GATE_FORMAT,
            "format_version": io.GATE_FORMAT_VERSION,
            "kind": self.kind,
            "params": self._param_dict(),
            "exits": list(self.exits_),
            "num_layers": self.num_layers_,
            "num_classes": self.num_classes_,
            "label_mode": self.label_mode_,
            "threshold": io.encode_float(getattr(self, "threshold_", None)),
            "cost_flops_per_example": self.cost_flops_per_example_,
            "config": self._config(),
            "meta": getattr(self, "meta_", {}),
        }
        arrays = self._arrays()
        if arrays:
            payload["weights"] = {"file": f"{name}.safetensors"}
            payload["weights"]["sha256"] = io.write_arrays(directory / f"{name}.safetensors", arrays)
        payload["config"].update(self._save_extra(directory, name))
        io.write_json(directory / f"{name}.json", payload)
        logger.info("saved %s gate to %s", self.kind, directory / f"{name}.json")

    def restore_from_payload(self, payload: dict, directory: Path, name: str) -> "Gate":
        """Set fitted attributes from a loaded gate JSON and its companion files."""
        arrays = {}
        if "weights" in payload:
            weights = payload["weights"]
            arrays = io.read_arrays(io.companion_path(directory, weights.get("file"), directory / f"{name}.json"), weights["sha256"])
        self.exits_ = check_exits(payload["exits"], payload["num_layers"])
        self.num_layers_ = int(payload["num_layers"])
        self.num_classes_ = int(payload["num_classes"])
        self.label_mode_ = check_label_mode(payload["label_mode"])
        threshold = io.decode_float(payload.get("threshold"))
        if threshold is not None and math.isnan(threshold):
            raise ValueError(f"gate file {str(directory / (name + '.json'))!r} has threshold NaN; calibrate it again with `train-gates`")
        if threshold is not None:
            self.threshold_ = threshold
        self.meta_ = dict(payload.get("meta", {}))
        self._restore(payload.get("config", {}), arrays, directory, name)
        self.cost_flops_per_example_ = int(payload["cost_flops_per_example"])
        return self
