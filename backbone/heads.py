"""Exit heads: one small classifier per exit layer, saved as config.json + safetensors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HEADS_FORMAT = "early-exit-heads/1"


def validate_exits(exits: list[int], num_layers: int) -> list[int]:
    """Check that exits are 1-based layer numbers, strictly increasing, within the model."""
    exits = [int(e) for e in exits]
    if not exits:
        raise ValueError("exits is empty; give at least one layer number, e.g. --exits 3,6,9")
    bad = [e for e in exits if not 1 <= e <= num_layers]
    if bad:
        raise ValueError(f"exits {bad} are outside the model's layers 1..{num_layers}; pick layer numbers in that range")
    if any(b <= a for a, b in zip(exits, exits[1:])):
        raise ValueError(f"exits {exits} are not strictly increasing; list each layer once, shallow to deep")
    return exits


def exits_every(k: int, num_layers: int) -> list[int]:
    """Return exits every `k` layers, always including the last layer."""
    if not 1 <= k <= num_layers:
        raise ValueError(f"--exit-every {k} is outside 1..{num_layers} for this model; pick a step of at most {num_layers} layers")
    exits = list(range(k, num_layers + 1, k))
    if exits[-1] != num_layers:
        exits.append(num_layers)
    return exits


class ExitHeads(nn.Module):
    """One `Dropout -> Linear(D, K)` head per exit, reading the final-norm pooled state."""

    def __init__(self, exits: list[int], hidden_size: int, num_classes: int, dropout: float = 0.1, meta: dict | None = None):
        super().__init__()
        self.exits = list(exits)
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.dropout = dropout
        self.meta = dict(meta or {})
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes)) for _ in exits
        )

    def forward_exit(self, exit_index: int, pooled: torch.Tensor) -> torch.Tensor:
        """Map `(B, D)` pooled states at one exit to `(B, K)` logits."""
        return self.heads[exit_index](pooled)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map `(B, E, D)` pooled states to `(B, E, K)` logits."""
        return torch.stack([self.forward_exit(e, pooled[:, e]) for e in range(len(self.exits))], dim=1)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def config(self) -> dict:
        return {
            "format": HEADS_FORMAT,
            "exits": self.exits,
            "hidden_size": self.hidden_size,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "meta": self.meta,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors, each to a temporary name first."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        tmp = directory / f"{WEIGHTS_NAME}.{os.getpid()}.tmp"
        save_file(weights, str(tmp))
        os.replace(tmp, directory / WEIGHTS_NAME)
        config = dict(self.config(), fingerprint=self.fingerprint())
        write_json(directory / CONFIG_NAME, config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ExitHeads":
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found; run `python cli.py finetune` first to train exit heads")
        config = json.loads(config_path.read_text())
        if config.get("format") != HEADS_FORMAT:
            raise ValueError(f"{config_path}: expecting format {HEADS_FORMAT!r}, got {config.get('format')!r}")
        heads = cls(config["exits"], config["hidden_size"], config["num_classes"], config["dropout"], config.get("meta"))
        heads.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        if config.get("fingerprint") and heads.fingerprint() != config["fingerprint"]:
            raise ValueError(f"{directory}: weights do not match config.json (fingerprint {heads.fingerprint()} != {config['fingerprint']}); the directory was changed after saving")
        return heads.eval()


def write_json(path: Path, payload: dict) -> None:
    """Write JSON to a temporary name in the same directory, then rename it into place."""
    # A per-process temporary name, so concurrent shards never rename each other's file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
